import Foundation
import Model
import TestSupport
import Testing

@Suite struct FastExpTests {
    /// Vec.exp against Double-precision exp over the range softmax and SiLU use, in ulps of the result.
    @Test func withinTwoUlpOfExact() {
        var worst: Double = 0
        var x: Float = -87
        var inputs: [Float] = []
        while x < 88 { inputs.append(x); x += 0.000_731 * max(1, abs(x)) }
        var out = [Float](repeating: 0, count: inputs.count)
        Vec.exp(inputs, &out, inputs.count)
        for (i, v) in inputs.enumerated() {
            let exact = Foundation.exp(Double(v))
            let ulp = Double(Float(exact).ulp)
            worst = max(worst, abs(Double(out[i]) - exact) / ulp)
            // The scalar path (used for tails) is the same arithmetic.
            #expect(Vec.exp(v) == out[i])
        }
        #expect(worst <= 2, "worst error \(worst) ulp")
    }

    @Test func edges() {
        let inputs: [Float] = [-.infinity, -1000, -87.4, 0, 88.5, .infinity, .nan, 1]
        var out = [Float](repeating: 0, count: inputs.count)
        Vec.exp(inputs, &out, inputs.count)
        #expect(out[0] == 0 && out[1] == 0 && out[2] == 0)
        #expect(out[3] == 1)
        #expect(out[4] == .infinity && out[5] == .infinity)
        #expect(out[6].isNaN)
        #expect(abs(out[7] - 2.7182817) <= Float(2.7182817).ulp)
    }
}
