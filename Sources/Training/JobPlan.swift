import Cluster
import Foundation
import Model
import Shard

/// What a job will take, computed from `config.json` files and dataset shapes alone (no weights
/// loaded): memory per process, FLOPs per sample and per step (of the micro-batches the job will run),
/// and the time at a given sgemm rate.
/// `coordinator plan` prints it; `bench scale` measures the same job and compares.
///
/// The memory model follows the code's own allocations: `LlamaWorkspace.prepare` for the LLM's training
/// buffers at the longest micro-batch (micro_batch rows of T tokens, + M visual tokens in concat), the
/// fuser's `Workspace`, the label rows' logits, one image's ViT forward, the feature cache, and a fixed
/// runtime overhead (the Swift runtime, Foundation, OpenBLAS's buffers) measured on the demo.
public struct JobPlan: Sendable {
    public struct Process: Sendable {
        public var name: String
        /// Backbone pages mapped from files: shared by every process of the node that maps them.
        public var backboneShared: Int
        /// Memory only this process holds, by part.
        public var parts: [(String, Int)]
        public var privateBytes: Int { parts.reduce(0) { $0 + $1.1 } }
        /// What `ps` shows as resident once every page was touched.
        public var rss: Int { backboneShared + privateBytes }
    }

    public let processes: [Process]
    /// Training FLOPs (features cached) of the job's own micro-batches, each at its longest row: the mean
    /// per sample and per step.
    public let flopsPerSample: Double
    public let flopsPerStep: Double
    /// The same with `data.group_by_length` on, when it is off (nil when it is on).
    public let groupedFlopsPerSample: Double?
    /// What a sample would cost with every micro-batch padded to the dataset's T, for comparison.
    public let paddedFlopsPerSample: Double
    public let visionFlopsPerImage: Double
    /// Images of the training set.
    public let images: Int
    /// Images of `data.eval` (0 without one), whose features the same memory holds once it is scored.
    public let evalImages: Int
    /// Images whose features a worker keeps, training and held-out (all of them with `data.feature_cache`,
    /// else as many as `data.feature_memory_mb` holds).
    public let imagesHeld: Int
    /// ViT forward passes a worker makes over the job (see the end of `init`).
    public let visionRunsPerWorker: Int
    public let steps: Int
    public let microBatchesPerStep: Int
    public let workers: Int

    /// Swift runtime, Foundation, ZeroMQ and OpenBLAS buffers of a worker, measured on the demo (a
    /// worker's peak RSS minus everything modelled here, with `data.feature_memory_mb: 0`): 45 MiB on a
    /// 4000-row set, 50 MiB on the 16000-row one with its held-out set scored; about 36 MiB of it is the
    /// mapped code of the binary and its libraries.
    public static let runtimeOverhead = 48 << 20
    /// The same for a coordinator that computes in-process, which runs the code of both: 48-54 MiB on
    /// the demo, with every image's features held or none.
    public static let inProcessRuntime = 52 << 20
    /// The same for a coordinator, which computes nothing: its RSS between steps less its parameters and
    /// moments, measured at 37-40 MiB in `bench scale` (16 rows) and 47-50 MiB on the demo (16000 rows,
    /// whose start-up scans take a few MB more).
    public static let coordinatorRuntime = 48 << 20
    /// A checkpoint file's HDF5 structure, attributes (the job's config) and group entries, at most.
    static let checkpointMetadata = 64 << 10
    /// Micro-batches the FLOP count walks one by one (a few seconds at most); a longer job is counted at
    /// their mean.
    static let walkLimit = 1_000_000

