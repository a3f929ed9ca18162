import Cluster
import Foundation
import TestSupport
import Testing

@Suite("Job config")
struct JobConfigTests {
    static let minimal = """
        model: {vision: v, language: l}
        data: {train: t.h5}
        """

    func parse(_ yaml: String, _ sets: [String] = []) throws -> JobConfig {
        try JobConfig.parse(yaml: yaml, baseDirectory: "/jobs/a", overrides: sets.map { try ConfigOverride(parsing: $0) })
    }

    func problems(_ yaml: String, _ sets: [String] = []) -> [ConfigError.Problem] {
        do {
            _ = try parse(yaml, sets)
            return []
        } catch let e as ConfigError {
            return e.problems
        } catch {
            Issue.record("unexpected error \(error)")
            return []
        }
    }

    @Test("every key has the DESIGN §8 default except the paths")
    func defaults() throws {
        let c = try parse(Self.minimal)
        #expect(c.model.vision == "/jobs/a/v")
        #expect(c.model.language == "/jobs/a/l")
        #expect(c.model.fusion == .dehvf && c.model.visionLayers == nil && c.model.projectorRank == 128)
        #expect(c.model.visualTokens == 0 && c.model.featureScale == 0.01 && c.model.injectionScale == 0.1 && c.model.dropout == 0.1)
        #expect(c.data.train == "/jobs/a/t.h5" && c.data.eval == nil)
        #expect(c.data.globalBatch == 32 && c.data.microBatch == 4 && c.data.seed == 0)
        #expect(c.data.featureCache == nil && c.data.featureMemoryMB == 4096)
        #expect(c.optim.lr == 1e-3 && c.optim.betas == [0.9, 0.95] && c.optim.eps == 1e-8)
        #expect(c.optim.weightDecay == 0.02 && c.optim.warmupSteps == 10 && c.optim.totalSteps(stepsPerEpoch: 7) == 300 && c.optim.epochs == nil)
        #expect(c.optim.maxGradNorm == nil && c.optim.gradientClip == nil)
        #expect(c.compute.threads == 1 && c.logging.tensorboard)
        #expect(c.checkpoint.every == 50 && c.checkpoint.keep == 3 && c.checkpoint.dir == "/jobs/a/runs")
        #expect(c.checkpoint.keepBest == BestMetric.none && c.eval.every == 0)
        #expect(c.cluster.launcher == .local && c.cluster.workers == 2 && c.cluster.bind == "tcp://127.0.0.1:5555")
        #expect(c.cluster.heartbeatMs == 500 && c.cluster.timeoutMs == 5000)
        #expect(c.security.curve == false)
        #expect(c.security.secretKey == "/jobs/a/keys/coordinator.key_secret")
        #expect(c.security.allowedWorkers == "/jobs/a/keys/workers")
    }

