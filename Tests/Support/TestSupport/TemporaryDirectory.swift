import Foundation

/// A fresh empty directory under the system's temporary directory, removed by `cleanup()`.
public struct TemporaryDirectory {
    public let url: URL
    public var path: String { url.path }

    public init(_ label: String = "test") throws {
        url = FileManager.default.temporaryDirectory.appendingPathComponent("dehvf-\(label)-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    }

    /// The path of `name` inside the directory.
    public func file(_ name: String) -> String { url.appendingPathComponent(name).path }
    public func fileURL(_ name: String) -> URL { url.appendingPathComponent(name) }
    public func write(_ name: String, _ text: String) throws { try Data(text.utf8).write(to: fileURL(name)) }
    public func write(_ name: String, _ data: Data) throws { try data.write(to: fileURL(name)) }
    public func cleanup() { try? FileManager.default.removeItem(at: url) }
}

/// Where the package and its committed fixtures are (this file is Tests/Support/TestSupport/...).
public enum Fixtures {
    public static let packageRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().deletingLastPathComponent()
    public static let root = packageRoot.appendingPathComponent("Tests/Fixtures")
    public static let safetensors = root.appendingPathComponent("safetensors")
    public static let backbones = root.appendingPathComponent("backbones")
    public static let dehvf = root.appendingPathComponent("dehvf")
}
