/// A contiguous, row-major Float32 tensor.
///
/// Reference semantics on purpose: activations and weights are large and are passed between layers
/// without copies. Storage is either owned (allocated here, freed in `deinit`) or borrowed from an
/// owner that outlives it (a memory-mapped safetensors file, so workers on one node share its pages).
public final class Tensor: @unchecked Sendable {
    public let shape: [Int]
    public let count: Int
    /// Raw storage. Valid for the tensor's lifetime; never escape it beyond that.
    public let data: UnsafeMutablePointer<Float>
    private let owner: AnyObject?

    /// A new zero-filled tensor.
    public init(zeros shape: [Int]) {
        precondition(shape.allSatisfy { $0 >= 0 }, "negative dimension in \(shape)")
        self.shape = shape
        self.count = shape.reduce(1, *)
        self.data = UnsafeMutablePointer<Float>.allocate(capacity: max(count, 1))
        self.data.initialize(repeating: 0, count: max(count, 1))
        self.owner = nil
    }

    /// A new tensor holding a copy of `values`.
    public convenience init(shape: [Int], values: [Float]) {
        self.init(zeros: shape)
        precondition(values.count == count, "\(values.count) values for shape \(shape)")
        values.withUnsafeBufferPointer { data.update(from: $0.baseAddress!, count: count) }
    }

    /// An owned copy of `count(shape)` floats at `pointer`.
    public convenience init(shape: [Int], copying pointer: UnsafePointer<Float>) {
        self.init(zeros: shape)
        data.update(from: pointer, count: count)
    }

    /// A tensor viewing memory that `owner` keeps alive (for example a memory map). Not freed here.
    public init(shape: [Int], borrowing pointer: UnsafeMutablePointer<Float>, owner: AnyObject) {
        self.shape = shape
        self.count = shape.reduce(1, *)
        self.data = pointer
        self.owner = owner
    }

    deinit {
        if owner == nil { data.deallocate() }
    }

    public var buffer: UnsafeMutableBufferPointer<Float> { .init(start: data, count: count) }
    public var array: [Float] { Array(buffer) }

    /// A same-shaped owned copy.
    public func copy() -> Tensor {
        let t = Tensor(zeros: shape)
        t.data.update(from: data, count: count)
        return t
    }

    /// A view of the same storage under another shape with the same element count.
    public func reshaped(_ newShape: [Int]) -> Tensor {
        precondition(newShape.reduce(1, *) == count, "cannot reshape \(shape) to \(newShape)")
        return Tensor(shape: newShape, borrowing: data, owner: self)
    }

    public func fill(_ value: Float) { data.update(repeating: value, count: count) }
}
