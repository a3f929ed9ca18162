import Foundation
import Model
import Training

/// The two model shapes every compute suite runs (the issue's `bench` and `paper-shape`): a small
/// CLIP-ViT (width 256, 6 layers, 8 heads, patch 8) and a small LLaMA (width 512, 8 layers, 8 heads,
/// FFN 1376, vocab 4096); micro-batch 8 with 16 label tokens per sample.
struct BenchShape {
    var name: String
    var imageSize: Int
    var textTokens: Int
    var labelTokens = 16
    var batch = 8

    static let bench = BenchShape(name: "bench", imageSize: 64, textTokens: 96)
    static let paper = BenchShape(name: "paper-shape", imageSize: 128, textTokens: 128)
    static func named(_ n: String) -> BenchShape? { [bench, paper].first { $0.name == n } }

    var vision: CLIPVisionConfig {
        CLIPVisionConfig(hiddenSize: 256, intermediateSize: 1024, numHiddenLayers: 6, numAttentionHeads: 8,
                         imageSize: imageSize, patchSize: 8)
    }
    var language: LlamaConfig {
        LlamaConfig(hiddenSize: 512, intermediateSize: 1376, numHiddenLayers: 8, numAttentionHeads: 8, vocabSize: 4096)
    }
    func fuser(_ mode: FusionMode) throws -> FuserConfig {
        FuserConfig(fusion: mode, visionLayers: nil, projectorRank: 128, visualTokens: 0, featureScale: 0.01,
                        injectionScale: 0.1, dropout: 0.1, vision: vision, language: language)
    }
}

/// Deterministic bench randomness (Model's SplitMix64).
struct BenchRNG {
    var stream: SplitMix64
    init(_ seed: UInt64) { stream = SplitMix64(state: seed) }
    mutating func next() -> UInt64 { stream.next() }
    mutating func below(_ n: Int) -> Int { Int(next() % UInt64(n)) }
    mutating func tensor(_ shape: [Int], scale: Float = 1) -> Tensor {
        let t = Tensor(zeros: shape)
        for i in 0..<t.count { t.data[i] = (Float(next() >> 40) / Float(1 << 24) * 2 - 1) * scale }
        return t
    }
}

/// Backbones, one micro-batch and its cached candidate features for one shape.
final class Workload {
    let shape: BenchShape
    let vision: CLIPVisionModel
    let llama: LlamaModel
    /// Normalised pixels [B, 3, H, W] of the micro-batch's images.
    let pixels: Tensor
    let inputIDs: [Int32]
    let labels: [Int32]
    private var features: [FusionMode: [Tensor]] = [:]

    init(_ shape: BenchShape) throws {
        self.shape = shape
        let v = RandomBackbone.clipVision(shape.vision, seed: 1)
        vision = try CLIPVisionModel(config: shape.vision,
                                     weights: try VisionBackboneDirectory.towerWeights(InMemoryWeights(v.tensors)))
        let l = RandomBackbone.llama(shape.language, seed: 2, weightScale: 1)
        llama = try LlamaModel(config: shape.language, weights: InMemoryWeights(l.tensors))
        var rng = BenchRNG(3)
        pixels = rng.tensor([shape.batch, 3, shape.imageSize, shape.imageSize], scale: 1.5)
        let b = shape.batch, t = shape.textTokens
        var ids = [Int32](repeating: 0, count: b * t), labels = [Int32](repeating: -100, count: b * t)
        for i in 0..<b * t { ids[i] = Int32(rng.below(shape.language.vocabSize)) }
        for i in 0..<b { for j in (t - shape.labelTokens)..<t { labels[i * t + j] = ids[i * t + j] } }
        inputIDs = ids
        self.labels = labels
    }

    /// The micro-batch's cached candidate features for `mode` (computed on first use).
    func features(_ mode: FusionMode) throws -> [Tensor] {
        if let f = features[mode] { return f }
        let f = try vision.candidates(pixels: pixels, for: try shape.fuser(mode))
        features[mode] = f
        return f
    }

    /// Forgets the cached features, so the next `features` call runs the ViT again (for timing it).
    func resetFeatures() throws { features = [:] }

    func batch(_ mode: FusionMode) throws -> TrainingBatch {
        let b = shape.batch, t = shape.textTokens
        return TrainingBatch(tokens: t, inputIDs: inputIDs, labels: labels,
                             lengths: [Int32](repeating: Int32(t), count: b), sampleIndices: Array(0..<b),
                             features: try features(mode).map { Optional($0) })
    }

    func model(_ mode: FusionMode) throws -> (DEHVFModel, TensorSet) {
        let config = try shape.fuser(mode)
        let params = config.initialParameters(seed: 4)
        // Router weights start at zero; perturb them so the routed path does real (non-degenerate) work.
        if let w = params["router.weight"] {
            var rng = BenchRNG(5)
            for i in 0..<w.count { w.data[i] = (Float(rng.next() >> 40) / Float(1 << 24) * 2 - 1) * 0.01 }
        }
        return (DEHVFModel(llama: llama, config: config, initial: params), params)
    }
}

extension FlopCount {
    /// The FLOPs of one bench micro-batch of `shape` in `mode`.
    init(_ shape: BenchShape, _ mode: FusionMode) throws {
        self.init(language: shape.language, vision: shape.vision, fuser: try shape.fuser(mode), batch: shape.batch,
                  textTokens: shape.textTokens, labelTokens: shape.labelTokens)
    }
}
