import ArgumentParser
import Model

/// One training job, as described by a YAML file (DESIGN.md §8). Each key is declared once, here: its
/// name (the `CodingKeys`, the on-disk spelling), its type and its default. Reading a file
/// (``JobConfig/load(file:overrides:)``) fills in the defaults, reports unknown keys, resolves
/// ``ConfigPath``s and runs ``problems()``.
///
/// The resolved config serialises to canonical JSON (``canonicalJSON()``), which goes into every
/// checkpoint and into the Welcome message, and parses back with ``JobConfig/init(json:)``.
public struct JobConfig: Codable, Sendable, Equatable {
    public var model = Model()
    public var data = Data()
    public var optim = Optim()
    public var eval = Eval()
    public var compute = Compute()
    public var checkpoint = Checkpoint()
    public var logging = Logging()
    public var cluster = Cluster()
    public var security = Security()

    /// Every default (and no paths to the model and data, which a job must name).
    public init() {}

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
        public var vision: ConfigPath = ""
        /// LlamaForCausalLM directory. Required.
        public var language: ConfigPath = ""
        public var fusion: FusionMode = .dehvf
        /// Candidate ViT hidden-state indices; nil means the default of DESIGN.md §4 (depends on Lv).
        public var visionLayers: [Int]? = nil
        public var projectorRank = 128
        /// 0 = every patch; else the average-pooled token count.
        public var visualTokens = 0
        public var featureScale = 0.01
        public var injectionScale = 0.1
        public var dropout = 0.1

        public init(vision: ConfigPath = "", language: ConfigPath = "") {
            self.vision = vision
            self.language = language
        }

        enum CodingKeys: String, CodingKey {
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
        public var train: ConfigPath = ""
        /// Evaluation dataset (HDF5), optional.
        public var eval: ConfigPath? = nil
        public var globalBatch = 32
        public var microBatch = 4
        public var seed = 0
        /// Directory for candidate ViT features on disk, shared by the processes that see it (optional;
        /// without it each process keeps its own in memory). Not part of the job's identity: the features
        /// are stored exactly, so it changes no result.
        public var featureCache: ConfigPath? = nil
        /// Rows of similar length share micro-batches (a pure function of (seed, epoch); DESIGN.md §5).
        public var groupByLength = false
        /// Without `featureCache`: the most a worker keeps of candidate ViT features in memory, in MiB; the
        /// least recently used image is evicted and computed again, to the same bits, when next needed.
        /// The default holds about 450 images at ViT-L/14-336 (9.4 MB each with four candidate layers)
        /// and whole small datasets; it bounds what would otherwise grow to 58 GB for ScienceQA. Not part
        /// of the job's identity: it changes no result.
        public var featureMemoryMB = 4096

        public init(train: ConfigPath = "") { self.train = train }

        enum CodingKeys: String, CodingKey {
            case train, eval
            case globalBatch = "global_batch"
            case microBatch = "micro_batch"
            case seed
            case featureCache = "feature_cache"
            case groupByLength = "group_by_length"
            case featureMemoryMB = "feature_memory_mb"
        }
    }

    public struct Optim: Codable, Sendable, Equatable {
        public var lr = 1.0e-3
        public var betas = [0.9, 0.95]
        public var eps = 1.0e-8
        public var weightDecay = 0.02
        public var warmupSteps = 10
        /// The job's length: `steps`, or `epochs` whole epochs; neither means 300 steps
        /// (``totalSteps(stepsPerEpoch:)``).
        public var steps: Int? = nil
        public var epochs: Int? = nil
        /// Clips the step's combined gradient (the exact sum over the global batch divided by its label
        /// count) to this global L2 norm before AdamW, with `torch.nn.utils.clip_grad_norm_` semantics:
        /// every gradient is multiplied by min(1, max_grad_norm / (norm + 1e-6)). Absent, null or 0: off, as
        /// in the paper's recipe. Part of the job id: it changes what is trained.
        public var maxGradNorm: Double? = nil

        public init() {}

        /// Optimizer steps in the whole job.
        public func totalSteps(stepsPerEpoch: Int) -> Int { steps ?? epochs.map { $0 * stepsPerEpoch } ?? 300 }

