import Foundation
import Model
import TestSupport
import Testing

/// The fuser checked on its own: each "layer" is out = injection(x_l) with a fixed random x_l, and the
/// loss is sum_l <out_l, R_l>. Backward must give d loss/d x_l and every trainable tensor's gradient.
/// The full path through the frozen LLM is checked in the training tests.
@Suite("Fuser gradients against finite differences")
struct FuserTests {
    struct Setup {
        let config: FuserConfig
        let fuser: Fuser
        let xs: [Tensor], rs: [Tensor], features: [Tensor?]
        let samples: [FuserSample]
        let tokens: Int
    }

    static func make(_ mode: FusionMode, dropout: Float = 0) throws -> Setup {
        let vision = CLIPVisionConfig(hiddenSize: 6, intermediateSize: 8, numHiddenLayers: 4, numAttentionHeads: 2,
                                      imageSize: 8, patchSize: 4)
        let language = LlamaConfig(hiddenSize: 5, intermediateSize: 8, numHiddenLayers: 3, numAttentionHeads: 1, vocabSize: 10)
        let config = FuserConfig(fusion: mode, visionLayers: nil, projectorRank: 3, visualTokens: 0,
                                     featureScale: 0.7, injectionScale: 1.3, dropout: dropout,
                                     vision: vision, language: language)
        let params = config.initialParameters(seed: 3)
        // Perturb everything: router.weight starts at zero, which hides the path through the prompt mean.
        var rng = InitRNG(seed: 9, name: "perturb")
        for t in params.tensors { for i in 0..<t.count { t.data[i] += 0.5 * rng.normal() } }
        let fuser = Fuser(config: config, params: params)
        let b = 3, tokens = 4, m = config.visualTokens, s = config.candidates
        let features: [Tensor?] = (0..<b).map { i in
            guard i != 1 else { return nil }  // sample 1 has no image
            let f = Tensor(zeros: [s, m, vision.hiddenSize])
            for k in 0..<f.count { f.data[k] = rng.normal() }
            return f
        }
        let samples = (0..<b).map { i in
            FuserSample(features: features[i].map { UnsafePointer($0.data) }, promptCount: [2, 3, 0][i], sampleIndex: 10 + i)
        }
        let xs = (0..<language.numHiddenLayers).map { _ in
            let t = Tensor(zeros: [b * tokens, language.hiddenSize])
            for k in 0..<t.count { t.data[k] = rng.normal() }
            return t
        }
        let rs = xs.map { x in
            let t = Tensor(zeros: x.shape)
            for k in 0..<t.count { t.data[k] = rng.normal() }
            return t
        }
        return Setup(config: config, fuser: fuser, xs: xs, rs: rs, features: features, samples: samples, tokens: tokens)
    }

    static func loss(_ s: Setup, dropout: DropoutMask?) -> Double {
        s.fuser.begin(samples: s.samples, tokens: s.tokens, dropout: dropout)
        var total = 0.0
        for (l, x) in s.xs.enumerated() {
            let out = Tensor(zeros: x.shape)
            s.fuser.forward(layer: l, x: x.data, out: out.data)
            for k in 0..<out.count { total += Double(out.data[k]) * Double(s.rs[l].data[k]) }
        }
        return total
    }

    /// Analytic gradients: dX per layer, and the fuser's parameter gradients.
    static func gradients(_ s: Setup, dropout: DropoutMask?) -> [Tensor] {
        _ = loss(s, dropout: dropout)
        s.fuser.grads.zero()
        var dxs: [Tensor] = []
        for l in (0..<s.xs.count).reversed() {
            let dx = Tensor(zeros: s.xs[l].shape)
            s.fuser.backward(layer: l, x: s.xs[l].data, dOut: s.rs[l].data, dX: dx.data)
            dxs.insert(dx, at: 0)
        }
        s.fuser.finishBackward()
        return dxs
    }

    /// Central differences in Float32 with step 1e-2 on O(1) values: truncation error O(h²) ~ 1e-4 relative
    /// and rounding ~ 1e-7/h = 1e-5, so 2e-3 relative to the gradient's scale leaves a wide margin while a
    /// wrong term (a missing path is O(1)) fails by orders of magnitude.
    static func check(_ mode: FusionMode, dropout: Float) throws {
        let s = try make(mode, dropout: dropout)
        let mask = dropout > 0 ? DropoutMask(p: dropout, seed: 5, step: 7) : nil
        let dxs = gradients(s, dropout: mask)
        let h: Float = 1e-2
        func numeric(_ ptr: UnsafeMutablePointer<Float>, _ i: Int) -> Double {
            let old = ptr[i]
            ptr[i] = old + h; let up = loss(s, dropout: mask)
            ptr[i] = old - h; let down = loss(s, dropout: mask)
            ptr[i] = old
            return (up - down) / Double(2 * h)
        }
        var targets: [(String, Tensor, Tensor)] = zip(s.fuser.params.names, zip(s.fuser.params.tensors, s.fuser.grads.tensors)).map { ($0, $1.0, $1.1) }
        for (l, x) in s.xs.enumerated() { targets.append(("x[\(l)]", x, dxs[l])) }
        for (name, value, grad) in targets {
            var worst = 0.0, scale = 1e-3
            for i in 0..<value.count { scale = max(scale, abs(Double(grad.data[i]))) }
            for i in 0..<value.count {
                worst = max(worst, abs(numeric(value.data, i) - Double(grad.data[i])))
            }
            #expect(worst / scale < 2e-3, "\(mode) \(name): max error \(worst) against gradient scale \(scale)")
        }
    }

    @Test("dehvf: router, projector, memory and the prompt-mean path match finite differences")
    func dehvf() throws { try Self.check(.dehvf, dropout: 0) }

    @Test("dehvf with dropout on: the same mask in forward and backward")
    func dehvfDropout() throws { try Self.check(.dehvf, dropout: 0.3) }

    @Test("memvp: projector and memory match finite differences")
    func memvp() throws { try Self.check(.memvp, dropout: 0) }

    @Test("the router's input path carries gradient once router.weight is nonzero")
    func routerPathIsLive() throws {
        let s = try Self.make(.dehvf)
        let dxs = Self.gradients(s, dropout: nil)
        // Sample 0 has 2 prompt positions; compare dX with the router path removed (router.weight = 0).
        let with = dxs[0].array
        s.fuser.params["router.weight"]!.fill(0)
        let without = Self.gradients(s, dropout: nil)[0].array
        let diff = zip(with, without).map { abs($0 - $1) }.max() ?? 0
        #expect(diff > 1e-3)
    }
}
