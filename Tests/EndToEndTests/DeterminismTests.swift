import Foundation
import Model
import TestSupport
import Testing

/// DESIGN.md §6 with real processes and sockets: the parameters after K steps are bitwise identical
/// whatever computed the micro-batches, whoever died, joined late, or was restarted.
@Suite("bitwise-reproducible training across processes", .serialized)
struct DeterminismTests {
    static let steps = 24

    /// The reference: everything in one process.
    static let reference: Result<TensorSet, Error> = Result { try Demo.reference(steps: steps) }

    func expectReference(_ dir: URL, _ what: String) throws {
        try Demo.expectSame(dir, steps: Self.steps, as: Self.reference, what)
    }

    /// Trains the demo job in `dir` with `workers` local workers to the end; returns the coordinator's output.
    func trainLocal(_ dir: URL, workers: Int, extra: String = "", dataExtra: String = "", optimExtra: String = "") throws -> String {
        let job = try Demo.job(in: dir, launcher: "local", workers: workers, port: Demo.port(), steps: Self.steps,
                               extra: extra, dataExtra: dataExtra, optimExtra: optimExtra)
        let c = try Child("coordinator", ["train", "--config", job], log: dir.path + "/coordinator.log")
        #expect(try c.wait() == 0, "\(c.output)")
        return c.output
    }

    @Test("1, 2 and 3 local workers give the in-process parameters", arguments: [1, 2, 3])
    func workers(count: Int) throws {
        let dir = try Demo.scratch("local\(count)")
        let output = try trainLocal(dir, workers: count)
        #expect(output.contains("joined; \(count) live"), "\(output)")
        try expectReference(dir, "\(count) workers")
    }

    @Test("compute.threads 2 (attention, the visual memory and large GEMMs split over threads): 2 workers give the in-process parameters")
    func twoComputeThreads() throws {
        let threads = "compute:\n  threads: 2"
        let reference = Result { try Demo.reference(steps: Self.steps, extra: threads, name: "reference-threads2") }
        let dir = try Demo.scratch("threads2")
        _ = try trainLocal(dir, workers: 2, extra: threads)
        try Demo.expectSame(dir, steps: Self.steps, as: reference, "2 workers with 2 compute threads each")
    }

    @Test("2 workers sharing data.feature_cache on disk give the in-process parameters (features kept in memory there)")
    func sharedFeatureCache() throws {
        let dir = try Demo.scratch("featurecache")
        let store = dir.appendingPathComponent("features")
        _ = try trainLocal(dir, workers: 2, dataExtra: "feature_cache: \(store.path)")
        try expectReference(dir, "2 workers with a shared feature cache")
        let files = try FileManager.default.subpathsOfDirectory(atPath: store.path).filter { $0.hasSuffix(".f32") }
        #expect(files.count > 0 && files.count <= 512, "\(files.count) feature files for a 512-image dataset")
    }

    @Test("data.group_by_length: 2 workers give the in-process parameters of the same grouped job")
    func groupedByLength() throws {
        let grouped = "group_by_length: true"
        let reference = Result { try Demo.reference(steps: Self.steps, dataExtra: grouped, name: "reference-grouped") }
        let dir = try Demo.scratch("grouped")
        _ = try trainLocal(dir, workers: 2, dataExtra: grouped)
        try Demo.expectSame(dir, steps: Self.steps, as: reference, "2 workers, rows grouped by length")
    }

    /// `optim.max_grad_norm` below the demo's gradient norms (about 0.6 to 5 in its first steps), so that many steps clip.
    static let clip = "max_grad_norm: 1.0"
    static let clippedReference = Result { try Demo.referenceRun(steps: steps, optimExtra: clip, name: "reference-clipped") }

    @Test("optim.max_grad_norm: 2 and 3 local workers clip to the in-process parameters and log the same grad_norm, bitwise",
          arguments: [2, 3])
    func clipped(workers: Int) throws {
        let dir = try Demo.scratch("clipped\(workers)")
        _ = try trainLocal(dir, workers: workers, optimExtra: Self.clip)
        let reference = try Self.clippedReference.get()
        try Demo.expectSame(dir, steps: Self.steps, as: .success(reference.params), "\(workers) workers, clipped")
        func norms(_ d: URL) throws -> [Double] { try Demo.log(d).compactMap { $0["grad_norm"] as? Double } }
        let logged = try norms(dir), want = try norms(reference.dir)
        #expect(want.count == Self.steps && logged == want, "grad_norm per step: \(logged) vs in-process \(want)")
        #expect(want.contains { $0 > 1.0 } && want.contains { $0 < 1.0 }, "some steps clip and some do not: \(want)")
        #expect(!reference.params.isBitwiseEqual(try Self.reference.get()), "clipping changes what is trained")
    }

