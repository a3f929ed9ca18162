import ArgumentParser
import Cluster
import Foundation
import Model
import Shard
import Training

struct Inspect: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Check this implementation against another one (transformers, a PyTorch reference).",
        subcommands: [InspectBackbone.self, InspectGradients.self])
}

struct InspectBackbone: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "backbone",
        abstract: "Run the frozen backbones on given inputs and write every hidden state, as transformers would.",
        discussion: """
            IN.h5: pixel_values float32 [B,3,H,W] (already normalised), input_ids int32 [B,T], and optionally \
            attention_mask (int32 or uint8 [B,T], 1 = real token, right padding). \
            OUT.h5: vision/hidden_states float32 [Lv+1,B,1+Np,Dv], language/hidden_states float32 [L+1,B,T,d], \
            language/logits float32 [B,T,V] — the semantics of transformers' output_hidden_states=True.
            """)

    @Option(help: "CLIPVisionModel or CLIPModel directory.") var vision: String
    @Option(help: "LlamaForCausalLM directory.") var language: String
    @Option(help: "Input file (see above).") var inputs: String
    @Option(help: "Output file.") var out: String
    @Option(help: "Compute threads.") var threads: Int = 1

    func run() throws {
        BLAS.setThreads(threads)
        let start = Date()
        let backbone = try Backbone.load(vision: vision, language: language)
        let clip = backbone.vision, llama = backbone.language

        let file = try HDF5File.open(inputs)
        let pixelsDS = try file.root.openDataset("pixel_values")
        try pixelsDS.require(.float32)
        let c = clip.config
        try pixelsDS.require(shape: [nil, c.numChannels, c.imageSize, c.imageSize],
                             meaning: "pixel values [B, \(c.numChannels), \(c.imageSize), \(c.imageSize)] for this vision model")
        let pixels = Tensor(zeros: pixelsDS.shape)
        try pixelsDS.readAll(into: pixels.buffer)
        let idsDS = try file.root.openDataset("input_ids")
        try idsDS.require(.int32)
        try idsDS.require(shape: [nil, nil], meaning: "token ids [B, T]")
        let ids: [Int32] = try idsDS.readAll()
        let (b, t) = (idsDS.shape[0], idsDS.shape[1])
        var mask: Tensor?
        if file.root.contains("attention_mask") {
            let ds = try file.root.openDataset("attention_mask")
            try ds.require(shape: [b, t], meaning: "attention mask [B, T] like input_ids")
            let m = Tensor(zeros: [b, t])
            if ds.isStored(as: .uint8) {
                for (i, v) in try ds.readAll(as: UInt8.self).enumerated() { m.data[i] = v != 0 ? 1 : 0 }
            } else {
                try ds.require(.int32)
                for (i, v) in try ds.readAll(as: Int32.self).enumerated() { m.data[i] = v != 0 ? 1 : 0 }
            }
            mask = m
        }
        try file.close()

        let visionStates = try clip.forward(pixelValues: pixels)
        let ws = llama.makeWorkspace(batch: b, length: t, training: false)
        let embeddings = try llama.embed(ids: ids, batch: b, length: t)
        let (final, states) = try llama.forward(embeddings: embeddings, keyMask: mask, workspace: ws, outputHiddenStates: true)
        let logits = llama.logits(final)

        let visionStack = stack(visionStates), languageStack = stack(states)
        try DurableFile.write(out) { tmp in
            let o = try HDF5File.create(tmp)
            try TensorFile.write(TensorSet([("hidden_states", visionStack)]), into: try o.root.createGroup("vision"))
            try TensorFile.write(TensorSet([("hidden_states", languageStack), ("logits", logits)]),
                                 into: try o.root.createGroup("language"))
            try o.flush()
            try o.close()
        }
        Console.say(String(format: "inspect backbone: %d images, %d x %d tokens -> %@ in %.2f s", pixels.shape[0], b, t, out,
                           Date().timeIntervalSince(start)))
    }

    func stack(_ ts: [Tensor]) -> Tensor {
        let out = Tensor(zeros: [ts.count] + ts[0].shape)
        for (i, x) in ts.enumerated() { (out.data + i * x.count).update(from: x.data, count: x.count) }
        return out
    }
}

struct InspectGradients: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "gradients",
        abstract: "Write the loss and the gradient of every trainable tensor over some samples, dropout off.",
        discussion: """
            OUT.h5 gets /loss (DESIGN.md §4: summed token loss / label count over samples A..B-1) and \
            /grads/<name> for each trainable tensor. Scripts/reference/dehvf_reference.py writes the same from \
            PyTorch, so the two can be compared.
            """)

    @OptionGroup var job: JobOptions
    @Option(help: "Checkpoint whose parameters to use.") var checkpoint: String
    @Option(help: "Dataset (default: data.train of the job).") var data: String?
    @Option(help: ArgumentHelp("Samples A..B-1.", valueName: "A:B")) var samples: String
    @Option(help: "Output file.") var out: String

    func run() throws {
        let config = try job.load()
        let parts = samples.split(separator: ":").compactMap { Int($0) }
        guard parts.count == 2, parts[0] >= 0, parts[0] < parts[1] else {
            throw UserError("--samples takes A:B with 0 <= A < B, e.g. 0:8; got '\(samples)'")
        }
        let engine = try TrainingEngine(job: config)
        let state = try TrainState(checkpoint: try Checkpoint.read(fileOrDirectory: checkpoint), fuser: engine.fuser,
                                   backbone: engine.fingerprint)
        let dataset = try data.map { try engine.open($0) } ?? engine.train
        guard parts[1] <= dataset.count else {
            throw UserError("--samples \(samples) reaches past the \(dataset.count) samples of \(dataset.path)")
        }
        let g = try engine.gradients(indices: Array(parts[0]..<parts[1]), params: state.params, step: state.step,
                                     dropout: false, dataset: dataset)
        let count = Float(max(g.labelCount, 1))
        for t in g.grads.tensors { for i in 0..<t.count { t.data[i] /= count } }
        let loss = Tensor(shape: [], values: [Float(g.lossSum / Double(max(g.labelCount, 1)))])
        try TensorFile.write(to: out, groups: [("grads", g.grads)], root: TensorSet([NamedTensor("loss", loss)]))
        Console.say(String(format: "inspect gradients: loss %.6f over %d label tokens -> %@", loss.data[0], g.labelCount, out))
    }
}
