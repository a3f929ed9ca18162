import Foundation
import Model

public struct ExactSumError: Error, Sendable, Equatable, CustomStringConvertible {
    public var message: String
    public init(message: String) { self.message = message }
    public var description: String { "cannot combine gradients: \(message)" }
}

/// Order-independent, reproducible summation of micro-batch contributions (DESIGN.md §6).
///
/// Each tensor gets a power-of-two scale 2^e from the largest finite magnitude `m`
/// over **all** contributions and their number `n`: with m < 2^E, e = 51 - E - ⌈log2 n⌉. Every element
/// is rounded to the integer nearest to x·2^e (|q| ≤ 2^(51-⌈log2 n⌉)), the integers are added in
/// Int64 (exact and associative, and n of them cannot overflow), and the sum is converted back once.
/// Since the max, the scale, the rounding and an integer sum do not depend on order, any permutation
/// of the same contributions gives a bitwise-identical result.
///
/// Precision guarantee: for a tensor with largest magnitude m < 2^E, each element of the result is
/// within n·2^(E-52+⌈log2 n⌉) + ½ ulp(result) of the exact real sum (the first term is below
/// n²·2^-50·m: for 8 micro-batches 6e-14·m, six orders of magnitude below float32's resolution
/// 2^-24·m ≈ 6e-8·m). Elements much smaller than the tensor's largest one keep absolute, not
/// relative, accuracy; an element below 2^(E-52+⌈log2 n⌉) may round to zero. (51 bits of headroom
/// rather than 62 lets rounding use the exact 1.5·2^52 trick instead of a libm call.)
/// Non-finite inputs propagate order-independently:
/// NaN if any NaN or both +∞ and −∞ occur in an element, else ±∞. Label counts add exactly. Loss
/// sums (float64) use the same construction with 62 bits of headroom: within n·2^(E-63+⌈log2 n⌉).
public enum ExactSum {
    /// The scale exponent e for largest magnitude `maxAbs` over `n` contributions: integers of at most
    /// `headroom - ⌈log2 n⌉` bits each. 51 for float32 tensors; 62 for the float64 loss sums.
    public static func scaleExponent(maxAbs: Double, count n: Int, headroom: Int = 51) -> Int {
        guard maxAbs > 0, maxAbs.isFinite else { return 0 }
        let bigE = Int(maxAbs.exponent) + 1  // maxAbs < 2^bigE
        let logN = n <= 1 ? 0 : Int.bitWidth - (n - 1).leadingZeroBitCount  // ⌈log2 n⌉
        return headroom - bigE - logN
    }

    /// Sums a step's micro-batch records. All must carry the same tensor names with the same shapes (any
    /// order of names; the result follows the first record's order). The inputs are not modified.
    public static func combine(_ parts: [MicroBatchGradients]) throws -> MicroBatchGradients {
        guard let first = parts.first else { throw ExactSumError(message: "no micro-batch gradients to combine") }
        var labels: Int64 = 0
        for p in parts {
            let (s, o) = labels.addingReportingOverflow(p.labelCount)
            guard !o else { throw ExactSumError(message: "label count overflows Int64") }
            labels = s
        }
        for (i, p) in parts.enumerated() where p.grads.count != first.grads.count {
            throw ExactSumError(message: "micro-batch \(i) has \(p.grads.count) tensors, micro-batch 0 has \(first.grads.count)")
        }
        let loss = sumDoubles(parts.map(\.lossSum))
        var out: [NamedTensor] = []
        for g in first.grads {
            var tensors: [Tensor] = []
            for (i, p) in parts.enumerated() {
                guard let t = p.grads[g.name] else {
                    throw ExactSumError(message: "micro-batch \(i) has no tensor \(g.name)")
                }
                guard t.shape == g.tensor.shape else {
                    throw ExactSumError(message: "\(g.name) has shape \(t.shape) in micro-batch \(i), \(g.tensor.shape) in micro-batch 0")
                }
                tensors.append(t)
            }
            out.append(NamedTensor(g.name, sumTensors(tensors)))
        }
        return MicroBatchGradients(lossSum: loss, labelCount: labels, grads: TensorSet(out))
    }

