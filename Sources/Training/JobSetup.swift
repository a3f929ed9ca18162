import Cluster
import Foundation
import Model
import Shard

/// A job resolved against its files without loading the frozen weights: the backbones' configs and
/// fingerprint (hashed streaming, no pages kept), the trainable part's shapes, and the training
/// dataset, checked against both backbones. This is all a coordinator that does not compute needs;
/// `TrainingEngine` adds the models on top of it.
public struct JobSetup {
    public let job: JobConfig
    public let vision: CLIPVisionConfig
    public let language: LlamaConfig
    /// The vision weights' fingerprint alone (it keys the feature cache).
    public let visionFingerprint: String
    /// The pair's fingerprint (DESIGN.md §5): checkpoints record it, workers are admitted by it.
    public let fingerprint: String
    public let fuser: FuserConfig
    public let train: DatasetFile
    /// What the frozen weights hold, from their files' headers (nothing of the data is read).
    public let visionWeights: WeightsSummary
    public let languageWeights: WeightsSummary

    /// Elements and bytes of one backbone's weight files.
    public struct WeightsSummary: Sendable {
        /// Values the model reads (its tower's tensors).
        public var elements: Int
        /// Bytes of the safetensors files as stored.
        public var storedBytes: Int
        /// Whether any tensor is stored as F16 or BF16 (it is read through a node's F32 cache).
        public var halfPrecision: Bool
        /// Bytes the model maps as float32.
        public var float32Bytes: Int { elements * 4 }
    }

    /// The two model directories, opened (headers read, files mapped, no weights read).
    public let visionDirectory: VisionBackboneDirectory
    public let languageDirectory: LanguageBackboneDirectory

    /// - Parameter loading: whether this process will load the models (`Backbone.load(_:)`): then the
    ///   directories are opened through the node's F32 cache (half-precision files are widened there
    ///   once per node, their digests recorded as they are) and hashed through their maps, whose pages
    ///   the models are about to use. A process that never loads them (a coordinator whose workers
    ///   compute) hashes the files streaming and leaves the page cache as it found it.
    public init(job: JobConfig, loading: Bool = true) throws {
        self.job = job
        let cache: F32Cache? = loading ? .forThisNode() : nil
        visionDirectory = try VisionBackboneDirectory.open(URL(fileURLWithPath: job.model.vision.path), cache: cache)
        languageDirectory = try LanguageBackboneDirectory.open(URL(fileURLWithPath: job.model.language.path), cache: cache)
        vision = visionDirectory.config
        language = languageDirectory.config
        func summary(_ archive: SafetensorsArchive, names: [String], prefix: String) -> WeightsSummary {
            let infos = names.compactMap { archive.info(prefix + $0) }
            return WeightsSummary(elements: infos.reduce(0) { $0 + $1.shape.reduce(1, *) },
                                  storedBytes: archive.files.reduce(0) { $0 + $1.sourceIdentity.size },
                                  halfPrecision: infos.contains { $0.dtype == .f16 || $0.dtype == .bf16 })
        }
        visionWeights = summary(visionDirectory.archive, names: visionDirectory.weights.names, prefix: visionDirectory.weightPrefix)
        languageWeights = summary(languageDirectory.archive, names: languageDirectory.archive.names, prefix: "")
        let reading: BackboneFingerprint.Reading = loading ? .mapped : .streaming
        visionFingerprint = try visionDirectory.fingerprint(reading: reading)
        fingerprint = BackboneFingerprint.pair(vision: visionFingerprint, language: try languageDirectory.fingerprint(reading: reading))
        fuser = try FuserConfig(job: job.model, vision: vision, language: language)
        train = try DatasetFile(path: job.data.train.path)
        try Self.check(train, vision: vision, language: language)
        try Self.checkPositions(train, fuser: fuser, language: language)
    }

    /// The job's initial trainable parameters (a pure function of `data.seed`).
    public func initialParameters() -> TensorSet { fuser.initialParameters(seed: UInt64(job.data.seed)) }

    /// Opens another dataset of this job (e.g. `data.eval`), checked against the backbones.
    public func open(_ path: String) throws -> DatasetFile {
        let d = try DatasetFile(path: path)
        try Self.check(d, vision: vision, language: language)
        try Self.checkPositions(d, fuser: fuser, language: language)
        return d
    }

    /// The longest row (plus the visual tokens in concat) must fit the
    /// language model's positions, unless its RoPE extends them: found when the job starts, not on a worker.
    static func checkPositions(_ d: DatasetFile, fuser: FuserConfig, language: LlamaConfig) throws {
        let longestRow = Int(d.rowLengths.max() ?? 0)
        let longest = longestRow + (fuser.fusion == .concat ? fuser.visualTokens : 0)
        guard longest <= language.maxPositionEmbeddings || language.ropeScaling.allowsPositionsPastMaxPositionEmbeddings else {
            throw ShardError(.badShape, "rows are longer than the language model's max_position_embeddings, which rope type "
                             + "'\(language.ropeScaling.typeName)' does not extend: shorten the rows when preparing the data"
                             + (fuser.fusion == .concat ? " or use fewer model.visual_tokens" : ""),
                             path: d.path, object: "/input_ids",
                             expected: "at most \(language.maxPositionEmbeddings) positions",
                             found: "a row of \(longestRow) tokens" + (fuser.fusion == .concat ? " + \(fuser.visualTokens) visual tokens" : ""))
        }
    }

    /// A dataset must fit the backbones: its images the ViT's input size, every token id the LLM's
    /// vocabulary (checked here, once, rather than deep in a step on some worker).
    static func check(_ d: DatasetFile, vision: CLIPVisionConfig, language: LlamaConfig) throws {
        try d.checkTokenIDs(vocabularySize: language.vocabSize)
        guard d.imageHeight == vision.imageSize, d.imageWidth == vision.imageSize else {
            throw ShardError(.badShape, "the images do not fit the vision model; prepare the data with --image-size \(vision.imageSize)",
                             path: d.path, object: "/images", expected: "\(vision.imageSize)x\(vision.imageSize)",
                             found: "\(d.imageHeight)x\(d.imageWidth)")
        }
    }
}