    @Test("clusters/local.yaml loads with the demo values, paths relative to its directory")
    func demoFile() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let file = root.appendingPathComponent("clusters/local.yaml").path
        let c = try JobConfig.load(file: file)
        #expect(c.model.vision.path == root.appendingPathComponent("data/demo/vision").path)
        #expect(c.data.eval?.path == root.appendingPathComponent("data/demo/test.h5").path)
        #expect(c.checkpoint.dir.path == root.appendingPathComponent("runs/demo").path)
        #expect(c.model.featureScale == 0.1 && c.model.injectionScale == 3.0)
        #expect(c.data.microBatch == 8 && c.optim.lr == 5e-3 && c.optim.warmupSteps == 30 && c.optim.steps == 3000)
        #expect(c.optim.maxGradNorm == nil && c.logging.tensorboard)
        #expect(c.checkpoint.every == 500 && c.cluster.launcher == .local)
    }

    @Test("unknown keys are errors naming the dotted path and the closest known key")
    func unknownKeys() {
        let p = problems(Self.minimal + "\noptim: {lrr: 0.1}\nclustr: {}\n")
        #expect(p.count == 2)
        let optim = p.first { $0.key == "optim.lrr" }
        #expect(optim?.code == .unknownKey)
        #expect(optim?.message.contains("optim.lr") == true)
        #expect(p.contains { $0.key == "clustr" && $0.message.contains("`cluster`") })
    }

    @Test("wrong types name the key and the expected type")
    func wrongTypes() {
        let p = problems(Self.minimal + "\noptim: {lr: fast, betas: 0.9, warmup_steps: 1.5}\nsecurity: {curve: 3}\nmodel: {vision: v, language: l, vision_layers: [1, x]}")
        #expect(p.contains { $0.key == "optim.lr" && $0.code == .wrongType && $0.message.contains("number") })
        #expect(p.contains { $0.key == "optim.betas" && $0.message.contains("list") })
        #expect(p.contains { $0.key == "optim.warmup_steps" && $0.message.contains("integer") })
        #expect(p.contains { $0.key == "security.curve" && $0.message.contains("true or false") })
        #expect(p.contains { $0.key == "model.vision_layers[1]" })
    }

    @Test("a quoted number is a string, not a number")
    func quotedNumber() {
        #expect(problems(Self.minimal + "\ndata: {train: t.h5, seed: \"3\"}").contains { $0.key == "data.seed" })
    }

    @Test("missing paths are named")
    func missingPaths() {
        let p = problems("model: {vision: v}\n")
        #expect(Set(p.map(\.key)) == ["model.language", "data.train"])
        #expect(p.allSatisfy { $0.code == .missingKey })
    }

    @Test("--set overrides parse YAML scalars and flow lists, and unknown override keys fail")
    func overrides() throws {
        let c = try parse(Self.minimal, ["optim.lr=3e-4", "model.vision_layers=[0,2]", "cluster.launcher=inprocess",
                                         "data.eval=e.h5", "optim.epochs=2", "optim.steps=~"])
        #expect(c.optim.lr == 3e-4)
        #expect(c.model.visionLayers == [0, 2])
        #expect(c.cluster.launcher == .inprocess)
        #expect(c.optim.epochs == 2 && c.optim.steps == nil)
        #expect(c.data.eval?.path == URL(fileURLWithPath: FileManager.default.currentDirectoryPath).appendingPathComponent("e.h5").standardizedFileURL.path)
        #expect(problems(Self.minimal, ["optim.lrr=1"]).contains { $0.key == "optim.lrr" && $0.code == .unknownKey })
        #expect(throws: ConfigError.self) { try ConfigOverride(parsing: "optim.lr") }
        #expect(throws: ConfigError.self) { try ConfigOverride(parsing: "optim..lr=1") }
    }

    @Test("validation explains each bad value", arguments: [
        ("model.fusion=llava", "model.fusion"),
        ("cluster.launcher=k8s", "cluster.launcher"),
        ("data.global_batch=30", "data.global_batch"),
        ("model.dropout=1.0", "model.dropout"),
        ("model.dropout=-0.1", "model.dropout"),
        ("optim.betas=[0.9, 1.0]", "optim.betas"),
        ("optim.betas=[0.9]", "optim.betas"),
        ("data.micro_batch=0", "data.micro_batch"),
        ("model.projector_rank=-1", "model.projector_rank"),
        ("compute.threads=0", "compute.threads"),
        ("cluster.bind=127.0.0.1:5555", "cluster.bind"),
        ("cluster.bind=tcp://127.0.0.1:0", "cluster.bind"),
        ("cluster.timeout_ms=100", "cluster.timeout_ms"),
        ("optim.epochs=3", "optim.steps"),
        ("data.feature_memory_mb=-1", "data.feature_memory_mb"),
        ("eval.every=-1", "eval.every"),
        ("eval.every=10", "eval.every"),                         // no data.eval to score
        ("checkpoint.keep_best=accuracy", "checkpoint.keep_best"),  // no data.eval to rank by
        ("checkpoint.keep_best=bleu", "checkpoint.keep_best"),
    ])
    func validation(set: String, key: String) {
        let yaml = set.hasPrefix("optim.epochs") ? Self.minimal + "\noptim: {steps: 10}" : Self.minimal
        let p = problems(yaml, [set])
        #expect(p.contains { $0.key == key && $0.code == .invalidValue }, "\(set): \(p)")
    }

    @Test("canonical JSON round-trips and is independent of key order in the YAML")
    func canonicalJSON() throws {
        let a = try parse(Self.minimal + "\noptim: {lr: 0.5, steps: 7}\ncluster: {workers: 3}")
        let b = try parse("cluster: {workers: 3}\noptim: {steps: 7, lr: 0.5}\ndata: {train: t.h5}\nmodel: {language: l, vision: v}")
        #expect(a.canonicalJSON() == b.canonicalJSON())
        #expect(try JobConfig(json: a.canonicalJSON()) == a)
        #expect(a.canonicalJSON().contains("\"global_batch\":32"))
        #expect(throws: ConfigError.self) { try JobConfig(json: "{\"model\": 1}") }
    }

    @Test("the job id ignores where the job runs but not what it trains")
    func jobID() throws {
        let a = try parse(Self.minimal)
        let b = try parse(Self.minimal, ["cluster.bind=tcp://10.0.0.1:7000", "cluster.workers=9", "checkpoint.every=7", "security.curve=true",
                                         "data.feature_cache=/scratch/f", "data.feature_memory_mb=64",
                                         "eval.every=5", "checkpoint.keep_best=loss", "data.eval=e.h5", "logging.tensorboard=false"])
        let c = try parse(Self.minimal, ["optim.lr=0.002"])
        #expect(a.jobID == b.jobID)
        #expect(a.jobID != c.jobID)
        // Clipping changes what is trained; 0 and null are the documented spellings of off.
        let clipped = try parse(Self.minimal, ["optim.max_grad_norm=1.0"])
        #expect(clipped.optim.gradientClip == 1.0 && clipped.jobID != a.jobID)
        #expect(try parse(Self.minimal, ["optim.max_grad_norm=0.5"]).jobID != clipped.jobID)
        #expect(try parse(Self.minimal + "\noptim: {max_grad_norm: 0}").jobID == a.jobID)
        #expect(try parse(Self.minimal + "\noptim: {max_grad_norm: null}").jobID == a.jobID)
        #expect(try JobConfig(json: clipped.canonicalJSON()).optim.maxGradNorm == 1.0)
        #expect(a.jobIDString.count == 16)
        #expect(try JobConfig(json: a.canonicalJSON()).jobID == a.jobID)
    }

    @Test("optim.max_grad_norm must be a number >= 0; logging.tensorboard a boolean")
    func clippingAndLogging() {
        #expect(problems(Self.minimal, ["optim.max_grad_norm=-1"]).contains { $0.key == "optim.max_grad_norm" && $0.code == .invalidValue })
        #expect(problems(Self.minimal + "\noptim: {max_grad_norm: big}").contains { $0.key == "optim.max_grad_norm" && $0.code == .wrongType })
        #expect(problems(Self.minimal + "\nlogging: {tensorboard: maybe}").contains { $0.key == "logging.tensorboard" })
        #expect(problems(Self.minimal + "\nlogging: {tensorbord: true}").contains { $0.key == "logging.tensorbord" && $0.code == .unknownKey })
        #expect(problems(Self.minimal + "\noptim: {max_grad_norm: 1.0}\nlogging: {tensorboard: false}").isEmpty)
    }

    @Test("invalid YAML and unreadable files are clear errors")
    func badFiles() {
        #expect(problems("model: [unclosed").first?.code == .badYAML)
        #expect { try JobConfig.load(file: "/nonexistent/job.yaml") } throws: { ($0 as? ConfigError)?.code == .unreadableFile }
    }

    @Test("a bind other hosts can reach needs CURVE, or security.insecure said out loud")
    func insecureBind() throws {
        #expect(problems(Self.minimal, ["cluster.bind=tcp://0.0.0.0:5555"]).contains { $0.key == "cluster.bind" && $0.message.contains("security.curve") })
        #expect(problems(Self.minimal, ["cluster.bind=tcp://10.1.2.3:5555"]).contains { $0.key == "cluster.bind" })
        #expect(problems(Self.minimal, ["cluster.bind=tcp://0.0.0.0:5555", "security.curve=true"]).isEmpty)
        #expect(problems(Self.minimal, ["cluster.bind=tcp://0.0.0.0:5555", "security.insecure=true"]).isEmpty)
        #expect(problems(Self.minimal, ["cluster.bind=tcp://127.0.0.1:5555"]).isEmpty)
        #expect(problems(Self.minimal, ["cluster.bind=tcp://0.0.0.0:5555", "cluster.launcher=inprocess"]).isEmpty, "nothing listens")
    }

    @Test("the worker part and the compute id: what a worker needs, and what its gradients depend on")
    func workerIdentity() throws {
        let a = try parse(Self.minimal + "\noptim: {lr: 0.5}\nsecurity: {curve: true}\ncheckpoint: {dir: /secret/runs}")
        let part = a.workerPart.canonicalJSON()
        #expect(!part.contains("/secret/runs") && !part.contains("/jobs/a/keys") && !part.contains("0.5"))
        #expect(part.contains("/jobs/a/t.h5"), "a worker needs the data's path")
        // Paths and the optimizer change no gradient; the seed, the model and compute threads do.
        #expect(try parse(Self.minimal, ["model.vision=/elsewhere/v", "data.train=/mnt/t.h5", "optim.lr=0.1"]).computeID == a.computeID)
        // Where ViT features are kept changes no gradient either, but a worker is told it.
        let kept = try parse(Self.minimal, ["data.feature_cache=/scratch/f", "data.feature_memory_mb=0"])
        #expect(kept.computeID == a.computeID)
        #expect(kept.workerPart.data.featureMemoryMB == 0 && kept.workerPart.data.featureCache == "/scratch/f")
        #expect(try parse(Self.minimal, ["data.seed=7"]).computeID != a.computeID)
        #expect(try parse(Self.minimal, ["compute.threads=2"]).computeID != a.computeID)
        #expect(try parse(Self.minimal, ["model.dropout=0.2"]).computeID != a.computeID)
    }
}
