import Model

/// Deterministic test randomness (SplitMix64), so a failing test reproduces.
public struct TestRNG: RandomNumberGenerator {
    private var state: SplitMix64
    public init(_ seed: UInt64) { state = SplitMix64(state: seed) }
    public mutating func next() -> UInt64 { state.next() }

    /// Uniform in [-scale, scale).
    public mutating func uniform(_ scale: Float = 1) -> Float {
        Float(Double(next() >> 11) / Double(1 << 53) * 2 - 1) * scale
    }
    public mutating func array(_ n: Int, _ scale: Float = 1) -> [Float] { (0..<n).map { _ in uniform(scale) } }
    public mutating func tensor(_ shape: [Int], _ scale: Float = 1) -> Tensor {
        Tensor(shape: shape, values: array(shape.reduce(1, *), scale))
    }
}
