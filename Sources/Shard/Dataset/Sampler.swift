import Foundation
import Model

/// Which micro-batch of the job: the unit of work (DESIGN §5).
public struct MicroBatchID: Hashable, Sendable, CustomStringConvertible {
    public var epoch: Int
    /// Step within the epoch.
    public var step: Int
    /// Micro-batch within the step, 0..<globalBatch/microBatch.
    public var index: Int

    public init(epoch: Int, step: Int, index: Int) {
        self.epoch = epoch
        self.step = step
        self.index = index
    }

    public var description: String { "(epoch \(epoch), step \(step), micro-batch \(index))" }
}

/// The data order: a pure function of (seed, epoch, step, micro-batch index).
///
/// Epoch e visits `permutation(epoch: e)` of 0..<N. Step s of the epoch takes positions
/// s*G ..< (s+1)*G of it (G = `globalBatch`), split in order into G/B micro-batches of B = `microBatch`.
/// The last N mod G positions of each epoch are dropped, so every step has a full global batch.
///
/// The permutation, exactly (64-bit unsigned, wrapping arithmetic; a Python script can reproduce it):
/// ```
/// mix(z):  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9
///          z = (z ^ (z >> 27)) * 0x94D049BB133111EB
///          return z ^ (z >> 31)
/// state = mix(mix(seed) + epoch)           # seed as its 64-bit two's-complement pattern
/// next(): state += 0x9E3779B97F4A7C15; return mix(state)    # SplitMix64
/// p = [0, 1, ..., N-1]
/// for i in N-1 down to 1: j = next() % (i + 1); swap p[i], p[j]    # Fisher-Yates
/// ```
/// (The modulo bias is below 2^-40 for any N this project sees; it is kept for easy reproduction.)
///
/// With `data.group_by_length` (``lengths`` given), the epoch's order groups rows of similar length, as
/// LLaVA's `group_by_modality_length` does, so a micro-batch (computed at the length of its longest row)
/// carries little padding. Still a pure function of (seed, epoch) and the rows' lengths: the permutation
/// above is cut into mega-batches of ``groupFactor`` global batches (the last one shorter), and each
/// mega-batch is sorted by length, longest first, ties kept in permutation order (a stable sort).
public struct Sampler: Sendable {
    public let count: Int
    public let globalBatch: Int
    public let microBatch: Int
    public let seed: UInt64
    /// Each row's length, when the order groups rows by length.
    public let lengths: [Int32]?
    /// Global batches per mega-batch when grouping by length.
    public static let groupFactor = 16
    private let cache = PermutationCache()

    /// Throws `.badSampler` unless 0 < microBatch, globalBatch % microBatch == 0 and globalBatch <= count.
    /// - Parameter lengths: the rows' lengths, to group rows of similar length (`data.group_by_length`).
    public init(count: Int, globalBatch: Int, microBatch: Int, seed: UInt64, groupingByLength lengths: [Int32]? = nil) throws {
        guard microBatch > 0, globalBatch > 0 else {
            throw ShardError(.badSampler, "batch sizes must be positive", expected: "global_batch > 0 and micro_batch > 0",
                             found: "global_batch \(globalBatch), micro_batch \(microBatch)")
        }
        guard globalBatch % microBatch == 0 else {
            throw ShardError(.badSampler, "micro_batch must divide global_batch: set data.micro_batch to a divisor "
                             + "of data.global_batch", expected: "global_batch % micro_batch == 0",
                             found: "global_batch \(globalBatch), micro_batch \(microBatch) "
                             + "(remainder \(globalBatch % microBatch))")
        }
        guard globalBatch <= count else {
            throw ShardError(.badSampler, "the dataset is smaller than one global batch, so an epoch has no step: "
                             + "lower data.global_batch or add data", expected: "global_batch <= \(count) rows",
                             found: "global_batch \(globalBatch)")
        }
        if let lengths, lengths.count != count {
            throw ShardError(.badSampler, "\(lengths.count) row lengths for \(count) rows")
        }
        self.count = count
        self.globalBatch = globalBatch
        self.microBatch = microBatch
        self.seed = seed
        self.lengths = lengths
    }

