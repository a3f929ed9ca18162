import Model
import Shard
import TestSupport
import Testing

@Suite("Sampler")
struct SamplerTests {
    @Test("each epoch is a permutation of 0..<N, different per epoch and per seed")
    func permutation() throws {
        let s = try Sampler(count: 103, globalBatch: 8, microBatch: 2, seed: 7)
        let p0 = s.permutation(epoch: 0), p1 = s.permutation(epoch: 1)
        #expect(p0.sorted() == Array(0..<103) && p1.sorted() == Array(0..<103))
        #expect(p0 != p1 && p0 != Array(0..<103))
        let other = try Sampler(count: 103, globalBatch: 8, microBatch: 2, seed: 8)
        #expect(other.permutation(epoch: 0) != p0)
    }

    @Test("the order is a pure function of (seed, epoch, step, index): fresh samplers, any call order agree")
    func pure() throws {
        let a = try Sampler(count: 50, globalBatch: 12, microBatch: 4, seed: 42)
        let b = try Sampler(count: 50, globalBatch: 12, microBatch: 4, seed: 42)
        let ids = (0..<3).flatMap { e in (0..<a.stepsPerEpoch).flatMap { s in (0..<3).map { MicroBatchID(epoch: e, step: s, index: $0) } } }
        let forward = try ids.map { try a.indices($0) }
        let backward = try ids.reversed().map { try b.indices($0) }.reversed()
        #expect(forward == Array(backward))
        #expect(try a.indices(MicroBatchID(epoch: 2, step: 1, index: 2)) == b.indices(MicroBatchID(epoch: 2, step: 1, index: 2)))
    }

    @Test("pinned values: a Python reimplementation of the documented algorithm must give these")
    func pinned() {
        // SplitMix64 reference: seed 0 -> first output 0xE220A8397B1DCDAF (Vigna's splitmix64.c).
        var r = SplitMix64(state: 0)
        #expect(r.next() == 0xE220_A839_7B1D_CDAF)
        // Computed by a 15-line Python transcription of the algorithm in Sampler's documentation.
        #expect(Sampler.permutation(count: 10, seed: 0, epoch: 0) == [6, 3, 2, 9, 8, 1, 4, 7, 0, 5])
        #expect(Sampler.permutation(count: 12, seed: 42, epoch: 3) == [3, 9, 7, 8, 5, 10, 0, 1, 11, 4, 6, 2])
    }

    @Test("steps take consecutive global batches split in order; the tail is dropped")
    func stepsAndTail() throws {
        let s = try Sampler(count: 30, globalBatch: 8, microBatch: 4, seed: 1)
        #expect(s.stepsPerEpoch == 3 && s.microBatchesPerStep == 2)
        let p = s.permutation(epoch: 0)
        var seen: [Int] = []
        for step in 0..<3 {
            for m in 0..<2 { seen += try s.indices(MicroBatchID(epoch: 0, step: step, index: m)) }
        }
        #expect(seen == Array(p[0..<24]))  // 6 tail rows never visited in epoch 0
        #expect(Set(seen).count == 24)
        #expect(s.position(globalStep: 0) == (0, 0) && s.position(globalStep: 2) == (0, 2))
        #expect(s.position(globalStep: 3) == (1, 0) && s.position(globalStep: 7) == (2, 1))
        #expect(s.microBatches(globalStep: 4) == [MicroBatchID(epoch: 1, step: 1, index: 0), MicroBatchID(epoch: 1, step: 1, index: 1)])
        // Global step 3 is epoch 1 step 0: the first rows of epoch 1's permutation.
        #expect(try s.indices(s.microBatches(globalStep: 3)[0]) == Array(s.permutation(epoch: 1)[0..<4]))
        expectShardError(.badSampler, mentioning: ["no such micro-batch", "step 0..<3"]) {
            _ = try s.indices(MicroBatchID(epoch: 0, step: 3, index: 0))
        }
        expectShardError(.badSampler, mentioning: ["index 0..<2"]) { _ = try s.indices(MicroBatchID(epoch: 0, step: 0, index: 2)) }
    }

