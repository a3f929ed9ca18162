import Foundation
import Model
import TestSupport
import Testing

/// The LLaMA forward pass with scaled RoPE against transformers' outputs on the rope-* fixtures
/// (Tests/Fixtures/backbones/rope-*, made by Scripts/make_rope_fixtures.py): every hidden state, the
/// logits, and the inverse frequencies of each forward call.
///
/// Tolerance, as in GoldenTests: both sides compute in float32 with different summation orders through 2
/// layers, softmax and norms, on O(1) values; our inv_freq is within a few ulp of torch's (see below), which
/// at positions below 28 moves an angle by < 1e-5 rad. Measured (torch 2.13 CPU, transformers 5.24):
/// max |diff| 1.0e-6..2.0e-6 for hidden states (max |ref| ~4.8) and 1.1e-6..1.4e-6 for logits (~3.5). The
/// bound 2e-5 x max(1, max|reference|) leaves a 10x margin, while ignoring the scaling is off by 0.5..2.3
/// (`fixturesDiscriminate` checks that it is).
@Suite("RoPE scaling matches transformers")
struct RopeScalingGoldenTests {
    struct Call: CustomTestStringConvertible, Sendable {
        var fixture: String, call: String, type: String
        var testDescription: String { "\(fixture)/\(call)" }
    }

    static let calls = [Call(fixture: "rope-linear", call: "within", type: "linear"),
                        Call(fixture: "rope-dynamic", call: "within", type: "dynamic"),
                        Call(fixture: "rope-dynamic", call: "beyond", type: "dynamic"),
                        Call(fixture: "rope-llama3", call: "within", type: "llama3")]

    struct Run {
        var config: LlamaConfig
        var ids: [Int32], mask: [Int32], positions: [Int32]
        var batch: Int, length: Int
        var reference: SafetensorsFile
    }

    static func load(_ c: Call) throws -> Run {
        let root = Fixtures.backbones.appendingPathComponent(c.fixture)
        let config = try LlamaConfig.load(directory: root.appendingPathComponent("language"))
        let inputs = try SafetensorsFile(url: root.appendingPathComponent("inputs.safetensors"))
        guard let shape = inputs.info("\(c.call)/input_ids")?.shape, shape.count == 2 else {
            throw ModelError(.missingTensor, "\(c.fixture): no \(c.call)/input_ids")
        }
        let (B, T) = (shape[0], shape[1])
        return Run(config: config, ids: try inputs.int32Values("\(c.call)/input_ids", shape: [B, T]),
                   mask: try inputs.int32Values("\(c.call)/attention_mask", shape: [B, T]),
                   positions: try inputs.int32Values("\(c.call)/position_ids", shape: [B, T]), batch: B, length: T,
                   reference: try SafetensorsFile(url: root.appendingPathComponent("reference.safetensors")))
    }

    /// Hidden states and logits of the fixture's weights under `config` (the fixture's own by default).
    static func forward(_ c: Call, _ run: Run, config: LlamaConfig? = nil) throws -> (hidden: [Tensor], logits: Tensor) {
        let directory = try LanguageBackboneDirectory.open(Fixtures.backbones.appendingPathComponent(c.fixture).appendingPathComponent("language"))
        let model = try LlamaModel(config: config ?? directory.config, weights: directory.weights)
        let ws = model.makeWorkspace(batch: run.batch, length: run.length, training: false)
        let embeddings = try model.embed(ids: run.ids, batch: run.batch, length: run.length)
        let (final, hidden) = try model.forward(embeddings: embeddings, positions: run.positions,
                                                keyMask: Tensor(shape: [run.batch, run.length], values: run.mask.map(Float.init)),
                                                workspace: ws, outputHiddenStates: true)
        return (hidden, model.logits(final))
    }

