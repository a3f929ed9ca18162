import ArgumentParser
import Cluster
import Foundation
import Model
import Shard
import Training
import Transport

/// One `coordinator train`: the step loop around an executor that computes micro-batches.
final class TrainingRun {
    let job: JobConfig
    /// The job resolved against its files; the coordinator loads the frozen weights only to compute
    /// itself (`inprocess`): its workers evaluate too.
    let setup: JobSetup
    private var engineLoaded: TrainingEngine?
    let sampler: Sampler
    let state: TrainState
    let totalSteps: Int
    let log: FileHandle
    /// `CHECKPOINT_DIR/tb`'s event file of this run (`logging.tensorboard`): every train.jsonl line as
    /// scalars.
    let tensorboard: TensorBoardLog?
    var timings = StepTimings()
    /// The step of the newest checkpoint this run wrote or resumed from.
    var savedStep: Int?
    /// Steps skipped in a row because their combined gradient was not finite (as mixed-precision
    /// training skips them); the job stops at ``maxConsecutiveSkips``.
    var consecutiveSkips = 0
    static let maxConsecutiveSkips = 3
    /// `data.eval`, checked against the backbones when the run starts, and its units (of
    /// `data.micro_batch` rows: the same wherever they are scored).
    let evalSet: DatasetFile?
    let evalUnits: [[Int]]
    /// With `checkpoint.keep_best`: the figure of the checkpoint `best` names (nil before the first).
    var bestValue: Double?
    /// Seconds this run spent evaluating (left out of the training rate).
    var evalSeconds = 0.0

    /// Takes `dir` for this run: an exclusive lock (`CheckpointDirectory.lock`), held while the returned
    /// object lives, so a second coordinator on the same checkpoint.dir is refused with the holder's pid
    /// and host. Then, unless resuming: a run without --resume must not silently overwrite (and then
    /// rotate away) an earlier run's checkpoints, which is what forgetting --resume after a crash would
    /// do: refuse, or with `fresh` remove exactly the earlier run's checkpoints, latest, train.jsonl and
    /// worker logs, never anything else the directory holds.
    static func claim(_ dir: String, fresh: Bool, resuming: Bool) throws -> CheckpointDirectory {
        let directory = CheckpointDirectory(path: dir)
        try directory.lock()
        if resuming { return directory }
        if fresh {
            let removal = try directory.removeEarlierRun()
            if !removal.removed.isEmpty {
                Console.say("train: --fresh: removed \(removal.checkpoints) checkpoint(s) and the log of the earlier run in \(dir)")
            }
            if !removal.leftAlone.isEmpty {
                Console.say("train: --fresh: left alone (not the run's checkpoint files): "
                    + removal.leftAlone.map(\.description).joined(separator: ", "))
            }
            return directory
        }
        let earlier = try directory.earlierRun()
        if earlier.exists {
            let what = earlier.checkpoints.last.map { "checkpoints of an earlier run (newest: \($0))" }
                ?? "the latest file of an earlier run"
            throw UserError("\(dir) already holds \(what). "
                + "Continue it with --resume latest, or start over with --fresh (which removes its checkpoints, latest, "
                + "train.jsonl, worker logs and tb/ event files, nothing else), or set checkpoint.dir to a new directory")
        }
        return directory
    }

