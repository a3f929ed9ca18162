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