    /// max |ours - reference| and max |reference| over a stacked [L+1, ...] reference and our L+1 tensors.
    static func maxDiff(_ ours: [Tensor], _ reference: Tensor) -> (diff: Float, scale: Float) {
        let n = reference.count / ours.count
        var diff: Float = 0, scale: Float = 0
        for (j, t) in ours.enumerated() {
            for i in 0..<n {
                diff = max(diff, abs(t.data[i] - reference.data[j * n + i]))
                scale = max(scale, abs(reference.data[j * n + i]))
            }
        }
        return (diff, scale)
    }

    func references(_ c: Call, _ run: Run) throws -> (hidden: Tensor, logits: Tensor) {
        let cfg = run.config, B = run.batch, T = run.length
        return (try run.reference.take("\(c.call)/hidden_states", shape: [cfg.numHiddenLayers + 1, B, T, cfg.hiddenSize]),
                try run.reference.take("\(c.call)/logits", shape: [B, T, cfg.vocabSize]))
    }

    @Test("hidden states and logits, with a right-padded row", arguments: calls)
    func golden(_ c: Call) throws {
        let run = try Self.load(c)
        #expect(run.config.ropeScaling.typeName == c.type)
        let (hidden, logits) = try Self.forward(c, run)
        let (refHidden, refLogits) = try references(c, run)
        #expect(hidden.count == run.config.numHiddenLayers + 1)
        let h = Self.maxDiff(hidden, refHidden), l = Self.maxDiff([logits], refLogits)
        #expect(h.diff <= 2e-5 * max(1, h.scale), "\(c.testDescription) hidden states: max |diff| \(h.diff), max |ref| \(h.scale)")
        #expect(l.diff <= 2e-5 * max(1, l.scale), "\(c.testDescription) logits: max |diff| \(l.diff), max |ref| \(l.scale)")
    }

    /// Tolerance 4 ulp: torch takes the default frequencies' float32 pow with Sleef (1 ulp) and a float32
    /// reciprocal, we a double pow and reciprocal rounded once (`Rotary.defaultInverseFrequencies`, the
    /// default path's own arithmetic, kept), and the scaling steps carry that ulp along (llama3's smoothing
    /// subtracts nearly equal numbers and can grow it). Measured: 0..2 ulp. A wrong formula, factor or
    /// length is off by percents.
    @Test("inverse frequencies of each call equal transformers' (the call's max position + 1 for dynamic)", arguments: calls)
    func inverseFrequencies(_ c: Call) throws {
        let run = try Self.load(c)
        let cfg = run.config
        let reference = try run.reference.take("\(c.call)/inv_freq", shape: [cfg.headDim / 2]).array
        let ours = Rotary.inverseFrequencies(headDim: cfg.headDim, theta: cfg.ropeTheta, scaling: cfg.ropeScaling,
                                             maxPositionEmbeddings: cfg.maxPositionEmbeddings,
                                             sequenceLength: Int(run.positions.max()!) + 1)
        for (a, b) in zip(ours, reference) {
            #expect(abs(a - b) <= 4 * b.ulp, "\(c.testDescription): ours \(ours) vs transformers \(reference)")
        }
    }

