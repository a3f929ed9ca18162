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


/// Tensors held in memory, served by name, as strict as a safetensors file: a missing or misshapen
/// tensor throws and names it, and `finish` throws on a tensor nobody took (the bench's backbones, tests).
public final class InMemoryWeights: WeightSource {
    private let tensors: [String: Tensor]
    private var taken = Set<String>()

    public init(_ tensors: [String: Tensor]) { self.tensors = tensors }
    public convenience init(_ set: TensorSet) {
        self.init(Dictionary(zip(set.names, set.tensors), uniquingKeysWith: { a, _ in a }))
    }

    public func take(_ name: String, shape: [Int]) throws -> Tensor {
        guard let t = tensors[name] else { throw ModelError(.missingTensor, "no tensor '\(name)'") }
        guard t.shape == shape else { throw ModelError(.badShape, "'\(name)' has shape \(t.shape), expected \(shape)") }
        taken.insert(name)
        return t
    }
    public func contains(_ name: String) -> Bool { tensors[name] != nil }
    public var names: [String] { tensors.keys.sorted() }
    public func finish(ignoringPrefixes prefixes: [String]) throws {
        let left = tensors.keys.filter { n in !taken.contains(n) && !prefixes.contains { n.hasPrefix($0) } }.sorted()
        guard left.isEmpty else { throw ModelError(.unexpectedTensor, "tensors not used by the model: \(left.joined(separator: ", "))") }
    }
}
