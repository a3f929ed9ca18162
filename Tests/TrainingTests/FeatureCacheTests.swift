import Cluster
import Foundation
import Model
import Shard
import TestSupport
import Testing
import Training

/// The frozen ViT runs once per image per run: later epochs reuse the cached candidate features, rows
/// that share an image share its features, and the gradient computed from cached (or recomputed)
/// features is the one computed from fresh ones.
@Suite("vision features are computed once per image")
struct FeatureCacheTests {
    /// Micro-batches of ``DemoFixture/sharedImages()``: every row, and a repeat of some.
    static let sharedBatches = [[0, 1, 2, 3, 4, 5], [6, 7, 8, 9, 10, 11], [11, 0, 7, 2]]
    /// Its distinct images among rows with one, and those rows.
    static let sharedImageCount = Set(DemoFixture.sharedImageIndex.enumerated()
        .filter { $0.offset != DemoFixture.rowWithoutImage }.map(\.element)).count
    static let rowsWithImage = DemoFixture.sharedImageIndex.count - 1

    /// `a` and `b` give bitwise the same gradients, loss and label count on every micro-batch of `batches`.
    func expectSameGradients(_ a: TrainingEngine, _ b: TrainingEngine, _ batches: [[Int]], params: TensorSet,
                             sourceLocation: SourceLocation = #_sourceLocation) throws {
        for indices in batches {
            let x = try a.gradients(indices: indices, params: params, step: 1, dropout: true)
            let y = try b.gradients(indices: indices, params: params, step: 1, dropout: true)
            #expect(x.grads.isBitwiseEqual(y.grads) && x.lossSum == y.lossSum && x.labelCount == y.labelCount,
                    "micro-batch \(indices)", sourceLocation: sourceLocation)
        }
    }

    @Test("rows sharing an image through image_index run the vision tower once per image, with the gradients of the rows with their images duplicated")
    func sharedImagesInMemory() throws {
        let dir = try DemoFixture.sharedImages()
        let shared = try TrainingEngine(job: try DemoFixture.job(data: dir, train: "shared.h5"))
        let duplicated = try TrainingEngine(job: try DemoFixture.job(data: dir, train: "duplicated.h5"))
        #expect(shared.train.imageCount == 5 && duplicated.train.imageCount == 12)
        try expectSameGradients(shared, duplicated, Self.sharedBatches, params: shared.initialParameters())
        #expect(shared.visionRuns(shared.train) == Self.sharedImageCount)
        #expect(duplicated.visionRuns(duplicated.train) == Self.rowsWithImage)
        #expect(shared.featureMemory.count == Self.sharedImageCount)
    }

    @Test("data.feature_cache with image_index: one file and one vision forward per image, read back by another engine, the same bits")
    func sharedImagesOnDisk() throws {
        let dir = try DemoFixture.sharedImages()
        let scratch = try TemporaryDirectory("cache-shared")
        defer { scratch.cleanup() }
        var job = try DemoFixture.job(data: dir, train: "shared.h5")
        job.data.featureCache = ConfigPath(scratch.fileURL("features").path)
        let onDisk = try TrainingEngine(job: job)
        let duplicated = try TrainingEngine(job: try DemoFixture.job(data: dir, train: "duplicated.h5"))
        let params = onDisk.initialParameters()
        try expectSameGradients(onDisk, duplicated, Self.sharedBatches, params: params)
        #expect(onDisk.visionRuns(onDisk.train) == Self.sharedImageCount)
        #expect(onDisk.featureMemory.count == 0, "with a store nothing is held in memory")
        let files = try FileManager.default.subpathsOfDirectory(atPath: scratch.fileURL("features").path)
            .filter { $0.hasSuffix(".f32") }.map { URL(fileURLWithPath: $0).lastPathComponent }.sorted()
        #expect(files == (0..<Self.sharedImageCount).map { "\($0).f32" }, "one file per image, named by image id")
        let again = try TrainingEngine(job: job)
        try expectSameGradients(again, duplicated, Self.sharedBatches, params: params)
        #expect(again.visionRuns(again.train) == 0)
    }

    @Test("data.feature_memory_mb smaller than the working set: least recently used features are evicted and recomputed, to the same bits")
    func boundedMemory() throws {
        var small = try DemoFixture.job()
        small.data.featureMemoryMB = 1
        let bounded = try TrainingEngine(job: small)
        let unbounded = try TrainingEngine(job: try DemoFixture.job())   // the default holds all 512 demo images
        let fuser = bounded.fuser
        let fit = (1 << 20) / (4 * fuser.candidates * fuser.visualTokens * fuser.visionWidth)
        // Two micro-batches more than 1 MiB holds, in micro-batches of 8, twice over: LRU over a cyclic scan
        // larger than the memory misses every time, so each image is computed twice. The scan reads features
        // only (`batch`); gradients are compared where it matters, on recomputed features.
        let images = fit + 16
        try #require(fit >= 8 && images <= bounded.train.count)
        let batches = stride(from: 0, to: images, by: 8).map { Array($0..<min(images, $0 + 8)) }
        func features(_ e: TrainingEngine, _ indices: [Int]) throws -> [[UInt32]] {
            try e.batch(e.train, indices: indices).0.features.map { bits(try #require($0)) }
        }
        // A micro-batch's features are its own: evicting them and reusing their memory (FeatureSlots) for
        // other images while they are still held here changes none of their values.
        let held = try bounded.batch(bounded.train, indices: batches[0]).0.features.map { try #require($0) }
        let heldBits = held.map(bits)
        let first = try batches.map { try features(bounded, $0) }
        #expect(held.map(bits) == heldBits && heldBits == first[0], "held features changed when their memory was reused")
        #expect(bounded.visionRuns(bounded.train) == images)
        #expect(bounded.featureMemory.count == fit && bounded.featureMemory.bytes <= 1 << 20)
        let second = try batches.map { try features(bounded, $0) }
        #expect(bounded.visionRuns(bounded.train) == 2 * images, "every image computed again after its eviction")
        #expect(first == second, "recomputed features are bitwise the first ones")
        // The most recent micro-batch is still held: repeating it computes nothing.
        _ = try features(bounded, batches.last!)
        #expect(bounded.visionRuns(bounded.train) == 2 * images)
        // Gradients from features computed a third time (the first micro-batch was evicted again) are the
        // unbounded cache's, bit for bit.
        let params = bounded.initialParameters()
        try expectSameGradients(bounded, unbounded, [batches[0]], params: params)
        #expect(bounded.visionRuns(bounded.train) == 2 * images + 8)

        // 0 keeps nothing: every micro-batch runs the tower for all its images, and still gets them.
        small.data.featureMemoryMB = 0
        let none = try TrainingEngine(job: small)
        #expect(try features(none, batches[0]) == first[0] && features(none, batches[0]) == first[0])
        #expect(none.visionRuns(none.train) == 2 * batches[0].count && none.featureMemory.count == 0)
        try expectSameGradients(none, unbounded, [batches[0]], params: params)
        #expect(small.computeID == unbounded.job.computeID && small.jobID == unbounded.job.jobID,
                "where features are kept changes no result, so it is not part of the job's identity")
    }

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
