import Foundation
import Model
import Shard

/// Candidate ViT features, F_j = pool(post_layernorm(hidden_states[j][1:])) for each candidate layer j
/// (DESIGN.md §4), computed once per image: the vision tower is frozen, so they never change in a run.
/// Keyed by image (`DatasetFile.image(ofRow:)`): rows that share an image (COCO's five captions) share
/// its features, and the vision tower runs once for them. Held in memory, or with a `FeatureStore` on
/// disk (shared with other processes, nothing in memory).
public final class FeatureCache: @unchecked Sendable {
    public let config: FuserConfig
    private let vision: CLIPVisionModel
    private let store: FeatureStore?
    private var cache: [Int: Tensor] = [:]
    private let lock = NSLock()
    /// Images run through the vision tower so far (each at most once per run).
    public private(set) var visionRuns = 0
    public private(set) var hits = 0

    public init(vision: CLIPVisionModel, config: FuserConfig, store: FeatureStore? = nil) {
        self.vision = vision
        self.config = config
        self.store = store
    }

    private var shape: [Int] { [config.candidates, config.visualTokens, config.visionWidth] }

    /// Features [S, M, Dv] for each image id in `keys` (repeats allowed), computing the missing ones from
    /// `pixels(missingKeys)`, which returns normalised pixel values [n, 3, H, W] for those images in order.
    public func features(for keys: [Int], pixels: ([Int]) throws -> Tensor) throws -> [Tensor] {
        if let store { return try features(for: keys, store: store, pixels: pixels) }
        lock.lock()
        let missing = Array(Set(keys.filter { cache[$0] == nil })).sorted()
        hits += keys.count - missing.count
        lock.unlock()
        if !missing.isEmpty {
            // One image per vision forward: sgemm's rounding can depend on how many rows it gets, and which
            // images a process is missing depends on its history, so batching them would make a feature —
            // and every gradient after it — depend on which worker computed it (DESIGN.md §6).
            let computed = try compute(missing, pixels: pixels)
            lock.lock()
            for (k, f) in zip(missing, computed) { cache[k] = f }
            visionRuns += missing.count
            lock.unlock()
        }
        lock.lock()
        defer { lock.unlock() }
        return keys.map { cache[$0]! }
    }

    private func features(for keys: [Int], store: FeatureStore, pixels: ([Int]) throws -> Tensor) throws -> [Tensor] {
        var found: [Int: Tensor] = [:]
        for k in Set(keys) { found[k] = store.read(k, shape: shape) }
        let missing = Set(keys).subtracting(found.keys).sorted()
        if !missing.isEmpty {
            for (k, f) in zip(missing, try compute(missing, pixels: pixels)) {
                try store.write(k, f)
                found[k] = f
            }
        }
        lock.lock()
        hits += keys.count - missing.count
        visionRuns += missing.count
        lock.unlock()
        return keys.map { found[$0]! }
    }

    /// One image per vision forward (see above).
    private func compute(_ missing: [Int], pixels: ([Int]) throws -> Tensor) throws -> [Tensor] {
        let all = try pixels(missing)
        let size = all.count / max(missing.count, 1)
        return try (0..<missing.count).map { i in
            let one = Tensor(shape: [1] + all.shape.dropFirst(), borrowing: all.data + i * size, owner: all)
            return try vision.candidates(pixels: one, for: config)[0]
        }
    }

    /// Features held in memory (0 with a store: they live on disk).
    public var count: Int { lock.lock(); defer { lock.unlock() }; return cache.count }
}
