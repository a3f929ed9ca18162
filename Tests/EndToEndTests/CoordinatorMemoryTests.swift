import Cluster
import Foundation
import Model
import TestSupport
import Testing
import Training

/// The coordinator's memory against `coordinator plan`'s figure for it, as `bench scale` checks at 1B,
/// here with a trainable set of the same size (about 3M parameters) and backbones that compute little.
@Suite("coordinator memory")
struct CoordinatorMemoryTests {
    /// Backbones whose DEHVF fuser is large and whose forward is cheap: a LLaMA 4096 wide with one
    /// 16-wide head and an FFN of 16 (so the router, projector and the two position tables are 4096
    /// wide), and a ViT with 2x2 patches on the demo's 32x32 images (257 visual tokens).
    static func writeBackbones(in dir: URL) throws -> (vision: URL, language: URL) {
        let vision = dir.appendingPathComponent("vision"), language = dir.appendingPathComponent("language")
        for d in [vision, language] { try FileManager.default.createDirectory(at: d, withIntermediateDirectories: true) }
        let v = CLIPVisionConfig(hiddenSize: 64, intermediateSize: 256, numHiddenLayers: 4, numAttentionHeads: 4,
                                 imageSize: 32, patchSize: 2)
        try RandomBackbone.writeDirectory(vision, config: RandomBackbone.clipVision(v, seed: 1).config,
                                          layout: RandomBackbone.clipVisionLayout(v), as: .f32, shards: 1, seed: 1)
        let l = LlamaConfig(hiddenSize: 4096, intermediateSize: 16, numHiddenLayers: 22, numAttentionHeads: 1,
                            numKeyValueHeads: 1, headDim: 16, vocabSize: 64)
        try RandomBackbone.writeDirectory(language, config: RandomBackbone.llamaConfig(l, dtype: "float32"),
                                          layout: RandomBackbone.llamaLayout(l), as: .f32, shards: 1, seed: 2)
        return (vision, language)
    }

    /// Runs `coordinator train` on `job` and returns its reported peak RSS and its plan's, in bytes.
    static func peakAndPlan(job: String, log: String) throws -> (peak: Double, plan: Double, output: String) {
        let setup = try JobSetup(job: try JobConfig.load(file: job), loading: false)
        let plan = try JobPlan(setup: setup, workers: 2)
        let planned = try #require(plan.processes.first { $0.name.hasPrefix("coordinator") }).rss
        let train = try Child("coordinator", ["train", "--config", job], log: log)
        #expect(try train.wait(seconds: 300) == 0, "\(train.output)")
        let line = try #require(train.output.split(separator: "\n").first { $0.contains("peak RSS") }, "\(train.output)")
        let mb = try #require(line.split(separator: " ").reversed().dropFirst().first.flatMap { Double($0) }, "\(line)")
        return (mb * 1e6, Double(planned), train.output)
    }

    @Test("on the demo's full training set (16000 rows, a 52 MB file, nearly all images) the coordinator stays within 25% of its plan")
    func demoPeakMatchesPlan() throws {
        // The images are never the coordinator's: reading the file's metadata must not bring them in (the
        // check of its variable-length heaps once mapped the whole file and touched every page: 96 MB
        // against a plan of 53). The bound is looser than at 3M parameters because nearly all of this
        // coordinator is the fixed runtime, which moves by a few MB with the start-up (59 MB here).
        let dir = try Demo.scratch("memory-demo")
        let data = dir.appendingPathComponent("data")
        let made = try Child("coordinator", ["demo-data", "--out", data.path, "--test-samples", "8"], log: dir.path + "/data.log")
        #expect(try made.wait() == 0, "\(made.output)")
        let job = try Demo.job(in: dir, launcher: "local", port: Demo.port(), steps: 3, timeoutMs: 30000, data: data)
        let (peak, planned, output) = try Self.peakAndPlan(job: job, log: dir.path + "/train.log")
        #expect(abs(peak / planned - 1) <= 0.25, "coordinator peak \(peak / 1e6) MB, plan \(planned / 1e6) MB\n\(output)")
    }

