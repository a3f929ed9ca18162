import ArgumentParser
import Cluster
import Foundation
import Model
import Shard

struct Train: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Train a job: shard the dataset into micro-batches, combine their gradients exactly, apply AdamW.",
        discussion: """
            cluster.launcher picks where micro-batches are computed:
              inprocess  in this process (one machine, no network)
              local      cluster.workers `worker` processes started here, over ZeroMQ
              manual     workers that join with `worker --join tcp://HOST:PORT`
              slurm      workers started by srun (see clusters/slurm/train.sbatch)
            Progress goes to stderr; one JSON line per step is appended to CHECKPOINT_DIR/train.jsonl.
            Checkpoints are written every checkpoint.every steps and at the end; --resume continues a job.
            A checkpoint.dir that already holds checkpoints is refused without --resume or --fresh.
            """)

    @OptionGroup var job: JobOptions

    @Option(help: ArgumentHelp("Continue from a checkpoint: 'latest' (in checkpoint.dir) or a file.", valueName: "latest|PATH"))
    var resume: String?

    @Flag(help: "Start over in a checkpoint.dir that holds an earlier run: remove its checkpoints and train.jsonl first.")
    var fresh = false

    func validate() throws {
        if fresh && resume != nil { throw ValidationError("--fresh starts over and --resume continues: give one of them") }
    }

    func run() throws {
        Interruption.install()
        let config = try job.load()
        if resume == nil { try TrainingRun.claim(config.checkpoint.dir, fresh: fresh) }
        try TrainingRun(job: config, resume: resume).run()
    }
}

/// One `coordinator train`: the step loop around an executor that computes micro-batches.
final class TrainingRun {
    let job: JobConfig
    let engine: TrainingEngine
    let sampler: Sampler
    let state: TrainState
    let totalSteps: Int
    let log: FileHandle
    var timings = StepTimings()
    /// The step of the newest checkpoint this run wrote or resumed from.
    var savedStep: Int?

    /// A run without --resume must not silently overwrite (and then rotate away) an earlier run's
    /// checkpoints, which is what forgetting --resume after a crash would do: refuse, or with `fresh`
    /// remove the earlier run's checkpoints and log.
    static func claim(_ dir: String, fresh: Bool) throws {
        let fm = FileManager.default
        let names = ((try? fm.contentsOfDirectory(atPath: dir)) ?? []).filter {
            ($0.hasPrefix("step-") && $0.hasSuffix(".h5")) || $0 == "latest" || $0 == "train.jsonl"
        }
        let checkpoints = names.filter { $0.hasPrefix("step-") }.sorted()
        guard !checkpoints.isEmpty else { return }
        guard fresh else {
            throw UserError("\(dir) already holds checkpoints of an earlier run (newest: \(checkpoints.last!)). "
                + "Continue it with --resume latest, or start over with --fresh (which removes them and its train.jsonl), "
                + "or set checkpoint.dir to a new directory")
        }
        for name in names { try fm.removeItem(atPath: (dir as NSString).appendingPathComponent(name)) }
        Console.say("train: --fresh: removed \(checkpoints.count) checkpoint(s) and the log of the earlier run in \(dir)")
    }

