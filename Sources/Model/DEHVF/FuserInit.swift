extension FuserConfig {
    /// Initial trainable parameters (DESIGN.md §4), a pure function of `seed`:
    /// router.weight 0; router.bias[l][j] = -4|j/(S-1) - l/(L-1)|; projector weights
    /// uniform(±1/sqrt(fan_in)), biases 0; prompt.key_pos N(0, 0.02²); prompt.value_pos 0.
    public func initialParameters(seed: UInt64) -> TensorSet {
        let set = TensorSet.zeros(like: parameterShapes)
        let s = candidates, l = llmLayers
        if let bias = set["router.bias"] {
            for li in 0..<l {
                for j in 0..<s {
                    let fj = s > 1 ? Float(j) / Float(s - 1) : 0
                    let fl = l > 1 ? Float(li) / Float(l - 1) : 0
                    bias.data[li * s + j] = (s == 1 || l == 1) ? 0 : -4 * abs(fj - fl)
                }
            }
        }
        for name in ["projector.fc1.weight", "projector.fc2.weight"] {
            let w = set[name]!
            var rng = InitRNG(seed: seed, name: name)
            let bound = 1 / Float(w.shape[1]).squareRoot()
            for i in 0..<w.count { w.data[i] = rng.uniform(bound: bound) }
        }
        if let kp = set["prompt.key_pos"] {
            var rng = InitRNG(seed: seed, name: "prompt.key_pos")
            for i in 0..<kp.count { kp.data[i] = 0.02 * rng.normal() }
        }
        return set
    }
}

extension FuserConfig {
    /// Named tensors (from a checkpoint or the wire) as this fuser's parameter set, in canonical order.
    /// Strict: a missing, repeated, extra or misshapen tensor throws and names it.
    public func parameters(from given: TensorSet, what: String = "checkpoint") throws -> TensorSet {
        let expected = parameterShapes
        if let extra = given.names.first(where: { name in !expected.contains { $0.name == name } }) {
            throw ModelError(.unexpectedTensor,
                "\(what) has tensor '\(extra)', which a \(fusion.rawValue) fuser does not have (it has \(expected.map(\.name).joined(separator: ", ")))")
        }
        if let repeated = given.names.first(where: { name in given.names.filter { $0 == name }.count > 1 }) {
            throw ModelError(.unexpectedTensor, "\(what) has tensor '\(repeated)' more than once")
        }
        return TensorSet(try expected.map { name, shape in
            guard let t = given[name] else {
                throw ModelError(.missingTensor, "\(what) lacks tensor '\(name)' \(shape) for a \(fusion.rawValue) fuser")
            }
            guard t.shape == shape else {
                throw ModelError(.badShape, "\(what) tensor '\(name)' has shape \(t.shape); this job's model needs \(shape)")
            }
            return NamedTensor(name, t)
        })
    }
}
