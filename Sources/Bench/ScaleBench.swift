import Cluster
import Foundation
import Model
import Shard
import Training

/// `bench scale`: a 1B-scale job on this machine, trained for real with local workers and compared with
/// what `coordinator plan` predicted for it.
///
/// 1. Writes random backbones in the real shapes into `--scratch`: TinyLlama-1.1B (LlamaForCausalLM,
///    d 2048, 22 layers, 32 heads / 4 KV heads, FFN 5632, vocab 32000) as BF16 in two shards with
///    `model.safetensors.index.json`, and CLIP ViT-L/14-336 as a full `CLIPModel` directory in F16
///    (vision tower 24 x 1024, 577 tokens; the real text tower, 12 x 768, and the projections beside it,
///    which the loader ignores). Tensors are streamed to disk a chunk at a time, their values read from
///    one repeated block of normals (`RepeatedNormals`) times transformers' init std, so the forward
///    stays finite and writing takes seconds.
/// 2. Writes a caption-task dataset: `--rows` rows of lengths uniform in [32, 256], 336x336 random
///    images, loss on the last quarter of each row.
/// 3. Checks the node's available memory against the plan (`JobPlan`, the code `coordinator plan` runs)
///    and stops with a message if the job would not fit; runs `coordinator plan` itself for the record;
///    then `coordinator train` with `cluster.launcher: local`, `--workers` workers of compute.threads 1,
///    `DEHVF_CACHE_DIR` in the scratch directory (so the BF16/F16 -> F32 node cache is written by the
///    workers and mapped by both). While it runs, the peak RSS of each worker is read from the kernel
///    (VmHWM; the coordinator's is the VmHWM it reports as it exits, its peak being its final checkpoint
///    write), their PSS sampled from /proc/PID/smaps_rollup every 0.5 s (the backbone
///    mappings from /proc/PID/smaps every 4 s) once every worker has joined (before that, the first to
///    touch a backbone page pays for all of it) and the peaks kept, with the workers' CPU seconds.
/// 4. Reports the peaks against the plan's prediction, the conversion and load times, seconds per sample
///    and the fraction of the sgemm ceiling (one OpenBLAS thread, measured before and after the run) the
///    run reached three ways (wall clock over all workers, the workers' compute seconds, their CPU
///    seconds: the last leaves out the share of the cores other processes took), counting every FLOP of
///    the micro-batches it actually ran (each at its longest row, backed-up copies for the CPU figure) and
///    of the ViT pass over each new image; then plans LLaMA-2-7B (F16, two sparse
///    shards: headers over holes, no disk used) with the same ViT and data and projects it by the same
///    arithmetic.
/// Everything is removed afterwards unless `--keep`.
struct ScaleBench {
    var scratch: URL
    var workers = 2
    var steps = 2
    var globalBatch = 4
    var microBatch = 2
    var rows = 16
    var keep = false
    var project7B = true

    static let config = "tinyllama-1.1b+vitl14-336"
    static let language = LlamaConfig(hiddenSize: 2048, intermediateSize: 5632, numHiddenLayers: 22, numAttentionHeads: 32,
                                      numKeyValueHeads: 4, vocabSize: 32000, rmsNormEps: 1e-5, ropeTheta: 10000,
                                      maxPositionEmbeddings: 2048)
    static let language7B = LlamaConfig(hiddenSize: 4096, intermediateSize: 11008, numHiddenLayers: 32, numAttentionHeads: 32,
                                        vocabSize: 32000, rmsNormEps: 1e-5, ropeTheta: 10000, maxPositionEmbeddings: 4096)
    static let vision = CLIPVisionConfig(hiddenSize: 1024, intermediateSize: 4096, numHiddenLayers: 24, numAttentionHeads: 16,
                                         imageSize: 336, patchSize: 14)
    static let projectionDim = 768
    static let lengthRange: ClosedRange<Int> = 32...256

    typealias Failure = LocalCommBench.Failure

