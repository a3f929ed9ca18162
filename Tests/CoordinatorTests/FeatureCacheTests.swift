import Cluster
import Foundation
import Model
import Testing

/// The frozen ViT runs once per image per run: later epochs reuse the cached candidate features, and
/// the gradient computed from cached features is the one computed from fresh ones.
@Suite("vision features are computed once per image")
struct FeatureCacheTests {
    @Test("a second pass over the same samples runs no vision forward and gives the same gradient")
    func secondEpochIsCached() throws {
        let dir = try Demo.scratch("cache")
        let job = try JobConfig.load(file: try Demo.job(in: dir, launcher: "inprocess", port: Demo.port(), steps: 1))
        let engine = try TrainingEngine(job: job)
        let params = engine.initialParameters()
        let batches = [[0, 5, 9, 3], [5, 7, 0, 11]]   // 6 distinct images, two of them repeated
        let first = try batches.map { try engine.gradients(indices: $0, params: params, step: 0, dropout: true) }
        #expect(engine.visionRuns(engine.train) == 6)
        let again = try batches.map { try engine.gradients(indices: $0, params: params, step: 0, dropout: true) }
        #expect(engine.visionRuns(engine.train) == 6, "the second pass ran the vision tower again")
        for (a, b) in zip(first, again) { #expect(a.grads.bitwiseEqual(b.grads) && a.lossSum == b.lossSum) }
    }
}
