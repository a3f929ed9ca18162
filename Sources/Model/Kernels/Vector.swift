/// Small SIMD helpers for the row loops of the kernels. All pointers are contiguous Float32.
@usableFromInline typealias V8 = SIMD8<Float>

@inline(__always) @usableFromInline func load8(_ p: UnsafePointer<Float>) -> V8 {
    UnsafeRawPointer(p).loadUnaligned(as: V8.self)
}

@inline(__always) @usableFromInline func store8(_ v: V8, _ p: UnsafeMutablePointer<Float>) {
    UnsafeMutableRawPointer(p).storeBytes(of: v, as: V8.self)
}

public enum Vec {
    /// Σ a[i] * b[i], with eight float accumulators (the compiler will not reorder a scalar float sum).
    @inline(__always) public static func dot(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, _ n: Int) -> Float {
        var acc = V8()
        var i = 0
        while i + 8 <= n { acc += load8(a + i) * load8(b + i); i += 8 }
        var s = acc.sum()
        while i < n { s += a[i] * b[i]; i += 1 }
        return s
    }

    @inline(__always) public static func sum(_ a: UnsafePointer<Float>, _ n: Int) -> Float {
        var acc = V8()
        var i = 0
        while i + 8 <= n { acc += load8(a + i); i += 8 }
        var s = acc.sum()
        while i < n { s += a[i]; i += 1 }
        return s
    }

    /// max of x[0..<n] (-inf when n == 0).
    @inline(__always) public static func max(_ x: UnsafePointer<Float>, _ n: Int) -> Float {
        var acc = V8(repeating: -.infinity)
        var i = 0
        while i + 8 <= n { let v = load8(x + i); acc.replace(with: v, where: v .> acc); i += 8 }
        var m = acc.max()
        while i < n { m = Swift.max(m, x[i]); i += 1 }
        return m
    }

    /// y[i] += a * x[i]
    @inline(__always) public static func axpy(_ a: Float, _ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, _ n: Int) {
        let av = V8(repeating: a)
        var i = 0
        while i + 8 <= n { store8(load8(y + i) + av * load8(x + i), y + i); i += 8 }
        while i < n { y[i] += a * x[i]; i += 1 }
    }

    /// y[i] += x[i]
    @inline(__always) public static func add(_ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, _ n: Int) {
        var i = 0
        while i + 8 <= n { store8(load8(y + i) + load8(x + i), y + i); i += 8 }
        while i < n { y[i] += x[i]; i += 1 }
    }

    /// x[i] *= a
    @inline(__always) public static func scale(_ x: UnsafeMutablePointer<Float>, _ a: Float, _ n: Int) {
        let av = V8(repeating: a)
        var i = 0
        while i + 8 <= n { store8(load8(x + i) * av, x + i); i += 8 }
        while i < n { x[i] *= a; i += 1 }
    }
}

// MARK: exp

/// e^x for eight floats at once: Cephes' expf (range reduction by ln 2 in two parts, then a degree-6
/// polynomial), within 2 ulp of the exact value on [-87.3, 88]. Below that it returns 0 (so -inf gives
/// 0, which masked softmax relies on); above, +inf; NaN stays NaN. Plain IEEE adds and multiplies with
/// no FMA, so the result is the same bits on every x86-64 CPU, unlike libm's `expf`, which picks a
/// variant per CPU.
@inline(__always) @usableFromInline func exp8(_ x: V8) -> V8 {
    let hi = V8(repeating: 88), lo = V8(repeating: -87.33654)
    var xc = x
    xc.replace(with: hi, where: x .> hi)
    xc.replace(with: lo, where: x .< lo)
    // n = round(x / ln 2) by the 1.5 * 2^23 trick (no SSE4.1 round needed); r = x - n ln 2.
    let magic = V8(repeating: 12_582_912)
    let t = xc * V8(repeating: 1.442_695_04) + magic
    let n = t - magic
    let r = xc - n * V8(repeating: 0.693_359_375) - n * V8(repeating: -2.121_944_4e-4)
    var p = V8(repeating: 1.987_569_15e-4)
    p = p * r + V8(repeating: 1.398_199_950_7e-3)
    p = p * r + V8(repeating: 8.333_451_907_3e-3)
    p = p * r + V8(repeating: 4.166_579_589_4e-2)
    p = p * r + V8(repeating: 1.666_666_545_9e-1)
    p = p * r + V8(repeating: 5.000_000_120_1e-1)
    let y = p * (r * r) + r + V8(repeating: 1)
    // 2^n from n's bits: t's low mantissa bits hold n (two's complement), so (bits(t) - bits(magic) + 127) << 23.
    let ni = unsafeBitCast(t, to: SIMD8<Int32>.self) &- SIMD8<Int32>(repeating: 0x4B40_0000)
    let scale = unsafeBitCast((ni &+ 127) &<< 23, to: V8.self)
    var out = y * scale
    out.replace(with: 0, where: x .< lo)
    out.replace(with: .infinity, where: x .> hi)
    out.replace(with: x, where: x .!= x)
    return out
}

extension Vec {
    /// e^x of one float by the same arithmetic as the vector form (so tails match the body).
    @inline(__always) public static func exp(_ x: Float) -> Float { exp8(V8(repeating: x))[0] }

    /// x[i] = e^{x[i] - m} in place; returns their sum (eight partial sums, then the tail).
    @inline(__always) public static func expSum(_ x: UnsafeMutablePointer<Float>, minus m: Float, _ n: Int) -> Float {
        let mv = V8(repeating: m)
        var acc = V8()
        var i = 0
        while i + 8 <= n { let e = exp8(load8(x + i) - mv); store8(e, x + i); acc += e; i += 8 }
        var s = acc.sum()
        while i < n { let e = exp(x[i] - m); x[i] = e; s += e; i += 1 }
        return s
    }

    /// y[i] = e^{x[i]}; `y` may alias `x`.
    public static func exp(_ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, _ n: Int) {
        var i = 0
        while i + 8 <= n { store8(exp8(load8(x + i)), y + i); i += 8 }
        while i < n { y[i] = exp(x[i]); i += 1 }
    }
}

/// Loads `count` (< 8) floats into the low lanes, `fill` elsewhere.
@inline(__always) @usableFromInline func loadPartial(_ p: UnsafePointer<Float>, _ count: Int, fill: Float) -> V8 {
    var v = V8(repeating: fill)
    for i in 0..<count { v[i] = p[i] }
    return v
}

@inline(__always) @usableFromInline func storePartial(_ v: V8, _ p: UnsafeMutablePointer<Float>, _ count: Int) {
    for i in 0..<count { p[i] = v[i] }
}
