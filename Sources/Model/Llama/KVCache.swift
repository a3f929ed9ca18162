/// Every layer's keys (after RoPE) and values for the positions a batch has run, so that a decode step
/// computes only its new position (``LlamaModel/decode(embeddings:rows:positions:ropeLength:injection:cache:workspace:)``).
/// Grouped-query attention keeps `num_key_value_heads` heads here, not the query heads they serve.
///
/// A row is one sample for the cache's whole life; position p of a row holds its token at RoPE position
/// p. `LlamaModel.forward(... cache:)` fills positions 0..<T of every row with that call's key mask (a
/// shorter row's padding is masked off there, and overwritten by its first decoded position). The cache
/// remembers the rotary frequencies it was filled with: a decode step whose call would rotate by other
/// ones (dynamic NTK past `max_position_embeddings`) cannot reuse it.
///
/// Size: 2 · layers · batch · capacity · num_key_value_heads · head_dim floats. Not thread-safe.
public final class KVCache {
    public let batch: Int
    /// Positions per row.
    public let capacity: Int
    let layers: Int
    /// Floats per position: num_key_value_heads · head_dim.
    let width: Int
    /// [L, B, capacity, width] each.
    let keys: Tensor, values: Tensor
    /// [B, capacity]: nonzero = the position may be attended.
    let mask: Tensor
    /// Attention scores per compute lane: [lanes, (heads / kvHeads) · capacity].
    let scores: Tensor
    let lanes: Int
    /// inv_freq of the call that filled the cache (empty before).
    private(set) var inverseFrequencies: [Float] = []

    public init(config: LlamaConfig, batch: Int, capacity: Int) {
        precondition(batch >= 0 && capacity >= 0, "a cache of \(batch) rows of \(capacity) positions")
        self.batch = batch
        self.capacity = capacity
        layers = config.numHiddenLayers
        width = config.numKeyValueHeads * config.headDim
        keys = Tensor(zeros: [layers, batch, capacity, width])
        values = Tensor(zeros: [layers, batch, capacity, width])
        mask = Tensor(zeros: [batch, capacity])
        lanes = BLAS.threads
        scores = Tensor(zeros: [lanes, config.numAttentionHeads / config.numKeyValueHeads * capacity])
    }

    /// The start of (layer, row)'s keys or values: `capacity` positions of `width` floats.
    func keys(layer: Int, row: Int) -> UnsafeMutablePointer<Float> { keys.data + (layer * batch + row) * capacity * width }
    func values(layer: Int, row: Int) -> UnsafeMutablePointer<Float> { values.data + (layer * batch + row) * capacity * width }

    /// A forward call of `length` positions per row begins filling the cache: its key mask ([B, length], nil
    /// = all), and the frequencies it rotates by.
    func start(mask keyMask: UnsafePointer<Float>?, length: Int, inverseFrequencies: [Float]) {
        self.inverseFrequencies = inverseFrequencies
        mask.fill(0)
        for b in 0..<batch {
            let row = mask.data + b * capacity
            if let keyMask { row.update(from: keyMask + b * length, count: length) } else { row.update(repeating: 1, count: length) }
        }
    }

    /// Layer l's keys and values of a forward call ([B * length, width] each) into positions 0..<length.
    func store(layer l: Int, keys k: UnsafePointer<Float>, values v: UnsafePointer<Float>, length: Int) {
        for b in 0..<batch {
            keys(layer: l, row: b).update(from: k + b * length * width, count: length * width)
            values(layer: l, row: b).update(from: v + b * length * width, count: length * width)
        }
    }

    /// Layer l's keys and values of one new position per row ([rows.count, width] each).
    func append(layer l: Int, keys k: UnsafePointer<Float>, values v: UnsafePointer<Float>, rows: [Int], positions: [Int]) {
        for (i, (b, p)) in zip(rows, positions).enumerated() {
            (keys(layer: l, row: b) + p * width).update(from: k + i * width, count: width)
            (values(layer: l, row: b) + p * width).update(from: v + i * width, count: width)
        }
    }
}

extension Attention {
    /// Attention of one new query position per row against a cache that already holds that position:
    /// row i (cache row `rows[i]`, at `positions[i]`) attends the cached positions 0...positions[i] the
    /// mask allows; q and out are [rows.count, heads · headDim]. The arithmetic is the forward's
    /// (scaled products, ``maskedSoftmax(_:limit:length:mask:)``, P·V), one (row, key/value head) per
    /// parallel item with the group's query heads as one product.
    static func decode(_ s: AttentionShape, q: UnsafePointer<Float>, layer: Int, cache: KVCache, rows: [Int],
                       positions: [Int], out: UnsafeMutablePointer<Float>) {
        let hd = s.headDim, group = s.heads / s.kvHeads, qs = s.heads * hd, ks = s.kvHeads * hd
        let capacity = cache.capacity
        BLAS.parallel(rows.count * s.kvHeads, maxLanes: cache.lanes) { unit, lane in
            let i = unit / s.kvHeads, g = unit % s.kvHeads, b = rows[i], n = positions[i] + 1
            let kp = cache.keys(layer: layer, row: b) + g * hd, vp = cache.values(layer: layer, row: b) + g * hd
            let p = cache.scores.data + lane * group * capacity
            let qp = q + i * qs + g * group * hd, op = out + i * qs + g * group * hd
            BLAS.gemm(transB: true, m: group, n: n, k: hd, alpha: s.scale, a: qp, lda: hd, b: kp, ldb: ks, beta: 0,
                      c: p, ldc: capacity)
            for h in 0..<group {
                maskedSoftmax(p + h * capacity, limit: n, length: n, mask: cache.mask.data + b * capacity)
            }
            BLAS.gemm(m: group, n: hd, k: n, a: p, lda: capacity, b: vp, ldb: ks, beta: 0, c: op, ldc: hd)
        }
    }
}
