import Foundation
import Model
import TestSupport
import Testing

/// The path `bench scale` takes to a 1B backbone, at a size CI can afford: the streaming writer, sharded
/// BF16 with its index and an F16 full CLIPModel directory, read back by the loaders bit for bit (directly
/// and through the node's F32 cache), and the models built from them.
@Suite("streamed and sharded backbone files")
struct ScaleWriterTests {
    static let llama = LlamaConfig(hiddenSize: 16, intermediateSize: 24, numHiddenLayers: 3, numAttentionHeads: 4,
                                   numKeyValueHeads: 2, vocabSize: 40, rmsNormEps: 1e-5, maxPositionEmbeddings: 64)
    static let vision = CLIPVisionConfig(hiddenSize: 8, intermediateSize: 16, numHiddenLayers: 2, numAttentionHeads: 2,
                                         imageSize: 8, patchSize: 4)
    static let text = CLIPTextShape(hiddenSize: 12, intermediateSize: 20, numHiddenLayers: 2, numAttentionHeads: 3,
                                    vocabSize: 30, maxPositionEmbeddings: 5)

    /// What `writeDirectory` stores for `t`, widened back to Float32: the values rounded once to `stored`.
    static func expected(_ t: RandomBackbone.InitialTensor, normals: RepeatedNormals,
                         stored: SafetensorsWriter.StoredType) -> [UInt32] {
        var values = [Float](repeating: 0, count: t.layout.count)
        values.withUnsafeMutableBufferPointer { buffer in
            switch t.initial {
            case .constant(let v): buffer.update(repeating: v)
            case .normal(let std): normals.fill(buffer, std: std, name: t.name, offset: 0)
            }
        }
        return values.map {
            switch stored {
            case .bf16: HalfConversion.float(fromBFloat16: HalfConversion.bfloat16(from: $0)).bitPattern
            case .f16: HalfConversion.float(fromHalf: HalfConversion.half(from: $0)).bitPattern
            case .f32: $0.bitPattern
            }
        }
    }

    static func bits(_ t: Tensor) -> [UInt32] { (0..<t.count).map { t.data[$0].bitPattern } }

    @Test("TinyLlama-shaped BF16 in 2 shards with an index: every tensor bit-exact, directly and through the F32 cache; the model loads")
    func shardedBFloat16() throws {
        let dir = try TemporaryDirectory()
        defer { dir.cleanup() }
        let layout = RandomBackbone.llamaLayout(Self.llama)
        let files = try RandomBackbone.writeDirectory(dir.url, config: RandomBackbone.llamaConfig(Self.llama, dtype: "bfloat16"),
                                                      layout: layout, as: .bf16, shards: 2, seed: 7)
        #expect(files.map(\.lastPathComponent) == ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"])
        #expect(!FileManager.default.fileExists(atPath: dir.fileURL("model.safetensors").path))

        // The index as transformers writes it: total_size = the data bytes, every tensor mapped to its shard.
        let index = try JSONSerialization.jsonObject(with: Data(contentsOf: dir.fileURL("model.safetensors.index.json"))) as? [String: Any]
        let weightMap = index?["weight_map"] as? [String: String] ?? [:]
        let total = (index?["metadata"] as? [String: Any])?["total_size"] as? Int
        #expect(total == 2 * layout.reduce(0) { $0 + $1.layout.count })
        #expect(Set(weightMap.keys) == Set(layout.map(\.name)))
        #expect(Set(weightMap.values) == Set(files.map(\.lastPathComponent)))

        let normals = RepeatedNormals(seed: 7)
        let cacheDir = try TemporaryDirectory("cache")
        defer { cacheDir.cleanup() }
        for cache in [nil, F32Cache(directory: cacheDir.url, report: { _ in })] {
            let archive = try SafetensorsArchive(directory: dir.url, cache: cache)
            #expect(archive.files.count == 2)
            #expect(archive.files.allSatisfy { ($0.cacheEntry != nil) == (cache != nil) })
            for t in layout {
                #expect(archive.info(t.name)?.dtype == .bf16)
                #expect(Self.bits(try archive.tensor(t.name)) == Self.expected(t, normals: normals, stored: .bf16), "\(t.name)")
            }
        }
        let language = try LanguageBackboneDirectory.open(dir.url, cache: F32Cache(directory: cacheDir.url, report: { _ in }))
        #expect(language.config.numKeyValueHeads == 2 && language.config.intermediateSize == 24)
        _ = try LlamaModel(config: language.config, weights: language.weights)
    }