    func run(into report: Report) throws {
        let coordinator = try LocalCommBench.product("coordinator")
        _ = try LocalCommBench.product("worker")
        let fm = FileManager.default
        if fm.fileExists(atPath: scratch.path) {
            throw Failure("\(scratch.path) exists: remove it or pass another --scratch (bench scale removes it when done)")
        }
        try fm.createDirectory(at: scratch, withIntermediateDirectories: true)
        defer {
            if keep { print("   kept \(scratch.path)") } else { try? fm.removeItem(at: scratch) }
        }
        let load = { Self.loadAverage() }
        report.section("scale: \(Self.config), dehvf, \(workers) local workers (compute.threads 1 each), \(steps) steps of "
            + "\(globalBatch) in micro-batches of \(microBatch); load average at start \(load())")

        // 1. Backbones.
        let visionLayout = RandomBackbone.clipModelLayout(vision: Self.vision, text: .vitL14, projectionDim: Self.projectionDim)
        let languageLayout = RandomBackbone.llamaLayout(Self.language)
        let storedBytes = 2 * (visionLayout.reduce(0) { $0 + $1.layout.count } + languageLayout.reduce(0) { $0 + $1.layout.count })
        try Self.requireDisk(scratch, bytes: storedBytes * 3 + (1 << 30), what: "the half-precision backbones and their F32 copies")
        let visionDir = scratch.appendingPathComponent("clip-vit-large-patch14-336")
        let languageDir = scratch.appendingPathComponent("tinyllama-1.1b")
        try fm.createDirectory(at: visionDir, withIntermediateDirectories: true)
        try fm.createDirectory(at: languageDir, withIntermediateDirectories: true)
        let started = now()
        try RandomBackbone.writeDirectory(visionDir, config: RandomBackbone.clipModelConfig(
            vision: Self.vision, text: .vitL14, projectionDim: Self.projectionDim, dtype: "float16"),
            layout: visionLayout, as: .f16, shards: 1, seed: 1)
        try RandomBackbone.writeDirectory(languageDir, config: RandomBackbone.llamaConfig(Self.language, dtype: "bfloat16"),
                                          layout: languageLayout, as: .bf16, shards: 2, seed: 2)
        let writeSeconds = now() - started
        report.add("scale", config: Self.config, mode: "", name: "backbones written (F16 + BF16)", unit: "GB",
                   Samples([Double(storedBytes) / 1e9]))
        report.add("scale", config: Self.config, mode: "", name: "backbone write time", unit: "s", Samples([writeSeconds]))

        // 2. Data and job.
        let data = try writeData(scratch.appendingPathComponent("train.h5"))
        let runDir = scratch.appendingPathComponent("run")
        let job = try writeJob(scratch.appendingPathComponent("job.yaml"), vision: visionDir, language: languageDir, runDir: runDir)

        // 3. The plan, and whether the node has room for it.
        let setup = try JobSetup(job: try JobConfig.load(file: job.path), loading: false)
        let plan = try JobPlan(setup: setup, workers: workers)
        guard let coordinatorPlan = plan.processes.first(where: { $0.name == "coordinator" }),
              let workerPlan = plan.processes.first(where: { $0.name == "worker" }) else {
            throw Failure("the plan has no coordinator and worker processes")
        }
        let needed = coordinatorPlan.rss + workerPlan.backboneShared + workers * workerPlan.privateBytes
        let available = Self.memAvailable()
        report.note(String(format: "plan: node total %.2f GB (backbone %.2f GB mapped once + %d x %.2f GB private + coordinator %.2f GB); "
            + "MemAvailable now %.2f GB", Double(needed) / 1e9, Double(workerPlan.backboneShared) / 1e9, workers,
            Double(workerPlan.privateBytes) / 1e9, Double(coordinatorPlan.rss) / 1e9, Double(available) / 1e9))
        guard Double(available) >= Double(needed) * 1.15 else {
            throw Failure(String(format: "not enough memory for the 1B run: the plan needs %.1f GB on this node (+15%% margin), "
                + "and /proc/meminfo says %.1f GB is available. Wait for other jobs to finish, or run with fewer --workers.",
                Double(needed) / 1e9, Double(available) / 1e9))
        }
        let planLog = scratch.appendingPathComponent("plan.log")
        try LocalCommBench.launch(coordinator, ["plan", "--config", job.path, "--workers", "\(workers)"], log: planLog,
                                  timeout: 600, environment: ["OPENBLAS_VERBOSE": "2"])
        let planText = (try? String(contentsOf: planLog, encoding: .utf8)) ?? ""
        for line in planText.split(separator: "\n") { report.note("| " + line) }
        let kernel = planText.split(separator: "\n").first { $0.contains("Core:") }.map { String($0) } ?? "unknown"

        // 4. The run, sampled.
        BLAS.setThreads(1)
        let ceilingBefore = GemmBench.ceiling()
        let loadBefore = load()
        let cache = scratch.appendingPathComponent("f32-cache")
        let log = scratch.appendingPathComponent("coordinator.log")
        var sampler = MemorySampler(workers: workers, runDir: runDir, backboneBytes: workerPlan.backboneShared)
        print("   running coordinator train (\(steps) steps; the workers widen the backbones into \(cache.path) first) ...")
        fflush(stdout)
        let launched = now()
        try LocalCommBench.launch(coordinator, ["train", "--config", job.path], log: log, timeout: 5400,
                                  environment: [F32Cache.environmentVariable: cache.path]) { pid in
            sampler.sample(coordinator: pid, since: launched)
        }
        let runSeconds = now() - launched
        let loadAfter = load()
        let ceilingAfter = GemmBench.ceiling()
        let stepLines = try LocalCommBench.steps(runDir.appendingPathComponent("train.jsonl"), log: log)
        guard stepLines.count == steps else {
            throw Failure("the run logged \(stepLines.count) of \(steps) steps\n" + LocalCommBench.tail(log))
        }
        report.note("load average before the run \(loadBefore), after \(loadAfter); OpenBLAS: \(kernel)")
        // The coordinator backs up a micro-batch still running when a worker goes idle (after 1 s in step 0,
        // which has no earlier step to compare with): that work is done twice and the figures include it.
        let backups = LocalCommBench.backups(log, steps: Set(stepLines.map(\.index)))
        if backups > 0 {
            report.note("note: \(backups) micro-batch\(backups == 1 ? " was" : "es were") backed up on an idle worker (computed twice); "
                + "the coordinator log says which step")
        }

        // Memory: measured peaks against the plan.
        let name = Self.config
        func mb(_ bytes: Int) -> Double { Double(bytes) / 1e6 }
        func add(_ what: String, _ unit: String, _ v: Double) { report.add("scale", config: name, mode: "", name: what, unit: unit, Samples([v])) }
        add("plan: coordinator RSS", "MB", mb(coordinatorPlan.rss))
        add("plan: worker RSS", "MB", mb(workerPlan.rss))
        add("plan: worker PSS (\(workers) workers)", "MB", mb(workerPlan.backboneShared / workers + workerPlan.privateBytes))
        add("plan: worker backbone mapping RSS", "MB", mb(workerPlan.backboneShared))
        add("plan: worker private", "MB", mb(workerPlan.privateBytes))
        let mib = 1_048_576.0 / 1e6   // smaps reports KiB; WorkerMemory gives MiB: compare in MB
        // Peak RSS is the kernel's high-water mark (VmHWM) where it was read, else the sampled peak; PSS
        // has no high-water mark, so it is the sampled peak.
        func peakRSS(_ pid: pid_t, _ sampled: WorkerMemory) -> Double { max(sampler.hwm[pid] ?? 0, sampled.rss) }
        // The coordinator's peak is its last act, the final checkpoint write, a fraction of a second before it
        // exits: a VmHWM read from outside can come too early, so its own report of VmHWM at the end is used.
        let reported = Self.reportedPeak(in: (try? String(contentsOf: log, encoding: .utf8)) ?? "")
        if let pid = sampler.coordinatorPID, let c = sampler.peaks[pid] {
            let peak = reported ?? peakRSS(pid, c) * mib
            if reported == nil { report.note("warning: the coordinator did not report its peak RSS; VmHWM as last read is used") }
            add("measured: coordinator peak RSS (VmHWM)", "MB", peak)
            add("measured: coordinator peak RSS (sampled)", "MB", c.rss * mib)
            add("measured: coordinator peak PSS (sampled)", "MB", c.pss * mib)
            add("coordinator RSS measured/plan", "ratio", peak / mb(coordinatorPlan.rss))
            if abs(peak / mb(coordinatorPlan.rss) - 1) > 0.15 {
                report.note(String(format: "warning: the coordinator's peak RSS is %.0f%% of the plan's (outside 15%%)",
                                   100 * peak / mb(coordinatorPlan.rss)))
            }
        }
        let workerPeaks = sampler.workerPIDs.compactMap { pid in
            sampler.peaks[pid].map { m -> WorkerMemory in var m = m; m.rss = peakRSS(pid, m); return m }
        }
        if workerPeaks.isEmpty { report.note("warning: no worker memory was sampled") }
        for (i, w) in workerPeaks.enumerated() {
            add("measured: worker \(i) peak RSS (VmHWM)", "MB", w.rss * mib)
            add("measured: worker \(i) peak PSS", "MB", w.pss * mib)
            add("measured: worker \(i) backbone mapping peak RSS", "MB", w.backboneRSS * mib)
            add("measured: worker \(i) backbone mapping peak PSS", "MB", w.backbonePSS * mib)
            if let pid = sampler.workerPIDs.dropFirst(i).first, let shared = sampler.allResident[pid] {
                // The share once every worker has touched every page: the peak above can catch one worker
                // that has read pages (the ViT's, on its first image) the other has not yet.
                add("measured: worker \(i) backbone mapping PSS, all of it resident in every worker", "MB", shared * mib)
                add("worker \(i) backbone PSS / its F32 size, all resident", "ratio", shared * mib / mb(workerPlan.backboneShared))
            }
            add("measured: worker \(i) private (peak RSS - backbone RSS)", "MB", (w.rss - w.backboneRSS) * mib)
            add("worker \(i) RSS measured/plan", "ratio", w.rss * mib / mb(workerPlan.rss))
            add("worker \(i) PSS measured/plan", "ratio",
                w.pss * mib / mb(workerPlan.backboneShared / workers + workerPlan.privateBytes))
        }
        for (i, w) in workerPeaks.enumerated() where abs(w.rss * mib / mb(workerPlan.rss) - 1) > 0.15 {
            report.note(String(format: "warning: worker %d's peak RSS is %.0f%% of the plan's (outside 15%%)", i,
                               100 * w.rss * mib / mb(workerPlan.rss)))
        }

        // Load and conversion.
        let logs = ([log] + (0..<workers).map { runDir.appendingPathComponent("worker-\($0).log") })
            .map { (try? String(contentsOf: $0, encoding: .utf8)) ?? "" }.joined(separator: "\n")
        for line in logs.split(separator: "\n") where line.contains("widened to F32 once") || line.contains("waiting for another") {
            report.note(String(line))
        }
        let conversions = Self.numbers(after: "widened to F32 once for this node in ", in: logs)
        add("F32 conversion, sum over files", "s", conversions.reduce(0, +))
        if let coordinatorLoad = Self.numbers(after: "loaded in ", in: logs).first { add("coordinator setup (loaded in)", "s", coordinatorLoad) }
        for (i, t) in sampler.joined.enumerated() { add("worker \(i): launch to joined (backbone loaded)", "s", t ?? .nan) }
        add("launch to first step logged", "s", sampler.firstStep ?? .nan)
        add("whole run (launch to exit)", "s", runSeconds)

        // Time and FLOPs.
        let samples = Double(steps * globalBatch)
        let wall = stepLines.reduce(0) { $0 + $1.step }
        let flops = try Self.flops(setup: setup, lengths: data.lengths, labels: data.labelCounts, steps: steps)
        add("trainable parameters", "count", Double(setup.fuser.parameterCount))
        for s in stepLines { add("step \(s.index): step_s", "s", s.step) }
        // The same bits in every run, whatever the timing (the determinism promise, at 1B); 9 digits name a float32.
        report.note("losses: " + stepLines.map { $0.loss.map { String(format: "%.9g", $0) } ?? "skipped" }.joined(separator: ", "))
        add("seconds per sample (sum step_s / samples)", "s", wall / samples)
        add("GFLOP per sample, training (micro-batches as run)", "GFLOP", flops.training / samples / 1e9)
        add("GFLOP per sample, ViT (every image new)", "GFLOP", flops.vision / samples / 1e9)
        add("plan: GFLOP per sample (features cached)", "GFLOP", plan.flopsPerSample / 1e9)
        add("sgemm ceiling, 1 thread, before", "GFLOP/s", ceilingBefore)
        add("sgemm ceiling, 1 thread, after", "GFLOP/s", ceilingAfter)
        let ceiling = max(ceilingBefore, ceilingAfter)
        let rate = (flops.training + flops.vision) / wall / 1e9
        add("achieved, \(workers) workers (wall)", "GFLOP/s", rate)
        add("fraction of \(workers) x ceiling (wall)", "ratio", rate / (Double(workers) * ceiling))
        // The workers' own compute seconds (train.jsonl's compute_s is their sum over the step's accepted
        // micro-batches spread over the busy workers), and their CPU seconds after joining, which also
        // hold any backed-up copy: the share of the cores the machine gave them drops out of the latter.
        let busy = Double(min(workers, globalBatch / microBatch))
        let computeSeconds = stepLines.reduce(0) { $0 + $1.compute * busy }
        add("worker compute seconds per sample (accepted micro-batches)", "s", computeSeconds / samples)
        add("fraction of 1-thread ceiling per worker (compute seconds)", "ratio",
            (flops.training + flops.vision) / computeSeconds / 1e9 / ceiling)
        let backedUp = try Self.backedUpFlops(log, setup: setup, data: data)
        if let cpu = sampler.workerComputeCPU {
            add("worker CPU seconds after joining, summed", "s", cpu)
            add("GFLOP done per worker CPU second (incl. backed-up copies)", "GFLOP/s", (flops.training + flops.vision + backedUp) / cpu / 1e9)
            add("fraction of 1-thread ceiling per CPU second", "ratio", (flops.training + flops.vision + backedUp) / cpu / 1e9 / ceiling)
        }

        if project7B {
            try projection(coordinator: coordinator, vision: visionDir, data: data, measuredRate: rate, ceiling: ceiling,
                           secondsPerSample1B: wall / samples, flops1B: flops, into: report)
        }
        report.note("load average at the end \(load())")
    }

