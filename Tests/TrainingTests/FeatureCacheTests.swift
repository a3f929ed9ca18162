import Cluster
import Foundation
import Model
import TestSupport
import Testing
import Training

/// The frozen ViT runs once per image per run: later epochs reuse the cached candidate features, and
/// the gradient computed from cached features is the one computed from fresh ones.
@Suite("vision features are computed once per image")
struct FeatureCacheTests {
    @Test("a second pass over the same samples runs no vision forward and gives the same gradient")
    func secondEpochIsCached() throws {
        let engine = try TrainingEngine(job: try DemoFixture.job())
        let params = engine.initialParameters()
        let batches = [[0, 5, 9, 3], [5, 7, 0, 11]]   // 6 distinct images, two of them repeated
        let first = try batches.map { try engine.gradients(indices: $0, params: params, step: 0, dropout: true) }
        #expect(engine.visionRuns(engine.train) == 6)
        let again = try batches.map { try engine.gradients(indices: $0, params: params, step: 0, dropout: true) }
        #expect(engine.visionRuns(engine.train) == 6, "the second pass ran the vision tower again")
        for (a, b) in zip(first, again) { #expect(a.grads.isBitwiseEqual(b.grads) && a.lossSum == b.lossSum) }
    }

    @Test("data.feature_cache: a second process reads the first one's features (no vision forward) and gets the same gradient")
    func sharedOnDisk() throws {
        let dir = try TemporaryDirectory("cache-disk")
        defer { dir.cleanup() }
        let store = dir.fileURL("features")
        var job = try DemoFixture.job()
        job.data.featureCache = ConfigPath(store.path)
        let indices = [0, 5, 9, 3]
        let first = try TrainingEngine(job: job)
        let params = first.initialParameters()
        let a = try first.gradients(indices: indices, params: params, step: 0, dropout: true)
        #expect(first.visionRuns(first.train) == 4)
        // Another engine (as another worker process would) computes nothing and matches bitwise.
        let second = try TrainingEngine(job: job)
        let b = try second.gradients(indices: indices, params: params, step: 0, dropout: true)
        #expect(second.visionRuns(second.train) == 0)
        #expect(a.grads.isBitwiseEqual(b.grads) && a.lossSum == b.lossSum)
        // The in-memory cache (no feature_cache) gives the same bits too.
        var plain = job
        plain.data.featureCache = nil
        #expect(plain.jobID == job.jobID, "feature_cache changes no result, so it is not part of the job's identity")
        let c = try TrainingEngine(job: plain).gradients(indices: indices, params: params, step: 0, dropout: true)
        #expect(a.grads.isBitwiseEqual(c.grads))

        // A damaged file is noticed, removed and computed again, with the same result.
        let files = try FileManager.default.subpathsOfDirectory(atPath: store.path).filter { $0.hasSuffix("/5.f32") }
        #expect(files.count == 1)
        let victim = store.appendingPathComponent(files[0])
        var bytes = try Data(contentsOf: victim)
        bytes[bytes.count / 2] ^= 0x10
        try bytes.write(to: victim)
        let third = try TrainingEngine(job: job)
        let d = try third.gradients(indices: indices, params: params, step: 0, dropout: true)
        #expect(third.visionRuns(third.train) == 1, "only the damaged sample is computed again")
        #expect(a.grads.isBitwiseEqual(d.grads))
        // A truncated file likewise.
        try Data(try Data(contentsOf: victim).prefix(100)).write(to: victim)
        let fourth = try TrainingEngine(job: job)
        _ = try fourth.gradients(indices: indices, params: params, step: 0, dropout: true)
        #expect(fourth.visionRuns(fourth.train) == 1)
    }
}
