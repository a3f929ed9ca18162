import Foundation
import TestSupport
import Testing

/// What the coordinator does with the signals a scheduler sends, tested with real processes.
@Suite("signals", .serialized)
struct SignalTests {
    /// Slurm delivers one TERM to a task several times: from slurmstepd, forwarded by srun, and from a
    /// batch script passing on its --signal warning. A step stalled on a lost worker stands in for a long
    /// step, so the duplicate lands while the coordinator is still waiting to finish it.
    @Test("SIGTERM twice mid-step: the coordinator still checkpoints its completed steps and exits 143")
    func repeatedTerm() throws {
        let dir = try Demo.scratch("term2")
        let port = Demo.port()
        let job = try Demo.job(in: dir, launcher: "manual", workers: 1, port: port, steps: 1000, timeoutMs: 60_000)
        let c = try Child("coordinator", ["train", "--config", job], log: dir.path + "/coordinator.log")
        let w = try Child("worker", ["--join", "tcp://127.0.0.1:\(port)", "--name", "w"], log: dir.path + "/w.log")
        try waitUntil("a few steps") { Demo.logLines(dir) >= 3 }
        w.kill(SIGKILL)
        usleep(300_000)
        let done = Demo.logLines(dir)
        c.kill(SIGTERM)
        usleep(5_000)
        c.kill(SIGTERM)
        #expect(try c.wait(seconds: 30) == 143, "\(c.output)")
        #expect(c.output.contains("stopped by signal 15 after step \(done)"), "\(c.output)")
        #expect(try Demo.latest(dir).step == done)
    }
}
