import Cluster
import Foundation

/// `cluster.launcher: local`: the `worker` processes the coordinator starts on this machine, each logging
/// to `CHECKPOINT_DIR/worker-N.log`. Their exits arrive as events on the coordinator's queue.
final class LocalWorkers {
    struct Exit: Sendable {
        var index: Int
        var status: Int32
        var bySignal: Bool
    }

    let job: JobConfig
    private var processes: [Process] = []
    /// Entered per process started, left when it ends.
    private let running = DispatchGroup()

    /// Starts `cluster.workers` workers joining `endpoint`; `onExit` is called (on another thread) when one ends.
    init(job: JobConfig, endpoint: String, onExit: @escaping @Sendable (Exit) -> Void) throws {
        self.job = job
        let exe = try Self.workerExecutable()
        // A wildcard bind is reached on loopback.
        let target = endpoint.replacingOccurrences(of: "tcp://0.0.0.0:", with: "tcp://127.0.0.1:")
            .replacingOccurrences(of: "tcp://*:", with: "tcp://127.0.0.1:")
        for i in 0..<job.cluster.workers {
            let p = Process()
            p.executableURL = URL(fileURLWithPath: exe)
            var args = ["--join", target, "--name", "local-\(i)", "--heartbeat-ms", "\(job.cluster.heartbeatMs)",
                        "--timeout-ms", "\(job.cluster.timeoutMs)"]
            if job.security.curve {
                // The layout `coordinator keys --out DIR` writes: DIR/coordinator.key, DIR/worker-N.key_secret.
                let keys = (job.security.secretKey.path as NSString).deletingLastPathComponent as NSString
                args += ["--curve-secret", keys.appendingPathComponent("worker-\(i + 1).key_secret"),
                         "--server-key", keys.appendingPathComponent("coordinator.key")]
            }
            p.arguments = args
            let logPath = logFile(i)
            _ = FileManager.default.createFile(atPath: logPath, contents: nil)
            let log = try FileHandle(forWritingTo: URL(fileURLWithPath: logPath))
            p.standardOutput = log
            p.standardError = log
            let running = running
            p.terminationHandler = { p in
                onExit(Exit(index: i, status: p.terminationStatus, bySignal: p.terminationReason == .uncaughtSignal))
                running.leave()
            }
            running.enter()
            do { try p.run() } catch {
                running.leave()
                throw UserError("cannot start local worker \(i) (\(exe))", cause: error)
            }
            processes.append(p)
        }
        Console.say("coordinator: started \(processes.count) local workers (logs: \(job.checkpoint.dir)/worker-N.log)")
    }

    var count: Int { processes.count }

    func logFile(_ i: Int) -> String { job.checkpoint.dir.appending("worker-\(i).log") }

    /// A worker ended: one that failed (non-zero exit) ends the job with its log's name.
    func exited(_ e: Exit) throws {
        if !e.bySignal && e.status != 0 {
            throw UserError("local worker \(e.index) exited with status \(e.status); see \(logFile(e.index))")
        }
    }

    /// Waits up to 2 s for the workers to leave (after the coordinator's Stop), then terminates the rest.
    func stop() {
        if running.wait(timeout: .now() + 2) == .timedOut {
            for p in processes where p.isRunning { p.terminate() }
        }
    }

    static func workerExecutable() throws -> String {
        let me = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath()
        let path = me.deletingLastPathComponent().appendingPathComponent("worker").path
        guard FileManager.default.isExecutableFile(atPath: path) else {
            throw UserError("cluster.launcher local needs the worker executable next to the coordinator (\(path)); build both with `swift build -c release`")
        }
        return path
    }
}
