/// Buffers for `LlamaModel`'s forward and backward, reused across calls of any (batch, length): storage
/// grows to the largest shape seen and is never given back, and ``prepare(batch:length:)`` lays the
/// current shape's tensors over it. Micro-batches are computed at the length of their longest row, so
/// shapes vary from call to call; this keeps that from allocating (and zeroing) gigabytes per call.
///
/// A training workspace keeps every layer's activations for `LlamaModel.backward`; an inference one keeps
/// a single layer's worth and ping-pongs the hidden state. Not thread-safe: one workspace per thread.
/// Contents are not zeroed between calls: every buffer is written before it is read.
public final class LlamaWorkspace {
    public private(set) var batch = 0
    public private(set) var length = 0
    public let training: Bool
    private(set) var rows = 0
    let config: LlamaConfig
    /// Attention scratch is per compute thread (BLAS.threads when the workspace is made).
    let lanes: Int

    // Saved per layer slot (L slots when training, 1 otherwise).
    private(set) var hidden = Tensor(zeros: [0])   // raw layer inputs h_0..h_{L-1} and the last output h_L: [L+1 or 2, N, d]
    private(set) var rstd1 = Tensor(zeros: [0]), rstd2 = Tensor(zeros: [0])       // [slots, N]
    private(set) var q = Tensor(zeros: [0]), k = Tensor(zeros: [0]), v = Tensor(zeros: [0])  // [slots, N, H*hd], [slots, N, Hkv*hd]
    private(set) var attentionScratch = Tensor(zeros: [0])  // [lanes, T*T]: the backward recomputes probabilities
    private(set) var hp = Tensor(zeros: [0]), x = Tensor(zeros: [0])   // h' and post_attention_layernorm(h'): [slots, N, d]
    private(set) var gate = Tensor(zeros: [0]), up = Tensor(zeros: [0])   // [slots, N, F]

    // Scratch shared by all layers.
    private(set) var xn = Tensor(zeros: [0]), attn = Tensor(zeros: [0]), act = Tensor(zeros: [0])
    private(set) var final = Tensor(zeros: [0]), rstdFinal = Tensor(zeros: [0])
    private(set) var cos = Tensor(zeros: [0]), sin = Tensor(zeros: [0])
    private(set) var mask = Tensor(zeros: [0])
    var positions: [Int32] = []
    var hasMask = false
    var forwardDone = false

    // Backward scratch.
    private(set) var dH = Tensor(zeros: [0]), dHp = Tensor(zeros: [0]), dX = Tensor(zeros: [0])
    private(set) var dAct = Tensor(zeros: [0]), dUp = Tensor(zeros: [0]), dAttn = Tensor(zeros: [0])
    private(set) var dQ = Tensor(zeros: [0]), dK = Tensor(zeros: [0]), dV = Tensor(zeros: [0]), dS = Tensor(zeros: [0])

    private var storage: [String: Tensor] = [:]

    public init(config: LlamaConfig, batch: Int, length: Int, training: Bool) {
        self.config = config
        self.training = training
        lanes = BLAS.threads
        prepare(batch: batch, length: length)
    }

    /// Lays out the tensors for `batch` rows of `length` positions, growing the storage if needed.
    public func prepare(batch: Int, length: Int) {
        guard batch != self.batch || length != self.length else { return }
        self.batch = batch
        self.length = length
        let N = batch * length, d = config.hiddenSize, F = config.intermediateSize, L = config.numHiddenLayers
        let qd = config.numAttentionHeads * config.headDim, kd = config.numKeyValueHeads * config.headDim
        let slots = training ? L : 1
        rows = N
        hidden = view("hidden", [training ? L + 1 : 2, N, d])
        rstd1 = view("rstd1", [slots, N])
        rstd2 = view("rstd2", [slots, N])
        q = view("q", [slots, N, qd])
        k = view("k", [slots, N, kd])
        v = view("v", [slots, N, kd])
        attentionScratch = view("attentionScratch", [lanes, length * length])
        hp = view("hp", [slots, N, d])
        x = view("x", [slots, N, d])
        gate = view("gate", [slots, N, F])
        up = view("up", [slots, N, F])
        xn = view("xn", [N, d])
        attn = view("attn", [N, qd])
        act = view("act", [N, F])
        final = view("final", [batch, length, d])
        rstdFinal = view("rstdFinal", [N])
        cos = view("cos", [N, config.headDim / 2])
        sin = view("sin", [N, config.headDim / 2])
        mask = view("mask", [N])
        positions = [Int32](repeating: 0, count: N)
        hasMask = false
        forwardDone = false
        if training {
            dH = view("dH", [N, d])
            dHp = view("dHp", [N, d])
            dX = view("dX", [N, d])
            dAct = view("dAct", [N, F])
            dUp = view("dUp", [N, F])
            dAttn = view("dAttn", [N, qd])
            dQ = view("dQ", [N, qd])
            dK = view("dK", [N, kd])
            dV = view("dV", [N, kd])
            dS = view("dS", [lanes, 2 * length * length])
        }
    }

    /// A tensor of `shape` over the storage named `name`, grown (zero-filled) when too small.
    private func view(_ name: String, _ shape: [Int]) -> Tensor {
        let n = shape.reduce(1, *)
        if (storage[name]?.count ?? -1) < n { storage[name] = Tensor(zeros: [n]) }
        let s = storage[name]!
        return Tensor(shape: shape, borrowing: s.data, owner: s)
    }

    /// The raw hidden state entering layer `l` (l = L: the last layer's output).
    func hiddenIn(_ l: Int) -> UnsafeMutablePointer<Float> {
        let n = rows * config.hiddenSize
        return hidden.data + (training ? l : l % 2) * n
    }

    func slot(_ l: Int) -> Int { training ? l : 0 }
}
