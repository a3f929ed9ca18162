/// Exact conversions between Float32 and the two 16-bit float formats safetensors ships (IEEE binary16
/// "F16" and bfloat16 "BF16"), written on bit patterns so they work where Swift has no `Float16` (macOS on
/// x86_64) and run without library calls in the load loops.
public enum HalfConversion {
    /// binary16 bits to Float32, exactly (subnormals, infinities and NaN payloads kept). After F. Giesen's
    /// `half_to_float_fast4`: shift exponent and mantissa into place, rebias, and fix the two special cases.
    @inline(__always)
    public static func float(fromHalf h: UInt16) -> Float {
        let shifted = UInt32(h & 0x7fff) << 13
        let exponent = shifted & 0x0f80_0000
        var magnitude: Float
        if exponent == 0x0f80_0000 {          // Inf or NaN: move to the Float32 all-ones exponent
            magnitude = Float(bitPattern: shifted &+ 0x7000_0000)
        } else if exponent == 0 {             // zero or subnormal: renormalise with one float subtraction
            magnitude = Float(bitPattern: shifted &+ 0x3880_0000) - Float(bitPattern: 0x3880_0000)
        } else {
            magnitude = Float(bitPattern: shifted &+ 0x3800_0000)
        }
        return Float(bitPattern: magnitude.bitPattern | (UInt32(h & 0x8000) << 16))
    }

    /// Float32 to binary16 bits, rounding to nearest even; overflow gives infinity, NaN stays NaN (quiet).
    /// After F. Giesen's `float_to_half_fast3_rtne`.
    @inline(__always)
    public static func half(from f: Float) -> UInt16 {
        let bits = f.bitPattern
        let sign = UInt16(truncatingIfNeeded: (bits >> 16) & 0x8000)
        let magnitude = bits & 0x7fff_ffff
        if magnitude >= 0x4780_0000 {         // >= 65536, Inf or NaN
            if magnitude > 0x7f80_0000 { return sign | 0x7e00 | UInt16(truncatingIfNeeded: (magnitude >> 13) & 0x1ff) }
            return sign | 0x7c00
        }
        if magnitude < 0x3880_0000 {          // result is subnormal or zero: let the FPU round at 2^-24
            let sum = Float(bitPattern: magnitude) + Float(bitPattern: 0x3f00_0000)
            return sign | UInt16(truncatingIfNeeded: sum.bitPattern &- 0x3f00_0000)
        }
        let mantissaOdd = (magnitude >> 13) & 1
        let rounded = magnitude &+ 0xc800_0fff &+ mantissaOdd   // rebias (-112 << 23) and round half to even
        return sign | UInt16(truncatingIfNeeded: rounded >> 13)
    }

    /// bfloat16 bits to Float32: bfloat16 is the top half of a Float32, so this is exact by construction.
    @inline(__always)
    public static func float(fromBFloat16 b: UInt16) -> Float { Float(bitPattern: UInt32(b) << 16) }

    /// Float32 to bfloat16 bits, rounding to nearest even; NaN stays NaN (quiet).
    @inline(__always)
    public static func bfloat16(from f: Float) -> UInt16 {
        let bits = f.bitPattern
        if f.isNaN { return UInt16(truncatingIfNeeded: bits >> 16) | 0x0040 }
        let rounded = bits &+ 0x7fff &+ ((bits >> 16) & 1)
        return UInt16(truncatingIfNeeded: rounded >> 16)
    }

    /// Converts `count` little-endian 16-bit values at `source` (any alignment) into `destination`.
    static func convert(halves source: UnsafeRawPointer, count: Int, bfloat: Bool,
                        into destination: UnsafeMutablePointer<Float>) {
        if bfloat {
            for i in 0..<count {
                let raw = UInt16(littleEndian: source.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self))
                destination[i] = float(fromBFloat16: raw)
            }
        } else {
            for i in 0..<count {
                let raw = UInt16(littleEndian: source.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self))
                destination[i] = float(fromHalf: raw)
            }
        }
    }
}
