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
///
/// The features live in ``FeatureSlots``, outside malloc's heap, and are copied in and out: a returned
/// tensor is the caller's own, so a later eviction cannot change it.
public final class FeatureMemory: @unchecked Sendable {
    public struct Key: Hashable, Sendable {
        public var dataset: Int
        public var image: Int
    }

    /// Bytes of features this memory may hold (their float32 values).
    public let capacity: Int
    private struct Entry {
        var shape: [Int]
        var slot: Int
        var lastUse: UInt64
    }
    private var entries: [Key: Entry] = [:]
    /// Slots by the floats they hold (every image of one engine has the same [S, M, Dv]).
    private var slots: [Int: FeatureSlots] = [:]
    private var clock: UInt64 = 0
    private var held = 0
    private let lock = NSLock()

    public init(capacity: Int) { self.capacity = max(0, capacity) }

    /// A copy of the features of `key`, if held (and now the most recently used).
    func get(_ key: Key) -> Tensor? {
        lock.lock()
        defer { lock.unlock() }
        guard var entry = entries[key] else { return nil }
        clock += 1
        entry.lastUse = clock
        entries[key] = entry
        let floats = entry.shape.reduce(1, *)
        return Tensor(shape: entry.shape, copying: slots[floats]!.pointer(entry.slot))
    }

    /// Holds a copy of `features` for `key`, evicting the least recently used until they fit; features
    /// larger than the whole capacity are not held, nor are any when the system refuses the memory.
    func put(_ key: Key, _ features: Tensor) {
        let size = 4 * features.count
        lock.lock()
        defer { lock.unlock() }
        if let old = entries.removeValue(forKey: key) { release(old) }
        guard size <= capacity else { return }
        // A linear scan for the oldest: entries number capacity / (an image's features), about 450 at the
        // default cap with ViT-L/14-336, and each eviction stands for a vision forward that costs far more.
        while held + size > capacity, let oldest = entries.min(by: { $0.value.lastUse < $1.value.lastUse }) {
            entries[oldest.key] = nil
            release(oldest.value)
        }
        let pool = slots[features.count] ?? FeatureSlots(floats: features.count)
        slots[features.count] = pool
        guard let slot = pool.take() else { return }
        pool.pointer(slot).update(from: features.data, count: features.count)
        clock += 1
        entries[key] = Entry(shape: features.shape, slot: slot, lastUse: clock)
        held += size
    }

    private func release(_ entry: Entry) {
        let floats = entry.shape.reduce(1, *)
        slots[floats]!.give(entry.slot)
        held -= 4 * floats
    }

    /// Images held, and their features' bytes.
    public var count: Int { lock.lock(); defer { lock.unlock() }; return entries.count }
    public var bytes: Int { lock.lock(); defer { lock.unlock() }; return held }
}

/// Fixed-size slots of `floats` values in anonymous mappings of about 4 MiB (or one slot each, when a
/// slot is larger), each mapped when the slots before it are taken, never unmapped before the memory is
/// gone (a freed slot is reused).
///
/// Why not a `Tensor` per image: features stay for the whole run, while every vision forward that makes
/// one allocates and frees temporaries of similar sizes. From malloc's heap the two interleave, and the
/// temporaries' holes between long-lived features can never be given back: on the full demo (16000 images
/// of 12 KB, 197 MB) a coordinator computing in-process peaked at 287 MB with features in malloc's heap and
/// at 273 MB with them here, against a plan of 271. In their own mappings the features cost what they
/// hold, rounded up to one mapping.
final class FeatureSlots {
    static let mappingBytes = 4 << 20
    let floats: Int
    let perMapping: Int
    private var mappings: [UnsafeMutablePointer<Float>] = []
    private var freed: [Int] = []
    private var handedOut = 0

    init(floats: Int) {
        self.floats = max(1, floats)
        perMapping = max(1, Self.mappingBytes / (4 * self.floats))
    }

    /// A free slot, or nil when the system refuses another mapping.
    func take() -> Int? {
        if let slot = freed.popLast() { return slot }
        if handedOut == mappings.count * perMapping {
            let bytes = perMapping * floats * 4
            guard let base = mmap(nil, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0),
                  base != MAP_FAILED else { return nil }
            mappings.append(base.assumingMemoryBound(to: Float.self))
        }
        handedOut += 1
        return handedOut - 1
    }

    func give(_ slot: Int) { freed.append(slot) }

    func pointer(_ slot: Int) -> UnsafeMutablePointer<Float> {
        mappings[slot / perMapping] + (slot % perMapping) * floats
    }

    deinit {
        for m in mappings { munmap(m, perMapping * floats * 4) }
    }
}