    // MARK: 7B projection

    func projection(coordinator: String, vision: URL, data: WrittenData, measuredRate: Double, ceiling: Double,
                    secondsPerSample1B: Double, flops1B: (training: Double, vision: Double), into report: Report) throws {
        let dir = scratch.appendingPathComponent("llama-2-7b-sparse")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        try RandomBackbone.writeDirectory(dir, config: RandomBackbone.llamaConfig(Self.language7B, dtype: "float16"),
                                          layout: RandomBackbone.llamaLayout(Self.language7B), as: .f16, shards: 2, seed: nil)
        let job = try writeJob(scratch.appendingPathComponent("job-7b.yaml"), vision: vision, language: dir,
                               runDir: scratch.appendingPathComponent("run-7b"))
        let name = "llama2-7b+vitl14-336"
        report.section("scale: projection to \(name) (coordinator plan on sparse F16 shards, same ViT and data, \(workers) workers)")
        let planLog = scratch.appendingPathComponent("plan-7b.log")
        try LocalCommBench.launch(coordinator, ["plan", "--config", job.path, "--workers", "\(workers)"], log: planLog, timeout: 900)
        for line in ((try? String(contentsOf: planLog, encoding: .utf8)) ?? "").split(separator: "\n") { report.note("| " + line) }
        let setup = try JobSetup(job: try JobConfig.load(file: job.path), loading: false)
        let plan = try JobPlan(setup: setup, workers: workers)
        guard let w = plan.processes.first(where: { $0.name == "worker" }) else { throw Failure("the 7B plan has no worker") }
        let flops = try Self.flops(setup: setup, lengths: data.lengths, labels: data.labelCounts, steps: steps)
        let samples = Double(steps * globalBatch)
        func add(_ what: String, _ unit: String, _ v: Double) { report.add("scale", config: name, mode: "", name: what, unit: unit, Samples([v])) }
        add("plan: worker RSS", "MB", Double(w.rss) / 1e6)
        add("plan: worker backbone (F32, mapped)", "MB", Double(w.backboneShared) / 1e6)
        add("plan: worker private", "MB", Double(w.privateBytes) / 1e6)
        add("plan: node total with \(workers) workers", "MB", Double(w.backboneShared + workers * w.privateBytes) / 1e6)
        add("trainable parameters", "count", Double(setup.fuser.parameterCount))
        add("GFLOP per sample, training (same micro-batches)", "GFLOP", flops.training / samples / 1e9)
        add("GFLOP per sample, ViT", "GFLOP", flops.vision / samples / 1e9)
        // The 1B run's achieved rate, applied to the 7B FLOPs: the same kernels on larger matrices, so if
        // anything an underestimate of the rate (an overestimate of the time).
        add("projected seconds per sample at the 1B run's rate", "s", (flops.training + flops.vision) / samples / (measuredRate * 1e9))
        add("projected seconds per sample, features cached", "s", flops.training / samples / (measuredRate * 1e9))
        add("1B seconds per sample, for scale", "s", secondsPerSample1B)
    }

