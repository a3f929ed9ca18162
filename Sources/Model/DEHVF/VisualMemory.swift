/// The fuser's key/value memory of every LLM layer for one batch (DESIGN.md §4: K_l, V_l per sample),
/// kept while the prompts run (`Fuser.recording`) and injected by every decode step after them.
///
/// Generated tokens never change it: the router reads the prompt's mean only and the projector reads the
/// image, so it is built once per sample, not once per new token. Inference only (dropout off, no
/// backward). Size: 2 · layers · batch · M · d floats.
public final class VisualMemory: FFNInjection {
    public let batch: Int
    let layers: Int, tokens: Int, width: Int
    let injectionScale: Float
    /// [L, B, M, d] each.
    let keys: Tensor, values: Tensor
    /// Scores and activations per compute lane: [lanes, 2 · M].
    private let scratch: Tensor
    private let lanes: Int
    /// The sample (batch row) of each row of the next `forward`'s x: a decode step runs only the rows
    /// that have not finished.
    public var rows: [Int] = []

    init(config: FuserConfig, batch: Int) {
        self.batch = batch
        layers = config.llmLayers
        tokens = config.visualTokens
        width = config.llmWidth
        injectionScale = config.injectionScale
        keys = Tensor(zeros: [layers, batch, tokens, width])
        values = Tensor(zeros: [layers, batch, tokens, width])
        lanes = BLAS.threads
        scratch = Tensor(zeros: [lanes, 2 * tokens])
    }

    /// Layer l's memory of the whole batch ([B * M, d] each), as the fuser built it.
    func record(layer l: Int, keys k: UnsafePointer<Float>, values v: UnsafePointer<Float>) {
        let n = batch * tokens * width
        (keys.data + l * n).update(from: k, count: n)
        (values.data + l * n).update(from: v, count: n)
    }

    /// out += injection_scale · SiLU(x K_lᵀ) V_l for each row of x with its sample's memory: the fuser's
    /// forward for one position (dropout off).
    public func forward(layer l: Int, x: UnsafePointer<Float>, out: UnsafeMutablePointer<Float>) {
        let m = tokens, d = width
        BLAS.parallel(rows.count, maxLanes: lanes) { i, lane in
            let offset = (l * batch + rows[i]) * m * d
            let s = scratch.data + lane * 2 * m, act = s + m
            BLAS.gemm(transB: true, m: 1, n: m, k: d, a: x + i * d, lda: d, b: keys.data + offset, ldb: d, beta: 0, c: s, ldc: m)
            Activation.silu.forward(s, act, count: m)
            BLAS.gemm(m: 1, n: d, k: m, alpha: injectionScale, a: act, lda: m, b: values.data + offset, ldb: d, beta: 1,
                      c: out + i * d, ldc: d)
        }
    }

    /// - warning: the recorded memory is for generation; training goes through ``Fuser``.
    public func backward(layer: Int, x: UnsafePointer<Float>, dOut: UnsafePointer<Float>, dX: UnsafeMutablePointer<Float>) {
        preconditionFailure("VisualMemory has no backward: it is the inference-only copy of the fuser's memory")
    }
}
