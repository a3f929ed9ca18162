import Cluster
import Crypto
import Foundation
import Model
import Shard

/// Everything needed to compute a micro-batch of a job, in any process: the frozen backbone (memory
/// mapped), the datasets, the model with its fuser, and the per-run cache of candidate ViT features.
/// Used by `worker` and by the coordinator's `inprocess` launcher, so both compute the same bits.
public final class TrainingEngine {
    public let setup: JobSetup
    public let backbone: Backbone
    public let model: DEHVFModel
    private var caches: [String: FeatureCache] = [:]
    /// Candidate features held in memory for every dataset without `data.feature_cache`: at most
    /// `data.feature_memory_mb`, least recently used evicted.
    public let featureMemory: FeatureMemory

    /// Resolves the job (``JobSetup``: configs, fingerprint, the checked training set), loads the frozen
    /// models, and sets the BLAS thread count to `compute.threads` (part of the determinism contract).
    public convenience init(job: JobConfig) throws {
        try self.init(setup: JobSetup(job: job))
    }

    public init(setup: JobSetup) throws {
        self.setup = setup
        let (bytes, overflow) = setup.job.data.featureMemoryMB.multipliedReportingOverflow(by: 1 << 20)
        featureMemory = FeatureMemory(capacity: overflow ? .max : bytes)
        BLAS.setThreads(setup.job.compute.threads)
        backbone = try Backbone.load(setup)
        model = DEHVFModel(llama: backbone.language, config: setup.fuser, initial: setup.initialParameters())
    }

    public var job: JobConfig { setup.job }
    public var fuser: FuserConfig { setup.fuser }
    public var train: DatasetFile { setup.train }
    /// The backbone's fingerprint (DESIGN.md §5): a worker holding another is refused.
    public var fingerprint: String { setup.fingerprint }

    /// The job's initial trainable parameters (a pure function of `data.seed`).
    public func initialParameters() -> TensorSet { setup.initialParameters() }

    /// Opens another dataset of this job (e.g. `data.eval`), checked against the backbones.
    public func open(_ path: String) throws -> DatasetFile { try setup.open(path) }

    /// Reads samples `indices` of `dataset`, cut to the micro-batch's longest row, and attaches their
    /// candidate features, keyed by image: rows that share an image (`image_index`) share one vision
    /// forward.
    public func batch(_ dataset: DatasetFile, indices: [Int]) throws -> (TrainingBatch, MicroBatch) {
        let mb = try dataset.readBatch(indices: indices, images: false).trimmed()
        let cache = try caches[dataset.path] ?? {
            let c = FeatureCache(vision: backbone.vision, config: fuser, store: try featureStore(dataset),
                                 memory: featureMemory, dataset: caches.count)
            caches[dataset.path] = c
            return c
        }()
        let withImage = indices.enumerated().filter { mb.hasImage[$0.offset] != 0 }
        let feats = try cache.features(for: withImage.map { dataset.image(ofRow: $0.element) }) { missing in
            try dataset.normalizedImages(images: missing)
        }
        var features = [Tensor?](repeating: nil, count: indices.count)
        for ((position, _), f) in zip(withImage, feats) { features[position] = f }
        let batch = TrainingBatch(tokens: mb.tokens, inputIDs: mb.inputIDs, labels: mb.labels, lengths: mb.lengths,
                                  sampleIndices: indices, features: features)
        return (batch, mb)
    }

    /// With `data.feature_cache`: the store for `dataset`'s features, in a subdirectory named by what the
    /// features depend on (the ViT's fingerprint, the candidate layers, the pooling, and the dataset file's
    /// path, size and modification time), so a changed backbone or dataset never reads stale features.
    /// Files are named by image id (`keys=image`; stores from before were named by row, which differs for
    /// a file with `image_index`, so they get a directory of their own).
    func featureStore(_ dataset: DatasetFile) throws -> FeatureStore? {
        guard let root = job.data.featureCache else { return nil }
        let attributes = try? FileManager.default.attributesOfItem(atPath: dataset.path)
        let size = (attributes?[.size] as? NSNumber)?.int64Value ?? -1
        let modified = (attributes?[.modificationDate] as? Date)?.timeIntervalSince1970 ?? 0
        let identity = "\(setup.visionFingerprint)|layers=\(fuser.visionLayers)|tokens=\(fuser.visualTokens)|"
            + "\(URL(fileURLWithPath: dataset.path).standardizedFileURL.path)|\(size)|\(modified)|keys=image"
        let key = SHA256.hash(data: Data(identity.utf8)).prefix(8).map { String(format: "%02x", $0) }.joined()
        return try FeatureStore(directory: URL(fileURLWithPath: root.appending(key))) { message in
            FileHandle.standardError.write(Data("warning: \(message)\n".utf8))
        }
    }

    /// Vision-tower runs so far for `dataset`: once per image, and again for an image whose features
    /// were evicted from `featureMemory` (none with `data.feature_cache`).
    public func visionRuns(_ dataset: DatasetFile) -> Int { caches[dataset.path]?.visionRuns ?? 0 }

    /// One micro-batch of training data: loss sum, label count and summed gradients. Dropout masks are
    /// keyed by (seed, step, sample, layer, element), so the result does not depend on who computes it.
    public func gradients(indices: [Int], params: TensorSet, step: Int, dropout: Bool,
                          dataset: DatasetFile? = nil) throws -> MicroBatchGradients {
        let (batch, _) = try self.batch(dataset ?? train, indices: indices)
        let mask = dropout ? DropoutMask(p: fuser.dropout, seed: UInt64(job.data.seed), step: step) : nil
        return try model.gradients(batch, params: params, dropout: mask)
    }
}
