/// Named tensors in a fixed order: the trainable parameters, their gradients, or optimizer moments.
public final class ParameterSet: @unchecked Sendable {
    public private(set) var names: [String]
    public private(set) var tensors: [Tensor]
    private var index: [String: Int]

    public init(_ pairs: [(String, Tensor)]) {
        names = pairs.map(\.0)
        tensors = pairs.map(\.1)
        index = Dictionary(uniqueKeysWithValues: names.enumerated().map { ($1, $0) })
    }

    /// Zero tensors with the same names and shapes.
    public static func zeros(like shapes: [(name: String, shape: [Int])]) -> ParameterSet {
        ParameterSet(shapes.map { ($0.name, Tensor(zeros: $0.shape)) })
    }

    public func zerosLike() -> ParameterSet { ParameterSet(zip(names, tensors).map { ($0, Tensor(zeros: $1.shape)) }) }
    public func copy() -> ParameterSet { ParameterSet(zip(names, tensors).map { ($0, $1.copy()) }) }

    public subscript(name: String) -> Tensor? { index[name].map { tensors[$0] } }
    public var pairs: [(String, Tensor)] { Array(zip(names, tensors)) }
    public var elementCount: Int { tensors.reduce(0) { $0 + $1.count } }

    public func zero() { for t in tensors { t.fill(0) } }

    /// Bitwise equality of every tensor (the determinism contract's check).
    public func bitwiseEqual(_ other: ParameterSet) -> Bool {
        guard names == other.names else { return false }
        for (a, b) in zip(tensors, other.tensors) {
            guard a.shape == b.shape else { return false }
            for i in 0..<a.count where a.data[i].bitPattern != b.data[i].bitPattern { return false }
        }
        return true
    }
}
