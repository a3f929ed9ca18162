import Foundation

extension JobConfig {
    /// The resolved config as canonical JSON: sorted keys, no whitespace, `/` unescaped. Equal configs
    /// give equal bytes, so it can be stored in checkpoints and hashed into ``jobID``.
    public func canonicalJSON() -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        // Encoding plain structs of strings, numbers and bools cannot fail.
        let data = try! encoder.encode(self)
        return String(decoding: data, as: UTF8.self)
    }

    /// Parses JSON written by ``canonicalJSON()`` (for example a checkpoint's `config` attribute), with
    /// the same rules as a YAML file (JSON is YAML); its paths are absolute already.
    public init(json: String) throws {
        self = try JobConfig.parse(yaml: json, source: "the job config JSON", baseDirectory: "/")
    }

    /// A deterministic 64-bit job id: FNV-1a of the canonical JSON with the fields that say where and
    /// how the job runs (cluster, security, checkpoint, logging and evaluation policy, the held-out set,
    /// where ViT features are kept) reset to defaults, so a coordinator resumed on another port or with more
    /// workers keeps the same id, while any change to what is trained (model, data, optimizer, compute
    /// threads) makes a new one.
    public var jobID: UInt64 {
        var c = self
        c.cluster = Cluster()
        c.security = Security()
        c.checkpoint = Checkpoint()
        c.logging = Logging()
        c.eval = Eval()
        c.optim.maxGradNorm = optim.gradientClip   // 0 and null both mean off: one id
        c.data.eval = nil   // which held-out set is scored changes nothing trained
        c.data.withoutFeatureKeeping()
        return Self.fnv1a(c.canonicalJSON())
    }

    /// What a worker needs to compute this job's micro-batches, and nothing else: the model, data and
    /// compute sections (the optimizer, checkpoints, cluster and security settings at their defaults).
    /// A worker that asks what to load (a probe Hello) is sent this.
    public var workerPart: JobConfig {
        var c = JobConfig(model: model, data: data, compute: compute)
        c.data.featureCache = data.featureCache
        return c
    }

    /// A deterministic 64-bit id of what a micro-batch's gradient depends on: the model, data and compute
    /// settings with every path blanked (a worker may mount the same files elsewhere, and the backbone's
    /// own fingerprint covers the weights). A worker is admitted only with the coordinator's compute id.
    public var computeID: UInt64 {
        var c = workerPart
        c.model.vision = ""
        c.model.language = ""
        c.data.train = ""
        c.data.eval = nil
        c.data.withoutFeatureKeeping()
        c.data.groupByLength = false   // the coordinator orders the rows; a worker computes what it is given
        return Self.fnv1a(c.canonicalJSON())
    }

    static func fnv1a(_ text: String) -> UInt64 {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for b in text.utf8 {
            h ^= UInt64(b)
            h = h &* 0x100_0000_01b3
        }
        return h
    }

    /// ``jobID`` as 16 lowercase hex digits, for logs and file names.
    public var jobIDString: String {
        let s = String(jobID, radix: 16)
        return String(repeating: "0", count: 16 - s.count) + s
    }
}

extension JobConfig.Data {
    /// Resets the keys that only say where candidate ViT features are kept (`feature_cache`,
    /// `feature_memory_mb`): features are a pure function of the image, so they change no result.
    mutating func withoutFeatureKeeping() {
        featureCache = nil
        featureMemoryMB = Self().featureMemoryMB
    }
}
