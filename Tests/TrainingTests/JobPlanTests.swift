import Cluster
import Foundation
import Model
import Shard
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

    @Test("FLOPs are those of the job's own micro-batches at their longest rows, with group_by_length or without")
    func flopsAsRun() throws {
        var job = try DemoFixture.job(data: try DemoFixture.variedPrompts())
        job.data.microBatch = 2
        job.data.globalBatch = 4
        job.optim.steps = 8   // two epochs of 16 rows (a partial epoch of sorted rows would take the longest first)
        var perSample: [Bool: Double] = [:]
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
        }
        #expect(perSample[true]! < perSample[false]!, "\(perSample)")
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
