import Foundation

/// The frozen LLaMA with the trainable fuser: the training and scoring computation of one micro-batch,
/// in every fusion mode through one code path. Not thread-safe: one caller at a time.
public final class DEHVFModel {
    public let llama: LlamaModel
    public let config: FuserConfig
    let fuser: Fuser
    /// One training and one inference workspace, each reshaped to every micro-batch's (batch, length).
    private var workspaces: [Bool: LlamaWorkspace] = [:]
    /// Storage for the gradient w.r.t. the final hidden states, grown to the largest micro-batch.
    private var dFinalStorage = Tensor(zeros: [0])

    public init(llama: LlamaModel, config: FuserConfig, initial params: TensorSet) {
        self.llama = llama
        self.config = config
        self.fuser = Fuser(config: config, params: params)
    }

    var concat: Bool { config.fusion == .concat }
    /// Rows the LLM sees per sample: concat prepends M visual positions.
    func length(_ b: TrainingBatch) -> Int { b.tokens + (concat ? config.visualTokens : 0) }

    func workspace(batch: Int, length: Int, training: Bool) -> LlamaWorkspace {
        if let ws = workspaces[training] {
            ws.prepare(batch: batch, length: length)
            return ws
        }
        let ws = llama.makeWorkspace(batch: batch, length: length, training: training)
        workspaces[training] = ws
        return ws
    }

    /// Loss sum, label count and summed gradients for `batch` under `params`. `dropout` nil is off.
    public func gradients(_ batch: TrainingBatch, params: TensorSet, dropout: DropoutMask?) throws -> MicroBatchGradients {
        fuser.params = params
        fuser.grads.zero()
        let ws = workspace(batch: batch.batch, length: length(batch), training: true)
        let final = try forward(batch, workspace: ws, dropout: dropout)
        let (rows, targets) = lossRows(batch)
        let logits = llama.logits(final, rows: rows)
        let lossSum = crossEntropy(logits, targets: targets)   // logits now hold dLoss/dLogits
        if dFinalStorage.count < final.count { dFinalStorage = Tensor(zeros: [final.count]) }
        let dFinal = Tensor(shape: final.shape, borrowing: dFinalStorage.data, owner: dFinalStorage)
        dFinal.data.update(repeating: 0, count: dFinal.count)
        llama.accumulateLogitGradient(logits, rows: rows, into: dFinal)
        let dEmbeddings = try llama.backward(dFinal: dFinal, injection: concat ? nil : fuser, workspace: ws)
        if concat { fuser.concatBackward(dEmbeddings: dEmbeddings.data, stride: length(batch)) }
        fuser.finishBackward()
        return MicroBatchGradients(lossSum: lossSum, labelCount: Int64(rows.count), grads: fuser.grads.copy())
    }

    /// Loss sum and label count without gradients (dropout off).
    public func loss(_ batch: TrainingBatch, params: TensorSet) throws -> (lossSum: Double, labelCount: Int) {
        fuser.params = params
        let ws = workspace(batch: batch.batch, length: length(batch), training: false)
        let final = try forward(batch, workspace: ws, dropout: nil)
        let (rows, targets) = lossRows(batch)
        return (crossEntropy(llama.logits(final, rows: rows), targets: targets), rows.count)
    }

    /// Logits of `choiceTokenIDs` at each sample's `answerPositions` (text positions), dropout off: [B][C].
    public func choiceLogits(_ batch: TrainingBatch, params: TensorSet, answerPositions: [Int32],
                             choiceTokenIDs: [Int32]) throws -> [[Float]] {
        let v = llama.config.vocabSize
        if let bad = choiceTokenIDs.first(where: { $0 < 0 || Int($0) >= v }) {
            throw ModelError(.badInput, "choice token id \(bad) is not below the vocabulary size \(v)")
        }
        guard answerPositions.count == batch.batch, answerPositions.allSatisfy({ $0 >= 0 && Int($0) < batch.tokens }) else {
            throw ModelError(.badInput, "answer positions \(answerPositions.prefix(8)) for \(batch.batch) samples of \(batch.tokens) tokens")
        }
        fuser.params = params
        let t = length(batch), shift = concat ? config.visualTokens : 0
        let ws = workspace(batch: batch.batch, length: t, training: false)
        let final = try forward(batch, workspace: ws, dropout: nil)
        let rows = answerPositions.enumerated().map { b, p in b * t + shift + Int(p) }
        let logits = llama.logits(final, rows: rows)
        return rows.indices.map { i in choiceTokenIDs.map { logits.data[i * v + Int($0)] } }
    }

    /// Held-out scoring in one forward pass, dropout off: the loss sum and label count of ``loss(_:params:)``
    /// and, with `answerPositions`, the ``choiceLogits(_:params:answerPositions:choiceTokenIDs:)`` too.
    public func score(_ batch: TrainingBatch, params: TensorSet, answerPositions: [Int32]?,
                      choiceTokenIDs: [Int32]) throws -> (lossSum: Double, labelCount: Int, choiceLogits: [[Float]]) {
        let v = llama.config.vocabSize
        if let answerPositions {
            if let bad = choiceTokenIDs.first(where: { $0 < 0 || Int($0) >= v }) {
                throw ModelError(.badInput, "choice token id \(bad) is not below the vocabulary size \(v)")
            }
            guard answerPositions.count == batch.batch, answerPositions.allSatisfy({ $0 >= 0 && Int($0) < batch.tokens }) else {
                throw ModelError(.badInput, "answer positions \(answerPositions.prefix(8)) for \(batch.batch) samples of \(batch.tokens) tokens")
            }
        }
        fuser.params = params
        let t = length(batch), shift = concat ? config.visualTokens : 0
        let ws = workspace(batch: batch.batch, length: t, training: false)
        let final = try forward(batch, workspace: ws, dropout: nil)
        var choices: [[Float]] = []
        if let answerPositions {
            let rows = answerPositions.enumerated().map { b, p in b * t + shift + Int(p) }
            let logits = llama.logits(final, rows: rows)
            choices = rows.indices.map { i in choiceTokenIDs.map { logits.data[i * v + Int($0)] } }
        }
        let (rows, targets) = lossRows(batch)
        return (crossEntropy(llama.logits(final, rows: rows), targets: targets), rows.count, choices)
    }

