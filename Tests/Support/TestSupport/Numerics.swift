import Model

/// Σ w·y in double: the scalar loss whose gradient the finite-difference checks compare.
public func weightedSum(_ y: [Float], _ w: [Float]) -> Double {
    var s = 0.0
    for i in 0..<y.count { s += Double(y[i]) * Double(w[i]) }
    return s
}

/// Central differences of `loss` w.r.t. each element of `x` (float32 inputs, double loss).
public func numericGradient(_ x: [Float], step: Float, _ loss: ([Float]) -> Double) -> [Double] {
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
public func gradientError(_ analytic: [Float], _ numeric: [Double], rtol: Double, atol: Double) -> Double {
    precondition(analytic.count == numeric.count)
    var worst = 0.0
    for i in 0..<analytic.count {
        worst = max(worst, abs(Double(analytic[i]) - numeric[i]) / (atol + rtol * abs(numeric[i])))
    }
    return worst
}

public func maxAbsDiff(_ a: [Float], _ b: [Float]) -> Float {
    precondition(a.count == b.count, "\(a.count) vs \(b.count)")
    var m: Float = 0
    for i in 0..<a.count { m = max(m, abs(a[i] - b[i])) }
    return m
}

/// A tensor's elements as bit patterns (for bitwise comparisons that show where they differ).
public func bits(_ t: Tensor) -> [UInt32] { t.array.map(\.bitPattern) }

extension Array where Element == Float {
    public func withPtr<R>(_ body: (UnsafePointer<Float>) -> R) -> R { withUnsafeBufferPointer { body($0.baseAddress!) } }
}

extension TensorSet {
    /// Same names, shapes and bits (the determinism contract's check; `==` says the same).
    public func isBitwiseEqual(_ other: TensorSet) -> Bool { self == other }
}