    // MARK: data and job

    struct WrittenData {
        var lengths: [Int]
        var labelCounts: [Int]
    }

    /// A caption-task dataset of `rows` rows, lengths uniform in `lengthRange`, padded to its upper end;
    /// loss on the last quarter of each row (at least 8 tokens); random 336x336 pixels.
    func writeData(_ url: URL) throws -> WrittenData {
        let t = Self.lengthRange.upperBound, size = Self.vision.imageSize, pixels = 3 * size * size
        var c = DatasetContents(task: .caption, count: rows, tokens: t, imageHeight: size, imageWidth: size)
        var rng = BenchRNG(3)
        var lengths: [Int] = [], labelCounts: [Int] = []
        for i in 0..<rows {
            for p in stride(from: 0, to: pixels, by: 8) {
                let word = rng.next()
                for k in 0..<min(8, pixels - p) { c.images[i * pixels + p + k] = UInt8(truncatingIfNeeded: word >> (8 * k)) }
            }
            c.hasImage[i] = 1
            let n = Self.lengthRange.lowerBound + rng.below(Self.lengthRange.count)
            let answer = max(8, n / 4)
            c.lengths[i] = Int32(n)
            for j in 0..<n {
                let id = Int32(3 + rng.below(Self.language.vocabSize - 3))
                c.inputIDs[i * t + j] = id
                if j >= n - answer { c.labels[i * t + j] = id }
            }
            lengths.append(n)
            labelCounts.append(answer)
        }
        try DatasetWriter.write(c, to: url.path)
        return WrittenData(lengths: lengths, labelCounts: labelCounts)
    }