    init(job: JobConfig, resume: String?) throws {
        self.job = job
        let start = Date()
        setup = try JobSetup(job: job, loading: job.cluster.launcher == .inprocess)
        sampler = try Sampler(count: setup.train.count, globalBatch: job.data.globalBatch,
                              microBatch: job.data.microBatch, seed: UInt64(job.data.seed),
                              groupingByLength: job.data.groupByLength ? setup.train.rowLengths : nil)
        guard sampler.stepsPerEpoch > 0 else {
            throw UserError("data.global_batch (\(job.data.globalBatch)) is larger than the training set (\(setup.train.count) samples)")
        }
        totalSteps = job.optim.totalSteps(stepsPerEpoch: sampler.stepsPerEpoch)
        let evalSet = try job.data.eval.map { [setup] in try setup.open($0.path) }
        self.evalSet = evalSet
        evalUnits = evalSet.map { EvalReport.units(rows: $0.count, size: job.data.microBatch) } ?? []
        if job.checkpoint.keepBest == .accuracy, let e = evalSet, e.task != .multipleChoice {
            throw UserError("checkpoint.keep_best: accuracy needs multiple-choice data.eval; \(e.path) is \(e.task.rawValue) data: "
                + "use keep_best: loss")
        }
        if let resume {
            let checkpoint: Checkpoint
            // The job's shapes are checked against the file's before any tensor is allocated.
            let shapes = setup.fuser.parameterShapes
            if resume == "latest" {
                guard let c = try Checkpoint.readLatest(dir: job.checkpoint.dir.path, expecting: shapes) else {
                    throw UserError("--resume latest: no checkpoint in \(job.checkpoint.dir) (no 'latest' file); start without --resume")
                }
                checkpoint = c
            } else {
                checkpoint = try Checkpoint.read(path: resume, expecting: shapes)
            }
            state = try TrainState(checkpoint: checkpoint, fuser: setup.fuser, backbone: setup.fingerprint)
            savedStep = state.step
            bestValue = Self.recordedBest(dir: job.checkpoint.dir.path, metric: job.checkpoint.keepBest)
            Console.say("train: resumed from \(checkpoint.source ?? resume) at step \(state.step)")
        } else {
            state = TrainState(params: setup.initialParameters())
        }
        try FileManager.default.createDirectory(atPath: job.checkpoint.dir.path, withIntermediateDirectories: true)
        let logPath = job.checkpoint.dir.appending("train.jsonl")
        if !FileManager.default.fileExists(atPath: logPath) { _ = FileManager.default.createFile(atPath: logPath, contents: nil) }
        log = try FileHandle(forWritingTo: URL(fileURLWithPath: logPath))
        log.seekToEndOfFile()
        if job.logging.tensorboard {
            let tb = job.checkpoint.dir.appending(TensorBoardLog.directoryName)
            do {
                tensorboard = try TensorBoardLog(directory: tb)
            } catch {
                throw UserError("cannot create a TensorBoard event file in \(tb); make it writable, or set logging.tensorboard: false",
                                cause: error)
            }
        } else {
            tensorboard = nil
        }
        let count = setup.fuser.parameterShapes.reduce(0) { $0 + $1.shape.reduce(1, *) }
        Console.say("train: \(job.model.fusion), \(count) trainable parameters, \(setup.train.count) samples, "
            + "\(totalSteps) steps of \(job.data.globalBatch) (\(sampler.microBatchesPerStep) micro-batches of \(job.data.microBatch)); "
            + "loaded in \(String(format: "%.1f", Date().timeIntervalSince(start))) s")
    }

    func run() throws {
        do {
            try train()
        } catch let i as Interrupted {
            // Preempted (Slurm's --signal, Ctrl-C): keep what the completed steps earned.
            Console.endProgress()
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
            // The step's records and their sum are released when `trainStep` returns, before a checkpoint is
            // written: the two never hold memory together (`JobPlan` takes the larger for the coordinator).
            try trainStep(on: executor, started: started, firstStep: firstStep)
            if state.step % job.checkpoint.every == 0 || state.step == totalSteps {
                try saveCheckpoint()
            }
            if job.eval.every > 0, state.step % job.eval.every == 0, state.step < totalSteps { try evaluate(on: executor) }
        }
        // The held-out set at the end, on the same workers.
        if evalSet != nil { try evaluate(on: executor) }
        executor.shutdown()
        running = false
        if let summary = timings.summary { Console.say("train: \(summary)") }
        // Beside `coordinator plan`'s figure for this process (bench scale compares the two).
        if let peak = ProcessMemory.peakResidentBytes() {
            Console.say(String(format: "train: this process's peak RSS %.0f MB", Double(peak) / 1e6))
        }
        let elapsed = Date().timeIntervalSince(started) - evalSeconds
        Console.progress(String(format: "trained %d steps in %@ (%.0f samples/s)", state.step - firstStep,
                                formatDuration(elapsed), Double((state.step - firstStep) * job.data.globalBatch) / max(elapsed, 1e-9)),
                         final: true)
    }

