import Model
import TestSupport
import Testing

/// The 16-bit conversions, checked exhaustively where the space is small and against independent
/// references elsewhere. All comparisons are bitwise: these conversions are exact by definition.
@Suite("F16 and BF16 conversion")
struct HalfConversionTests {
    #if !(os(macOS) && arch(x86_64))
    @Test("every one of the 65536 F16 bit patterns converts like Swift's Float16")
    func halfToFloatExhaustive() {
        for bits in 0...UInt16.max {
            let ours = HalfConversion.float(fromHalf: bits)
            let reference = Float(Float16(bitPattern: bits))
            if reference.isNaN {
                #expect(ours.isNaN, "\(bits)")
            } else if ours.bitPattern != reference.bitPattern {
                Issue.record("F16 \(bits): \(ours) != \(reference)")
                return
            }
        }
    }

    @Test("Float32 to F16 rounds to nearest even like Swift's Float16, on 2^20 random bit patterns and every F16 midpoint")
    func floatToHalfRounding() {
        var rng = SplitMix64(seed: 42)
        var inputs: [Float] = (0..<(1 << 20)).map { _ in Float(bitPattern: UInt32(truncatingIfNeeded: rng.next())) }
        // Midpoints between neighbouring F16 values (ties) and their immediate float neighbours.
        for bits in UInt16(0)..<0x7bff {
            let low = Float(Float16(bitPattern: bits)), high = Float(Float16(bitPattern: bits + 1))
            let mid = (low + high) / 2
            inputs += [mid, mid.nextUp, mid.nextDown, -mid]
        }
        inputs += [65504, 65519.99, 65520, 1e30, .infinity, -.infinity, .leastNonzeroMagnitude, 0, -0.0]
        var mismatches = 0
        for f in inputs where !f.isNaN {
            if HalfConversion.half(from: f) != Float16(f).bitPattern { mismatches += 1 }
        }
        #expect(mismatches == 0)
        #expect(Float(Float16(bitPattern: HalfConversion.half(from: .nan))).isNaN)
    }
    #endif

    @Test("every non-NaN F16 value survives a round trip through Float32")
    func halfRoundTrip() {
        for bits in 0...UInt16.max {
            let f = HalfConversion.float(fromHalf: bits)
            if f.isNaN { continue }
            if HalfConversion.half(from: f) != bits { Issue.record("F16 \(bits) came back different"); return }
        }
    }

    @Test("BF16 is the top half of Float32, and rounding picks the nearer neighbour, ties to even")
    func bfloat16() {
        #expect(HalfConversion.float(fromBFloat16: 0x3f80) == 1)
        #expect(HalfConversion.float(fromBFloat16: 0xc049) == -3.140625)
        #expect(HalfConversion.float(fromBFloat16: 0x0001).bitPattern == 0x0001_0000)
        #expect(HalfConversion.bfloat16(from: Float(bitPattern: 0x3f80_8000)) == 0x3f80, "tie, even below")
        #expect(HalfConversion.bfloat16(from: Float(bitPattern: 0x3f81_8000)) == 0x3f82, "tie, even above")
        #expect(HalfConversion.float(fromBFloat16: HalfConversion.bfloat16(from: .nan)).isNaN)
        #expect(HalfConversion.bfloat16(from: .greatestFiniteMagnitude) == 0x7f80, "rounds up to infinity")
        var rng = SplitMix64(seed: 7)
        var mismatches = 0
        for _ in 0..<(1 << 20) {
            let f = Float(bitPattern: UInt32(truncatingIfNeeded: rng.next()))
            guard f.isFinite else { continue }
            let low = f.bitPattern & 0xffff_0000
            let lowValue = Double(Float(bitPattern: low))
            // Past the largest finite value the next step is infinity, which IEEE rounding treats as 2^128.
            let high = Float(bitPattern: low &+ 0x1_0000)
            let highValue = high.isInfinite ? (f < 0 ? -0x1p128 : 0x1p128) : Double(high)
            let distanceLow = abs(Double(f) - lowValue), distanceHigh = abs(Double(f) - highValue)
            let expected: UInt32 = distanceLow < distanceHigh ? low
                : distanceHigh < distanceLow ? low &+ 0x1_0000
                : ((low >> 16) & 1 == 0 ? low : low &+ 0x1_0000)
            if UInt32(HalfConversion.bfloat16(from: f)) << 16 != expected { mismatches += 1 }
        }
        #expect(mismatches == 0)
    }
}

/// A small deterministic generator for tests.
struct SplitMix64: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9e37_79b9_7f4a_7c15
        var z = state
        z = (z ^ (z >> 30)) &* 0xbf58_476d_1ce4_e5b9
        z = (z ^ (z >> 27)) &* 0x94d0_49bb_1331_11eb
        return z ^ (z >> 31)
    }
}