    func writeJob(_ url: URL, vision: URL, language: URL, runDir: URL) throws -> URL {
        let port = try LocalCommBench.freePort()
        let text = """
            # Written by `bench scale`.
            model:
              vision: \(vision.path)
              language: \(language.path)
              fusion: dehvf
              projector_rank: 128
              visual_tokens: 0
            data:
              train: \(scratch.appendingPathComponent("train.h5").path)
              global_batch: \(globalBatch)
              micro_batch: \(microBatch)
              seed: 0
            optim:
              lr: 1.0e-3
              warmup_steps: 1
              steps: \(steps)
            compute:
              threads: 1
            checkpoint:
              dir: \(runDir.path)
              every: \(steps + 1000)
              keep: 1
            cluster:
              launcher: local
              workers: \(workers)
              bind: tcp://127.0.0.1:\(port)
              heartbeat_ms: 500
              timeout_ms: 30000

            """
        try text.write(to: url, atomically: true, encoding: .utf8)
        return url
    }

    /// The peak RSS in MB that `coordinator train` reports as it ends ("this process's peak RSS N MB").
    static func reportedPeak(in log: String) -> Double? {
        let marker = "this process's peak RSS "
        guard let line = log.split(separator: "\n").last(where: { $0.contains(marker) }),
              let range = line.range(of: marker) else { return nil }
        return line[range.upperBound...].split(separator: " ").first.flatMap { Double($0) }
    }