    /// Convenience for configs that hold the seed as a signed integer (its bit pattern is used).
    public init(count: Int, globalBatch: Int, microBatch: Int, seed: Int, groupingByLength lengths: [Int32]? = nil) throws {
        try self.init(count: count, globalBatch: globalBatch, microBatch: microBatch,
                      seed: UInt64(bitPattern: Int64(seed)), groupingByLength: lengths)
    }

    /// floor(N / global_batch).
    public var stepsPerEpoch: Int { count / globalBatch }
    public var microBatchesPerStep: Int { globalBatch / microBatch }

    /// The epoch and step-in-epoch of global step `globalStep` (counted from 0; negative is clamped to 0).
    public func position(globalStep: Int) -> (epoch: Int, step: Int) {
        let g = max(0, globalStep)
        return (g / stepsPerEpoch, g % stepsPerEpoch)
    }

    /// Epoch `epoch`'s visiting order of 0..<N (see the type's documentation for the algorithm).
    public func permutation(epoch: Int) -> [Int] {
        if let hit = cache.get(epoch) { return hit }
        var p = Self.permutation(count: count, seed: seed, epoch: epoch)
        if let lengths { p = Self.groupedByLength(p, lengths: lengths, megaBatch: Self.groupFactor * globalBatch) }
        cache.set(epoch, p)
        return p
    }

    /// `order` cut into mega-batches of `megaBatch`, each stably sorted by length, longest first.
    public static func groupedByLength(_ order: [Int], lengths: [Int32], megaBatch: Int) -> [Int] {
        var out: [Int] = []
        out.reserveCapacity(order.count)
        var start = 0
        while start < order.count {
            let chunk = order[start..<min(start + megaBatch, order.count)]
            // Stable: sort by (length descending, position in the permutation).
            out += chunk.enumerated().sorted { a, b in
                lengths[a.element] != lengths[b.element] ? lengths[a.element] > lengths[b.element] : a.offset < b.offset
            }.map(\.element)
            start += megaBatch
        }
        return out
    }

    public static func permutation(count: Int, seed: UInt64, epoch: Int) -> [Int] {
        var rng = SplitMix64(state: SplitMix64.mix(SplitMix64.mix(seed) &+ UInt64(bitPattern: Int64(epoch))))
        var p = Array(0..<count)
        var i = count - 1
        while i >= 1 {
            let j = Int(rng.next() % UInt64(i + 1))
            p.swapAt(i, j)
            i -= 1
        }
        return p
    }

    /// The dataset rows of micro-batch `id`. An id outside the job throws.
    public func indices(_ id: MicroBatchID) throws -> [Int] {
        guard id.epoch >= 0, id.step >= 0, id.step < stepsPerEpoch, id.index >= 0, id.index < microBatchesPerStep else {
            throw ShardError(.badSampler, "no such micro-batch \(id)",
                             expected: "epoch >= 0, step 0..<\(stepsPerEpoch), index 0..<\(microBatchesPerStep)",
                             found: "\(id)")
        }
        let start = id.step * globalBatch + id.index * microBatch
        return Array(permutation(epoch: id.epoch)[start..<(start + microBatch)])
    }

    /// The micro-batches of global step `globalStep`, in index order.
    public func microBatches(globalStep: Int) -> [MicroBatchID] {
        let (e, s) = position(globalStep: globalStep)
        return (0..<microBatchesPerStep).map { MicroBatchID(epoch: e, step: s, index: $0) }
    }
}

/// The last permutation computed: a step asks for its micro-batches one at a time, and recomputing
/// an O(N) shuffle for each would be waste. Only a cache: results never depend on it.
private final class PermutationCache: @unchecked Sendable {
    private let lock = NSLock()
    private var epoch = -1
    private var value: [Int] = []

    func get(_ e: Int) -> [Int]? {
        lock.lock()
        defer { lock.unlock() }
        return e == epoch ? value : nil
    }

    func set(_ e: Int, _ v: [Int]) {
        lock.lock()
        defer { lock.unlock() }
        epoch = e
        value = v
    }
}
