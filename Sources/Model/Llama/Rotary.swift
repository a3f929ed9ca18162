import Foundation

/// Rotary position embeddings in transformers' LLaMA convention (`rotate_half`: the two halves of a
/// head are the pair, not interleaved lanes): out = x * cos + rotate_half(x) * sin.
public enum Rotary {
    /// cos/sin tables [count, headDim/2] for the given per-token positions. As transformers does,
    /// inv_freq and the angle position * inv_freq are float32; only cos/sin are taken in double.
    public static func tables(positions: UnsafePointer<Int32>, count: Int, headDim: Int, theta: Float,
                              cos: UnsafeMutablePointer<Float>, sin: UnsafeMutablePointer<Float>) {
        let half = headDim / 2
        var invFreq = [Float](repeating: 0, count: half)
        for i in 0..<half {
            invFreq[i] = Float(1 / Foundation.pow(Double(theta), Double(Float(2 * i) / Float(headDim))))
        }
        for r in 0..<count {
            let p = Float(positions[r])
            for i in 0..<half {
                let a = Double(p * invFreq[i])
                cos[r * half + i] = Float(Foundation.cos(a))
                sin[r * half + i] = Float(Foundation.sin(a))
            }
        }
    }

    /// Rotates `x` [rows, heads * headDim] in place; `inverse` rotates by the negative angle, which is
    /// the backward pass (the rotation is orthogonal, so its transpose is its inverse).
    public static func apply(_ x: UnsafeMutablePointer<Float>, rows: Int, heads: Int, headDim: Int,
                             cos: UnsafePointer<Float>, sin: UnsafePointer<Float>, inverse: Bool = false) {
        let half = headDim / 2
        let sign: Float = inverse ? -1 : 1
        for r in 0..<rows {
            let c = cos + r * half, s = sin + r * half
            for h in 0..<heads {
                let x1 = x + (r * heads + h) * headDim, x2 = x1 + half
                for i in 0..<half {
                    let a = x1[i], b = x2[i], si = sign * s[i]
                    x1[i] = a * c[i] - b * si
                    x2[i] = b * c[i] + a * si
                }
            }
        }
    }
}