    @Test("computing in-process over 4000 images and 500 held-out ones, the coordinator stays within 10% of its plan")
    func inProcessPeakMatchesPlan() throws {
        // Nearly all of this process is the features it keeps of every image, training and held-out, which
        // the plan counts, and a runtime of its own (it runs the code of both commands): the plan once
        // charged a worker's runtime and no held-out features (278 MB against 337 on the full demo). The
        // memory it must not hold besides, what it read to make the features, is guarded where it is
        // sharper: the chunk cache by `workerPeakMatchesPlan` and HDF5WrapperTests (here it cost 12 MB, 1.06
        // of plan), the features' own mappings by FeatureCacheTests.
        let dir = try Demo.scratch("memory-inprocess")
        let data = dir.appendingPathComponent("data")
        let made = try Child("coordinator", ["demo-data", "--out", data.path, "--train-samples", "4000"], log: dir.path + "/data.log")
        #expect(try made.wait() == 0, "\(made.output)")
        let job = try Demo.job(in: dir, launcher: "inprocess", port: Demo.port(), steps: 125,
                               extra: "eval:\n  every: 0", dataExtra: "eval: \(data.path)/test.h5", data: data)
        let (peak, planned, output) = try Self.peakAndPlan(job: job, log: dir.path + "/train.log")
        #expect(output.contains("accuracy"), "the held-out set was not scored\n\(output)")
        #expect(abs(peak / planned - 1) <= 0.10, "in-process peak \(peak / 1e6) MB, plan \(planned / 1e6) MB\n\(output)")
    }

    @Test("local workers without a feature memory stay within 10% of their plan, and with one below it")
    func workerPeakMatchesPlan() throws {
        // With data.feature_memory_mb 0 a worker holds the backbone, its workspaces and its runtime, all
        // planned; it must not keep what it read (a chunk cache that kept every image chunk it decoded, 12 MB
        // here). With every image's features held, the plan is an upper bound: it counts every image in each
        // worker, and in one epoch each of two workers sees about half of them.
        let dir = try Demo.scratch("memory-workers")
        let data = dir.appendingPathComponent("data")
        let made = try Child("coordinator", ["demo-data", "--out", data.path, "--train-samples", "4000", "--test-samples", "8"],
                             log: dir.path + "/data.log")
        #expect(try made.wait() == 0, "\(made.output)")
        for cap in [0, 4096] {
            let run = dir.appendingPathComponent("cap-\(cap)")
            try FileManager.default.createDirectory(at: run, withIntermediateDirectories: true)
            let job = try Demo.job(in: run, launcher: "local", port: Demo.port(), steps: 125, timeoutMs: 30000,
                                   dataExtra: "feature_memory_mb: \(cap)", data: data)
            let setup = try JobSetup(job: try JobConfig.load(file: job), loading: false)
            let planned = Double(try #require(try JobPlan(setup: setup, workers: 2).processes.first { $0.name == "worker" }).rss)
            let train = try Child("coordinator", ["train", "--config", job], log: run.path + "/train.log")
            #expect(try train.wait(seconds: 300) == 0, "\(train.output)")
            for w in 0..<2 {
                let log = try String(contentsOf: run.appendingPathComponent("run/worker-\(w).log"), encoding: .utf8)
                let line = try #require(log.split(separator: "\n").last { $0.contains("peak RSS") }, "\(log)")
                let peak = try #require(line.split(separator: " ").reversed().dropFirst().first.flatMap { Double($0) }, "\(line)") * 1e6
                if cap == 0 {
                    #expect(abs(peak / planned - 1) <= 0.10, "worker \(w) peak \(peak / 1e6) MB, plan \(planned / 1e6) MB")
                } else {
                    #expect(peak <= 1.10 * planned, "worker \(w) peak \(peak / 1e6) MB, plan \(planned / 1e6) MB")
                }
            }
        }
    }

    @Test("with 2 local workers, the coordinator's peak RSS is within 10% of its plan (3M trainable parameters)")
    func peakMatchesPlan() throws {
        let dir = try Demo.scratch("memory")
        let (vision, language) = try Self.writeBackbones(in: dir)
        let data = try Demo.data()
        let job = dir.appendingPathComponent("job.yaml").path
        try """
            model:
              vision: \(vision.path)
              language: \(language.path)
              fusion: dehvf
              projector_rank: 128
            data:
              train: \(data.path)/train.h5
              global_batch: 4
              micro_batch: 2
            optim:
              lr: 1.0e-3
              warmup_steps: 1
              steps: 4
            checkpoint:
              dir: run
              every: 1000
            cluster:
              launcher: local
              workers: 2
              bind: tcp://127.0.0.1:\(Demo.port())
              heartbeat_ms: 200
              timeout_ms: 30000
            """.write(toFile: job, atomically: true, encoding: .utf8)

        let setup = try JobSetup(job: try JobConfig.load(file: job), loading: false)
        let trainable = setup.fuser.parameterShapes.reduce(0) { $0 + $1.shape.reduce(1, *) }
        #expect(trainable > 2_500_000, "the fuser has \(trainable) parameters: too few for the per-step buffers to matter")
        let (peak, planned, output) = try Self.peakAndPlan(job: job, log: dir.path + "/train.log")
        #expect(abs(peak / planned - 1) <= 0.10, "coordinator peak \(peak / 1e6) MB, plan \(planned / 1e6) MB\n\(output)")
    }
}