    init(job: JobConfig, resume: String?) throws {
        self.job = job
        let start = Date()
        engine = try TrainingEngine(job: job)
        sampler = try Sampler(count: engine.train.count, globalBatch: job.data.globalBatch,
                              microBatch: job.data.microBatch, seed: UInt64(job.data.seed))
        guard sampler.stepsPerEpoch > 0 else {
            throw UserError("data.global_batch (\(job.data.globalBatch)) is larger than the training set (\(engine.train.count) samples)")
        }
        totalSteps = TrainState.totalSteps(job.optim, stepsPerEpoch: sampler.stepsPerEpoch)
        if let resume {
            let checkpoint: Checkpoint
            if resume == "latest" {
                guard let c = try Checkpoint.readLatest(dir: job.checkpoint.dir) else {
                    throw UserError("--resume latest: no checkpoint in \(job.checkpoint.dir) (no 'latest' file); start without --resume")
                }
                checkpoint = c
            } else {
                checkpoint = try Checkpoint.read(path: resume)
            }
            state = try TrainState(checkpoint: checkpoint, fuser: engine.fuser, backbone: engine.backbone)
            savedStep = state.step
            Console.say("train: resumed from \(checkpoint.source ?? resume) at step \(state.step)")
        } else {
            state = TrainState(params: engine.initialParameters())
        }
        try FileManager.default.createDirectory(atPath: job.checkpoint.dir, withIntermediateDirectories: true)
        let logPath = (job.checkpoint.dir as NSString).appendingPathComponent("train.jsonl")
        if !FileManager.default.fileExists(atPath: logPath) { _ = FileManager.default.createFile(atPath: logPath, contents: nil) }
        log = try FileHandle(forWritingTo: URL(fileURLWithPath: logPath))
        log.seekToEndOfFile()
        let count = engine.fuser.parameterShapes.reduce(0) { $0 + $1.shape.reduce(1, *) }
        Console.say("train: \(job.model.fusion), \(count) trainable parameters, \(engine.train.count) samples, "
            + "\(totalSteps) steps of \(job.data.globalBatch) (\(sampler.microBatchesPerStep) micro-batches of \(job.data.microBatch)); "
            + "loaded in \(String(format: "%.1f", Date().timeIntervalSince(start))) s")
    }

    func run() throws {
        do {
            try train()
        } catch let i as Interrupted {
            // Preempted (Slurm's --signal, Ctrl-C): keep what the completed steps earned.
            Console.progress("", final: true)
            if state.step > 0 { try saveCheckpoint() }
            Console.say("train: stopped by signal \(i.signal) after step \(state.step); continue with --resume latest")
            throw ExitCode(128 + i.signal)
        }
    }

    private func train() throws {
        let executor: StepExecutor = try makeExecutor()
        var running = true
        defer { if running { executor.shutdown() } }
        let started = Date(), firstStep = state.step
        while state.step < totalSteps {
            if let sig = Interruption.signal { throw Interrupted(signal: sig) }
            let step = state.step
            let stepStart = Date()
            let ids = sampler.microBatches(globalStep: step)
            let contributions = try executor.contributions(
                step: step, epoch: ids[0].epoch, microBatches: try ids.map { try sampler.indices($0) }, params: state.params)
            let exchanged = Date()
            let combined = try ExactSum.combine(contributions)
            let loss = try state.apply(combined, optim: job.optim, totalSteps: totalSteps)
            let now = Date()
            // Where the step went: compute per worker (micro-batch time spread over the workers), the
            // rest of the exchange (messages, scheduling, waiting), and the exact sum + AdamW here.
            let compute = executor.lastComputeSeconds / Double(max(1, min(executor.workersAlive, ids.count)))
            let timing = StepTiming(wall: now.timeIntervalSince(stepStart), compute: compute,
                                    exchange: max(0, exchanged.timeIntervalSince(stepStart) - compute),
                                    combine: now.timeIntervalSince(exchanged))
            if step - firstStep >= 10 { timings.add(timing) }
            let done = state.step - firstStep
            let rate = Double(done * job.data.globalBatch) / now.timeIntervalSince(started)
            let eta = Double(totalSteps - state.step) * now.timeIntervalSince(started) / Double(done)
            let lr = learningRate(step: step, base: job.optim.lr, warmup: job.optim.warmupSteps, total: totalSteps)
            writeLog(["step": step, "epoch": ids[0].epoch, "loss": Double(loss), "lr": lr, "labels": Int(combined.labelCount),
                      "step_s": timing.wall, "compute_s": timing.compute, "exchange_s": timing.exchange,
                      "combine_s": timing.combine, "samples_per_s": rate, "workers": executor.workersAlive])
            Console.progress(String(format: "step %d/%d  loss %.4f  lr %.2e  %.0f samples/s  %@  ETA %@", state.step, totalSteps,
                                    loss, lr, rate, executor.status, formatDuration(eta)))
            if state.step % job.checkpoint.every == 0 || state.step == totalSteps {
                try saveCheckpoint()
            }
        }
        executor.shutdown()
        running = false
        if let summary = timings.summary { Console.say("train: \(summary)") }
        let elapsed = Date().timeIntervalSince(started)
        Console.progress(String(format: "trained %d steps in %@ (%.0f samples/s)", state.step - firstStep,
                                formatDuration(elapsed), Double((state.step - firstStep) * job.data.globalBatch) / max(elapsed, 1e-9)),
                         final: true)
        if let evalPath = job.data.eval {
            let report = try engine.evaluate(try engine.open(evalPath), params: state.params, batchSize: job.data.globalBatch)
            writeLog(["eval": evalPath, "step": state.step, "accuracy": report.overall?.accuracy ?? .nan, "loss": report.loss])
            Console.say(EvalPrinter.describe(report))
        }
    }

