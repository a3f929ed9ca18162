import Foundation

/// Candidate ViT features, F_j = pool(post_layernorm(hidden_states[j][1:])) for each candidate layer j
/// (DESIGN.md §4), computed once per image: the vision tower is frozen, so they never change in a run.
public final class FeatureCache: @unchecked Sendable {
    public let config: FuserConfig
    private let vision: CLIPVisionModel
    private var cache: [Int: Tensor] = [:]
    private let lock = NSLock()
    /// Images run through the vision tower so far (each at most once per run).
    public private(set) var visionRuns = 0
    public private(set) var hits = 0

    public init(vision: CLIPVisionModel, config: FuserConfig) {
        self.vision = vision
        self.config = config
    }

    /// Features [S, M, Dv] for each key, computing the missing ones from `pixels(missingKeys)`, which
    /// returns normalised pixel values [n, 3, H, W] for those keys in order.
    public func features(for keys: [Int], pixels: ([Int]) throws -> Tensor) throws -> [Tensor] {
        lock.lock()
        let missing = Array(Set(keys.filter { cache[$0] == nil })).sorted()
        hits += keys.count - missing.count
        lock.unlock()
        if !missing.isEmpty {
            let computed = try Self.candidates(vision: vision, pixels: try pixels(missing), config: config)
            lock.lock()
            for (k, f) in zip(missing, computed) { cache[k] = f }
            visionRuns += missing.count
            lock.unlock()
        }
        lock.lock()
        defer { lock.unlock() }
        return keys.map { cache[$0]! }
    }

    public var count: Int { lock.lock(); defer { lock.unlock() }; return cache.count }

    /// Runs the vision tower on a batch and returns each image's candidate features [S, M, Dv].
    public static func candidates(vision: CLIPVisionModel, pixels: Tensor, config: FuserConfig) throws -> [Tensor] {
        let hidden = try vision.forward(pixelValues: pixels)
        let b = pixels.shape[0], np = config.patchTokens, dv = config.visionWidth
        let m = config.visualTokens, s = config.candidates
        let out = (0..<b).map { _ in Tensor(zeros: [s, m, dv]) }
        for (j, layer) in config.visionLayers.enumerated() {
            let post = vision.postLayerNorm(hidden[layer])   // [B, 1+Np, Dv]
            for i in 0..<b {
                let patches = post.data + (i * (np + 1) + 1) * dv   // drop CLS
                pool(patches, patchTokens: np, visualTokens: m, width: dv, into: out[i].data + j * m * dv)
            }
        }
        return out
    }

    /// Average-pools an [Np, Dv] patch grid to [M, Dv] over non-overlapping k x k windows, row-major over
    /// the pooled grid (torch's avg_pool2d on the [side, side] grid).
    static func pool(_ x: UnsafePointer<Float>, patchTokens np: Int, visualTokens m: Int, width dv: Int,
                     into y: UnsafeMutablePointer<Float>) {
        if m == np { y.update(from: x, count: np * dv); return }
        let side = Int(Double(np).squareRoot().rounded()), pooled = Int(Double(m).squareRoot().rounded())
        let k = side / pooled
        let inv = 1 / Float(k * k)
        y.update(repeating: 0, count: m * dv)
        for py in 0..<pooled {
            for px in 0..<pooled {
                let dst = y + (py * pooled + px) * dv
                for dy in 0..<k {
                    for dx in 0..<k {
                        Vec.axpy(inv, x + ((py * k + dy) * side + px * k + dx) * dv, dst, dv)
                    }
                }
            }
        }
    }
}
