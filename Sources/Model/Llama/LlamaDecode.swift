extension LlamaModel {
    /// Whether a decode step whose full (uncached) call would be `ropeLength` positions long rotates by the
    /// frequencies `cache` was filled with. Only dynamic NTK past `max_position_embeddings` changes them
    /// with the call's length, and then every position, the cached ones included, turns by the new ones:
    /// the cache no longer holds what the full call would compute and the prefix has to be run again.
    public func canDecode(_ cache: KVCache, ropeLength: Int) -> Bool {
        inverseFrequencies(sequenceLength: ropeLength) == cache.inverseFrequencies
    }

    /// One new token per row from a cache that holds each row's earlier positions: row i (cache row
    /// `rows[i]`) gets the input embedding `embeddings[i]` at position `positions[i]`, attends cache
    /// positions 0...positions[i] (the mask of the call that filled the cache, plus every decoded
    /// position), and leaves its key and value in the cache. Rows not listed cost nothing.
    ///
    /// - ropeLength: the largest position + 1 of the full call this step stands for (transformers'
    ///   `seq_len`): positions are checked against `max_position_embeddings` with it, and it must give the
    ///   frequencies the cache was filled with (``canDecode(_:ropeLength:)``).
    /// - injection: added into each layer's FFN output for the listed rows (x is [rows.count, d]).
    /// - Returns: the final-normed hidden states [rows.count, d], a view into `workspace` (an inference
    ///   workspace, reshaped here) that the next call overwrites.
    public func decode(embeddings: Tensor, rows: [Int], positions: [Int], ropeLength: Int, injection: FFNInjection? = nil,
                       cache: KVCache, workspace ws: LlamaWorkspace) throws -> Tensor {
        let c = config, n = rows.count, d = c.hiddenSize
        guard !ws.training else { throw ModelError(.badInput, "decode needs an inference workspace") }
        guard n >= 1, embeddings.count == n * d, positions.count == n else {
            throw ModelError(.badInput, "decode of \(n) rows got embeddings of shape \(embeddings.shape) and \(positions.count) positions")
        }
        guard Set(rows).count == n, rows.allSatisfy({ (0..<cache.batch).contains($0) }) else {
            throw ModelError(.badInput, "decode rows \(rows.prefix(8)) must be distinct rows of the cache's \(cache.batch)")
        }
        guard positions.allSatisfy({ (0..<cache.capacity).contains($0) && $0 < ropeLength }) else {
            throw ModelError(.badInput,
                "decode positions \(positions.prefix(8)) must be below the cache's capacity \(cache.capacity) and the call length \(ropeLength)")
        }
        _ = try checkedSequenceLength([Int32(ropeLength - 1)])
        guard canDecode(cache, ropeLength: ropeLength) else {
            throw ModelError(.unsupported,
                "a call of \(ropeLength) positions rotates by other frequencies than the key/value cache holds "
                + "(rope type '\(c.ropeScaling.typeName)' past max_position_embeddings \(c.maxPositionEmbeddings)); run the whole prefix instead")
        }
        ws.prepare(batch: n, length: 1)
        for (i, p) in positions.enumerated() { ws.positions[i] = Int32(p) }
        ws.positions.withUnsafeBufferPointer { p in
            cache.inverseFrequencies.withUnsafeBufferPointer {
                Rotary.tables(positions: p.baseAddress!, count: n, inverseFrequencies: $0, cos: ws.cos.data, sin: ws.sin.data)
            }
        }
        for (b, p) in zip(rows, positions) { cache.mask.data[b * cache.capacity + p] = 1 }
        ws.hiddenIn(0).update(from: embeddings.data, count: n * d)
        let shape = AttentionShape(batch: n, length: 1, heads: c.numAttentionHeads, kvHeads: c.numKeyValueHeads,
                                   headDim: c.headDim, causal: true)
        for l in 0..<layers.count {
            attentionInput(l, ws, fewRows: true)
            cache.append(layer: l, keys: ws.k.data, values: ws.v.data, rows: rows, positions: positions)
            Attention.decode(shape, q: ws.q.data, layer: l, cache: cache, rows: rows, positions: positions, out: ws.attn.data)
            attentionOutputAndMLP(l, injection: injection, ws, fewRows: true)
        }
        RMSNorm.forward(x: ws.hiddenIn(layers.count), rows: n, dim: d, weight: norm.data, eps: c.rmsNormEps,
                        y: ws.final.data, rstd: ws.rstdFinal.data)
        ws.forwardDone = true
        return Tensor(shape: [n, d], borrowing: ws.final.data, owner: ws)
    }
}
