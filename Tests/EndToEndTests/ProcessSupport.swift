import Foundation
import Model
import Shard
import TestSupport
import Testing

/// A small demo (the README's task, fewer samples) made once for all tests, and job files for it.
enum Demo {
    static let lock = NSLock()
    nonisolated(unsafe) static var made: URL?

    static func data() throws -> URL {
        lock.lock()
        defer { lock.unlock() }
        if let made { return made }
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("dehvf-demo-\(getpid())")
        let c = try Child("coordinator", ["demo-data", "--out", dir.path, "--train-samples", "512", "--test-samples", "64"],
                          log: dir.path + ".log")
        guard try c.wait() == 0 else { throw TestFailure("demo-data failed:\n\(c.output)") }
        made = dir
        return dir
    }

    static func scratch(_ name: String) throws -> URL {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("dehvf-\(name)-\(getpid())-\(UInt32.random(in: 0...UInt32.max))")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        return dir
    }

    static func port() -> Int { Int.random(in: 20000...60000) }

    /// A job file in `dir` training the demo for `steps` steps, checkpointing into `dir/run`; the
    /// coordinator listens on `host`:`port`.
    static func job(in dir: URL, launcher: String, workers: Int = 2, host: String = "127.0.0.1", port: Int, steps: Int, every: Int = 1000,
                    timeoutMs: Int = 1000, extra: String = "", dataExtra: String = "", optimExtra: String = "",
                    data: URL? = nil) throws -> String {
        let d = try data ?? Demo.data()
        let text = """
            model:
              vision: \(d.path)/vision
              language: \(d.path)/language
              feature_scale: 0.1
              injection_scale: 3.0
            data:
              train: \(d.path)/train.h5
              global_batch: 32
              micro_batch: 8
              \(dataExtra)
            optim:
              lr: 1.0e-2
              warmup_steps: 5
              steps: \(steps)
              \(optimExtra)
            checkpoint:
              dir: run
              every: \(every)
            cluster:
              launcher: \(launcher)
              workers: \(workers)
              bind: tcp://\(host):\(port)
              heartbeat_ms: 100
              timeout_ms: \(timeoutMs)
            \(extra)
            """
        let path = dir.appendingPathComponent("job.yaml").path
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    /// The trainable parameters in a run directory's latest checkpoint, and its step.
    static func latest(_ dir: URL) throws -> (step: Int, params: TensorSet) {
        guard let c = try Checkpoint.readLatest(dir: dir.appendingPathComponent("run").path) else {
            throw TestFailure("no checkpoint in \(dir.path)/run")
        }
        return (c.step, c.params)
    }

    /// train.jsonl's lines, parsed.
    static func log(_ dir: URL) throws -> [[String: Any]] {
        try String(contentsOf: dir.appendingPathComponent("run/train.jsonl"), encoding: .utf8).split(separator: "\n")
            .map { try JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] ?? [:] }
    }

    static func logLines(_ dir: URL) -> Int {
        ((try? String(contentsOfFile: dir.appendingPathComponent("run/train.jsonl").path, encoding: .utf8)) ?? "")
            .split(separator: "\n").filter { $0.contains("\"loss\"") && !$0.contains("\"eval\"") }.count
    }

    /// The parameters of an undisturbed in-process run of `steps` steps: what every distributed run of the
    /// same job must reproduce bitwise.
    static func reference(steps: Int, extra: String = "", dataExtra: String = "", optimExtra: String = "",
                          name: String = "reference") throws -> TensorSet {
        try referenceRun(steps: steps, extra: extra, dataExtra: dataExtra, optimExtra: optimExtra, name: name).params
    }

    /// ``reference(steps:extra:dataExtra:optimExtra:name:)`` and the directory it ran in.
    static func referenceRun(steps: Int, extra: String = "", dataExtra: String = "", optimExtra: String = "",
                             name: String = "reference") throws -> (dir: URL, params: TensorSet) {
        let dir = try scratch("\(name)-\(steps)")
        let job = try job(in: dir, launcher: "inprocess", port: port(), steps: steps, extra: extra, dataExtra: dataExtra,
                          optimExtra: optimExtra)
        let c = try Child("coordinator", ["train", "--config", job], log: dir.path + "/coordinator.log")
        guard try c.wait() == 0 else { throw TestFailure("reference run failed:\n\(c.output)") }
        let (step, params) = try latest(dir)
        guard step == steps else { throw TestFailure("reference stopped at step \(step)") }
        return (dir, params)
    }

    /// Expects the run in `dir` to have finished `steps` steps with exactly `reference`'s parameters.
    static func expectSame(_ dir: URL, steps: Int, as reference: Result<TensorSet, Error>, _ what: String) throws {
        let (step, params) = try latest(dir)
        #expect(step == steps, "\(what): finished at step \(step)")
        #expect(params.isBitwiseEqual(try reference.get()), "\(what): parameters differ from the in-process run")
    }
}