    func saveCheckpoint() throws {
        guard savedStep != state.step else { return }
        defer { savedStep = state.step }
        let epoch = sampler.position(globalStep: max(state.step - 1, 0)).epoch
        let path = try state.checkpoint(job: job, backbone: engine.backbone, epoch: epoch)
            .write(to: job.checkpoint.dir, keep: job.checkpoint.keep)
        if !Console.isTerminal { Console.say("train: checkpoint \(path)") }
    }

    func writeLog(_ fields: [String: Any]) {
        guard let data = try? JSONSerialization.data(withJSONObject: fields, options: [.sortedKeys]) else { return }
        log.write(data + Data("\n".utf8))
    }

    func makeExecutor() throws -> StepExecutor {
        switch job.cluster.launcher {
        case "inprocess": return InProcessExecutor(engine: engine)
        default: return try DistributedExecutor(job: job, backbone: engine.backbone, step: state.step, params: state.params)
        }
    }
}

/// Computes the micro-batch contributions of one step, wherever that happens.
protocol StepExecutor: AnyObject {
    func contributions(step: Int, epoch: Int, microBatches: [[Int]], params: ParameterSet) throws -> [GradientContribution]
    var workersAlive: Int { get }
    /// Seconds spent computing the last step's micro-batches, summed over them.
    var lastComputeSeconds: Double { get }
    /// A short status for the progress line.
    var status: String { get }
    func shutdown()
}

/// `launcher: inprocess`: every micro-batch here, in order.
final class InProcessExecutor: StepExecutor {
    let engine: TrainingEngine
    init(engine: TrainingEngine) { self.engine = engine }
    private(set) var lastComputeSeconds = 0.0
    func contributions(step: Int, epoch: Int, microBatches: [[Int]], params: ParameterSet) throws -> [GradientContribution] {
        let start = Date()
        defer { lastComputeSeconds = Date().timeIntervalSince(start) }
        return try microBatches.map { try engine.gradients(indices: $0, params: params, step: step, dropout: true).contribution }
    }
    var workersAlive: Int { 1 }
    var status: String { "in-process" }
    func shutdown() {}
}

extension JobOptions {
    func load() throws -> JobConfig {
        try JobConfig.load(file: config, overrides: try overrides.map { try ConfigOverride(parsing: $0) })
    }
}

/// A signal asked the job to stop between steps.
struct Interrupted: Error { var signal: Int32 }

/// One step's time, split.
struct StepTiming {
    var wall, compute, exchange, combine: Double
}

/// Mean step timings after warm-up, for the end-of-run line.
struct StepTimings {
    private var sum = StepTiming(wall: 0, compute: 0, exchange: 0, combine: 0)
    private var count = 0

    mutating func add(_ t: StepTiming) {
        sum.wall += t.wall; sum.compute += t.compute; sum.exchange += t.exchange; sum.combine += t.combine
        count += 1
    }

    var summary: String? {
        guard count > 0 else { return nil }
        let n = Double(count), w = sum.wall / n
        func part(_ x: Double) -> String { String(format: "%.1f ms (%.0f%%)", 1000 * x / n, 100 * x / n / w) }
        return String(format: "mean step %.1f ms over %d steps: compute per worker ", 1000 * w, count) + part(sum.compute)
            + ", exchange " + part(sum.exchange) + ", exact sum + AdamW " + part(sum.combine)
    }
}
