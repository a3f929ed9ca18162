import Cluster
import Foundation
import Model
import Shard
import TestSupport
import Testing
import Training

/// Greedy generation with the key/value cache and the once-built visual memory against re-running the
/// whole prefix each step, on demo caption rows whose prompts differ in length (2 to 5 tokens, so rows
/// are padded and decode at different positions) with one row without an image.
@Suite("generation with a key/value cache")
struct KVCacheGenerationTests {
    /// Rows 0..<8: every prompt length twice, row 3 without an image.
    static let indices = Array(0..<8)

    /// An engine in `mode` with a loud visual memory and every fuser parameter perturbed: the router
    /// mix, the projector and the prompt tables all move the logits, so memory built from the wrong
    /// tokens (the router's prompt mean taking in a padded or generated position) or a position off by
    /// one changes them far beyond the tolerance below.
    static func engine(_ mode: FusionMode) throws -> (TrainingEngine, TensorSet) {
        try DemoFixture.loudEngine(data: try DemoFixture.variedPrompts(), mode: mode)
    }

    /// Each step's (rows, logits) as `generate` shows them.
    final class Steps {
        var rows: [[Int]] = []
        var logits: [[Float]] = []
        func record(_ rows: [Int], _ logits: Tensor) { self.rows.append(rows); self.logits.append(logits.array) }
    }

    @Test("cached ids equal the uncached ones token for token, and each step's logits agree to float rounding",
          arguments: FusionMode.allCases)
    func cachedEqualsUncached(_ mode: FusionMode) throws {
        let (engine, params) = try Self.engine(mode)
        let cached = Steps(), uncached = Steps()
        let a = try engine.generate(engine.train, indices: Self.indices, params: params, maxNewTokens: 8, eos: nil,
                                    cache: true, observe: cached.record)
        let b = try engine.generate(engine.train, indices: Self.indices, params: params, maxNewTokens: 8, eos: nil,
                                    cache: false, observe: uncached.record)
        #expect(a == b)
        #expect(a.allSatisfy { $0.count == 8 })
        #expect(Set(a).count > 1, "rows generate different captions: the images and prompts matter")
        #expect(cached.rows == uncached.rows)
        try #require(cached.logits.count == 8 && uncached.logits.count == 8)
        // The same sums in another order (one-row products against 64-row blocks, per-row attention against
        // per-block): a few float32 ulps of the logits' scale per layer. A wrong token or position moves
        // them by a sizeable fraction of that scale.
        for (step, (x, y)) in zip(cached.logits, uncached.logits).enumerated() {
            let scale = y.map(abs).max()!
            let worst = zip(x, y).map { abs($0 - $1) }.max()!
            #expect(worst <= 1e-4 * scale, "\(mode) step \(step): logits differ by \(worst) at scale \(scale)")
        }
    }

    @Test("rows that reach EOS at different steps leave the batch and get the ids each gets alone",
          arguments: FusionMode.allCases)
    func finishedRowsLeave(_ mode: FusionMode) throws {
        let (engine, params) = try Self.engine(mode)
        let free = try engine.generate(engine.train, indices: Self.indices, params: params, maxNewTokens: 8, eos: nil)
        // EOS: the token whose first appearances end the most rows at the most different steps.
        let candidates = Set(free.joined()).sorted()   // sorted: ties go to the smallest id, whatever the hash order
        func endings(_ token: Int32) -> [Int?] { free.map { $0.firstIndex(of: token) } }
        let eos = candidates.max { x, y in
            let ex = endings(x), ey = endings(y)
            return (Set(ex.compactMap { $0 }).count, ex.compactMap { $0 }.count) < (Set(ey.compactMap { $0 }).count, ey.compactMap { $0 }.count)
        }!
        try #require(Set(endings(eos).compactMap { $0 }).count >= 2, "rows end at different steps")

        let steps = Steps()
        let batched = try engine.generate(engine.train, indices: Self.indices, params: params, maxNewTokens: 8, eos: eos,
                                          observe: steps.record)
        for (b, ids) in batched.enumerated() {
            let expected = endings(eos)[b].map { Array(free[b][...$0]) } ?? free[b]
            #expect(ids == expected, "row \(b)")
            let alone = try engine.generate(engine.train, indices: [Self.indices[b]], params: params, maxNewTokens: 8, eos: eos)
            #expect(alone == [ids], "row \(b) alone")
        }
        #expect(batched == (try engine.generate(engine.train, indices: Self.indices, params: params, maxNewTokens: 8, eos: eos,
                                                cache: false)))
        // A finished row is no longer computed: each step runs only the rows still going.
        for (step, rows) in steps.rows.enumerated() {
            #expect(rows == batched.indices.filter { batched[$0].count > step }, "step \(step)")
        }
    }
}
