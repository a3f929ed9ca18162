extension DEHVFModel {
    /// Greedy continuation of every row of `prompts` (row b's first `lengths[b]` tokens; its labels are not
    /// read): one argmax token at a time, dropout off, until `maxNewTokens` or `eos` (kept as the row's
    /// last token). Returns the generated ids per row.
    ///
    /// The router's prompt mean covers the prompt only, as in training: the generated tokens stand where the
    /// answer's labelled tokens stood. Each step computes exactly what re-running the whole prefix computes
    /// (`cache: false`: each step is one ``nextTokenLogits(_:params:positions:)`` over every row, padded to
    /// the longest, with the generated tokens labelled), but by default:
    /// - the prompts run once, keeping every layer's keys and values (``KVCache``; in concat it holds the
    ///   M visual positions before the text) and each layer's visual memory (``VisualMemory``: the router
    ///   mix, the projector and K_l, V_l are built once per sample), and a step runs one position per row;
    /// - a row that has produced `eos` leaves the batch: later steps cost nothing for it.
    /// A step whose full call would rotate by other frequencies than the prompts' (dynamic NTK past
    /// `max_position_embeddings`, where the call's length sets them) re-runs the whole prefix instead, as
    /// `cache: false` does; so the ids are the same either way (the logits agree to float rounding).
    ///
    /// `pad` fills the rows of a full-prefix step past their end. `observe`, if given, sees each step's
    /// logits [rows.count, V] of the unfinished rows `rows` before their argmax is taken.
    public func greedy(_ prompts: TrainingBatch, params: TensorSet, maxNewTokens: Int, eos: Int32?, pad: Int32,
                       cache: Bool = true, observe: ((_ rows: [Int], _ logits: Tensor) -> Void)? = nil) throws -> [[Int32]] {
        let n = prompts.batch, t = prompts.tokens
        guard prompts.lengths.count == n, prompts.lengths.allSatisfy({ $0 >= 1 && Int($0) <= t }) else {
            throw ModelError(.badInput, "prompt lengths \(prompts.lengths.prefix(8)) must be 1...\(t) for \(n) rows")
        }
        guard maxNewTokens > 0, n > 0 else { return [[Int32]](repeating: [], count: n) }
        var prompts = prompts
        prompts.labels = [Int32](repeating: -100, count: prompts.inputIDs.count)
        var sequences = (0..<n).map { b in Array(prompts.inputIDs[(b * t)..<(b * t + Int(prompts.lengths[b]))]) }
        let promptLengths = sequences.map(\.count)
        let decoding = cache ? try Decoding(self, prompts: prompts, params: params, maxNewTokens: maxNewTokens) : nil
        var rows = Array(0..<n)   // the unfinished rows
        for step in 0..<maxNewTokens where !rows.isEmpty {
            let logits: Tensor
            if let decoding, step == 0 {
                logits = decoding.promptLogits
            } else if let decoding, let next = try decoding.step(self, sequences: sequences, rows: rows) {
                logits = next
            } else {
                logits = try fullPrefixLogits(prompts, sequences: sequences, promptLengths: promptLengths, params: params,
                                              pad: pad, rows: rows)
            }
            observe?(rows, logits)
            let v = logits.shape[1]
            for (i, b) in rows.enumerated() {
                let row = logits.data + i * v
                var best = 0
                for j in 1..<v where row[j] > row[best] { best = j }
                sequences[b].append(Int32(best))
            }
            rows.removeAll { sequences[$0].last == eos }
        }
        return zip(sequences, promptLengths).map { Array($0.0[$0.1...]) }
    }

    /// One step without a cache: every row's prefix (prompt and generated tokens, the latter labelled) run
    /// again, padded to the longest; the logits [rows.count, V] at the last position of each of `rows`.
    private func fullPrefixLogits(_ prompts: TrainingBatch, sequences: [[Int32]], promptLengths: [Int], params: TensorSet,
                                  pad: Int32, rows: [Int]) throws -> Tensor {
        let width = sequences.map(\.count).max()!
        var ids = [Int32](repeating: pad, count: sequences.count * width)
        var labels = [Int32](repeating: -100, count: ids.count)
        for (b, s) in sequences.enumerated() {
            ids.replaceSubrange((b * width)..<(b * width + s.count), with: s)
            for j in promptLengths[b]..<s.count { labels[b * width + j] = s[j] }
        }
        let step = TrainingBatch(tokens: width, inputIDs: ids, labels: labels, lengths: sequences.map { Int32($0.count) },
                                 sampleIndices: prompts.sampleIndices, features: prompts.features)
        let all = try nextTokenLogits(step, params: params, positions: sequences.map { $0.count - 1 })
        guard rows.count < sequences.count else { return all }
        let v = all.shape[1], picked = Tensor(zeros: [rows.count, v])
        for (i, b) in rows.enumerated() { (picked.data + i * v).update(from: all.data + b * v, count: v) }
        return picked
    }
}

/// Cached greedy decoding of one batch: the prompts run once, and what every later step reads is kept.
private final class Decoding {
    /// Every layer's keys and values: in concat the M visual positions, then the text.
    let cache: KVCache
    /// Each layer's K_l, V_l per sample (nil in concat, which injects nothing).
    let memory: VisualMemory?
    /// Positions before the text: M in concat, else 0.
    let shift: Int
    /// Logits [B, V] at each prompt's last position: the first generated token's.
    let promptLogits: Tensor

    init(_ model: DEHVFModel, prompts: TrainingBatch, params: TensorSet, maxNewTokens: Int) throws {
        let n = prompts.batch, total = model.length(prompts), shift = total - prompts.tokens
        self.shift = shift
        // The last generated token is never fed back: the prompt and maxNewTokens - 1 more positions.
        cache = KVCache(config: model.llama.config, batch: n, capacity: total + maxNewTokens - 1)
        memory = model.concat ? nil : VisualMemory(config: model.config, batch: n)
        model.fuser.params = params
        model.fuser.recording = memory
        defer { model.fuser.recording = nil }
        let ws = model.workspace(batch: n, length: total, training: false)
        let final = try model.forward(prompts, workspace: ws, dropout: nil, cache: cache)
        promptLogits = model.llama.logits(final, rows: (0..<n).map { $0 * total + shift + Int(prompts.lengths[$0]) - 1 })
    }

    /// Logits [rows.count, V] after feeding each of `rows` its last token, or nil when the full call of
    /// this step would rotate by other frequencies than the cache holds (the caller re-runs the prefix).
    /// The full call is as long as the longest row, finished rows included, as it would be without a cache.
    func step(_ model: DEHVFModel, sequences: [[Int32]], rows: [Int]) throws -> Tensor? {
        let ropeLength = shift + sequences.map(\.count).max()!
        guard model.llama.canDecode(cache, ropeLength: ropeLength) else { return nil }
        let embeddings = try model.llama.embed(ids: rows.map { sequences[$0].last! }, batch: rows.count, length: 1)
        memory?.rows = rows
        let ws = model.workspace(batch: rows.count, length: 1, training: false)
        let final = try model.llama.decode(embeddings: embeddings, rows: rows, positions: rows.map { shift + sequences[$0].count - 1 },
                                           ropeLength: ropeLength, injection: memory, cache: cache, workspace: ws)
        return model.llama.decodeLogits(final)
    }
}