    @Test("an F16 full CLIPModel directory (text tower, projections, scalar logit_scale) opens as a CLIPModel and its vision tower loads")
    func clipModelFloat16() throws {
        let dir = try TemporaryDirectory()
        defer { dir.cleanup() }
        let layout = RandomBackbone.clipModelLayout(vision: Self.vision, text: Self.text, projectionDim: 6)
        try RandomBackbone.writeDirectory(dir.url, config: RandomBackbone.clipModelConfig(vision: Self.vision, text: Self.text,
                                          projectionDim: 6, dtype: "float16"), layout: layout, as: .f16, shards: 1, seed: 3)
        #expect(FileManager.default.fileExists(atPath: dir.fileURL("model.safetensors").path))
        #expect(layout.contains { $0.name == "text_model.encoder.layers.1.mlp.fc2.weight" && $0.shape == [12, 20] })
        #expect(layout.contains { $0.name == "logit_scale" && $0.shape == [] })
        let cacheDir = try TemporaryDirectory("cache")
        defer { cacheDir.cleanup() }
        let opened = try VisionBackboneDirectory.open(dir.url, cache: F32Cache(directory: cacheDir.url, report: { _ in }))
        #expect(opened.architecture == .clipModel && opened.weightPrefix == "vision_model." && opened.config == Self.vision)
        let normals = RepeatedNormals(seed: 3)
        for t in layout {
            #expect(Self.bits(try opened.archive.tensor(t.name)) == Self.expected(t, normals: normals, stored: .f16), "\(t.name)")
        }
        _ = try CLIPVisionModel(config: opened.config, weights: opened.weights)
    }

    @Test("streaming in chunks smaller than a tensor writes the bytes encode writes")
    func streamEqualsEncode() throws {
        let dir = try TemporaryDirectory()
        defer { dir.cleanup() }
        var rng = SplitMix64(seed: 5)
        let shapes: [[Int]] = [[3, 5], [7], [], [2, 2, 3]]
        let tensors = TensorSet(shapes.enumerated().map { i, shape in
            let t = Tensor(zeros: shape)
            for k in 0..<t.count { t.data[k] = Float(Int(rng.next() % 2001) - 1000) / 37 }
            return NamedTensor("t\(i)", t)
        })
        for stored in [SafetensorsWriter.StoredType.f32, .f16, .bf16] {
            let url = dir.fileURL("s-\(stored.rawValue).safetensors")
            try SafetensorsWriter.stream(zip(tensors.names, tensors.tensors).map { TensorLayout($0, shape: $1.shape) },
                                         as: stored, to: url, chunk: 4) { i, offset, values in
                for k in 0..<values.count { values[k] = tensors.tensors[i].data[offset + k] }
            }
            #expect(try Data(contentsOf: url) == (try SafetensorsWriter.encode(tensors, as: stored)), "\(stored)")
        }
    }

    @Test("RepeatedNormals: a tensor read from any offset is the same sequence, across the block's end")
    func repeatedNormalsOffsets() {
        let normals = RepeatedNormals(seed: 1)
        let n = RepeatedNormals.count + 50
        var whole = [Float](repeating: 0, count: n)
        whole.withUnsafeMutableBufferPointer { normals.fill($0, std: 2, name: "w", offset: 0) }
        for offset in [0, 1, 1000, RepeatedNormals.count - 3] {
            var part = [Float](repeating: 0, count: 40)
            part.withUnsafeMutableBufferPointer { normals.fill($0, std: 2, name: "w", offset: offset) }
            #expect(part == Array(whole[offset..<offset + 40]), "offset \(offset)")
        }
        // The period is the block's length, and another name starts elsewhere in it.
        #expect(whole[RepeatedNormals.count] == whole[0])
        var other = [Float](repeating: 0, count: 40)
        other.withUnsafeMutableBufferPointer { normals.fill($0, std: 2, name: "v", offset: 0) }
        #expect(other != Array(whole[0..<40]))
    }

    @Test("without values the shards are headers over holes: the right sizes, zeros, and plan-readable headers")
    func sparseShards() throws {
        let dir = try TemporaryDirectory()
        defer { dir.cleanup() }
        let layout = RandomBackbone.llamaLayout(Self.llama)
        let files = try RandomBackbone.writeDirectory(dir.url, config: RandomBackbone.llamaConfig(Self.llama, dtype: "float16"),
                                                      layout: layout, as: .f16, shards: 2, seed: nil)
        let archive = try SafetensorsArchive(directory: dir.url)
        #expect(archive.files.count == files.count)
        for t in layout {
            #expect(archive.info(t.name)?.shape == t.shape)
            #expect(try archive.tensor(t.name).array.allSatisfy { $0 == 0 })
        }
    }
}
