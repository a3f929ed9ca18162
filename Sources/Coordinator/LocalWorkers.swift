import Cluster
import Foundation

/// `cluster.launcher: local`: the `worker` processes the coordinator starts on this machine, each logging
/// to `CHECKPOINT_DIR/worker-N.log` (appended to across restarts). Their exits arrive as events on the
/// coordinator's queue.
///
/// - A worker that exits with a non-zero status ends the job (its log says why: refused, bad files...).
/// - A worker killed by a signal (the OOM killer, a stray `kill`) is started again, at most
///   ``maxRestarts`` times each; then the job ends, naming the signal.
/// - Each worker's stdin is a pipe the coordinator holds open: when the coordinator dies, however it dies,
///   the worker sees end-of-file and exits (`worker --exit-with-parent`), so no worker outlives its job.
final class LocalWorkers {
    struct Exit: Sendable {
        var index: Int
        var status: Int32
        var bySignal: Bool
    }

    static let maxRestarts = 3

    let job: JobConfig
    let executable: String
    /// The coordinator's address as the workers reach it (a wildcard bind is reached on loopback).
    let target: String
    let onExit: @Sendable (Exit) -> Void
    private var processes: [Process] = []
    private var lifelines: [Pipe] = []
    private var restarts: [Int]
    /// Entered per process started, left when it ends.
    private let running = DispatchGroup()

    /// Starts `cluster.workers` workers joining `endpoint`; `onExit` is called (on another thread) when one ends.
    init(job: JobConfig, endpoint: String, onExit: @escaping @Sendable (Exit) -> Void) throws {
        self.job = job
        self.onExit = onExit
        executable = try Self.workerExecutable()
        target = endpoint.replacingOccurrences(of: "tcp://0.0.0.0:", with: "tcp://127.0.0.1:")
            .replacingOccurrences(of: "tcp://*:", with: "tcp://127.0.0.1:")
        restarts = Array(repeating: 0, count: job.cluster.workers)
        for i in 0..<job.cluster.workers {
            let (p, lifeline) = try start(i)
            processes.append(p)
            lifelines.append(lifeline)
        }
        Console.say("coordinator: started \(processes.count) local workers (logs: \(job.checkpoint.dir)/worker-N.log)")
    }

    var count: Int { processes.count }

    func logFile(_ i: Int) -> String { job.checkpoint.dir.appending("worker-\(i).log") }

    private func start(_ i: Int) throws -> (Process, Pipe) {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: executable)
        var args = ["--join", target, "--name", "local-\(i)", "--heartbeat-ms", "\(job.cluster.heartbeatMs)",
                    "--timeout-ms", "\(job.cluster.timeoutMs)", "--exit-with-parent"]
        if job.security.curve {
            // The layout `coordinator keys --out DIR` writes: DIR/coordinator.key, DIR/worker-N.key_secret.
            let keys = (job.security.secretKey.path as NSString).deletingLastPathComponent as NSString
            args += ["--curve-secret", keys.appendingPathComponent("worker-\(i + 1).key_secret"),
                     "--server-key", keys.appendingPathComponent("coordinator.key")]
        }
        p.arguments = args
        let logPath = logFile(i)
        if !FileManager.default.fileExists(atPath: logPath) { _ = FileManager.default.createFile(atPath: logPath, contents: nil) }
        let log = try FileHandle(forWritingTo: URL(fileURLWithPath: logPath))
        log.seekToEndOfFile()
        p.standardOutput = log
        p.standardError = log
        let lifeline = Pipe()
        p.standardInput = lifeline
        let running = running, onExit = onExit
        p.terminationHandler = { p in
            onExit(Exit(index: i, status: p.terminationStatus, bySignal: p.terminationReason == .uncaughtSignal))
            running.leave()
        }
        running.enter()
        do { try p.run() } catch {
            running.leave()
            throw UserError("cannot start local worker \(i) (\(executable))", cause: error)
        }
        return (p, lifeline)
    }

    /// A worker ended: restart it if a signal killed it and it has restarts left; otherwise a failure
    /// ends the job. Called on the coordinator's loop (the thread that started the processes).
    func exited(_ e: Exit) throws {
        if e.bySignal {
            guard restarts[e.index] < Self.maxRestarts else {
                throw UserError("local worker \(e.index) was killed by signal \(e.status) \(Self.maxRestarts + 1) times "
                    + "(the OOM killer? see dmesg and \(logFile(e.index))); the job stops")
            }
            restarts[e.index] += 1
            Console.say("coordinator: local worker \(e.index) was killed by signal \(e.status); starting it again "
                + "(restart \(restarts[e.index]) of \(Self.maxRestarts))")
            (processes[e.index], lifelines[e.index]) = try start(e.index)
        } else if e.status != 0 {
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
