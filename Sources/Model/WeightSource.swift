/// Where a frozen model's weights come from. The backbones ask for each tensor by its checkpoint name
/// and expected shape; the source throws (naming the tensor) on a missing or misshapen one, and
/// `finish()` throws on tensors nobody asked for, so loading is strict.
public protocol WeightSource: AnyObject {
    /// The tensor `name`, converted to Float32 (zero-copy for F32 data in a memory map).
    func take(_ name: String, shape: [Int]) throws -> Tensor
    /// Whether `name` exists (for optional tensors such as `lm_head.weight` when embeddings are tied).
    func contains(_ name: String) -> Bool
    /// Every tensor name the source holds.
    var names: [String] { get }
    /// Throws if any tensor was never taken, except those whose names start with an ignored prefix.
    func finish(ignoringPrefixes: [String]) throws
}

