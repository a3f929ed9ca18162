import Foundation

/// Rotary position embeddings in transformers' LLaMA convention (`rotate_half`: the two halves of a
/// head are the pair, not interleaved lanes): out = x * cos + rotate_half(x) * sin.
public enum Rotary {
    /// cos/sin tables [count, headDim/2] for the given per-token positions with default (unscaled)
    /// frequencies. As transformers does, inv_freq and the angle position * inv_freq are float32; only
    /// cos/sin are taken in double.
    public static func tables(positions: UnsafePointer<Int32>, count: Int, headDim: Int, theta: Float,
                              cos: UnsafeMutablePointer<Float>, sin: UnsafeMutablePointer<Float>) {
        defaultInverseFrequencies(headDim: headDim, theta: theta).withUnsafeBufferPointer {
            tables(positions: positions, count: count, inverseFrequencies: $0, cos: cos, sin: sin)
        }
    }

    /// cos/sin tables [count, inverseFrequencies.count] for the given per-token positions.
    public static func tables(positions: UnsafePointer<Int32>, count: Int, inverseFrequencies invFreq: UnsafeBufferPointer<Float>,
                              cos: UnsafeMutablePointer<Float>, sin: UnsafeMutablePointer<Float>) {
        let half = invFreq.count
        for r in 0..<count {
            let p = Float(positions[r])
            for i in 0..<half {
                let a = Double(p * invFreq[i])
                cos[r * half + i] = Float(Foundation.cos(a))
                sin[r * half + i] = Float(Foundation.sin(a))
            }
        }
    }

    /// transformers' default inv_freq_i = 1 / theta^(2i / headDim), [headDim/2]. The exponent is float32 as
    /// there; the power and its reciprocal are taken in double and rounded once, which is within 1 ulp of
    /// torch's float32 pow (kept as it is: the default path's bits are the demo's bits).
    public static func defaultInverseFrequencies(headDim: Int, theta: Float) -> [Float] {
        (0..<(headDim / 2)).map { i in Float(1 / Foundation.pow(Double(theta), Double(Float(2 * i) / Float(headDim)))) }
    }

    /// inv_freq [headDim/2] for one forward call, as transformers' `LlamaRotaryEmbedding` has it for that
    /// call (transformers 5.24, `modeling_rope_utils.py`). `sequenceLength` is the call's largest position
    /// + 1 (`torch.max(position_ids) + 1` in `dynamic_rope_update`); only `dynamic` reads it.
    ///
    /// Each formula keeps transformers' precision step by step: float32 where it operates on tensors,
    /// double where it operates on Python floats (noted where it matters). The default frequencies underneath are
    /// `defaultInverseFrequencies`, within 1 ulp of torch's.
    public static func inverseFrequencies(headDim: Int, theta: Float, scaling: RopeScaling, maxPositionEmbeddings: Int,
                                          sequenceLength: Int) -> [Float] {
        switch scaling {
        case .none:
            return defaultInverseFrequencies(headDim: headDim, theta: theta)
        case .linear(let factor):
            // _compute_linear_scaling_rope_parameters: inv_freq /= factor (float32 tensor / Python float).
            return defaultInverseFrequencies(headDim: headDim, theta: theta).map { $0 / Float(factor) }
        case .dynamic(let factor):
            return dynamicInverseFrequencies(headDim: headDim, theta: theta, factor: factor,
                                             maxPositionEmbeddings: maxPositionEmbeddings, sequenceLength: sequenceLength)
        case .llama3(let factor, let low, let high, let original):
            return llama3InverseFrequencies(headDim: headDim, theta: theta, factor: factor, lowFreqFactor: low,
                                            highFreqFactor: high, originalMaxPositionEmbeddings: original)
        }
    }

    /// `_compute_dynamic_ntk_parameters` as `dynamic_rope_update` calls it. A call no longer than
    /// max_position_embeddings gets the frequencies computed at init (seq_len = max_position_embeddings, a
    /// Python int, so the new base is double arithmetic: theta * (factor * 1 - (factor - 1))^(d/(d-2)),
    /// rounded to float32 by the pow). A longer call recomputes them with seq_len a 0-d int64 tensor, so
    /// every step of the base is float32.
    ///
    /// transformers keeps the longest seq_len seen (`max_seq_len_cached`) across calls and only goes
    /// back to the original frequencies for a call shorter than max_position_embeddings; this is the
    /// stateless form, equal to it for a fresh model and whenever calls do not shrink between two lengths
    /// past the limit.
    static func dynamicInverseFrequencies(headDim: Int, theta: Float, factor: Double, maxPositionEmbeddings m: Int,
                                          sequenceLength: Int) -> [Float] {
        let dim = Double(headDim)
        let base: Float
        if sequenceLength <= m {
            let grown = factor * Double(m) / Double(m) - (factor - 1)          // Python floats
            base = Float(Double(theta) * Foundation.pow(grown, dim / (dim - 2)))
        } else {
            var t = Float(factor) * Float(sequenceLength)                       // float32 tensor from here
            t = t / Float(m)
            t = t - Float(factor - 1)
            t = Foundation.pow(t, Float(dim / (dim - 2)))
            base = theta * t
        }
        return defaultInverseFrequencies(headDim: headDim, theta: base)
    }

    /// `_compute_llama3_parameters`: every tensor step in float32, the wavelength bounds and the smoothing
    /// denominator in double (Python floats) then compared or divided in float32. `2 * pi / inv_freq` and
    /// `old_context_len / wavelen` are torch's `__rtruediv__`, a float32 reciprocal times the scalar.
    static func llama3InverseFrequencies(headDim: Int, theta: Float, factor: Double, lowFreqFactor low: Double,
                                         highFreqFactor high: Double, originalMaxPositionEmbeddings old: Int) -> [Float] {
        let lowFreqWavelen = Float(Double(old) / low), highFreqWavelen = Float(Double(old) / high)
        let f = Float(factor), lowF = Float(low), span = Float(high - low)
        return defaultInverseFrequencies(headDim: headDim, theta: theta).map { inv in
            let wavelen = (1 / inv) * Float(2 * Double.pi)
            let scaled = wavelen > lowFreqWavelen ? inv / f : inv
            guard !(wavelen < highFreqWavelen) && !(wavelen > lowFreqWavelen) else { return scaled }
            let smooth = ((1 / wavelen) * Float(old) - lowF) / span
            return (1 - smooth) * scaled / f + smooth * scaled
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
