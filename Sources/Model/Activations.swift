import Foundation

/// Elementwise activations with their derivatives. Names are transformers' `hidden_act` strings.
public enum Activation: String, Sendable {
    case silu
    /// Exact erf form (transformers' "gelu").
    case gelu
    /// x * sigmoid(1.702 x) (CLIP's).
    case quickGelu = "quick_gelu"

    public init(name: String) throws {
        guard let a = Activation(rawValue: name) else {
            throw ModelError(.unsupported, "hidden_act '\(name)' is not supported; expected silu, gelu or quick_gelu")
        }
        self = a
    }

    @inline(__always) static func sigmoid(_ x: Float) -> Float { 1 / (1 + Foundation.exp(-x)) }

    @inline(__always) public func value(_ x: Float) -> Float {
        switch self {
        case .silu: return x * Activation.sigmoid(x)
        case .quickGelu: return x * Activation.sigmoid(1.702 * x)
        case .gelu: return 0.5 * x * (1 + Foundation.erf(x * 0.70710678118654752))
        }
    }

    @inline(__always) public func derivative(_ x: Float) -> Float {
        switch self {
        case .silu:
            let s = Activation.sigmoid(x)
            return s * (1 + x * (1 - s))
        case .quickGelu:
            let s = Activation.sigmoid(1.702 * x)
            return s * (1 + 1.702 * x * (1 - s))
        case .gelu:
            return 0.5 * (1 + Foundation.erf(x * 0.70710678118654752))
                + x * Foundation.exp(-0.5 * x * x) * 0.39894228040143268
        }
    }

    /// y = f(x); `y` may alias `x`.
    public func forward(_ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, count: Int) {
        switch self {
        case .silu: for i in 0..<count { let v = x[i]; y[i] = v / (1 + Foundation.exp(-v)) }
        case .quickGelu: for i in 0..<count { let v = x[i]; y[i] = v / (1 + Foundation.exp(-1.702 * v)) }
        case .gelu: for i in 0..<count { y[i] = value(x[i]) }
        }
    }

    /// dx = dy * f'(x) (written; `dx` may alias `dy`).
    public func backward(_ x: UnsafePointer<Float>, dy: UnsafePointer<Float>, dx: UnsafeMutablePointer<Float>, count: Int) {
        for i in 0..<count { dx[i] = dy[i] * derivative(x[i]) }
    }
}

/// SwiGLU's product: act = silu(g) * u, and its backward.
public enum SwiGLU {
    public static func forward(gate: UnsafePointer<Float>, up: UnsafePointer<Float>, out: UnsafeMutablePointer<Float>, count: Int) {
        for i in 0..<count { let g = gate[i]; out[i] = g / (1 + Foundation.exp(-g)) * up[i] }
    }

    /// From d(act) in `dAct`: writes dGate into `dAct` (in place) and dUp into `dUp`.
    public static func backward(gate: UnsafePointer<Float>, up: UnsafePointer<Float>, dAct: UnsafeMutablePointer<Float>,
                                dUp: UnsafeMutablePointer<Float>, count: Int) {
        for i in 0..<count {
            let g = gate[i], d = dAct[i]
            let s = 1 / (1 + Foundation.exp(-g))
            dUp[i] = d * g * s
            dAct[i] = d * up[i] * s * (1 + g * (1 - s))
        }
    }
}

/// Row softmax in place over `rows` rows of `n`.
public enum Softmax {
    public static func rows(_ x: UnsafeMutablePointer<Float>, rows: Int, n: Int) {
        for r in 0..<rows {
            let xr = x + r * n
            var m = -Float.infinity
            for j in 0..<n { m = max(m, xr[j]) }
            var s: Float = 0
            for j in 0..<n { let e = Foundation.exp(xr[j] - m); xr[j] = e; s += e }
            Vec.scale(xr, 1 / s, n)
        }
    }

    /// dx = y * (dy - Σ dy*y) per row, from the softmax output y. `dx` may alias `dy`.
    public static func backward(y: UnsafePointer<Float>, dy: UnsafePointer<Float>, dx: UnsafeMutablePointer<Float>, rows: Int, n: Int) {
        for r in 0..<rows {
            let yr = y + r * n, dyr = dy + r * n, dxr = dx + r * n
            let d = Vec.dot(yr, dyr, n)
            for j in 0..<n { dxr[j] = yr[j] * (dyr[j] - d) }
        }
    }
}