    /// Full-vocabulary logits [B, V] at each sample's text position `positions[b]`, dropout off.
    public func nextTokenLogits(_ batch: TrainingBatch, params: TensorSet, positions: [Int]) throws -> Tensor {
        guard positions.count == batch.batch, positions.allSatisfy({ $0 >= 0 && $0 < batch.tokens }) else {
            throw ModelError(.badInput, "positions \(positions) for \(batch.batch) samples of \(batch.tokens) tokens")
        }
        fuser.params = params
        let t = length(batch), shift = concat ? config.visualTokens : 0
        let ws = workspace(batch: batch.batch, length: t, training: false)
        let final = try forward(batch, workspace: ws, dropout: nil)
        return llama.logits(final, rows: positions.enumerated().map { b, p in b * t + shift + p })
    }

    // MARK: the shared path

    /// The LLM over the micro-batch's text (after the M visual positions in concat), with the fuser's
    /// memory injected in the other modes; `cache` keeps every layer's keys and values for decoding.
    func forward(_ batch: TrainingBatch, workspace ws: LlamaWorkspace, dropout: DropoutMask?,
                 cache: KVCache? = nil) throws -> Tensor {
        let b = batch.batch, t = batch.tokens, d = llama.config.hiddenSize
        guard batch.inputIDs.count == b * t, batch.labels.count == b * t, batch.lengths.count == b,
              batch.features.count == b else {
            throw ModelError(.badInput, "micro-batch arrays do not match \(b) samples of \(t) tokens")
        }
        let vocab = Int32(llama.config.vocabSize)
        if let bad = batch.labels.firstIndex(where: { $0 != -100 && ($0 < 0 || $0 >= vocab) }) {
            throw ModelError(.badInput, "label \(batch.labels[bad]) of sample \(batch.sampleIndices[bad / t]) is neither -100 nor a token id below the vocabulary size \(vocab)")
        }
        var samples: [FuserSample] = []
        for i in 0..<b {
            if let f = batch.features[i], f.shape != [config.candidates, config.visualTokens, config.visionWidth] {
                throw ModelError(.badShape, "features of sample \(batch.sampleIndices[i]) have shape \(f.shape)")
            }
            let len = min(Int(batch.lengths[i]), t)
            let firstLabel = (0..<t).first { batch.labels[i * t + $0] != -100 } ?? t
            samples.append(FuserSample(features: batch.features[i].map { UnsafePointer($0.data) },
                                       promptCount: min(firstLabel, len), sampleIndex: batch.sampleIndices[i]))
        }
        fuser.begin(samples: samples, tokens: t, dropout: concat ? nil : dropout)
        let text = try llama.embed(ids: batch.inputIDs, batch: b, length: t)
        let total = length(batch), m = total - t
        let mask = Tensor(zeros: [b, total])
        for i in 0..<b {
            let hasImage: Float = batch.features[i] == nil ? 0 : 1
            for j in 0..<m { mask.data[i * total + j] = hasImage }
            for j in 0..<min(Int(batch.lengths[i]), t) { mask.data[i * total + m + j] = 1 }
        }
        let embeddings: Tensor
        if concat {
            embeddings = Tensor(zeros: [b, total, d])
            fuser.concatEmbeddings(into: embeddings.data, stride: total)
            for i in 0..<b { (embeddings.data + (i * total + m) * d).update(from: text.data + i * t * d, count: t * d) }
        } else {
            embeddings = text
        }
        return try llama.forward(embeddings: embeddings, keyMask: mask, injection: concat ? nil : fuser, workspace: ws,
                                 cache: cache).final
    }

    /// Rows (b * T' + t) whose logits predict a label at t + 1, and those labels (transformers' shift).
    private func lossRows(_ batch: TrainingBatch) -> ([Int], [Int32]) {
        let t = batch.tokens, total = length(batch), m = total - t
        var rows: [Int] = [], targets: [Int32] = []
        for i in 0..<batch.batch {
            for j in 0..<t where batch.labels[i * t + j] != -100 {
                let position = m + j - 1       // the logits one position earlier predict it
                guard position >= 0 else { continue }
                rows.append(i * total + position)
                targets.append(batch.labels[i * t + j])
            }
        }
        return (rows, targets)
    }

    /// Summed cross-entropy of `logits` [R, V] against `targets`; overwrites `logits` with the gradient of
    /// that sum (softmax - onehot). Each row's loss is accumulated in Double, in row order.
    private func crossEntropy(_ logits: Tensor, targets: [Int32]) -> Double {
        let v = llama.config.vocabSize
        var total = 0.0
        for (i, target) in targets.enumerated() {
            let row = logits.data + i * v, picked = row[Int(target)]
            let mx = Vec.max(row, v)
            let sum = Vec.expSum(row, minus: mx, v)   // row = e^(logit - max)
            total += Double(mx + logf(sum) - picked)
            Vec.scale(row, 1 / sum, v)
            row[Int(target)] -= 1
        }
        return total
    }
}
