import Foundation

/// Deterministic random numbers that depend only on what they are for, never on who computes them.
///
/// Everything random in training is a pure function of a key: dropout masks of (seed, step, sample,
/// layer, element) — DESIGN.md §4 — so a micro-batch's gradient is the same on any worker; parameter
/// initialisation of (seed, tensor name). The mixer is SplitMix64's finaliser (Steele et al. 2014), which
/// a Python script reproduces in a few lines:
///
///     def mix(z): z = (z + 0x9E3779B97F4A7C15) & M; z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M
///                 z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M; return z ^ (z >> 31)
public enum CounterRNG {
    @inlinable
    public static func mix(_ value: UInt64) -> UInt64 { SplitMix64.mix(value &+ 0x9E37_79B9_7F4A_7C15) }

    /// A key folding several counters: mix(mix(mix(a) ^ b) ^ c)...
    @inlinable
    public static func key(_ parts: UInt64...) -> UInt64 {
        var k: UInt64 = 0
        for p in parts { k = mix(k ^ p) }
        return k
    }

    /// Uniform in [0, 1) with 24 random bits, for element `counter` under `key`.
    @inlinable
    public static func uniform(key: UInt64, counter: UInt64) -> Float {
        Float(mix(key ^ (counter &* 0xD6E8_FEB8_6659_FD93)) >> 40) * 0x1p-24
    }
}

/// SplitMix64 (Steele, Lea, Flood 2014), as in Java's SplittableRandom and Vigna's reference code.
public struct SplitMix64: Sendable {
    public var state: UInt64
    public init(state: UInt64) { self.state = state }

    @inlinable
    public static func mix(_ x: UInt64) -> UInt64 {
        var z = x
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        return Self.mix(state)
    }
}

/// The dropout mask generator of DESIGN.md §4: keep element e (= t*M + m) of (seed, step, sample, layer)
/// when its uniform draw is >= p; kept elements are scaled by 1/(1-p) (inverted dropout).
public struct DropoutMask: Sendable {
    public let p: Float
    public let seed: UInt64
    public let step: UInt64

    public init(p: Float, seed: UInt64, step: Int) {
        self.p = p
        self.seed = seed
        self.step = UInt64(step)
    }

    /// Writes `count` multipliers (0 or 1/(1-p)) for elements 0..<count of (sample, layer).
    public func fill(sample: Int, layer: Int, count: Int, into out: UnsafeMutablePointer<Float>) {
        let key = CounterRNG.key(seed, step, UInt64(sample), UInt64(layer))
        let scale = 1 / (1 - p)
        for e in 0..<count {
            out[e] = CounterRNG.uniform(key: key, counter: UInt64(e)) >= p ? scale : 0
        }
    }
}

/// A seeded stream for initialisation: SplitMix64 over a counter, keyed by (seed, tensor name).
public struct InitRNG {
    private let key: UInt64
    private var counter: UInt64 = 0

    public init(seed: UInt64, name: String) {
        var h: UInt64 = 0xCBF2_9CE4_8422_2325  // FNV-1a of the name, then mixed with the seed
        for b in name.utf8 { h = (h ^ UInt64(b)) &* 0x100_0000_01B3 }
        key = CounterRNG.key(seed, h)
    }

    public mutating func nextUniform() -> Float {
        defer { counter += 1 }
        return CounterRNG.uniform(key: key, counter: counter)
    }

    /// Uniform in [-bound, bound).
    public mutating func uniform(bound: Float) -> Float { (nextUniform() * 2 - 1) * bound }

    /// Standard normal by Box-Muller (one value per two draws; simple and reproducible).
    public mutating func normal() -> Float {
        let u1 = max(nextUniform(), 0x1p-25)
        let u2 = nextUniform()
        // In double, then rounded: the demo backbone (and its measured accuracy) depends on these exact bits.
        let logU = Float(Foundation.log(Double(u1))), cosU = Float(Foundation.cos(Double(2 * Float.pi * u2)))
        return (-2 * logU).squareRoot() * cosU
    }
}

