import Foundation
import Model
import Shard
import Testing

/// A fresh directory under the system temp dir, removed by `cleanup()`.
struct TempDir {
    let path: String
    init() throws {
        path = (NSTemporaryDirectory() as NSString).appendingPathComponent("shardtests-\(UUID().uuidString)")
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }
    func file(_ name: String) -> String { (path as NSString).appendingPathComponent(name) }
    func cleanup() { try? FileManager.default.removeItem(atPath: path) }
}

/// The package root (this file is Tests/ShardTests/Support.swift).
let packageRoot: String = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .deletingLastPathComponent().path

struct ProcessResult {
    var status: Int32
    var stdout: String
    var stderr: String
}

/// Runs `executable` with `arguments`, collecting output (through files, so a chatty child cannot block).
func run(_ executable: String, _ arguments: [String], cwd: String? = nil) throws -> ProcessResult {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: executable)
    p.arguments = arguments
    if let cwd { p.currentDirectoryURL = URL(fileURLWithPath: cwd) }
    let dir = try TempDir()
    defer { dir.cleanup() }
    FileManager.default.createFile(atPath: dir.file("out"), contents: nil)
    FileManager.default.createFile(atPath: dir.file("err"), contents: nil)
    let out = try FileHandle(forWritingTo: URL(fileURLWithPath: dir.file("out")))
    let err = try FileHandle(forWritingTo: URL(fileURLWithPath: dir.file("err")))
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

/// python3 from PATH.
func python3() throws -> String {
    for dir in (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin").split(separator: ":") {
        let p = "\(dir)/python3"
        if FileManager.default.isExecutableFile(atPath: p) { return p }
    }
    throw PythonMissing(reason: "python3 is not on PATH")
}

struct PythonMissing: Error, CustomStringConvertible {
    var reason: String
    var description: String { "interop tests need python3 with h5py (CI installs it: pip install h5py): \(reason)" }
}

/// Runs a Python snippet; throws (failing the test loudly) when python3 or h5py is missing.
func python(_ code: String, _ args: [String] = []) throws -> ProcessResult {
    let py = try python3()
    let probe = try run(py, ["-c", "import h5py, numpy"])
    if probe.status != 0 { throw PythonMissing(reason: probe.stderr) }
    return try run(py, ["-c", code] + args)
}

/// A small deterministic dataset: N rows, T tokens, HxW images.
func makeContents(task: DatasetTask = .multipleChoice, n: Int = 10, t: Int = 8, h: Int = 4, w: Int = 5,
                  meta: Bool = true) -> DatasetContents {
    var c = DatasetContents(task: task, count: n, tokens: t, imageHeight: h, imageWidth: w, padId: 0)
    for i in 0..<c.images.count { c.images[i] = UInt8(truncatingIfNeeded: i &* 7 &+ 3) }
    for r in 0..<n {
        c.hasImage[r] = UInt8(r % 3 == 0 ? 0 : 1)
        let len = 3 + r % (t - 3)
        c.lengths[r] = Int32(len)
        for k in 0..<len { c.inputIds[r * t + k] = Int32(100 * r + k + 1) }
        c.labels[r * t + len - 1] = Int32(100 * r + len)
    }
    if task == .multipleChoice {
        c.choiceTokenIds = [11, 12, 13, 14, 15]
        for r in 0..<n {
            c.numChoices![r] = Int32(2 + r % 4)
            c.answer![r] = Int32(r % Int(c.numChoices![r]))
            c.answerPosition![r] = c.lengths[r] - 2
        }
    }
    if meta {
        c.subject = (0..<n).map { UInt8($0 % 3) }
        c.context = (0..<n).map { UInt8(($0 + 1) % 3) }
        c.grade = (0..<n).map { UInt8($0 % 2) }
    }
    return c
}

/// Flips one bit of the byte at `offset` in `path`.
func flipByte(_ path: String, at offset: Int) throws {
    var data = try Data(contentsOf: URL(fileURLWithPath: path))
    data[offset] ^= 0x40
    try data.write(to: URL(fileURLWithPath: path))
}

/// The offset of the first occurrence of `needle` in the file.
func offset(of needle: [UInt8], in path: String) throws -> Int? {
    let data = [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
    guard needle.count <= data.count else { return nil }
    outer: for i in 0...(data.count - needle.count) {
        for k in 0..<needle.count where data[i + k] != needle[k] { continue outer }
        return i
    }
    return nil
}

func bytes(of values: [Float]) -> [UInt8] { values.withUnsafeBytes { Array($0) } }

/// Expects `body` to throw a `ShardError` with `code` whose description contains every string in `mentions`.
func expectShardError(_ code: ShardError.Code, mentioning mentions: [String],
                      sourceLocation: SourceLocation = #_sourceLocation, _ body: () throws -> Void) {
    do {
        try body()
        Issue.record("expected ShardError.\(code), nothing was thrown", sourceLocation: sourceLocation)
    } catch let e as ShardError {
        #expect(e.code == code, "got \(e)", sourceLocation: sourceLocation)
        for m in mentions {
            #expect(e.description.contains(m), "\"\(m)\" missing from: \(e)", sourceLocation: sourceLocation)
        }
    } catch {
        Issue.record("expected ShardError.\(code), got \(error)", sourceLocation: sourceLocation)
    }
}
