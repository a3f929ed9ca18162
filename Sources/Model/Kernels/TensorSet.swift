/// A float32 tensor with its DESIGN.md §4 name (`router.weight`, `projector.fc1.bias`, ...).
public struct NamedTensor: Sendable, CustomStringConvertible {
    public var name: String
    public var tensor: Tensor

    public init(_ name: String, _ tensor: Tensor) {
        self.name = name
        self.tensor = tensor
    }

    public var description: String { "\(name)\(tensor.shape)" }
}

/// Named tensors in a fixed order: the trainable parameters, their gradients and AdamW moments, as they
/// are computed, sent over the wire and stored in checkpoints. The one named-tensor type of the project.
///
/// A value type holding tensor references: copying a set shares the tensors (use ``copy()`` for new
/// storage), and ``zero()`` writes into the shared storage.
public struct TensorSet: Sendable, Equatable, RandomAccessCollection, ExpressibleByArrayLiteral, CustomStringConvertible {
    public private(set) var entries: [NamedTensor]
    private var index: [String: Int]

    /// The entries in order. A repeated name keeps its first occurrence for lookups by name.
    public init(_ entries: [NamedTensor] = []) {
        self.entries = entries
        index = [:]
        for (i, e) in entries.enumerated() where index[e.name] == nil { index[e.name] = i }
    }

    public init(_ pairs: [(String, Tensor)]) { self.init(pairs.map { NamedTensor($0.0, $0.1) }) }
    public init(arrayLiteral entries: NamedTensor...) { self.init(entries) }

    /// Zero tensors with these names and shapes.
    public static func zeros(like shapes: [(name: String, shape: [Int])]) -> TensorSet {
        TensorSet(shapes.map { NamedTensor($0.name, Tensor(zeros: $0.shape)) })
    }

    public var startIndex: Int { entries.startIndex }
    public var endIndex: Int { entries.endIndex }
    public subscript(position: Int) -> NamedTensor { entries[position] }

    public var names: [String] { entries.map(\.name) }
    public var tensors: [Tensor] { entries.map(\.tensor) }
    public var shapes: [(name: String, shape: [Int])] { entries.map { ($0.name, $0.tensor.shape) } }
    public var elementCount: Int { entries.reduce(0) { $0 + $1.tensor.count } }

    public subscript(name: String) -> Tensor? { index[name].map { entries[$0].tensor } }

    /// Zero tensors of the same names and shapes.
    public func zerosLike() -> TensorSet { TensorSet(entries.map { NamedTensor($0.name, Tensor(zeros: $0.tensor.shape)) }) }
    /// The same names with copies of the tensors.
    public func copy() -> TensorSet { TensorSet(entries.map { NamedTensor($0.name, $0.tensor.copy()) }) }
    /// Zeroes every tensor in place.
    public func zero() { for e in entries { e.tensor.fill(0) } }

    /// Same names in the same order, same shapes, and bitwise-identical contents (NaN payloads included):
    /// the determinism contract's check.
    public static func == (a: TensorSet, b: TensorSet) -> Bool {
        guard a.names == b.names else { return false }
        for (x, y) in zip(a.tensors, b.tensors) {
            guard x.shape == y.shape else { return false }
            for i in 0..<x.count where x.data[i].bitPattern != y.data[i].bitPattern { return false }
        }
        return true
    }

    public var description: String { "[" + entries.map(\.description).joined(separator: ", ") + "]" }
}
