import Cluster
import Foundation
import Model
import Shard
import Testing

/// Greedy captions for caption data: the loop's bookkeeping (prompts, padding, positions, EOS) checked
/// against the model's own next-token argmax, and `coordinator eval --generate` end to end.
@Suite("caption generation")
struct CaptionGenerationTests {
    /// The demo backbones with a 32-row caption training set: a 4-token prompt and a 6-token caption, one
    /// row (sample 3) without an image, and reference captions kept per row.
    static func captionData() throws -> URL {
        let demo = try Demo.data()
        let dir = try Demo.scratch("captions")
        for name in ["vision", "language"] {
            try FileManager.default.createSymbolicLink(at: dir.appendingPathComponent(name),
                                                       withDestinationURL: demo.appendingPathComponent(name))
        }
        let n = 32, t = 12, size = DemoTask.imageSize
        var c = DatasetContents(task: .caption, count: n, tokens: t, imageHeight: size, imageWidth: size)
        c.references = []
        for i in 0..<n {
            let s = DemoTask.sample(seed: 7, index: i)
            c.images.replaceSubrange((i * 3 * size * size)..<((i + 1) * 3 * size * size), with: s.image)
            c.hasImage[i] = i == 3 ? 0 : 1
            let ids: [Int32] = [1, 3, 7, 5] + (0..<6).map { Int32(20 + ($0 + i) % 8) }
            c.inputIds.replaceSubrange((i * t)..<(i * t + ids.count), with: ids)
            for j in 4..<ids.count { c.labels[i * t + j] = ids[j] }
            c.lengths[i] = Int32(ids.count)
            c.references!.append("[\"a \(DemoTask.colors[i % 4]) shape\", \"reference \(i)\"]")
        }
        try DatasetWriter.write(c, to: dir.appendingPathComponent("train.h5").path)
        return dir
    }

    @Test("each generated token is the argmax of the model's next-token logits over the prompt and the tokens before it")
    func greedyIsArgmax() throws {
        let data = try Self.captionData()
        // A loud visual memory and perturbed parameters, so the fuser's part of the logits is not negligible.
        let job = try JobConfig.load(file: try Demo.job(in: data, launcher: "inprocess", port: Demo.port(), steps: 1, data: data),
                                     overrides: [try ConfigOverride(parsing: "model.injection_scale=300"),
                                                 try ConfigOverride(parsing: "model.feature_scale=1")])
        let engine = try TrainingEngine(job: job)
        var params = engine.initialParameters()
        for (name, t) in params.pairs {
            let scale: Float = name.hasPrefix("router") ? 0.05 : 0.5   // a router that is not saturated
            for i in 0..<t.count { t.data[i] += scale * Float((i * 7919) % 13 - 6) }
        }
        params = ParameterSet(params.pairs)
        let indices = [0, 3, 5, 9]
        let eos: Int32 = 22
        let captions = try engine.generate(engine.train, indices: indices, params: params, maxNewTokens: 6, eos: eos)
        #expect(captions.count == indices.count)
        let (batch, _) = try engine.batch(engine.train, indices: indices)
        for (b, generated) in captions.enumerated() {
            #expect(!generated.isEmpty && generated.count <= 6)
            if let e = generated.firstIndex(of: eos) { #expect(e == generated.count - 1, "nothing follows the EOS") }
            // Re-score prompt + generated as one row (the generated part labelled, so the router averages the
            // prompt only): each generated token must be the argmax at the position before it.
            let prompt = Array(batch.inputIDs[(b * batch.tokens)..<(b * batch.tokens + 4)])
            let full = prompt + generated
            let labels = [Int32](repeating: -100, count: 4) + generated
            for j in 0..<generated.count {
                let width = full.count
                let one = TrainingBatch(tokens: width, inputIDs: full, labels: labels,
                                        lengths: [Int32(4 + j)], sampleIndices: [indices[b]], features: [batch.features[b]])
                let logits = try engine.model.nextTokenLogits(one, params: params, positions: [4 + j - 1])
                let v = logits.shape[1]
                let best = (0..<v).max { logits.data[$0] < logits.data[$1] }!
                #expect(Int32(best) == generated[j], "sample \(indices[b]) token \(j)")
            }
        }
    }

    @Test("coordinator eval --generate writes one JSON line per row with the generated ids and the references")
    func evalGenerate() throws {
        let data = try Self.captionData()
        let job = try Demo.job(in: data, launcher: "inprocess", port: Demo.port(), steps: 2, data: data)
        let train = try Child("coordinator", ["train", "--config", job], log: data.path + "/train.log")
        #expect(try train.wait() == 0, "\(train.output)")
        let out = data.appendingPathComponent("captions.jsonl")
        let eval = try Child("coordinator", ["eval", "--config", job, "--checkpoint", data.appendingPathComponent("run").path,
                                             "--data", data.appendingPathComponent("train.h5").path, "--generate", out.path,
                                             "--max-new-tokens", "5", "--batch-size", "4"], log: data.path + "/eval.log")
        #expect(try eval.wait() == 0, "\(eval.output)")
        let lines = try String(contentsOf: out, encoding: .utf8).split(separator: "\n")
        #expect(lines.count == 32)
        for (i, line) in lines.enumerated() {
            let object = try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any]
            #expect(object?["index"] as? Int == i)
            let ids = object?["generated"] as? [Int] ?? []
            #expect(!ids.isEmpty && ids.count <= 5 && ids.allSatisfy { $0 >= 0 && $0 < DemoTask.vocabularySize })
            #expect((object?["references"] as? [String])?.last == "reference \(i)")
        }
        #expect(eval.output.contains("caption_metrics.py"), "\(eval.output)")
    }
}