    @Test("invalid batch settings are clear errors")
    func invalid() {
        expectShardError(.badSampler, mentioning: ["micro_batch must divide global_batch", "global_batch 10", "micro_batch 4"]) {
            _ = try Sampler(count: 100, globalBatch: 10, microBatch: 4, seed: 0)
        }
        expectShardError(.badSampler, mentioning: ["smaller than one global batch"]) {
            _ = try Sampler(count: 5, globalBatch: 8, microBatch: 4, seed: 0)
        }
        expectShardError(.badSampler, mentioning: ["positive"]) {
            _ = try Sampler(count: 5, globalBatch: 4, microBatch: 0, seed: 0)
        }
    }

    @Test("group_by_length: a pure function of (seed, epoch) over the same rows, sorted within mega-batches, less padding")
    func groupedByLength() throws {
        var rng = TestRNG(9)
        let lengths = (0..<400).map { _ in Int32(32 + Int(rng.next() % 481)) }
        let a = try Sampler(count: 400, globalBatch: 8, microBatch: 4, seed: 3, groupingByLength: lengths)
        let b = try Sampler(count: 400, globalBatch: 8, microBatch: 4, seed: 3, groupingByLength: lengths)
        let plain = try Sampler(count: 400, globalBatch: 8, microBatch: 4, seed: 3)
        for epoch in 0..<2 {
            let p = a.permutation(epoch: epoch)
            #expect(p == b.permutation(epoch: epoch), "a pure function of (seed, epoch)")
            #expect(p.sorted() == Array(0..<400), "every row once")
            // Each mega-batch holds the same rows as the plain order's, longest first.
            let mega = Sampler.groupFactor * 8
            let q = plain.permutation(epoch: epoch)
            for start in stride(from: 0, to: 400, by: mega) {
                let end = min(start + mega, 400)
                #expect(Set(p[start..<end]) == Set(q[start..<end]))
                #expect(zip(p[start..<end], p[start..<end].dropFirst()).allSatisfy { lengths[$0] >= lengths[$1] })
            }
        }
        #expect(a.permutation(epoch: 0) != a.permutation(epoch: 1))
        // Tokens a step computes at its micro-batches' longest rows: grouping saves most of the padding.
        func work(_ s: Sampler) throws -> Int {
            try (0..<s.stepsPerEpoch).flatMap { st in (0..<2).map { MicroBatchID(epoch: 0, step: st, index: $0) } }
                .reduce(0) { $0 + 4 * Int(try s.indices($1).map { lengths[$0] }.max()!) }
        }
        let grouped = try work(a), random = try work(plain), padded = 400 * 512
        #expect(Double(grouped) < 0.8 * Double(random) && random < padded, "grouped \(grouped), random \(random), padded \(padded)")
    }

    @Test("a micro-batch is cut to its longest row, or its last label if one lies beyond a row's length")
    func workingLength() throws {
        let dir = try TemporaryDirectory("trim")
        defer { dir.cleanup() }
        var c = DatasetContents(task: .caption, count: 3, tokens: 10, imageHeight: 2, imageWidth: 2, padID: 0)
        c.lengths = [4, 6, 3]
        for r in 0..<3 { for j in 0..<Int(c.lengths[r]) { c.inputIDs[r * 10 + j] = Int32(j + 1) } }
        c.labels[0 * 10 + 3] = 4
        c.labels[1 * 10 + 5] = 6
        try DatasetWriter.write(c, to: dir.file("d.h5"))
        let f = try DatasetFile(path: dir.file("d.h5"))
        let b = try f.readBatch(indices: [0, 2])
        #expect(b.workingLength == 4)
        let t = b.trimmed()
        #expect(t.tokens == 4 && t.inputIDs == [1, 2, 3, 4, 1, 2, 3, 0] && t.labels == [-100, -100, -100, 4, -100, -100, -100, -100])
        #expect(try f.readBatch(indices: [2, 1, 0]).trimmed().tokens == 6)
    }
}
