import ArgumentParser
import Cluster
import Foundation
import Model
import Training

struct Plan: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Before loading any weights: memory per process, FLOPs per sample and per step, and the time the job will take.",
        discussion: """
            Reads only the backbones' config.json and safetensors headers and the dataset's shapes. Memory \
            follows the code's own buffers (the LLM's training activations at the longest micro-batch, the \
            fuser, the label rows' logits, one image through the ViT, the feature cache up to \
            data.feature_memory_mb) plus a fixed runtime overhead. FLOPs are those of the micro-batches the \
            job will run, each at its longest row (the sampler's order is a pure function of the seed); \
            backbone pages are mapped from files and shared by the processes of a node (RSS counts them in \
            each, PSS splits them). The time is at this machine's sgemm ceiling, measured now \
            (OpenBLAS on compute.threads threads), and at the fraction of it a step reaches (--efficiency).
            """)

    @OptionGroup var job: JobOptions
    @Option(help: "Workers to plan for (default: cluster.workers).") var workers: Int?
    @Option(help: "Fraction of the sgemm ceiling a training step reaches (bench step measures it: 0.78 on the bench config here).")
    var efficiency = 0.75

    func validate() throws {
        guard efficiency > 0, efficiency <= 1 else { throw ValidationError("--efficiency must be in (0, 1]") }
    }

    func run() throws {
        let config = try job.load()
        let setup = try JobSetup(job: config, loading: false)
        let plan = try JobPlan(setup: setup, workers: workers ?? config.cluster.workers)
        func gb(_ bytes: Int) -> String {
            bytes >= 1_000_000_000 ? String(format: "%.2f GB", Double(bytes) / 1e9) : String(format: "%.0f MB", Double(bytes) / 1e6)
        }
        print("plan: \(config.model.fusion), micro-batch \(config.data.microBatch) x \(setup.train.tokens) tokens, "
            + "\(plan.microBatchesPerStep) micro-batches per step, \(plan.steps) steps, \(plan.workers) worker(s)")
        let vw = setup.visionWeights, lw = setup.languageWeights
        print("  backbone: vision \(gb(vw.float32Bytes)) as float32 (\(gb(vw.storedBytes)) on disk\(vw.halfPrecision ? ", half precision: read through the node's float32 cache" : "")), "
            + "language \(gb(lw.float32Bytes)) (\(gb(lw.storedBytes)) on disk\(lw.halfPrecision ? ", half precision: float32 cache" : ""))")
        for p in plan.processes {
            print("  \(p.name): RSS \(gb(p.rss)) = backbone \(gb(p.backboneShared)) (mapped, shared on the node) + private \(gb(p.privateBytes))")
            for (name, bytes) in p.parts where bytes > 0 { print(String(format: "    %-40@ %@", name, gb(bytes))) }
        }
        if let w = plan.processes.first(where: { $0.name == "worker" }), plan.workers > 1 {
            print("  per node with \(plan.workers) workers: \(gb(w.backboneShared + plan.workers * w.privateBytes)) "
                + "(PSS per worker \(gb(w.backboneShared / plan.workers + w.privateBytes)))")
        }
        print(String(format: "  compute: %.3g GFLOP per sample (%.3g if padded to %d tokens), %.3g GFLOP per step; "
                     + "ViT %.3g GFLOP per image, %@ %d runs per worker (%d images)",
                     plan.flopsPerSample / 1e9, plan.paddedFlopsPerSample / 1e9, setup.train.tokens, plan.flopsPerStep / 1e9,
                     plan.visionFlopsPerImage / 1e9, config.data.featureCache == nil ? "at most" : "about",
                     plan.visionRunsPerWorker, plan.images))
        if plan.imagesHeld < plan.images {
            print("  note: data.feature_memory_mb (\(config.data.featureMemoryMB)) holds the features of \(plan.imagesHeld) of "
                + "\(plan.images) images, so most look-ups miss and the ViT runs again for nearly every sample; set "
                + "data.feature_cache to a directory to run it once per image")
        }
        if let grouped = plan.groupedFlopsPerSample, grouped < 0.9 * plan.flopsPerSample {
            print(String(format: "  note: data.group_by_length: true would compute %.2fx fewer FLOPs per sample (%.3g GFLOP): "
                         + "micro-batches of rows of similar length, less padding; it changes the data order, so it is "
                         + "part of the job's identity",
                         plan.flopsPerSample / grouped, grouped / 1e9))
        }
        BLAS.setThreads(config.compute.threads)
        let ceiling = SgemmCeiling.measure()
        let (vision, training) = plan.seconds(atGFLOPS: ceiling * efficiency)
        print(String(format: "  time: sgemm ceiling here %.1f GFLOP/s on %d thread(s); at %.0f%% of it: ViT pass %@, training %@ (%.1f ms per step)",
                     ceiling, config.compute.threads, 100 * efficiency, formatDuration(vision), formatDuration(training),
                     1000 * training / Double(max(plan.steps, 1))))
    }
}
