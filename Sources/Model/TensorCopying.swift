extension Tensor {
    /// An owned copy of `count(shape)` floats at `pointer`.
    public convenience init(shape: [Int], copying pointer: UnsafePointer<Float>) {
        self.init(zeros: shape)
        data.update(from: pointer, count: count)
    }
}