    public init(setup: JobSetup, workers: Int) throws {
        let job = setup.job, f = setup.fuser, c = setup.language, v = setup.vision
        let b = job.data.microBatch, t = setup.train.tokens
        let m = f.visualTokens, s = f.candidates, dv = f.visionWidth, r = f.projectorRank
        let concat = f.fusion == .concat
        let tp = t + (concat ? m : 0), n = b * tp, d = c.hiddenSize, ff = c.intermediateSize, l = c.numHiddenLayers
        let qd = c.numAttentionHeads * c.headDim, kd = c.numKeyValueHeads * c.headDim
        let lanes = job.compute.threads
        let floats = 4
        // LlamaWorkspace.prepare, training: saved activations per layer, shared scratch, backward scratch.
        let saved = (l + 1) * n * d + 2 * l * n + l * n * qd + 2 * l * n * kd + 2 * l * n * d + 2 * l * n * ff
        let scratch = n * d + n * qd + n * ff + n * d + n + n * c.headDim + n + lanes * tp * tp
        let backward = 3 * n * d + 2 * n * ff + 2 * n * qd + 2 * n * kd + lanes * 2 * tp * tp
        let llm = (saved + scratch + backward + 3 * n * d) * floats   // + dFinal, the embeddings, a mask
        // Fuser.Workspace.
        let bm = b * m
        let fuser = concat ? (2 * bm * dv + 2 * bm * r + 4 * bm * d) * floats
            : (s * bm * dv + 2 * s * bm * r + l * b * d + l * b * s + l * bm * r + l * b * t * m + 2 * bm * r + 4 * bm * d
               + 3 * lanes * t * m) * floats
        let (labelCounts, workingLengths) = try setup.train.labelSummary()
        let maxLabels = Int(labelCounts.max() ?? 0)
        let logits = b * maxLabels * c.vocabSize * floats
        // One image through the ViT: every hidden state, the attention scores, the MLP activation.
        let np = v.numPatches + 1
        let visionForward = ((v.numHiddenLayers + 3) * np * v.hiddenSize + v.numAttentionHeads * np * np + np * v.intermediateSize) * floats
        let featureBytes = s * m * dv * floats
        images = setup.train.imageCount
        evalImages = try job.data.eval.map { try setup.open($0.path).imageCount } ?? 0
        // Without `data.feature_cache`, a worker holds features in memory up to `data.feature_memory_mb`, of
        // both sets: the held-out set's join the training set's in the same memory when it is first scored.
        let allImages = images + evalImages
        let (capBytes, overflow) = job.data.featureMemoryMB.multipliedReportingOverflow(by: 1 << 20)
        imagesHeld = job.data.featureCache != nil ? allImages : min(allImages, (overflow ? Int.max : capBytes) / max(1, featureBytes))
        let cache = job.data.featureCache != nil ? 0 : imagesHeld * featureBytes
        let which = evalImages > 0 ? "training and held-out images" : "images"
        let trainable = f.parameterShapes.reduce(0) { $0 + $1.shape.reduce(1, *) } * floats
        let backbone = setup.visionWeights.float32Bytes + setup.languageWeights.float32Bytes

        let worker = Process(name: "worker", backboneShared: backbone, parts: [
            ("LLM activations (training)", llm), ("fuser", fuser), ("logits of label rows", logits),
            ("ViT forward (one image)", visionForward),
            (job.data.featureCache != nil ? "feature cache (on disk)"
                : imagesHeld < allImages ? "feature cache (\(imagesHeld) of \(allImages) \(which), in memory)"
                : "feature cache (all \(allImages) \(which), in memory)",
             cache),
            ("parameters and gradients", 3 * trainable), ("runtime", Self.runtimeOverhead),
        ])
        let lengths = setup.train.rowLengths
        let sampler = try Sampler(count: setup.train.count, globalBatch: job.data.globalBatch, microBatch: b,
                                  seed: UInt64(job.data.seed), groupingByLength: job.data.groupByLength ? lengths : nil)
        steps = job.optim.totalSteps(stepsPerEpoch: sampler.stepsPerEpoch)
        let k = job.data.globalBatch / job.data.microBatch
        // The coordinator holds the parameters and both moments, and the previous step's parameters, which the
        // wire sends without a copy. On top of that its peak is the larger of two moments, which never overlap
        // (`TrainingRun.trainStep` releases the step before a checkpoint is written):
        // - the AdamW step: every micro-batch's record and their exact sum, the scaled gradient, the largest
        //   tensor's Int64 accumulator (8 bytes a value), and results arriving together, each held as its wire
        //   frame until decoded into a record (an upper bound: frames and records overlap only in part);
        // - writing a checkpoint: HDF5 builds the file in memory and `HDF5File.close` copies the image out;
        //   measured at three times the file's size over the level between steps (2.8-2.9x at 3M parameters).
        // These are the coordinator's peaks only because it returns blocks of 1 MiB or more to the kernel when
        // it frees them (LargeBuffers.swift): with glibc's default, the same job's peak varied by a fifth from
        // run to run. CoordinatorMemoryTests holds the total to 10% at 3M trainable parameters.
        let largest = f.parameterShapes.map { $0.shape.reduce(1, *) }.max() ?? 0
        let arriving = job.cluster.launcher == .inprocess ? 0 : max(1, workers) * trainable
        let stepBytes = (k + 1) * trainable + trainable + 2 * largest * floats + arriving
        let checkpointFile = 3 * trainable + steps * floats + Self.checkpointMetadata
        let checkpointBytes = 3 * checkpointFile
        let coordinator = Process(name: "coordinator", backboneShared: 0, parts: [
            ("parameters (this step's and the last) and AdamW moments", 4 * trainable),
            stepBytes >= checkpointBytes
                ? ("the AdamW step (more than a checkpoint write, \(checkpointBytes / 1_000_000) MB)", stepBytes)
                : ("writing a checkpoint (more than the AdamW step, \(stepBytes / 1_000_000) MB)", checkpointBytes),
            ("dataset columns", setup.train.count * 64), ("runtime", Self.coordinatorRuntime),
        ])
        processes = job.cluster.launcher == .inprocess
            ? [Process(name: "coordinator (computes in-process)", backboneShared: backbone,
                       parts: worker.parts.filter { $0.0 != "runtime" } + coordinator.parts.filter { $0.0 != "runtime" }
                           + [("runtime", Self.inProcessRuntime)])]
            : [coordinator, worker]
        // FLOPs of the micro-batches the job will run: the sampler's order is a pure function of the seed
        // (and the rows' lengths with group_by_length), so the plan walks the same micro-batches, each at
        // the length of its longest row (or last label) with its own label rows. Past `walkLimit`
        // micro-batches it takes their mean.
        microBatchesPerStep = k
        let stepCount = steps
        func meanFlopsPerStep(_ sampler: Sampler) throws -> Double {
            var walked = 0.0, walkedSteps = 0
            while walkedSteps < stepCount, walkedSteps * k < Self.walkLimit {
                for id in sampler.microBatches(globalStep: walkedSteps) {
                    let rows = try sampler.indices(id)
                    walked += FlopCount.microBatch(language: c, vision: v, fuser: f, rows: rows.count,
                                                   longest: Int(rows.map { workingLengths[$0] }.max() ?? 1),
                                                   labelRows: rows.reduce(0) { $0 + Int(labelCounts[$1]) })
                }
                walkedSteps += 1
            }
            return walked / Double(max(walkedSteps, 1))
        }
        flopsPerStep = try meanFlopsPerStep(sampler)
        // What `data.group_by_length` would save, so that the plan can say so when it is off.
        groupedFlopsPerSample = job.data.groupByLength ? nil
            : try meanFlopsPerStep(Sampler(count: setup.train.count, globalBatch: job.data.globalBatch, microBatch: b,
                                       seed: UInt64(job.data.seed), groupingByLength: lengths)) / Double(job.data.globalBatch)
        flopsPerSample = flopsPerStep / Double(job.data.globalBatch)
        let labels = labelCounts.reduce(0) { $0 + Int($1) }
        paddedFlopsPerSample = FlopCount(language: c, vision: v, fuser: f, batch: b, textTokens: t, labelTokens: 0)
            .step(labelRows: labels * b / max(1, labelCounts.count)) / Double(b)
        visionFlopsPerImage = FlopCount(language: c, vision: v, fuser: f, batch: 1, textTokens: 1, labelTokens: 1).visionPerImage
        self.workers = job.cluster.launcher == .inprocess ? 1 : max(1, workers)
        // ViT passes per worker: with a feature store all workers share, about each image once among them
        // (a node-local one: once per node); in memory, at most every image each worker meets, and once the
        // images outgrow the cap, random order makes nearly every look-up a miss.
        let samplesPerWorker = (steps * job.data.globalBatch + self.workers - 1) / self.workers
        visionRunsPerWorker = job.data.featureCache != nil ? (images + self.workers - 1) / self.workers
            : imagesHeld < images ? samplesPerWorker : min(images, samplesPerWorker)
    }

    /// Seconds for the whole job at `gflops` per worker: the ViT passes (``visionRunsPerWorker``), then
    /// every step, its micro-batches spread over the workers (a step takes as long as its busiest worker).
    public func seconds(atGFLOPS gflops: Double) -> (vision: Double, training: Double) {
        let rate = gflops * 1e9
        let rounds = Double((microBatchesPerStep + workers - 1) / workers)
        let perMicroBatch = flopsPerStep / Double(microBatchesPerStep)
        return (Double(visionRunsPerWorker) * visionFlopsPerImage / rate, Double(steps) * rounds * perMicroBatch / rate)
    }
}