    @Test("the fixtures can fail: without the scaling, or with dynamic NTK from T instead of max position + 1, the numbers are far off")
    func fixturesDiscriminate() throws {
        for c in Self.calls where c.call != "within" || c.type != "dynamic" {
            let run = try Self.load(c)
            var plain = run.config
            plain.ropeScaling = .none
            plain.maxPositionEmbeddings = 1 << 20   // lets the default type run the long call
            let (hidden, logits) = try Self.forward(c, run, config: plain)
            let (refHidden, refLogits) = try references(c, run)
            let h = Self.maxDiff(hidden, refHidden), l = Self.maxDiff([logits], refLogits)
            #expect(h.diff > 100 * 2e-5 * max(1, h.scale) && l.diff > 100 * 2e-5 * max(1, l.scale),
                    "\(c.testDescription) with default RoPE: hidden \(h.diff), logits \(l.diff)")
        }
        // The beyond call's rows have different lengths of positions: T = 24 but row 1 reaches 27.
        let beyond = Self.calls[2]
        let run = try Self.load(beyond)
        let cfg = run.config
        let reference = try run.reference.take("beyond/inv_freq", shape: [cfg.headDim / 2]).array
        let fromT = Rotary.inverseFrequencies(headDim: cfg.headDim, theta: cfg.ropeTheta, scaling: cfg.ropeScaling,
                                              maxPositionEmbeddings: cfg.maxPositionEmbeddings, sequenceLength: run.length)
        #expect(zip(fromT, reference).dropFirst().allSatisfy { abs($0 - $1) > 0.01 * $1 })
    }

    @Test("the fixtures' configs read as written: legacy type key, rope_parameters, Llama 3.1's rope_scaling")
    func configs() throws {
        let linear = try Self.load(Self.calls[0]).config
        #expect(linear.ropeScaling == .linear(factor: 4) && linear.ropeTheta == 1000 && linear.maxPositionEmbeddings == 64)
        let dynamic = try Self.load(Self.calls[1]).config
        #expect(dynamic.ropeScaling == .dynamic(factor: 2) && dynamic.ropeTheta == 1000 && dynamic.maxPositionEmbeddings == 16)
        let llama3 = try Self.load(Self.calls[3]).config
        #expect(llama3.ropeScaling == .llama3(factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 64))
        #expect(llama3.ropeTheta == 10000 && llama3.maxPositionEmbeddings == 128 && llama3.headDim == 16)
    }
}

/// config.json's RoPE keys read as transformers 5.24 reads them (`RotaryEmbeddingConfigMixin`,
/// `standardize_rope_params`); each precedence below was checked against `LlamaConfig.from_pretrained` there.
@Suite("RoPE config")
struct RopeConfigTests {
    static func config(_ rope: String) throws -> LlamaConfig {
        let json = #"{"hidden_size": 32, "intermediate_size": 8, "num_hidden_layers": 1, "num_attention_heads": 2, "vocab_size": 10"#
            + (rope.isEmpty ? "" : ", " + rope) + "}"
        return try JSONDecoder().decode(LlamaConfig.self, from: Data(json.utf8))
    }

    @Test("no rope keys: default RoPE, theta 10000, max_position_embeddings 2048 (transformers' defaults)")
    func defaults() throws {
        let c = try Self.config("")
        #expect(c.ropeScaling == .none && c.ropeTheta == 10000 && c.maxPositionEmbeddings == 2048)
        #expect(try Self.config(#""rope_scaling": null, "rope_theta": 5000"#).ropeTheta == 5000)
        #expect(try Self.config(#""rope_parameters": {"rope_type": "default"}, "max_position_embeddings": 77"#).maxPositionEmbeddings == 77)
    }