    // MARK: arithmetic

    /// FLOPs of the first `steps` steps as the sampler deals them: each micro-batch at its longest row with
    /// its own label rows (`FlopCount`), and one ViT forward per sample (a 2-step run sees each image once).
    static func flops(setup: JobSetup, lengths: [Int], labels: [Int], steps: Int) throws -> (training: Double, vision: Double) {
        let job = setup.job, data = WrittenData(lengths: lengths, labelCounts: labels)
        let sampler = try Sampler(count: lengths.count, globalBatch: job.data.globalBatch, microBatch: job.data.microBatch,
                                  seed: job.data.seed)
        let perImage = FlopCount(language: setup.language, vision: setup.vision, fuser: setup.fuser, batch: 1, textTokens: 1,
                                 labelTokens: 1).visionPerImage
        var training = 0.0, images = 0
        for step in 0..<steps {
            for id in sampler.microBatches(globalStep: step) {
                let rows = try sampler.indices(id)
                training += flops(of: rows, setup: setup, data: data) - Double(rows.count) * perImage
                images += rows.count
            }
        }
        return (training, Double(images) * perImage)
    }

    /// FLOPs of the micro-batches the coordinator's log says it backed up ("step S: backing up slow
    /// micro-batch I"): computed a second time, on another worker (whose ViT also saw the images first).
    static func backedUpFlops(_ log: URL, setup: JobSetup, data: WrittenData) throws -> Double {
        let text = (try? String(contentsOf: log, encoding: .utf8)) ?? ""
        let sampler = try Sampler(count: data.lengths.count, globalBatch: setup.job.data.globalBatch,
                                  microBatch: setup.job.data.microBatch, seed: setup.job.data.seed)
        var total = 0.0
        for line in text.split(separator: "\n") where line.contains(": backing up slow micro-batch ") {
            let words = line.split(separator: " ")
            guard let s = words.firstIndex(of: "step"), s + 1 < words.count, let step = Int(words[s + 1].dropLast()),
                  let m = words.firstIndex(of: "micro-batch"), m + 1 < words.count, let index = Int(words[m + 1]),
                  let id = sampler.microBatches(globalStep: step).first(where: { $0.index == index }) else { continue }
            let rows = try sampler.indices(id)
            total += flops(of: rows, setup: setup, data: data)
        }
        return total
    }