    /// One optimizer step: the micro-batches' gradients from the executor, their exact sum, AdamW, the
    /// train.jsonl line and the progress line.
    private func trainStep(on executor: StepExecutor, started: Date, firstStep: Int) throws {
        let step = state.step
        let stepStart = Date()
        let ids = sampler.microBatches(globalStep: step)
        let records = try executor.gradients(
            step: step, epoch: ids[0].epoch, microBatches: try ids.map { try sampler.indices($0) }, params: state.params)
        let exchanged = Date()
        let combined = try ExactSum.combine(records)
        let finite = combined.isFinite
        let report: StepReport? = finite ? try state.apply(combined, optim: job.optim, totalSteps: totalSteps) : nil
        let loss = report?.loss ?? state.skip(combined)
        consecutiveSkips = finite ? 0 : consecutiveSkips + 1
        if !finite {
            Console.say("train: step \(step + 1): the combined gradient is not finite; the step is skipped (parameters unchanged)")
        }
        let now = Date()
        // Where the step went: compute per worker (micro-batch time spread over the workers), the
        // rest of the exchange (messages, scheduling, waiting), and the exact sum + AdamW here.
        let compute = executor.lastComputeSeconds / Double(max(1, min(executor.workersAlive, ids.count)))
        let timing = StepTiming(wall: now.timeIntervalSince(stepStart), compute: compute,
                                exchange: max(0, exchanged.timeIntervalSince(stepStart) - compute),
                                combine: now.timeIntervalSince(exchanged))
        if step - firstStep >= 10 { timings.add(timing) }
        let done = state.step - firstStep
        let training = max(now.timeIntervalSince(started) - evalSeconds, 1e-9)
        let rate = Double(done * job.data.globalBatch) / training
        let eta = Double(totalSteps - state.step) * training / Double(done)
        let lr = learningRate(step: step, base: job.optim.lr, warmup: job.optim.warmupSteps, total: totalSteps)
        var line: [String: Any] = ["step": step, "epoch": ids[0].epoch, "loss": Double(loss), "lr": lr,
                                   "labels": Int(combined.labelCount), "step_s": timing.wall, "compute_s": timing.compute,
                                   "exchange_s": timing.exchange, "combine_s": timing.combine, "samples_per_s": rate,
                                   "workers": executor.workersAlive]
        if let report { line["grad_norm"] = report.gradNorm }
        if !finite {
            line["skipped"] = true
            line["loss"] = nil   // JSON has no NaN
        }
        writeLog(line)
        guard consecutiveSkips < Self.maxConsecutiveSkips else {
            throw UserError("\(consecutiveSkips) steps in a row (the last is step \(step + 1)) had non-finite gradients: the "
                + "training diverged. Lower optim.lr or set optim.max_grad_norm, check the data, and continue from "
                + "an earlier checkpoint with --resume PATH")
        }
        Console.progress(String(format: "step %d/%d  loss %.4f  lr %.2e  grad norm %.3g%@  %.0f samples/s  %@  ETA %@",
                                state.step, totalSteps, loss, lr, report?.gradNorm ?? .nan,
                                (report?.clipCoefficient ?? 1) < 1 ? " (clipped)" : "", rate, executor.status, formatDuration(eta)))
    }

    /// Scores `data.eval` at the current parameters where the steps are computed, logs the report (a
    /// train.jsonl line with `"eval"`), and with `checkpoint.keep_best` points `best` at this step's
    /// checkpoint (written now if the step had none) when it beats the one `best` names.
    func evaluate(on executor: StepExecutor) throws {
        guard let evalSet else { return }
        let start = Date()
        let results = try executor.evaluate(after: state.step, dataset: evalSet, units: evalUnits, params: state.params,
                                            maxNewTokens: 0, eos: nil) { done in
            Console.progress("eval after step \(state.step): \(done)/\(evalSet.count)")
        }
        let report = try EvalReport(dataset: evalSet, units: evalUnits, results: results)
        evalSeconds += Date().timeIntervalSince(start)
        var line: [String: Any] = ["eval": evalSet.path, "step": state.step, "loss": report.loss, "samples": report.samples,
                                   "eval_s": Date().timeIntervalSince(start)]
        if let o = report.overall {
            line["accuracy"] = o.accuracy
            if !report.categories.isEmpty { line["categories"] = report.categories.mapValues(\.accuracy) }
        }
        let metric = job.checkpoint.keepBest
        var best = ""
        if let value = report.value(metric), metric.improves(value, on: bestValue) {
            try saveCheckpoint()
            try Checkpoint.markBest(Checkpoint.fileName(step: state.step), in: job.checkpoint.dir.path, keep: job.checkpoint.keep)
            bestValue = value
            line["best"] = true
            best = " (best \(metric.rawValue) so far: \(job.checkpoint.dir)/\(Checkpoint.bestName) names step \(state.step))"
        }
        writeLog(line)
        Console.endProgress()
        Console.say("eval after step \(state.step): " + report.summary + best)
    }

