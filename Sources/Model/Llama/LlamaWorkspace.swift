/// Preallocated buffers for one (batch, length) shape of `LlamaModel`, reused across calls.
///
/// A training workspace keeps every layer's activations for `LlamaModel.backward`; an inference one keeps
/// a single layer's worth and ping-pongs the hidden state. Not thread-safe: one workspace per thread.
public final class LlamaWorkspace {
    public let batch: Int
    public let length: Int
    public let training: Bool
    let rows: Int
    let config: LlamaConfig
    /// Attention scratch is per compute thread (BLAS.threads when the workspace is made).
    let lanes: Int

    // Saved per layer slot (L slots when training, 1 otherwise).
    let hidden: Tensor   // raw layer inputs h_0..h_{L-1} and the last output h_L: [L+1 or 2, N, d]
    let rstd1: Tensor, rstd2: Tensor        // [slots, N]
    let q: Tensor, k: Tensor, v: Tensor     // [slots, N, H*hd], [slots, N, Hkv*hd] (after rotary)
    let attentionScratch: Tensor            // [lanes, T*T]: the backward recomputes probabilities
    let hp: Tensor, x: Tensor               // h' and post_attention_layernorm(h'): [slots, N, d]
    let gate: Tensor, up: Tensor            // [slots, N, F]

    // Scratch shared by all layers.
    let xn: Tensor, attn: Tensor, act: Tensor
    let final: Tensor, rstdFinal: Tensor
    let cos: Tensor, sin: Tensor
    let mask: Tensor
    var positions: [Int32]
    var hasMask = false
    var forwardDone = false

    // Backward scratch, allocated by the first backward.
    lazy var dH = Tensor(zeros: [rows, config.hiddenSize])
    lazy var dHp = Tensor(zeros: [rows, config.hiddenSize])
    lazy var dX = Tensor(zeros: [rows, config.hiddenSize])
    lazy var dAct = Tensor(zeros: [rows, config.intermediateSize])
    lazy var dUp = Tensor(zeros: [rows, config.intermediateSize])
    lazy var dAttn = Tensor(zeros: [rows, config.numAttentionHeads * config.headDim])
    lazy var dQ = Tensor(zeros: [rows, config.numAttentionHeads * config.headDim])
    lazy var dK = Tensor(zeros: [rows, config.numKeyValueHeads * config.headDim])
    lazy var dV = Tensor(zeros: [rows, config.numKeyValueHeads * config.headDim])
    lazy var dS = Tensor(zeros: [lanes, 2 * length * length])

    public init(config: LlamaConfig, batch: Int, length: Int, training: Bool) {
        self.config = config
        self.batch = batch
        self.length = length
        self.training = training
        let N = batch * length, d = config.hiddenSize, F = config.intermediateSize, L = config.numHiddenLayers
        let qd = config.numAttentionHeads * config.headDim, kd = config.numKeyValueHeads * config.headDim
        let slots = training ? L : 1
        rows = N
        hidden = Tensor(zeros: [training ? L + 1 : 2, N, d])
        rstd1 = Tensor(zeros: [slots, N])
        rstd2 = Tensor(zeros: [slots, N])
        q = Tensor(zeros: [slots, N, qd])
        k = Tensor(zeros: [slots, N, kd])
        v = Tensor(zeros: [slots, N, kd])
        lanes = BLAS.threads
        attentionScratch = Tensor(zeros: [lanes, length * length])
        hp = Tensor(zeros: [slots, N, d])
        x = Tensor(zeros: [slots, N, d])
        gate = Tensor(zeros: [slots, N, F])
        up = Tensor(zeros: [slots, N, F])
        xn = Tensor(zeros: [N, d])
        attn = Tensor(zeros: [N, qd])
        act = Tensor(zeros: [N, F])
        final = Tensor(zeros: [batch, length, d])
        rstdFinal = Tensor(zeros: [N])
        cos = Tensor(zeros: [N, config.headDim / 2])
        sin = Tensor(zeros: [N, config.headDim / 2])
        mask = Tensor(zeros: [N])
        positions = [Int32](repeating: 0, count: N)
    }

    /// The raw hidden state entering layer `l` (l = L: the last layer's output).
    func hiddenIn(_ l: Int) -> UnsafeMutablePointer<Float> {
        let n = rows * config.hiddenSize
        return hidden.data + (training ? l : l % 2) * n
    }

    func slot(_ l: Int) -> Int { training ? l : 0 }
}