        /// The clipping threshold, or nil when clipping is off (`max_grad_norm` absent, null or 0).
        public var gradientClip: Double? { maxGradNorm.flatMap { $0 > 0 ? $0 : nil } }

        enum CodingKeys: String, CodingKey {
            case lr, betas, eps
            case weightDecay = "weight_decay"
            case warmupSteps = "warmup_steps"
            case steps, epochs
            case maxGradNorm = "max_grad_norm"
        }
    }

    public struct Eval: Codable, Sendable, Equatable {
        /// Score `data.eval` every this many steps, on the job's workers; 0: only when training ends.
        public var every = 0
        public init() {}
    }

    public struct Compute: Codable, Sendable, Equatable {
        /// Compute threads per worker: part of the determinism contract (DESIGN.md §6).
        public var threads = 1
        public init() {}
    }

    public struct Checkpoint: Codable, Sendable, Equatable {
        /// Checkpoint directory; default `runs` beside the YAML file.
        public var dir: ConfigPath = "runs"
        public var every = 50
        public var keep = 3
        /// Which held-out figure picks the checkpoint the `best` file names (kept however old it gets).
        public var keepBest: BestMetric = .none
        public init() {}

        enum CodingKeys: String, CodingKey {
            case dir, every, keep
            case keepBest = "keep_best"
        }
    }

    /// What the coordinator records beside train.jsonl. Not part of the job's identity.
    public struct Logging: Codable, Sendable, Equatable {
        /// TensorBoard event files in `CHECKPOINT_DIR/tb` (``TensorBoardLog``): the train.jsonl figures
        /// as scalars, x = optimizer steps completed.
        public var tensorboard = true
        public init() {}
    }

    public struct Cluster: Codable, Sendable, Equatable {
        public var launcher: Launcher = .local
        public var workers = 2
        /// `tcp://host:port` the coordinator's ROUTER binds.
        public var bind = "tcp://127.0.0.1:5555"
        public var heartbeatMs = 500
        /// A worker silent this long is dead and its micro-batches go to others.
        public var timeoutMs = 5000
        /// A micro-batch without a result this long (its worker still heartbeating) goes to others.
        public var workTimeoutMs = 600_000
        public init() {}

        enum CodingKeys: String, CodingKey {
            case launcher, workers, bind
            case heartbeatMs = "heartbeat_ms"
            case timeoutMs = "timeout_ms"
            case workTimeoutMs = "work_timeout_ms"
        }
    }

    public struct Security: Codable, Sendable, Equatable {
        public var curve = false
        /// Coordinator's Z85 secret key file; default `keys/coordinator.key_secret` beside the YAML file.
        public var secretKey: ConfigPath = "keys/coordinator.key_secret"
        /// Directory of admitted worker public key files (`*.key`); default `keys/workers`.
        public var allowedWorkers: ConfigPath = "keys/workers"
        /// Allows a non-loopback `cluster.bind` without CURVE (a trusted network), with a warning.
        public var insecure = false
        public init() {}

        enum CodingKeys: String, CodingKey {
            case curve
            case secretKey = "secret_key"
            case allowedWorkers = "allowed_workers"
            case insecure
        }
    }
}

/// Where a job's micro-batches are computed (`cluster.launcher`).
public enum Launcher: String, Codable, Sendable, CaseIterable {
    /// In the coordinator's own process: one machine, no network.
    case inprocess
    /// `cluster.workers` worker processes the coordinator starts on this machine, over ZeroMQ.
    case local
    /// Workers that join from anywhere with `worker --join tcp://HOST:PORT`.
    case manual
    /// Workers started by `srun` (see clusters/slurm/train.sbatch).
    case slurm
}

/// The held-out figure `checkpoint.keep_best` ranks checkpoints by.
public enum BestMetric: String, Codable, Sendable, CaseIterable {
    /// No `best` file.
    case none
    /// Multiple-choice accuracy on `data.eval`, higher is better.
    case accuracy
    /// Mean token loss on `data.eval`, lower is better.
    case loss
}

// The closed choices read from configs and from the command line (`bench --modes dehvf memvp`).
extension FusionMode: ConfigEnum, ExpressibleByArgument {}
extension Launcher: ConfigEnum, ExpressibleByArgument {}
extension BestMetric: ConfigEnum {}
