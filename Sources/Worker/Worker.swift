import ArgumentParser
import Cluster
import Foundation
import Training
import Transport

/// `worker`: joins a coordinator, holds the frozen backbone (memory-mapped) and computes micro-batches.
@main
struct WorkerCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "worker",
        abstract: "Join a DEHVF job and compute micro-batch gradients for it.",
        discussion: """
              worker --join tcp://HOST:PORT

            The worker connects to a coordinator started with `coordinator train`, retrying with backoff \
            until it answers. It learns the job, loads the frozen backbone the job names (memory-mapped, so \
            workers on one node share its pages) and computes the micro-batches it is given with the job's \
            compute.threads. If the coordinator goes away it keeps retrying and rejoins a resumed job. \
            SIGTERM or SIGINT: it finishes the micro-batch in hand, hands back the rest and leaves.

            The job's paths (model.vision, model.language, data.train) must be readable on this node, and \
            data.feature_cache, if set, writable; remap them with --set if it mounts them elsewhere. With --config the worker loads the backbone \
            before joining, and the coordinator refuses it if those weights differ from the job's.
            """)

    @Option(help: ArgumentHelp("The coordinator's address.", valueName: "tcp://HOST:PORT")) var join: String
    @Option(help: "A job file to load the backbone from before joining (default: the coordinator's job).")
    var config: String?
    @Option(name: .customLong("set"), help: ArgumentHelp("Override a key of the job's config on this node.", valueName: "dotted.key=value"))
    var overrides: [String] = []
    @Option(help: "This worker's name in the coordinator's logs (default: host-pid).") var name: String?
    @Option(help: ArgumentHelp("This worker's CURVE secret key file (with security.curve on).", valueName: "FILE.key_secret"))
    var curveSecret: String?
    @Option(help: ArgumentHelp("The coordinator's CURVE public key file.", valueName: "coordinator.key"))
    var serverKey: String?
    @Option(help: "Milliseconds without the coordinator before reconnecting.") var timeoutMs: Int64 = 5000
    @Option(help: "Milliseconds between heartbeats.") var heartbeatMs: Int64 = 500

    @Flag(help: .hidden) var exitWithParent = false

    func validate() throws {
        guard join.hasPrefix("tcp://") else { throw ValidationError("--join takes tcp://HOST:PORT, got '\(join)'") }
        guard (curveSecret == nil) == (serverKey == nil) else {
            throw ValidationError("--curve-secret and --server-key go together")
        }
    }

    func run() throws {
        let parsed = try overrides.map { try ConfigOverride(parsing: $0) }
        var curve: CurveRole?
        if let curveSecret, let serverKey {
            curve = .client(try CurveKeyPair(secretKeyFile: curveSecret), serverPublicKey: try Curve.readKey(file: serverKey))
        }
        let me = name ?? "\(ProcessInfo.processInfo.hostName)-\(getpid())"
        var engine: TrainingEngine?
        if let config {
            engine = try TrainingEngine(job: try JobConfig.load(file: config, overrides: parsed))
            say("loaded the backbone (\(engine!.fingerprint.prefix(60))...)")
        }
        if exitWithParent { ParentWatch.start() }
        let loop = try WorkerLoop(name: me, endpoint: join, curve: curve, overrides: parsed, engine: engine,
                                  heartbeatMs: heartbeatMs, timeoutMs: timeoutMs)
        let code: Int32
        do {
            code = try loop.run()
        } catch where loop.inFlight > 0 {
            say("\(error)")
            Self.sayPeak()
            Self.exitNow(1)
        }
        Self.sayPeak()
        if loop.inFlight > 0 { Self.exitNow(code) }
        if code != 0 { throw ExitCode(code) }
    }

    /// The peak RSS as the worker ends, to set beside `coordinator plan`'s worker figure.
    static func sayPeak() {
        if let peak = ProcessMemory.peakResidentBytes() { say(String(format: "this process's peak RSS %.0f MB", Double(peak) / 1e6)) }
    }

    /// Leaves while a micro-batch is still computing (the coordinator ended the job, or is gone): skips
    /// the exit handlers, because OpenBLAS's would free the buffers the compute thread is writing into
    /// (a SIGSEGV at the end of a cancelled Slurm job). Nothing is lost: the unit's result is no longer wanted.
    static func exitNow(_ code: Int32) -> Never {
        fflush(nil)
        _exit(code)
    }
}

func say(_ line: String) {
    FileHandle.standardError.write(Data("worker: \(line)\n".utf8))
}

/// A worker the coordinator started (the local launcher) dies with it, even when the coordinator is
/// SIGKILLed: the coordinator holds the write end of this process's stdin, the kernel closes it when the
/// coordinator dies however it dies, and the read side sees end-of-file. (The same guarantee as Linux's
/// PR_SET_PDEATHSIG, which Swift cannot call: prctl is variadic; this also works on macOS.)
enum ParentWatch {
    nonisolated(unsafe) private static var source: DispatchSourceRead?

    static func start() {
        let s = DispatchSource.makeReadSource(fileDescriptor: STDIN_FILENO, queue: .global())
        s.setEventHandler {
            var byte: UInt8 = 0
            if read(STDIN_FILENO, &byte, 1) <= 0 {
                say("the coordinator that started this worker is gone; exiting")
                WorkerCommand.exitNow(1)
            }
        }
        s.resume()
        source = s
    }
}