    @Test("the legacy type key is honoured, and rope_type wins over it")
    func legacyType() throws {
        #expect(try Self.config(#""rope_scaling": {"type": "linear", "factor": 2.0}"#).ropeScaling == .linear(factor: 2))
        #expect(try Self.config(#""rope_scaling": {"type": "dynamic", "factor": 3}"#).ropeScaling == .dynamic(factor: 3))
        #expect(try Self.config(#""rope_parameters": {"type": "linear", "factor": 2.5}"#).ropeScaling == .linear(factor: 2.5))
        #expect(try Self.config(#""rope_scaling": {"type": "linear", "rope_type": "dynamic", "factor": 2.0}"#).ropeScaling
                == .dynamic(factor: 2))
    }

    @Test("a non-empty rope_scaling replaces rope_parameters; an empty one does not")
    func precedence() throws {
        let both = try Self.config(#""rope_scaling": {"type": "linear", "factor": 2.0}, "rope_parameters": {"rope_type": "default", "rope_theta": 7000.0}, "rope_theta": 5000"#)
        #expect(both.ropeScaling == .linear(factor: 2) && both.ropeTheta == 5000)
        let empty = try Self.config(#""rope_scaling": {}, "rope_parameters": {"rope_type": "linear", "factor": 3.0}"#)
        #expect(empty.ropeScaling == .linear(factor: 3) && empty.ropeTheta == 10000)
    }

    @Test("rope_theta: the rope object's, else the top-level one")
    func theta() throws {
        #expect(try Self.config(#""rope_parameters": {"rope_type": "default", "rope_theta": 7000.0}, "rope_theta": 5000"#).ropeTheta == 7000)
        #expect(try Self.config(#""rope_scaling": {"rope_type": "linear", "factor": 2}, "rope_theta": 5000"#).ropeTheta == 5000)
    }

    @Test("llama3: original_max_position_embeddings from the object, else max_position_embeddings; a top-level one wins")
    func llama3Original() throws {
        let keys = #""rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0"#
        #expect(try Self.config(#""rope_scaling": {\#(keys), "original_max_position_embeddings": 16}, "max_position_embeddings": 64"#).ropeScaling
                == .llama3(factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 16))
        #expect(try Self.config(#""rope_scaling": {\#(keys)}, "max_position_embeddings": 64"#).ropeScaling
                == .llama3(factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 64))
        #expect(try Self.config(#""rope_scaling": {\#(keys), "original_max_position_embeddings": 16}, "max_position_embeddings": 64, "original_max_position_embeddings": 32"#).ropeScaling
                == .llama3(factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 32))
    }

    @Test("other rope types are refused by name, with the supported ones listed",
          arguments: ["yarn", "longrope", "su", "proportional", "dynamic-yarn"])
    func unsupported(type: String) throws {
        for rope in [#""rope_scaling": {"type": "\#(type)", "factor": 4.0, "original_max_position_embeddings": 4096}"#,
                     #""rope_parameters": {"rope_type": "\#(type)", "short_factor": [1.0], "long_factor": [2.0]}"#] {
            let error = modelError { _ = try Self.config(rope) }
            #expect(error?.code == .unsupported)
            #expect(error?.message.contains("'\(type)'") == true && error?.message.contains("default, linear, dynamic, llama3") == true,
                    "\(error?.message ?? "no error")")
        }
    }

    @Test("missing or unusable parameters are errors that name the key")
    func badParameters() throws {
        func message(_ rope: String) -> String? { modelError { _ = try Self.config(rope) }?.message }
        #expect(message(#""rope_scaling": {"type": "linear"}"#)?.contains("'factor'") == true)
        #expect(message(#""rope_scaling": {"type": "dynamic", "factor": 0}"#)?.contains("'factor'") == true)
        #expect(message(#""rope_scaling": {"rope_type": "llama3", "factor": 8, "high_freq_factor": 4}"#)?.contains("'low_freq_factor'") == true)
        #expect(message(#""rope_scaling": {"rope_type": "llama3", "factor": 8, "low_freq_factor": 4, "high_freq_factor": 4}"#)?
            .contains("high_freq_factor") == true)
        #expect(message(#""rope_scaling": {"type": "linear", "factor": 2, "partial_rotary_factor": 0.5}"#)?
            .contains("partial_rotary_factor") == true)
        #expect(message(#""max_position_embeddings": 0"#)?.contains("max_position_embeddings") == true)
        let tiny = #"{"hidden_size": 4, "intermediate_size": 8, "num_hidden_layers": 1, "num_attention_heads": 2, "vocab_size": 10, "rope_scaling": {"type": "dynamic", "factor": 2}}"#
        #expect(modelError { _ = try JSONDecoder().decode(LlamaConfig.self, from: Data(tiny.utf8)) }?.message.contains("head_dim") == true)
    }

    @Test("encoding and decoding give the same config for every type")
    func roundTrip() throws {
        for scaling: RopeScaling in [.none, .linear(factor: 4), .dynamic(factor: 2.5),
                                     .llama3(factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 8192)] {
            let c = LlamaConfig(hiddenSize: 32, intermediateSize: 8, numHiddenLayers: 1, numAttentionHeads: 2, vocabSize: 10,
                                ropeTheta: 500000, ropeScaling: scaling, maxPositionEmbeddings: 131072)
            #expect(try JSONDecoder().decode(LlamaConfig.self, from: JSONEncoder().encode(c)) == c)
        }
    }
}

