import ArgumentParser
import Cluster
import Foundation
import Model
import Shard
import Training

/// `coordinator export`: a checkpoint's trainable tensors as `adapter.safetensors` and everything needed to
/// rebuild the model around them as `adapter_config.json`, for `Scripts/dehvf_torch.py` (PyTorch).
struct Export: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Export a checkpoint's trainable part for PyTorch (Scripts/dehvf_torch.py).",
        discussion: """
            Writes two files into --out:
              adapter.safetensors   the trainable tensors under their DESIGN.md §4 names (router.weight, \
            router.bias, projector.fc1.weight, ..., prompt.key_pos, prompt.value_pos), float32
              adapter_config.json   the fusion mode, candidate vision layers, projector rank, visual tokens, \
            feature and injection scales, dropout, the shapes, the backbone fingerprint and the vision and \
            language directories of the job, and where the tensors came from

            The job config is the one recorded in the checkpoint; the backbones' config.json files are read \
            to resolve its shapes (no weights are loaded). If the backbones live elsewhere now, say where \
            with --vision and --language. An --out directory that already holds files is refused unless \
            --force, which replaces the two files and leaves anything else there alone.

            Then, in Python:
              python3 Scripts/dehvf_torch.py --adapter DIR --data test.h5
            """)

    @Option(help: ArgumentHelp("Checkpoint file, a checkpoint directory (its 'latest'), or a 'best' file.", valueName: "CK.h5"))
    var checkpoint: String
    @Option(help: ArgumentHelp("Directory to write adapter.safetensors and adapter_config.json into (created).", valueName: "DIR"))
    var out: String
    @Option(help: ArgumentHelp("The vision backbone directory, if not where the checkpoint's job says.", valueName: "DIR"))
    var vision: String?
    @Option(help: ArgumentHelp("The language backbone directory, if not where the checkpoint's job says.", valueName: "DIR"))
    var language: String?
    @Flag(help: "Replace adapter.safetensors and adapter_config.json in an --out directory that is not empty.")
    var force = false

    func run() throws {
        try refuseToOverwrite()
        let ck = try Checkpoint.read(fileOrDirectory: checkpoint)
        let adapter = try Adapter(checkpoint: ck, vision: vision, language: language)
        try adapter.write(to: out)
        Console.say("export: wrote \(adapter.fuser.fusion.rawValue) adapter of step \(ck.step) "
            + "(\(adapter.params.elementCount) values in \(adapter.params.count) tensors) to \(out)/\(Adapter.tensorsName) "
            + "and \(Adapter.configName)")
    }

    /// An existing --out must be empty, or --force given.
    private func refuseToOverwrite() throws {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: out, isDirectory: &isDirectory) else { return }
        guard isDirectory.boolValue else {
            throw UserError("--out \(out) is a file; name a directory (it is created if missing)")
        }
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: out)) ?? []
        if !entries.isEmpty && !force {
            throw UserError("--out \(out) is not empty (\(entries.sorted().prefix(3).joined(separator: ", "))"
                + "\(entries.count > 3 ? ", ..." : "")); choose a new directory, or pass --force to replace "
                + "\(Adapter.tensorsName) and \(Adapter.configName) there")
        }
    }
}

/// A checkpoint's trainable part with the settings that rebuild the model around it.
struct Adapter {
    static let format = "dehvf-adapter"
    static let version = 1
    static let tensorsName = "adapter.safetensors"
    static let configName = "adapter_config.json"

    let job: JobConfig
    let fuser: FuserConfig
    let visionDepth: Int
    let params: TensorSet
    let checkpoint: Checkpoint

    /// The checkpoint's job resolved against its backbones' config.json files (or `vision`/`language`
    /// given instead), its tensors checked against the shapes that job needs.
    init(checkpoint ck: Checkpoint, vision: String?, language: String?) throws {
        var job: JobConfig
        do {
            job = try JobConfig(json: ck.config)
        } catch {
            throw UserError("the job config recorded in checkpoint \(ck.source ?? "") does not parse", cause: error)
        }
        if let vision { job.model.vision = ConfigPath(URL(fileURLWithPath: vision).standardizedFileURL.path) }
        if let language { job.model.language = ConfigPath(URL(fileURLWithPath: language).standardizedFileURL.path) }
        let visionConfig: CLIPVisionConfig, languageConfig: LlamaConfig
        do {
            visionConfig = try CLIPVisionConfig.load(directory: URL(fileURLWithPath: job.model.vision.path))
            languageConfig = try LlamaConfig.load(directory: URL(fileURLWithPath: job.model.language.path))
        } catch {
            throw UserError("cannot read the backbones' config.json (vision \(job.model.vision.path), language "
                + "\(job.model.language.path)); if they moved, pass --vision DIR and --language DIR", cause: error)
        }
        fuser = try FuserConfig(job: job.model, vision: visionConfig, language: languageConfig)
        do {
            params = try fuser.parameters(from: ck.params, what: "checkpoint \(ck.source ?? "")")
        } catch {
            throw UserError("the checkpoint's tensors do not fit its job's model on these backbones", cause: error)
        }
        self.job = job
        self.visionDepth = visionConfig.numHiddenLayers
        self.checkpoint = ck
    }

    /// adapter_config.json: what `Scripts/dehvf_torch.py` needs to rebuild the model, plus provenance.
    var configJSON: [String: Any] {
        let m = job.model
        var tensors: [String: Any] = [:]
        for (name, shape) in fuser.parameterShapes { tensors[name] = shape }
        var out: [String: Any] = [
            "format": Self.format,
            "version": Self.version,
            "fusion": fuser.fusion.rawValue,
            "vision_layers": fuser.visionLayers,
            "projector_rank": fuser.projectorRank,
            "visual_tokens": fuser.visualTokens,
            "patch_tokens": fuser.patchTokens,
            "feature_scale": m.featureScale,
            "injection_scale": m.injectionScale,
            "dropout": m.dropout,
            "llm_layers": fuser.llmLayers,
            "llm_width": fuser.llmWidth,
            "vision_width": fuser.visionWidth,
            "vision_depth": visionDepth,
            "tensors": tensors,
            "backbone": checkpoint.backbone,
            "vision": m.vision.path,
            "language": m.language.path,
            "step": checkpoint.step,
            "seed": Int(job.data.seed),
        ]
        if let source = checkpoint.source { out["checkpoint"] = URL(fileURLWithPath: source).standardizedFileURL.path }
        if let jobObject = try? JSONSerialization.jsonObject(with: Data(checkpoint.config.utf8)) { out["job"] = jobObject }
        return out
    }

    /// Writes both files into `dir` (created), each replaced atomically.
    func write(to dir: String) throws {
        do {
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            let url = URL(fileURLWithPath: dir)
            try SafetensorsWriter.write(params, metadata: ["format": "pt", "dehvf_fusion": fuser.fusion.rawValue],
                                        to: url.appendingPathComponent(Self.tensorsName))
            let json = try JSONSerialization.data(withJSONObject: configJSON,
                                                  options: [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes])
            try (json + Data("\n".utf8)).write(to: url.appendingPathComponent(Self.configName), options: .atomic)
        } catch {
            throw UserError("cannot write the adapter into \(dir)", cause: error)
        }
    }
}