    /// FLOPs of one micro-batch of `rows`: training at its longest row with its label rows, and the ViT
    /// over its images.
    static func flops(of rows: [Int], setup: JobSetup, data: WrittenData) -> Double {
        let training = FlopCount.microBatch(language: setup.language, vision: setup.vision, fuser: setup.fuser, rows: rows.count,
                                            longest: rows.map { data.lengths[$0] }.max() ?? 0,
                                            labelRows: rows.map { data.labelCounts[$0] }.reduce(0, +))
        return training + Double(rows.count) * FlopCount(language: setup.language, vision: setup.vision, fuser: setup.fuser,
                                                         batch: 1, textTokens: 1, labelTokens: 1).visionPerImage
    }

    // MARK: the machine

    /// /proc/loadavg's three figures.
    static func loadAverage() -> String {
        let text = (try? String(contentsOfFile: "/proc/loadavg", encoding: .utf8)) ?? ""
        return text.split(separator: " ").prefix(3).joined(separator: " ")
    }

    /// MemAvailable from /proc/meminfo, in bytes (0 when unknown).
    static func memAvailable() -> Int {
        let text = (try? String(contentsOfFile: "/proc/meminfo", encoding: .utf8)) ?? ""
        for line in text.split(separator: "\n") where line.hasPrefix("MemAvailable:") {
            let parts = line.split(separator: " ", omittingEmptySubsequences: true)
            if parts.count >= 2, let kb = Int(parts[1]) { return kb * 1024 }
        }
        return 0
    }

    static func requireDisk(_ dir: URL, bytes: Int, what: String) throws {
        var fs = statvfs()
        guard statvfs(dir.path, &fs) == 0 else { return }
        let free = Int(fs.f_bavail) * Int(fs.f_frsize)
        guard free >= bytes else {
            throw Failure(String(format: "%@ has %.1f GB free, but %@ need %.1f GB: pass --scratch on a disk with room",
                                 dir.path, Double(free) / 1e9, what, Double(bytes) / 1e9))
        }
    }

    /// Every number that follows `marker` in `text`.
    static func numbers(after marker: String, in text: String) -> [Double] {
        text.components(separatedBy: marker).dropFirst().compactMap { rest in
            Double(rest.prefix { $0.isNumber || $0 == "." })
        }
    }
}

/// Peak memory of the coordinator and its workers, sampled while the run goes, and when each worker
/// joined and the first step was logged (seconds since launch).
struct MemorySampler {
    let workers: Int
    let runDir: URL
    var peaks: [pid_t: WorkerMemory] = [:]
    var coordinatorPID: pid_t?
    /// Worker PIDs in the order first seen.
    var workerPIDs: [pid_t] = []
    var joined: [Double?]
    /// CPU seconds (user + system) of each worker PID: when it joined (its backbone loaded), and last seen.
    var cpuAtJoin: [pid_t: Double] = [:]
    var cpuLast: [pid_t: Double] = [:]
    /// The kernel's peak RSS of each PID (VmHWM, MiB) when last read: exact, where sampling every 0.5 s
    /// can miss a short peak (the coordinator's lasts the few ms of an AdamW step).
    var hwm: [pid_t: Double] = [:]
    /// The F32 backbone's size (MiB) every worker maps.
    let backboneMiB: Double
    /// Each worker's largest backbone PSS (MiB) in the full readings where every worker had the whole
    /// backbone resident.
    var allResident: [pid_t: Double] = [:]
    var firstStep: Double?
    private var lastRollup = 0.0, lastSmaps = 0.0, lastLogs = 0.0

