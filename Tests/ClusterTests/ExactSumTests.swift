import Cluster
import Foundation
import Model
import TestSupport
import Testing

@Suite("Exact gradient sum")
struct ExactSumTests {
    func contributions(_ n: Int, seed: UInt64, shape: [Int] = [3, 17]) -> [MicroBatchGradients] {
        var rng = TestRNG(seed)
        return (0..<n).map { i in
            // Magnitudes spread over many binades so float addition order would matter.
            let g = rng.tensor(shape)
            for j in 0..<g.count { g.data[j] *= Float(sign: .plus, exponent: Int.random(in: -20...20, using: &rng), significand: 1) }
            let b = rng.tensor([5], 1e-3)
            return MicroBatchGradients(lossSum: Double.random(in: 0...100, using: &rng) * pow(10, Double(i % 5)),
                                        labelCount: Int64(i + 1), grads: TensorSet([NamedTensor("w", g), NamedTensor("b", b)]))
        }
    }

    func signature(_ c: MicroBatchGradients) -> [UInt64] {
        [c.lossSum.bitPattern, UInt64(c.labelCount)] + c.grads.flatMap { bits($0.tensor).map(UInt64.init) }
    }

    @Test("any permutation of the contributions gives a bitwise-identical sum", arguments: [1, 2, 3, 8, 13])
    func permutationInvariant(n: Int) throws {
        let cs = contributions(n, seed: UInt64(n))
        let reference = signature(try ExactSum.combine(cs))
        var rng = TestRNG(99)
        for _ in 0..<50 {
            #expect(signature(try ExactSum.combine(cs.shuffled(using: &rng))) == reference)
        }
    }

    @Test("float addition in arrival order is not order-independent (why ExactSum exists)")
    func floatSumIsNot() {
        let xs: [Float] = [1e8, 1, -1e8, 1]
        #expect(xs.reduce(0, +) != xs.reversed().reduce(0, +) || xs.reduce(0, +) != 2)
        let t = xs.map { Tensor(shape: [1], values: [$0]) }
        #expect(ExactSum.sumTensors(t).array[0] == 2)
        #expect(ExactSum.sumTensors(t.reversed()).array[0] == 2)
    }

    @Test("matches a Float64 sum within the stated quantisation bound")
    func accuracy() throws {
        for seed in 0..<20 as Range<UInt64> {
            let n = Int(seed % 9) + 1
            let cs = contributions(n, seed: seed + 100)
            let s = try ExactSum.combine(cs)
            for (k, named) in s.grads.enumerated() {
                var m: Double = 0
                for c in cs { for x in c.grads[k].tensor.buffer { m = max(m, Double(abs(x))) } }
                let e = ExactSum.scaleExponent(maxAbs: m, count: n)
                let quantum = Double(n) * pow(2, Double(-e - 1))  // n roundings of at most half a unit
                for i in 0..<named.tensor.count {
                    let exact = cs.reduce(0.0) { $0 + Double($1.grads[k].tensor.data[i]) }
                    let got = Double(named.tensor.data[i])
                    // Bound from the doc comment: quantisation plus one float32 rounding of the result.
                    // Plus the Float64 reference's own rounding (n partial sums, each below n·m).
                    let bound = quantum + Double(Float(exact).ulp) / 2 + Double(Float.leastNonzeroMagnitude) + Double(n * n) * m * 0x1p-52
                    #expect(abs(got - exact) <= bound, "seed \(seed) \(named.name)[\(i)]: \(got) vs \(exact)")
                }
            }
            let loss = cs.reduce(0.0) { $0 + $1.lossSum }
            #expect(abs(s.lossSum - loss) <= loss * 2e-15)  // the Float64 reference's own rounding
            #expect(s.labelCount == cs.reduce(0) { $0 + $1.labelCount })
        }
    }

    @Test("zeros, huge, tiny, negative and non-finite values")
    func extremes() {
        func sum(_ xs: [Float]) -> Float { ExactSum.sumTensors(xs.map { Tensor(shape: [1], values: [$0]) }).array[0] }
        #expect(sum([0, 0, 0]) == 0)
        #expect(sum([0]).sign == .plus)
        #expect(sum([Float.greatestFiniteMagnitude, -Float.greatestFiniteMagnitude, 1]) == 0)  // 1 is below the quantum
        #expect(sum([Float.greatestFiniteMagnitude / 2, Float.greatestFiniteMagnitude / 4]) == Float.greatestFiniteMagnitude * 0.75)
        #expect(sum([Float.greatestFiniteMagnitude, Float.greatestFiniteMagnitude]) == .infinity)
        #expect(sum([Float.leastNonzeroMagnitude, Float.leastNonzeroMagnitude, -Float.leastNonzeroMagnitude]) == Float.leastNonzeroMagnitude)
        #expect(sum([1e-30, 3e-30]) == Float(1e-30) + Float(3e-30))
        #expect(sum([-1.5, -2.25]) == -3.75)
        #expect(sum([.infinity, 1]) == .infinity)
        #expect(sum([-.infinity, 1]) == -.infinity)
        #expect(sum([.infinity, -.infinity]).isNaN)
        #expect(sum([.nan, 1]).isNaN)
        #expect(ExactSum.sumDoubles([1e300, 1e300, -1e300]) == 1e300)
        #expect(ExactSum.sumDoubles([]) == 0)
        #expect(ExactSum.sumDoubles([.infinity, -.infinity]).isNaN)
    }

    @Test("mismatched contributions are errors naming the tensor")
    func mismatches() {
        let a = MicroBatchGradients(lossSum: 1, labelCount: 1, grads: TensorSet([NamedTensor("w", Tensor(zeros: [2]))]))
        let b = MicroBatchGradients(lossSum: 1, labelCount: 1, grads: TensorSet([NamedTensor("w", Tensor(zeros: [3]))]))
        let c = MicroBatchGradients(lossSum: 1, labelCount: 1, grads: TensorSet([NamedTensor("v", Tensor(zeros: [2]))]))
        #expect { try ExactSum.combine([a, b]) } throws: { "\($0)".contains("w") }
        #expect { try ExactSum.combine([a, c]) } throws: { "\($0)".contains("w") }
        #expect(throws: ExactSumError.self) { try ExactSum.combine([]) }
    }
}