    /// Exact order-independent sum of same-shaped float32 tensors.
    public static func sumTensors(_ parts: [Tensor]) -> Tensor {
        precondition(!parts.isEmpty, "sumTensors needs at least one tensor")
        let shape = parts[0].shape
        let count = parts[0].count
        precondition(parts.allSatisfy { $0.shape == shape }, "sumTensors needs same-shaped tensors")
        var maxAbs: Float = 0
        var nonFinite = false
        for t in parts {
            for x in t.buffer {
                let a = abs(x)
                if a.isFinite { maxAbs = max(maxAbs, a) } else { nonFinite = true }
            }
        }
        let e = scaleExponent(maxAbs: Double(maxAbs), count: parts.count)
        let scale = Double(sign: .plus, exponent: e, significand: 1)  // exact: |e| < 400
        let acc = UnsafeMutableBufferPointer<Int64>.allocate(capacity: count)
        defer { acc.deallocate() }
        acc.initialize(repeating: 0)
        for t in parts {
            let src = t.buffer
            for i in 0..<count {
                let x = Double(src[i])
                // x·2^e is exact in Double (24-bit significand, |x·2^e| ≤ 2^51), then rounded.
                if x.isFinite { acc[i] &+= Int64(roundToNearestEven(x * scale)) }
            }
        }
        let result = Tensor(zeros: shape)
        let dst = result.buffer
        for i in 0..<count {
            // Int64 → Float rounds once, to nearest; the power-of-two rescale is exact unless the
            // result is subnormal or overflows, where it is still deterministic.
            dst[i] = Float(sign: .plus, exponent: -e, significand: Float(acc[i]))
        }
        if nonFinite { applyNonFinite(parts, into: dst) }
        return result
    }

    /// Exact order-independent sum of doubles (the loss sums), same construction with 53-bit inputs.
    public static func sumDoubles(_ xs: [Double]) -> Double {
        var maxAbs = 0.0
        var nonFinite = false
        for x in xs { if x.isFinite { maxAbs = max(maxAbs, abs(x)) } else { nonFinite = true } }
        if nonFinite {
            let nan = xs.contains { $0.isNaN } || (xs.contains(.infinity) && xs.contains(-.infinity))
            return nan ? .nan : (xs.contains(.infinity) ? .infinity : -.infinity)
        }
        // 62 bits: a 53-bit loss must not lose precision to the scale; there are few, so speed is moot.
        let e = scaleExponent(maxAbs: maxAbs, count: xs.count, headroom: 62)
        var acc: Int64 = 0
        for x in xs {
            acc &+= Int64(Double(sign: .plus, exponent: e, significand: x).rounded(.toNearestOrEven))
        }
        return Double(sign: .plus, exponent: -e, significand: Double(acc))
    }

    /// Round half to even for |y| ≤ 2^51: adding 1.5·2^52 leaves no fraction bits, so the FPU's
    /// default rounding does the work (Swift never reassociates float arithmetic).
    @inline(__always)
    static func roundToNearestEven(_ y: Double) -> Double {
        let magic = 0x1.8p52
        return (y + magic) - magic
    }

    private static func applyNonFinite(_ parts: [Tensor], into dst: UnsafeMutableBufferPointer<Float>) {
        for i in 0..<dst.count {
            var pos = false, neg = false, nan = false
            for t in parts {
                let x = t.data[i]
                if x.isNaN { nan = true } else if x == .infinity { pos = true } else if x == -.infinity { neg = true }
            }
            if nan || (pos && neg) { dst[i] = .nan } else if pos { dst[i] = .infinity } else if neg { dst[i] = -.infinity }
        }
    }
}