    init(workers: Int, runDir: URL, backboneBytes: Int) {
        self.workers = workers
        backboneMiB = Double(backboneBytes) / 1_048_576
        self.runDir = runDir
        joined = Array(repeating: nil, count: workers)
    }

    mutating func sample(coordinator: pid_t, since launched: Double) {
        let t = now()
        coordinatorPID = coordinator
        if t - lastRollup >= 0.5 {
            lastRollup = t
            let children = WorkerMemory.childPIDs(of: coordinator)
            for pid in children where !workerPIDs.contains(pid) { workerPIDs.append(pid) }
            let full = t - lastSmaps >= 4
            if full { lastSmaps = t }
            for pid in children { if let c = Self.cpuSeconds(pid) { cpuLast[pid] = c } }
            for pid in [coordinator] + children { if let h = Self.highWaterMark(pid) { hwm[pid] = h } }
            // PSS splits a page among the processes mapping it when sampled: while the backbone loads, the
            // first worker to touch a page pays for all of it. So PSS counts once every worker has joined.
            let allJoined = joined.allSatisfy { $0 != nil }
            var round: [pid_t: WorkerMemory] = [:]
            for pid in [coordinator] + children {
                guard let m = full ? WorkerMemory.read(pid) : WorkerMemory.rollup(pid) else { continue }
                var p = peaks[pid] ?? WorkerMemory()
                p.rss = max(p.rss, m.rss)
                p.backboneRSS = max(p.backboneRSS, m.backboneRSS)
                if allJoined || pid == coordinator { p.pss = max(p.pss, m.pss); p.backbonePSS = max(p.backbonePSS, m.backbonePSS) }
                if full { round[pid] = m }
                peaks[pid] = p
            }
            // The sharing itself: each worker's backbone PSS in rounds where every worker had the backbone
            // resident (97% of it or more: pages the model never reads, such as the text tower of a CLIPModel file,
            // never are), so no page is paid for by one alone and none given up by one exiting.
            let workersRead = children.compactMap { round[$0] }
            if full, workersRead.count == workers, workersRead.allSatisfy({ $0.backboneRSS >= 0.97 * backboneMiB }) {
                for pid in children { if let m = round[pid] { allResident[pid] = max(allResident[pid] ?? 0, m.backbonePSS) } }
            }
        }
        if t - lastLogs >= 0.5 {
            lastLogs = t
            for i in 0..<workers where joined[i] == nil {
                let text = (try? String(contentsOf: runDir.appendingPathComponent("worker-\(i).log"), encoding: .utf8)) ?? ""
                if text.contains("joined at") {
                    joined[i] = t - launched
                    // Worker i is the i-th child started (the local launcher starts them in order).
                    if i < workerPIDs.count, let c = Self.cpuSeconds(workerPIDs[i]) { cpuAtJoin[workerPIDs[i]] = c }
                }
            }
            if firstStep == nil, LocalCommBench.loggedSteps(runDir) > 0 { firstStep = t - launched }
        }
    }

    /// VmHWM of `pid` from /proc/PID/status, in MiB.
    static func highWaterMark(_ pid: pid_t) -> Double? {
        guard let text = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) else { return nil }
        for line in text.split(separator: "\n") where line.hasPrefix("VmHWM:") {
            let parts = line.split(separator: " ", omittingEmptySubsequences: true)
            if parts.count >= 2, let kb = Double(parts[1]) { return kb / 1024 }
        }
        return nil
    }

    /// utime + stime of `pid` from /proc/PID/stat (fields 14 and 15, in clock ticks).
    static func cpuSeconds(_ pid: pid_t) -> Double? {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
              let close = stat.lastIndex(of: ")") else { return nil }
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        // After the command: state is field 3, so utime (14) and stime (15) are at 11 and 12 here.
        guard fields.count > 12, let user = Double(fields[11]), let system = Double(fields[12]) else { return nil }
        return (user + system) / Double(sysconf(Int32(_SC_CLK_TCK)))
    }

    /// CPU seconds the workers spent after joining (computing), summed; nil if not seen.
    var workerComputeCPU: Double? {
        let parts = workerPIDs.compactMap { pid in cpuAtJoin[pid].flatMap { start in cpuLast[pid].map { $0 - start } } }
        return parts.isEmpty ? nil : parts.reduce(0, +)
    }
}
