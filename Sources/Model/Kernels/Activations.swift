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
        case .silu: gated(x, y, count, slope: 1)
        case .quickGelu: gated(x, y, count, slope: 1.702)
        case .gelu: for i in 0..<count { y[i] = value(x[i]) }
        }
    }

    /// dx = dy * f'(x) (written; `dx` may alias `dy`).
    public func backward(_ x: UnsafePointer<Float>, dy: UnsafePointer<Float>, dx: UnsafeMutablePointer<Float>, count: Int) {
        guard self != .gelu else {
            for i in 0..<count { dx[i] = dy[i] * derivative(x[i]) }
            return
        }
        let k = V8(repeating: self == .silu ? 1 : 1.702), one = V8(repeating: 1)
        func grad(_ v: V8, _ d: V8) -> V8 {
            let s = sigmoid8(k * v)
            return d * s * (one + k * v * (one - s))
        }
        var i = 0
        while i + 8 <= count { store8(grad(load8(x + i), load8(dy + i)), dx + i); i += 8 }
        if i < count {
            let n = count - i
            storePartial(grad(loadPartial(x + i, n, fill: 0), loadPartial(dy + i, n, fill: 0)), dx + i, n)
        }
    }

    /// y = x * sigmoid(slope * x), eight at a time.
    private func gated(_ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, _ count: Int, slope: Float) {
        let k = V8(repeating: slope)
        var i = 0
        while i + 8 <= count { let v = load8(x + i); store8(v * sigmoid8(k * v), y + i); i += 8 }
        if i < count {
            let n = count - i, v = loadPartial(x + i, n, fill: 0)
            storePartial(v * sigmoid8(k * v), y + i, n)
        }
    }
}

/// 1 / (1 + e^-x) for eight floats.
@inline(__always) @usableFromInline func sigmoid8(_ x: V8) -> V8 {
    V8(repeating: 1) / (V8(repeating: 1) + exp8(-x))
}

/// SwiGLU's product: act = silu(g) * u, and its backward.
public enum SwiGLU {
    public static func forward(gate: UnsafePointer<Float>, up: UnsafePointer<Float>, out: UnsafeMutablePointer<Float>, count: Int) {
        var i = 0
        while i + 8 <= count {
            let g = load8(gate + i)
            store8(g * sigmoid8(g) * load8(up + i), out + i)
            i += 8
        }
        while i < count { let g = gate[i]; out[i] = g * sigmoid8(V8(repeating: g))[0] * up[i]; i += 1 }
    }

    /// From d(act) in `dAct`: writes dGate into `dAct` (in place) and dUp into `dUp`.
    public static func backward(gate: UnsafePointer<Float>, up: UnsafePointer<Float>, dAct: UnsafeMutablePointer<Float>,
                                dUp: UnsafeMutablePointer<Float>, count: Int) {
        let one = V8(repeating: 1)
        var i = 0
        while i + 8 <= count {
            let g = load8(gate + i), d = load8(dAct + i), s = sigmoid8(g)
            store8(d * g * s, dUp + i)
            store8(d * load8(up + i) * s * (one + g * (one - s)), dAct + i)
            i += 8
        }
        while i < count {
            let g = gate[i], d = dAct[i], s = sigmoid8(V8(repeating: g))[0]
            dUp[i] = d * g * s
            dAct[i] = d * up[i] * s * (1 + g * (1 - s))
            i += 1
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
            let s = Vec.expSum(xr, minus: m, n)
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
