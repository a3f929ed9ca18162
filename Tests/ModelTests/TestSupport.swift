import Model

/// Deterministic test randomness (SplitMix64), so failures reproduce.
struct TestRNG {
    var state: UInt64
    init(_ seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
    /// Uniform in [-scale, scale).
    mutating func uniform(_ scale: Float = 1) -> Float {
        Float(Double(next() >> 11) / Double(1 << 53) * 2 - 1) * scale
    }
    mutating func array(_ n: Int, _ scale: Float = 1) -> [Float] { (0..<n).map { _ in uniform(scale) } }
    mutating func tensor(_ shape: [Int], _ scale: Float = 1) -> Tensor {
        Tensor(shape: shape, values: array(shape.reduce(1, *), scale))
    }
}

/// Σ w·y in double: the scalar loss whose gradient the finite-difference checks compare.
func weightedSum(_ y: [Float], _ w: [Float]) -> Double {
    var s = 0.0
    for i in 0..<y.count { s += Double(y[i]) * Double(w[i]) }
    return s
}

/// Central differences of `loss` w.r.t. each element of `x` (float32 inputs, double loss).
func numericGradient(_ x: [Float], step: Float, _ loss: ([Float]) -> Double) -> [Double] {
    var g = [Double](repeating: 0, count: x.count)
    var xp = x
    for i in 0..<x.count {
        let orig = xp[i]
        xp[i] = orig + step
        let hi = Double(xp[i])
        let lp = loss(xp)
        xp[i] = orig - step
        let lo = Double(xp[i])
        let lm = loss(xp)
        xp[i] = orig
        g[i] = (lp - lm) / (hi - lo)
    }
    return g
}

/// The worst |analytic - numeric| / (atol + rtol |numeric|); a check passes when this is <= 1.
func gradientError(_ analytic: [Float], _ numeric: [Double], rtol: Double, atol: Double) -> Double {
    precondition(analytic.count == numeric.count)
    var worst = 0.0
    for i in 0..<analytic.count {
        worst = max(worst, abs(Double(analytic[i]) - numeric[i]) / (atol + rtol * abs(numeric[i])))
    }
    return worst
}

func maxAbsDiff(_ a: [Float], _ b: [Float]) -> Float {
    precondition(a.count == b.count, "\(a.count) vs \(b.count)")
    var m: Float = 0
    for i in 0..<a.count { m = max(m, abs(a[i] - b[i])) }
    return m
}

/// An in-memory `WeightSource`, strict like the safetensors reader.
final class DictWeights: WeightSource {
    var tensors: [String: Tensor]
    var taken = Set<String>()
    init(_ tensors: [String: Tensor]) { self.tensors = tensors }
    func take(_ name: String, shape: [Int]) throws -> Tensor {
        guard let t = tensors[name] else { throw ModelError(.missingTensor, "no tensor '\(name)'") }
        guard t.shape == shape else { throw ModelError(.badShape, "'\(name)' is \(t.shape), expected \(shape)") }
        taken.insert(name)
        return t
    }
    func contains(_ name: String) -> Bool { tensors[name] != nil }
    var names: [String] { Array(tensors.keys) }
    func finish(ignoringPrefixes: [String]) throws {
        for n in tensors.keys where !taken.contains(n) && !ignoringPrefixes.contains(where: { n.hasPrefix($0) }) {
            throw ModelError(.unexpectedTensor, "tensor '\(n)' was not used")
        }
    }
}

extension Array where Element == Float {
    func withPtr<R>(_ body: (UnsafePointer<Float>) -> R) -> R { withUnsafeBufferPointer { body($0.baseAddress!) } }
}
