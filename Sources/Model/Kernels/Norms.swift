import Foundation

/// LayerNorm over the last dimension (CLIP): y = (x - mean) * rstd * gamma + beta.
public enum LayerNorm {
    /// `mean`/`rstd` ([rows]) are saved for `backward` when given. `y` may alias `x`.
    public static func forward(x: UnsafePointer<Float>, rows: Int, dim: Int, gamma: UnsafePointer<Float>,
                               beta: UnsafePointer<Float>, eps: Float, y: UnsafeMutablePointer<Float>,
                               mean: UnsafeMutablePointer<Float>? = nil, rstd: UnsafeMutablePointer<Float>? = nil) {
        let inv = 1 / Float(dim)
        for r in 0..<rows {
            let xr = x + r * dim, yr = y + r * dim
            let mu = Vec.sum(xr, dim) * inv
            // Two-pass variance: robust when |mean| >> std (CLIP's residual stream has large offsets).
            var acc = V8()
            let muv = V8(repeating: mu)
            var i = 0
            while i + 8 <= dim { let d = load8(xr + i) - muv; acc += d * d; i += 8 }
            var ss = acc.sum()
            while i < dim { let d = xr[i] - mu; ss += d * d; i += 1 }
            let rs = 1 / (ss * inv + eps).squareRoot()
            mean?[r] = mu
            rstd?[r] = rs
            let rsv = V8(repeating: rs)
            i = 0
            while i + 8 <= dim {
                store8((load8(xr + i) - muv) * rsv * load8(gamma + i) + load8(beta + i), yr + i); i += 8
            }
            while i < dim { yr[i] = (xr[i] - mu) * rs * gamma[i] + beta[i]; i += 1 }
        }
    }

    /// dx = rstd * (g - mean(g) - xhat * mean(g * xhat)) with g = dy * gamma; written, or added when
    /// `accumulate`. dGamma += Σ dy * xhat, dBeta += Σ dy when given.
    public static func backward(dy: UnsafePointer<Float>, x: UnsafePointer<Float>, rows: Int, dim: Int,
                                gamma: UnsafePointer<Float>, mean: UnsafePointer<Float>, rstd: UnsafePointer<Float>,
                                dx: UnsafeMutablePointer<Float>, accumulate: Bool,
                                dGamma: UnsafeMutablePointer<Float>? = nil, dBeta: UnsafeMutablePointer<Float>? = nil) {
        let inv = 1 / Float(dim)
        for r in 0..<rows {
            let xr = x + r * dim, dyr = dy + r * dim, dxr = dx + r * dim
            let mu = mean[r], rs = rstd[r]
            var sg: Float = 0, sgx: Float = 0
            for i in 0..<dim {
                let xh = (xr[i] - mu) * rs
                let g = dyr[i] * gamma[i]
                sg += g
                sgx += g * xh
                dGamma?[i] += dyr[i] * xh
                dBeta?[i] += dyr[i]
            }
            let mg = sg * inv, mgx = sgx * inv
            for i in 0..<dim {
                let xh = (xr[i] - mu) * rs
                let v = rs * (dyr[i] * gamma[i] - mg - xh * mgx)
                if accumulate { dxr[i] += v } else { dxr[i] = v }
            }
        }
    }
}

/// LLaMA's RMSNorm, in float32: y = x * rsqrt(mean(x²) + eps) * weight.
public enum RMSNorm {
    /// `rstd` ([rows]) is saved for `backward` when given. `y` may alias `x`.
    public static func forward(x: UnsafePointer<Float>, rows: Int, dim: Int, weight: UnsafePointer<Float>,
                               eps: Float, y: UnsafeMutablePointer<Float>, rstd: UnsafeMutablePointer<Float>? = nil) {
        for r in 0..<rows {
            let xr = x + r * dim, yr = y + r * dim
            let rs = 1 / (Vec.dot(xr, xr, dim) / Float(dim) + eps).squareRoot()
            rstd?[r] = rs
            let rsv = V8(repeating: rs)
            var i = 0
            while i + 8 <= dim { store8(load8(xr + i) * rsv * load8(weight + i), yr + i); i += 8 }
            while i < dim { yr[i] = xr[i] * rs * weight[i]; i += 1 }
        }
    }

    /// dx = rstd * (g - x * rstd² * mean(g * x)) with g = dy * weight; written, or added when `accumulate`.
    public static func backward(dy: UnsafePointer<Float>, x: UnsafePointer<Float>, rows: Int, dim: Int,
                                weight: UnsafePointer<Float>, rstd: UnsafePointer<Float>,
                                dx: UnsafeMutablePointer<Float>, accumulate: Bool) {
        for r in 0..<rows {
            let xr = x + r * dim, dyr = dy + r * dim, dxr = dx + r * dim
            let rs = rstd[r]
            var acc = V8()
            var i = 0
            while i + 8 <= dim { acc += load8(dyr + i) * load8(weight + i) * load8(xr + i); i += 8 }
            var s = acc.sum()
            while i < dim { s += dyr[i] * weight[i] * xr[i]; i += 1 }
            let c = rs * rs * rs * s / Float(dim)
            let rsv = V8(repeating: rs), cv = V8(repeating: c)
            i = 0
            while i + 8 <= dim {
                let v = rsv * load8(dyr + i) * load8(weight + i) - cv * load8(xr + i)
                store8(accumulate ? load8(dxr + i) + v : v, dxr + i)
                i += 8
            }
            while i < dim {
                let v = rs * dyr[i] * weight[i] - c * xr[i]
                if accumulate { dxr[i] += v } else { dxr[i] = v }
                i += 1
            }
        }
    }
}
