import Foundation

/// A test that cannot go on, with what to do about it.
public struct TestFailure: Error, CustomStringConvertible {
    public var description: String
    public init(_ d: String) { description = d }
}

public struct ProcessResult {
    public var status: Int32
    public var stdout: String
    public var stderr: String
}

/// Runs `executable` with `arguments` to the end, collecting its output (through files, so a chatty child
/// cannot block on a full pipe).
public func run(_ executable: String, _ arguments: [String], cwd: String? = nil) throws -> ProcessResult {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: executable)
    p.arguments = arguments
    if let cwd { p.currentDirectoryURL = URL(fileURLWithPath: cwd) }
    let dir = try TemporaryDirectory("run")
    defer { dir.cleanup() }
    _ = FileManager.default.createFile(atPath: dir.file("out"), contents: nil)
    _ = FileManager.default.createFile(atPath: dir.file("err"), contents: nil)
    let out = try FileHandle(forWritingTo: dir.fileURL("out"))
    let err = try FileHandle(forWritingTo: dir.fileURL("err"))
    p.standardOutput = out
    p.standardError = err
    try p.run()
    p.waitUntilExit()
    try out.close()
    try err.close()
    return ProcessResult(status: p.terminationStatus,
                         stdout: (try? String(contentsOfFile: dir.file("out"), encoding: .utf8)) ?? "",
                         stderr: (try? String(contentsOfFile: dir.file("err"), encoding: .utf8)) ?? "")
}

public struct PythonMissing: Error, CustomStringConvertible {
    public var reason: String
    public init(reason: String) { self.reason = reason }
    public var description: String {
        "this test needs python3 with h5py and numpy (Scripts/bootstrap installs them): \(reason)"
    }
}

/// python3 from PATH.
public func python3() throws -> String {
    for dir in (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin").split(separator: ":") {
        let p = "\(dir)/python3"
        if FileManager.default.isExecutableFile(atPath: p) { return p }
    }
    throw PythonMissing(reason: "python3 is not on PATH")
}

/// Runs a Python snippet; throws (failing the test loudly) when python3, h5py or numpy is missing.
public func python(_ code: String, _ args: [String] = []) throws -> ProcessResult {
    let py = try python3()
    let probe = try run(py, ["-c", "import h5py, numpy"])
    if probe.status != 0 { throw PythonMissing(reason: probe.stderr) }
    return try run(py, ["-c", code] + args)
}

/// The built `coordinator`, `worker` and `bench` executables, run as a user runs them.
public enum Products {
    /// `swift test -c release` builds the executables next to the test bundle.
    static let directory = Bundle.main.bundleURL.deletingLastPathComponent().lastPathComponent.isEmpty
        ? Fixtures.packageRoot.appendingPathComponent(".build/release") : Bundle.main.bundleURL.deletingLastPathComponent()

    public static func path(_ name: String) throws -> String {
        for dir in [directory, Fixtures.packageRoot.appendingPathComponent(".build/release")] {
            let p = dir.appendingPathComponent(name).path
            if FileManager.default.isExecutableFile(atPath: p) { return p }
        }
        throw TestFailure("\(name) is not built: run the tests with `swift test -c release` (Scripts/test)")
    }
}

/// A child process whose stdout and stderr go to a log file. `executable` is a product name
/// (`coordinator`, `worker`) or an absolute path (`/usr/sbin/ip`, to run a product in a namespace).
public final class Child {
    public let process = Process()
    public let log: String

    public init(_ executable: String, _ args: [String], log: String) throws {
        self.log = log
        _ = FileManager.default.createFile(atPath: log, contents: nil)
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: log))
        process.executableURL = URL(fileURLWithPath: executable.hasPrefix("/") ? executable : try Products.path(executable))
        process.arguments = args
        process.standardOutput = handle
        process.standardError = handle
        try process.run()
    }

    public var output: String { (try? String(contentsOfFile: log, encoding: .utf8)) ?? "" }

    public func kill(_ signal: Int32 = SIGKILL) { Foundation.kill(process.processIdentifier, signal) }

    /// Waits for exit; throws with the log if it takes longer than `seconds`.
    @discardableResult
    public func wait(seconds: Double = 120) throws -> Int32 {
        let deadline = Date().addingTimeInterval(seconds)
        while process.isRunning {
            if Date() > deadline {
                kill()
                throw TestFailure("\(process.executableURL!.lastPathComponent) did not exit in \(seconds) s; log:\n\(output)")
            }
            usleep(20_000)
        }
        return process.terminationStatus
    }

    deinit { if process.isRunning { kill() } }
}

/// Polls `condition` until it holds (a test watching another process has nothing to wait on).
public func waitUntil(_ what: String, seconds: Double = 60, _ condition: () -> Bool) throws {
    let deadline = Date().addingTimeInterval(seconds)
    while !condition() {
        if Date() > deadline { throw TestFailure("timed out waiting for \(what)") }
        usleep(20_000)
    }
}
