/// One training job, as described by a YAML file (DESIGN.md §8). Key names are the on-disk names.
///
/// Paths are absolute once loaded (relative paths in the file resolve against the file's directory).
/// The resolved config serialises to canonical JSON (``canonicalJSON()``), which goes into every
/// checkpoint and into the Welcome message, and parses back with ``JobConfig/init(json:)``.
public struct JobConfig: Codable, Sendable, Equatable {
    public var model: Model
    public var data: Data
    public var optim: Optim
    public var compute: Compute
    public var checkpoint: Checkpoint
    public var cluster: Cluster
    public var security: Security

    public init(model: Model, data: Data, optim: Optim = .init(), compute: Compute = .init(),
                checkpoint: Checkpoint = .init(), cluster: Cluster = .init(), security: Security = .init()) {
        self.model = model
        self.data = data
        self.optim = optim
        self.compute = compute
        self.checkpoint = checkpoint
        self.cluster = cluster
        self.security = security
    }

    public struct Model: Codable, Sendable, Equatable {
        /// CLIPVisionModel or CLIPModel directory. Required.
        public var vision: String
        /// LlamaForCausalLM directory. Required.
        public var language: String
        /// `dehvf` | `memvp` | `concat`.
        public var fusion: String = "dehvf"
        /// Candidate ViT hidden-state indices; nil means the default of DESIGN.md §4 (depends on Lv).
        public var visionLayers: [Int]? = nil
        public var projectorRank: Int = 128
        /// 0 = every patch; else the average-pooled token count.
        public var visualTokens: Int = 0
        public var featureScale: Double = 0.01
        public var injectionScale: Double = 0.1
        public var dropout: Double = 0.1

        public init(vision: String, language: String) {
            self.vision = vision
            self.language = language
        }

        enum CodingKeys: String, CodingKey, CaseIterable {
            case vision, language, fusion
            case visionLayers = "vision_layers"
            case projectorRank = "projector_rank"
            case visualTokens = "visual_tokens"
            case featureScale = "feature_scale"
            case injectionScale = "injection_scale"
            case dropout
        }
    }

    public struct Data: Codable, Sendable, Equatable {
        /// Training dataset (HDF5). Required.
        public var train: String
        /// Evaluation dataset (HDF5), optional.
        public var eval: String? = nil
        public var globalBatch: Int = 32
        public var microBatch: Int = 4
        public var seed: Int = 0
        /// Directory for candidate ViT features on disk, shared by the processes that see it (optional;
        /// without it each process keeps its own in memory). Not part of the job's identity: the features
        /// are stored exactly, so it changes no result.
        public var featureCache: String? = nil

        public init(train: String) { self.train = train }

        enum CodingKeys: String, CodingKey, CaseIterable {
            case train, eval
            case globalBatch = "global_batch"
            case microBatch = "micro_batch"
            case seed
            case featureCache = "feature_cache"
        }
    }

    public struct Optim: Codable, Sendable, Equatable {
        public var lr: Double = 1.0e-3
        public var betas: [Double] = [0.9, 0.95]
        public var eps: Double = 1.0e-8
        public var weightDecay: Double = 0.02
        public var warmupSteps: Int = 10
        /// Exactly one of `steps` and `epochs` is set in a loaded config (`steps: 300` when neither is given).
        public var steps: Int? = 300
        public var epochs: Int? = nil

        public init() {}

        enum CodingKeys: String, CodingKey, CaseIterable {
            case lr, betas, eps
            case weightDecay = "weight_decay"
            case warmupSteps = "warmup_steps"
            case steps, epochs
        }
    }

    public struct Compute: Codable, Sendable, Equatable {
        /// Compute threads per worker: part of the determinism contract (DESIGN.md §6).
        public var threads: Int = 1
        public init() {}
        enum CodingKeys: String, CodingKey, CaseIterable { case threads }
    }

    public struct Checkpoint: Codable, Sendable, Equatable {
        /// Checkpoint directory; default `runs` beside the YAML file.
        public var dir: String = "runs"
        public var every: Int = 50
        public var keep: Int = 3
        public init() {}
        enum CodingKeys: String, CodingKey, CaseIterable { case dir, every, keep }
    }

    public struct Cluster: Codable, Sendable, Equatable {
        /// `inprocess` | `local` | `manual` | `slurm`.
        public var launcher: String = "local"
        public var workers: Int = 2
        /// `tcp://host:port` the coordinator's ROUTER binds.
        public var bind: String = "tcp://127.0.0.1:5555"
        public var heartbeatMs: Int = 500
        public var timeoutMs: Int = 5000
        public init() {}
        enum CodingKeys: String, CodingKey, CaseIterable {
            case launcher, workers, bind
            case heartbeatMs = "heartbeat_ms"
            case timeoutMs = "timeout_ms"
        }
    }

    public struct Security: Codable, Sendable, Equatable {
        public var curve: Bool = false
        /// Coordinator's Z85 secret key file; default `keys/coordinator.key_secret` beside the YAML file.
        public var secretKey: String = "keys/coordinator.key_secret"
        /// Directory of admitted worker public key files (`*.key`); default `keys/workers`.
        public var allowedWorkers: String = "keys/workers"
        public init() {}
        enum CodingKeys: String, CodingKey, CaseIterable {
            case curve
            case secretKey = "secret_key"
            case allowedWorkers = "allowed_workers"
        }
    }

    enum CodingKeys: String, CodingKey, CaseIterable {
        case model, data, optim, compute, checkpoint, cluster, security
    }
}