/// Positions against max_position_embeddings, and dynamic NTK's per-call length.
@Suite("RoPE positions")
struct RopePositionTests {
    static let types: [RopeScaling] = [.none, .linear(factor: 2), .dynamic(factor: 2),
                                       .llama3(factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 4)]

    static func model(_ scaling: RopeScaling) throws -> LlamaModel {
        let c = LlamaConfig(hiddenSize: 16, intermediateSize: 24, numHiddenLayers: 1, numAttentionHeads: 2, vocabSize: 11,
                            ropeTheta: 100, ropeScaling: scaling, maxPositionEmbeddings: 8)
        return try LlamaModel(config: c, weights: InMemoryWeights(randomLlamaWeights(c, seed: 41)))
    }

    static func run(_ model: LlamaModel, length: Int, positions: [Int32]? = nil) throws -> [Float] {
        var rng = TestRNG(42)
        let ws = model.makeWorkspace(batch: 1, length: length, training: false)
        return try model.forward(embeddings: rng.tensor([1, length, 16]), positions: positions, workspace: ws).final.array
    }

    @Test("positions up to max_position_embeddings - 1 run for every type", arguments: types)
    func withinLimit(_ scaling: RopeScaling) throws {
        #expect(try Self.run(Self.model(scaling), length: 8).allSatisfy { $0.isFinite })
    }

    @Test("a position at or past max_position_embeddings is an error naming it, the limit and the type, except for dynamic",
          arguments: types)
    func pastLimit(_ scaling: RopeScaling) throws {
        let model = try Self.model(scaling)
        for (length, positions) in [(9, nil), (3, [0, 1, 8] as [Int32]?)] {
            let error = modelError { _ = try Self.run(model, length: length, positions: positions) }
            if scaling.allowsPositionsPastMaxPositionEmbeddings {
                #expect(error == nil, "\(error?.message ?? "")")
            } else {
                #expect(error?.code == .badInput)
                #expect(error?.message.contains("position 8") == true && error?.message.contains("max_position_embeddings 8") == true
                        && error?.message.contains("'\(scaling.typeName)'") == true, "\(error?.message ?? "no error")")
            }
        }
        #expect(modelError { _ = try Self.run(model, length: 2, positions: [0, -1]) }?.message.contains("negative") == true)
    }

    @Test("dynamic NTK: frequencies follow the call's largest position, so a row changes with the rest of its batch")
    func dynamicPerCall() throws {
        let model = try Self.model(.dynamic(factor: 2))
        let short = try Self.run(model, length: 3, positions: [0, 1, 2])
        let within = try Self.run(model, length: 3, positions: [0, 1, 7])
        let beyond = try Self.run(model, length: 3, positions: [0, 1, 12])
        // Position 0 is never rotated and attends only to itself: equal in all three.
        #expect(Array(short[0..<16]) == Array(beyond[0..<16]))
        // Token 1 at position 1: the same while the call stays within the limit, moved once it goes past.
        #expect(Array(short[16..<32]) == Array(within[16..<32]))
        #expect(maxAbsDiff(Array(short[16..<32]), Array(beyond[16..<32])) > 1e-3)
        // Default frequencies below the limit: bit-equal to an unscaled model.
        #expect(try Self.run(Self.model(.none), length: 3, positions: [0, 1, 7]) == within)
    }
}