    /// The figure of the checkpoint `best` names, from its train.jsonl eval line; nil without one (the
    /// next evaluation then becomes the best).
    static func recordedBest(dir: String, metric: BestMetric) -> Double? {
        guard metric != .none, let name = try? Checkpoint.pointer(Checkpoint.bestName, in: dir),
              let step = Checkpoint.step(ofFileName: name),
              let text = try? String(contentsOfFile: (dir as NSString).appendingPathComponent(CheckpointDirectory.logName), encoding: .utf8)
        else { return nil }
        var value: Double?
        for line in text.split(separator: "\n") where line.contains("\"best\"") {
            guard let o = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any],
                  o["eval"] != nil, o["best"] as? Bool == true, o["step"] as? Int == step else { continue }
            value = o[metric.rawValue] as? Double
        }
        return value
    }

    /// Writes a checkpoint of the current step. A write that fails (a full disk, a file-size limit) is
    /// retried once; then the job stops with the error, and the previous checkpoint, which `latest` still
    /// names, is where it continues from.
    func saveCheckpoint() throws {
        guard savedStep != state.step else { return }
        let epoch = sampler.position(globalStep: max(state.step - 1, 0)).epoch
        let checkpoint = state.checkpoint(job: job, backbone: setup.fingerprint, epoch: epoch)
        var path: String
        do {
            path = try checkpoint.write(to: job.checkpoint.dir.path, keep: job.checkpoint.keep)
        } catch {
            Console.say("train: writing the checkpoint of step \(state.step) failed (\(error)); trying once more")
            do {
                path = try checkpoint.write(to: job.checkpoint.dir.path, keep: job.checkpoint.keep)
            } catch {
                let previous = savedStep.map { "step \($0), which 'latest' still names" } ?? "none yet"
                throw UserError("cannot write the checkpoint of step \(state.step) into \(job.checkpoint.dir): the job stops "
                    + "so that no more work is lost. The previous checkpoint is kept (\(previous)); free space (or raise the "
                    + "file-size limit) and continue with --resume latest", cause: error)
            }
        }
        savedStep = state.step
        if !Console.isTerminal { Console.say("train: checkpoint \(path)") }
    }

    /// Appends a line to train.jsonl, and its figures to the TensorBoard log.
    func writeLog(_ fields: [String: Any]) {
        guard let data = try? JSONSerialization.data(withJSONObject: fields, options: [.sortedKeys, .withoutEscapingSlashes]) else { return }
        log.write(data + Data("\n".utf8))
        if let tensorboard, tensorboard.failure == nil, let points = TensorBoardLog.points(fromLogLine: fields) {
            tensorboard.write(step: points.step, points.scalars)
            if let error = tensorboard.failure {
                Console.say("train: cannot write \(tensorboard.path) (\(error)); TensorBoard logging stops, train.jsonl goes on")
            }
        }
    }

    /// The frozen models, loaded the first time this process computes.
    func engine() throws -> TrainingEngine {
        if let engineLoaded { return engineLoaded }
        let e = try TrainingEngine(setup: setup)
        engineLoaded = e
        return e
    }

    func makeExecutor() throws -> StepExecutor {
        switch job.cluster.launcher {
        case .inprocess: return InProcessExecutor(engine: try engine())
        case .local, .manual, .slurm:
            return try DistributedExecutor(job: job, fingerprint: setup.fingerprint, step: state.step, params: state.params,
                                           maxLabelsPerSample: max(setup.train.tokens, evalSet?.tokens ?? 0),
                                           vocabularySize: setup.language.vocabSize)
        }
    }
}

/// A signal asked the job to stop between steps.
struct Interrupted: Error { var signal: Int32 }
