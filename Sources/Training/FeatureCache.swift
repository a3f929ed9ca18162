import Foundation
import Model
import Shard

/// Candidate ViT features, F_j = pool(post_layernorm(hidden_states[j][1:])) for each candidate layer j
/// (DESIGN.md §4), of one dataset's images, keyed by image (`DatasetFile.image(ofRow:)`): rows that share
/// an image (COCO's five captions) share its features, and the vision tower runs once for them.
///
/// Features are a pure function of the image (the tower is frozen and runs one image at a time), so where
/// they are kept changes no result: in a `FeatureStore` on disk (shared with other processes, nothing in
/// memory), or else in the process's bounded `FeatureMemory`, where an evicted image is computed again,
/// to the same bits, the next time a row needs it.
public final class FeatureCache: @unchecked Sendable {
    public let config: FuserConfig
    private let vision: CLIPVisionModel
    private let store: FeatureStore?
    private let memory: FeatureMemory
    /// This dataset's keys in `memory`, which other datasets of the process share.
    private let dataset: Int
    private let lock = NSLock()
    /// Images run through the vision tower so far: once per image, and again after an eviction.
    public private(set) var visionRuns = 0
    public private(set) var hits = 0

    /// `dataset` tells this dataset's images apart from other datasets' in the shared `memory`.
    public init(vision: CLIPVisionModel, config: FuserConfig, store: FeatureStore? = nil, memory: FeatureMemory,
                dataset: Int) {
        self.vision = vision
        self.config = config
        self.store = store
        self.memory = memory
        self.dataset = dataset
    }

    private var shape: [Int] { [config.candidates, config.visualTokens, config.visionWidth] }

    /// Features [S, M, Dv] for each image id in `images` (repeats allowed), computing the missing ones from
    /// `pixels(missing)`, which returns normalised pixel values [n, 3, H, W] for those images in order.
    /// Every image of the call gets its features, even when they exceed the memory's capacity.
    public func features(for images: [Int], pixels: ([Int]) throws -> Tensor) throws -> [Tensor] {
        var found: [Int: Tensor] = [:]
        for image in Set(images) { found[image] = lookup(image) }
        let missing = Set(images).subtracting(found.keys).sorted()
        if !missing.isEmpty {
            for (image, f) in zip(missing, try compute(missing, pixels: pixels)) {
                try keep(image, f)
                found[image] = f
            }
        }
        lock.lock()
        hits += images.count - missing.count
        visionRuns += missing.count
        lock.unlock()
        return images.map { found[$0]! }
    }

    private func lookup(_ image: Int) -> Tensor? {
        if let store { return store.read(image, shape: shape) }
        return memory.get(.init(dataset: dataset, image: image))
    }

    private func keep(_ image: Int, _ features: Tensor) throws {
        if let store { try store.write(image, features) } else { memory.put(.init(dataset: dataset, image: image), features) }
    }

    /// One image per vision forward: sgemm's rounding can depend on how many rows it gets, and which
    /// images a process is missing depends on its history (and on its memory's evictions), so batching
    /// them would make a feature, and every gradient after it, depend on which worker computed it
    /// (DESIGN.md §6).
    private func compute(_ missing: [Int], pixels: ([Int]) throws -> Tensor) throws -> [Tensor] {
        let all = try pixels(missing)
        let size = all.count / max(missing.count, 1)
        return try (0..<missing.count).map { i in
            let one = Tensor(shape: [1] + all.shape.dropFirst(), borrowing: all.data + i * size, owner: all)
            return try vision.candidates(pixels: one, for: config)[0]
        }
    }
}

/// Candidate features held in a process's memory, at most `capacity` bytes (`data.feature_memory_mb`),
/// the least recently used evicted first. One per `TrainingEngine`, shared by its datasets, so the cap is
/// per worker.
public final class FeatureMemory: @unchecked Sendable {
    public struct Key: Hashable, Sendable {
        public var dataset: Int
        public var image: Int
    }

    /// Bytes of features this memory may hold (their float32 values).
    public let capacity: Int
    private var entries: [Key: (features: Tensor, lastUse: UInt64)] = [:]
    private var clock: UInt64 = 0
    private var held = 0
    private let lock = NSLock()

    public init(capacity: Int) { self.capacity = max(0, capacity) }

    /// The features of `key`, if held (and now the most recently used).
    func get(_ key: Key) -> Tensor? {
        lock.lock()
        defer { lock.unlock() }
        guard let entry = entries[key] else { return nil }
        clock += 1
        entries[key] = (entry.features, clock)
        return entry.features
    }

    /// Holds `features` for `key`, evicting the least recently used until they fit; features larger than
    /// the whole capacity are not held.
    func put(_ key: Key, _ features: Tensor) {
        let size = 4 * features.count
        lock.lock()
        defer { lock.unlock() }
        if let old = entries.removeValue(forKey: key) { held -= 4 * old.features.count }
        guard size <= capacity else { return }
        // A linear scan for the oldest: entries number capacity / (an image's features), about 450 at the
        // default cap with ViT-L/14-336, and each eviction stands for a vision forward that costs far more.
        while held + size > capacity, let oldest = entries.min(by: { $0.value.lastUse < $1.value.lastUse }) {
            entries[oldest.key] = nil
            held -= 4 * oldest.value.features.count
        }
        clock += 1
        entries[key] = (features, clock)
        held += size
    }

    /// Images held, and their features' bytes.
    public var count: Int { lock.lock(); defer { lock.unlock() }; return entries.count }
    public var bytes: Int { lock.lock(); defer { lock.unlock() }; return held }
}
