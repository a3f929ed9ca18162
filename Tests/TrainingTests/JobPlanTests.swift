import Cluster
import Foundation
import Model
import Shard
import TestSupport
import Testing
import Training

@Suite("coordinator plan")
struct JobPlanTests {
    /// The FLOPs of the micro-batches a job of `steps` on `job` reads, each as the engine cuts it
    /// (`readBatch(...).trimmed()`, the rows at their longest), with its own label rows.
    static func flopsAsRun(_ job: JobConfig, _ setup: JobSetup, steps: Int) throws -> Double {
        let sampler = try Sampler(count: setup.train.count, globalBatch: job.data.globalBatch, microBatch: job.data.microBatch,
                                  seed: job.data.seed, groupingByLength: job.data.groupByLength ? setup.train.rowLengths : nil)
        var total = 0.0
        for step in 0..<steps {
            for id in sampler.microBatches(globalStep: step) {
                let mb = try setup.train.readBatch(indices: try sampler.indices(id), images: false).trimmed()
                total += FlopCount.microBatch(language: setup.language, vision: setup.vision, fuser: setup.fuser, rows: mb.count,
                                              longest: mb.tokens, labelRows: mb.labels.filter { $0 != -100 }.count)
            }
        }
        return total
    }

    @Test("FLOPs are those of the job's own micro-batches at their longest rows, with group_by_length or without",
          arguments: [false, true])
    func flopsAsRun(labelsPastLength: Bool) throws {
        var job = try DemoFixture.job(data: try DemoFixture.variedPrompts(labelsPastLength: labelsPastLength))
        job.data.microBatch = 2
        job.data.globalBatch = 4
        job.optim.steps = 8   // two epochs of 16 rows (a partial epoch of sorted rows would take the longest first)
        var perSample: [Bool: Double] = [:], groupedEstimate: Double?
        for grouped in [false, true] {
            job.data.groupByLength = grouped
            let setup = try JobSetup(job: job, loading: false)
            let plan = try JobPlan(setup: setup, workers: 2)
            let expected = try Self.flopsAsRun(job, setup, steps: 8)
            #expect(plan.steps == 8 && plan.microBatchesPerStep == 2)
            #expect(abs(plan.flopsPerStep * 8 - expected) <= 1e-9 * expected, "grouped \(grouped)")
            #expect(abs(plan.flopsPerSample * 32 - expected) <= 1e-9 * expected)
            // Prompts of 2 to 5 tokens: at the file's T every sample costs more.
            #expect(plan.flopsPerSample < plan.paddedFlopsPerSample)
            perSample[grouped] = plan.flopsPerSample
            // Without grouping the plan also says what grouping would cost (its note); with it, nothing.
            if grouped { #expect(plan.groupedFlopsPerSample == nil) } else { groupedEstimate = plan.groupedFlopsPerSample }
        }
        #expect(perSample[true]! < perSample[false]!, "\(perSample)")
        #expect(groupedEstimate == perSample[true], "\(String(describing: groupedEstimate)) vs \(perSample)")
    }

    @Test("the in-memory feature cache is planned up to data.feature_memory_mb, and past it the ViT runs per sample")
    func featureMemoryCap() throws {
        var job = try DemoFixture.job()
        job.optim.steps = 10
        job.cluster.launcher = .local
        let all = try JobPlan(setup: try JobSetup(job: job, loading: false), workers: 2)
        let images = all.images
        func cache(_ plan: JobPlan) throws -> Int {
            let worker = try #require(plan.processes.first { $0.name == "worker" })
            return try #require(worker.parts.first { $0.0.hasPrefix("feature cache") }).1
        }
        let allBytes = try cache(all), perImage = allBytes / images
        #expect(images > 4 && all.imagesHeld == images && allBytes == images * perImage && perImage > 0)
        let samplesPerWorker = 10 * job.data.globalBatch / 2
        #expect(all.visionRunsPerWorker == min(images, samplesPerWorker))

        // A cap of 1 MiB: the plan holds what the engine's FeatureMemory holds after every image went through.
        job.data.featureMemoryMB = 1
        let capped = try JobPlan(setup: try JobSetup(job: job, loading: false), workers: 2)
        let held = (1 << 20) / perImage, cappedBytes = try cache(capped)
        #expect(held >= 8 && held < images && capped.imagesHeld == held && cappedBytes == held * perImage)
        #expect(capped.visionRunsPerWorker == samplesPerWorker)
        let engine = try TrainingEngine(job: job)
        for first in stride(from: 0, to: images, by: 8) {
            _ = try engine.batch(engine.train, indices: Array(first..<min(images, first + 8)))
        }
        #expect(engine.featureMemory.count == capped.imagesHeld && engine.featureMemory.bytes == cappedBytes)

        // With a held-out set its images share the memory: the plan holds both sets, as the engine does once
        // the held-out set is scored.
        job.data.featureMemoryMB = 4096
        job.data.eval = ConfigPath(try DemoFixture.data().appendingPathComponent("test.h5").path)
        let withEval = try JobPlan(setup: try JobSetup(job: job, loading: false), workers: 2)
        let both = images + withEval.evalImages
        let withEvalBytes = try cache(withEval)
        #expect(withEval.evalImages == 64 && withEval.imagesHeld == both && withEvalBytes == both * perImage)
        let scorer = try TrainingEngine(job: job), heldOut = try scorer.open(job.data.eval!.path)
        for first in stride(from: 0, to: images, by: 8) {
            _ = try scorer.batch(scorer.train, indices: Array(first..<min(images, first + 8)))
        }
        _ = try scorer.evaluate(heldOut, params: scorer.initialParameters(), unitSize: 8)
        #expect(scorer.featureMemory.count == both && scorer.featureMemory.bytes == both * perImage)
        job.data.eval = nil

        // With a feature store nothing is held in memory and each image runs once among the workers.
        job.data.featureCache = ConfigPath(try TemporaryDirectory("plan-store").url.path)
        let stored = try JobPlan(setup: try JobSetup(job: job, loading: false), workers: 2)
        #expect(try cache(stored) == 0)
        #expect(stored.visionRunsPerWorker == (images + 1) / 2)
    }

    @Test("a training set smaller than one global batch is an error that says what to change")
    func tooSmall() throws {
        var job = try DemoFixture.job(data: try DemoFixture.variedPrompts())
        job.data.globalBatch = 32
        job.data.microBatch = 8
        let setup = try JobSetup(job: job, loading: false)
        #expect { try JobPlan(setup: setup, workers: 1) } throws: { "\($0)".contains("lower data.global_batch") }
    }
}