    @Test("a worker killed with SIGKILL mid-step: its work is redone elsewhere")
    func workerKilled() throws {
        let dir = try Demo.scratch("kill")
        let port = Demo.port()
        let job = try Demo.job(in: dir, launcher: "manual", port: port, steps: Self.steps)
        let c = try Child("coordinator", ["train", "--config", job], log: dir.path + "/coordinator.log")
        let a = try Child("worker", ["--join", "tcp://127.0.0.1:\(port)", "--name", "a"], log: dir.path + "/a.log")
        let b = try Child("worker", ["--join", "tcp://127.0.0.1:\(port)", "--name", "b"], log: dir.path + "/b.log")
        try waitUntil("a few steps") { Demo.logLines(dir) >= 3 }
        b.kill(SIGKILL)
        #expect(try c.wait() == 0, "\(c.output)")
        // Declared dead by its silence, or sooner, by the first send that finds its connection gone.
        #expect(c.output.contains("worker b (b) silent for") || c.output.contains("worker b (b) removed: its connection is gone"),
                "the coordinator declares the killed worker dead:\n\(c.output)")
        #expect(try a.wait(seconds: 10) == 0)
        try expectReference(dir, "worker killed")
    }

    @Test("a local worker killed by a signal (as the OOM killer would) is started again; the parameters are the in-process run's")
    func localWorkerRestarted() throws {
        let dir = try Demo.scratch("restart")
        let job = try Demo.job(in: dir, launcher: "local", workers: 2, port: Demo.port(), steps: Self.steps)
        let c = try Child("coordinator", ["train", "--config", job], log: dir.path + "/coordinator.log")
        try waitUntil("a few steps") { Demo.logLines(dir) >= 3 }
        let victim = try #require(childPIDs(of: c.process.processIdentifier).first)
        kill(victim, SIGKILL)
        #expect(try c.wait() == 0, "\(c.output)")
        #expect(c.output.contains("killed by signal 9; starting it again"), "\(c.output)")
        try expectReference(dir, "a local worker killed and restarted")
    }

    @Test("local workers do not outlive a coordinator killed with SIGKILL")
    func localWorkersDieWithCoordinator() throws {
        let dir = try Demo.scratch("orphans")
        let job = try Demo.job(in: dir, launcher: "local", workers: 2, port: Demo.port(), steps: 10_000)
        let c = try Child("coordinator", ["train", "--config", job], log: dir.path + "/coordinator.log")
        try waitUntil("a few steps") { Demo.logLines(dir) >= 3 }
        let workers = childPIDs(of: c.process.processIdentifier)
        #expect(workers.count == 2)
        c.kill(SIGKILL)
        _ = try c.wait()
        try waitUntil("the orphaned workers to exit", seconds: 10) { workers.allSatisfy { !isAlive($0) } }
    }

    @Test("a worker given SIGTERM finishes its micro-batch, says Bye and exits 0; nothing is lost")
    func workerTerminated() throws {
        let dir = try Demo.scratch("term")
        let port = Demo.port()
        let job = try Demo.job(in: dir, launcher: "manual", port: port, steps: Self.steps)
        let c = try Child("coordinator", ["train", "--config", job], log: dir.path + "/coordinator.log")
        let a = try Child("worker", ["--join", "tcp://127.0.0.1:\(port)", "--name", "a"], log: dir.path + "/a.log")
        let b = try Child("worker", ["--join", "tcp://127.0.0.1:\(port)", "--name", "b"], log: dir.path + "/b.log")
        try waitUntil("a few steps") { Demo.logLines(dir) >= 3 }
        b.kill(SIGTERM)
        #expect(try b.wait(seconds: 20) == 0, "\(b.output)")
        #expect(b.output.contains("left the job"), "\(b.output)")
        #expect(try c.wait() == 0, "\(c.output)")
        #expect(c.output.contains("worker b (b) left"), "\(c.output)")
        _ = try a.wait(seconds: 10)
        try expectReference(dir, "worker terminated")
    }

    @Test("a worker that joins mid-job gets the current parameters and work")
    func lateJoin() throws {
        let dir = try Demo.scratch("late")
        let port = Demo.port()
        let job = try Demo.job(in: dir, launcher: "manual", port: port, steps: Self.steps)
        let c = try Child("coordinator", ["train", "--config", job], log: dir.path + "/coordinator.log")
        let a = try Child("worker", ["--join", "tcp://127.0.0.1:\(port)", "--name", "a"], log: dir.path + "/a.log")
        try waitUntil("a few steps with one worker") { Demo.logLines(dir) >= 4 }
        let b = try Child("worker", ["--join", "tcp://127.0.0.1:\(port)", "--name", "late"], log: dir.path + "/late.log")
        #expect(try c.wait() == 0, "\(c.output)")
        #expect(try b.wait(seconds: 10) == 0)
        _ = try a.wait(seconds: 10)
        let summary = b.output.split(separator: "\n").first { $0.contains("computed ") } ?? ""
        let count = summary.split(separator: " ").drop { $0 != "computed" }.dropFirst().first.flatMap { Int($0) }
        #expect((count ?? 0) > 0, "the late worker computed micro-batches: '\(summary)'\n\(b.output)")
        #expect(b.output.contains("joined at step"), "\(b.output)")
        try expectReference(dir, "late join")
    }

    @Test("the coordinator killed with SIGKILL and resumed: the workers follow it")
    func coordinatorKilled() throws {
        let dir = try Demo.scratch("resume")
        let port = Demo.port()
        let job = try Demo.job(in: dir, launcher: "manual", port: port, steps: Self.steps, every: 4, timeoutMs: 1500)
        let first = try Child("coordinator", ["train", "--config", job], log: dir.path + "/coordinator-1.log")
        let a = try Child("worker", ["--join", "tcp://127.0.0.1:\(port)", "--name", "a"], log: dir.path + "/a.log")
        let b = try Child("worker", ["--join", "tcp://127.0.0.1:\(port)", "--name", "b"], log: dir.path + "/b.log")
        try waitUntil("a checkpoint and some steps past it") { Demo.logLines(dir) >= 10 }
        first.kill(SIGKILL)
        _ = try first.wait()
        let resumed = try Child("coordinator", ["train", "--config", job, "--resume", "latest"], log: dir.path + "/coordinator-2.log")
        #expect(try resumed.wait() == 0, "\(resumed.output)")
        #expect(resumed.output.contains("resumed from"), "\(resumed.output)")
        #expect(try a.wait(seconds: 10) == 0, "\(a.output)")
        #expect(try b.wait(seconds: 10) == 0, "\(b.output)")
        try expectReference(dir, "coordinator resumed")
    }
}
