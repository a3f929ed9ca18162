extension FuserConfig {
    /// Initial trainable parameters (DESIGN.md §4), a pure function of `seed`:
    /// router.weight 0; router.bias[l][j] = -4|j/(S-1) - l/(L-1)|; projector weights
    /// uniform(±1/sqrt(fan_in)), biases 0; prompt.key_pos N(0, 0.02²); prompt.value_pos 0.
    public func initialParameters(seed: UInt64) -> ParameterSet {
        let set = ParameterSet.zeros(like: parameterShapes)
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
