import Foundation
import Model
import Shard
import TestSupport
import Testing

/// Writes a multiple-choice dataset file with h5py whose declared sizes are `spec`'s (N, T, H, W, C and,
/// with `I`, an `image_index` sharing I images). A dataset bigger than `full` values is created with its
/// shape only: HDF5 then stores no chunk at all, so a few-KB file declares terabytes, as a hostile or
/// damaged file can. Smaller ones hold valid data. Returns the file's size.
@discardableResult
func writeDeclared(_ path: String, _ spec: [String: Int]) throws -> Int {
    let json = String(data: try JSONSerialization.data(withJSONObject: spec), encoding: .utf8)!
    let r = try python("""
        import sys, json, h5py, numpy as np
        s = json.loads(sys.argv[2])
        N, T, H, W, C = s.get("N", 6), s.get("T", 8), s.get("H", 4), s.get("W", 4), s.get("C", 4)
        I = s.get("I")
        full = 1 << 20
        def put(f, name, shape, dtype, fill):
            count = int(np.prod(shape, dtype=object))
            if count <= full:
                f.create_dataset(name, data=np.broadcast_to(np.asarray(fill, dtype), shape))
            else:
                chunks = tuple([1] * (len(shape) - 1) + [min(shape[-1], 1 << 16)])
                f.create_dataset(name, shape=shape, dtype=dtype, chunks=chunks)
        with h5py.File(sys.argv[1], "w") as f:
            f.attrs["format"] = "dehvf-dataset"; f.attrs["version"] = 1; f.attrs["task"] = "multiple-choice"
            f.attrs["pad_id"] = 0
            f.attrs["image_mean"] = np.full(3, 0.5, np.float32); f.attrs["image_std"] = np.full(3, 0.25, np.float32)
            put(f, "images", (N if I is None else I, 3, H, W), np.uint8, 7)
            if I is not None: put(f, "image_index", (N,), np.int32, 0)
            put(f, "input_ids", (N, T), np.int32, 5)
            put(f, "labels", (N, T), np.int32, -100)
            put(f, "has_image", (N,), np.uint8, 1)
            put(f, "lengths", (N,), np.int32, min(T, 3))
            put(f, "answer", (N,), np.int32, 0)
            put(f, "num_choices", (N,), np.int32, 1)
            put(f, "answer_position", (N,), np.int32, 0)
            put(f, "choice_token_ids", (C,), np.int32, 9)
        """, [path, json])
    guard r.status == 0 else { throw TestFailure("h5py could not write \(spec): \(r.stderr)") }
    return (try FileManager.default.attributesOfItem(atPath: path)[.size] as? NSNumber)?.intValue ?? 0
}

@Suite("Hostile dataset files", .serialized)
struct HostileDatasetTests {
    @Test("a few-KB file declaring 2^40 rows is an error naming the dataset and the limit, before any allocation")
    func terabyteRows() throws {
        let dir = try TemporaryDirectory("shard")
        defer { dir.cleanup() }
        let p = dir.file("big.h5")
        let size = try writeDeclared(p, ["N": 1 << 40])
        #expect(size < 64 << 10, "the file must be small for the test to mean anything: \(size) bytes")
        // Before this check, opening it aborted the process: "failed to allocate 1099511627808 bytes".
        expectShardError(.badShape, mentioning: [p, "/images", "declared size out of range", "N in 0...2147483647",
                                                 "row ids are int32", "N = 1099511627776"]) {
            _ = try DatasetFile(path: p)
        }
    }

    struct Declared: CustomTestStringConvertible, Sendable {
        var spec: [String: Int]
        var mentions: [String]
        var testDescription: String { spec.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " ") }
    }

    static let declared: [Declared] = [
        Declared(spec: ["T": 65537], mentions: ["/input_ids", "T in 1...65536", "T = 65537"]),
        Declared(spec: ["T": 0], mentions: ["/input_ids", "T in 1...65536", "T = 0"]),
        Declared(spec: ["H": 8193], mentions: ["/images", "H in 1...8192", "H = 8193"]),
        Declared(spec: ["W": 1 << 20], mentions: ["/images", "W in 1...8192", "W = 1048576"]),
        Declared(spec: ["C": 1025], mentions: ["/choice_token_ids", "C in 1...1024", "C = 1025"]),
        Declared(spec: ["C": 0], mentions: ["/choice_token_ids", "C in 1...1024", "C = 0"]),
        Declared(spec: ["I": 1 << 31], mentions: ["/images", "I in 0...2147483647", "I = 2147483648"]),
        Declared(spec: ["N": 1 << 31, "I": 4], mentions: ["/image_index", "N in 0...2147483647", "N = 2147483648"]),
    ]

    @Test("each declared size past the format's limits is named with the limit and the value", arguments: declared)
    func limits(_ d: Declared) throws {
        let dir = try TemporaryDirectory("shard")
        defer { dir.cleanup() }
        let p = dir.file("d.h5")
        try writeDeclared(p, d.spec)
        expectShardError(.badShape, mentioning: [p, "declared size out of range"] + d.mentions) {
            _ = try DatasetFile(path: p)
        }
    }

    @Test("a column read at open that needs more than 16 x the file + 1 MiB is refused before it is read")
    func budget() throws {
        let dir = try TemporaryDirectory("shard")
        defer { dir.cleanup() }
        // 2^28 rows is within the row limit, but has_image alone would be 256 MiB from a few-KB file.
        let p = dir.file("hollow.h5")
        let size = try writeDeclared(p, ["N": 1 << 28])
        let budget = 16 * size + (1 << 20)
        expectShardError(.badShape, mentioning: [p, "/has_image", "declares more data than the file can hold",
                                                 "at most \(budget) bytes", "16 x the file's \(size) bytes + 1 MiB",
                                                 "268435456 bytes for uint8 [268435456]"]) {
            _ = try DatasetFile(path: p)
        }
        // The same rows with image_index: the index column (int32) is over budget too.
        let q = dir.file("index.h5")
        try writeDeclared(q, ["N": 1 << 27, "I": 2])
        expectShardError(.badShape, mentioning: [q, "declares more data than the file can hold"]) {
            _ = try DatasetFile(path: q)
        }
    }

    @Test("image_index: rows share images, read through the index; an index past I is named")
    func imageIndex() throws {
        let dir = try TemporaryDirectory("shard")
        defer { dir.cleanup() }
        let p = dir.file("shared.h5")
        let r = try python("""
            import sys, h5py, numpy as np
            N, I, T, H, W = 7, 3, 5, 2, 3
            with h5py.File(sys.argv[1], "w") as f:
                f.attrs["format"] = "dehvf-dataset"; f.attrs["version"] = 1; f.attrs["task"] = "caption"
                f.attrs["pad_id"] = 0
                f.attrs["image_mean"] = np.full(3, 0.5, np.float32); f.attrs["image_std"] = np.full(3, 0.25, np.float32)
                f["images"] = (np.arange(I * 3 * H * W) % 251).astype(np.uint8).reshape(I, 3, H, W)
                f["image_index"] = np.array([2, 0, 1, 2, 2, 0, int(sys.argv[2])], np.int32)
                f["input_ids"] = np.ones((N, T), np.int32)
                f["labels"] = np.full((N, T), -100, np.int32)
                f["has_image"] = np.ones(N, np.uint8)
                f["lengths"] = np.full(N, T, np.int32)
            """, [p, "1"])
        #expect(r.status == 0, "\(r.stderr)")
        do {  // closed before h5py opens the file for writing (HDF5 locks it)
            let f = try DatasetFile(path: p)
            #expect(f.count == 7)
            let image = 3 * 2 * 3
            let all = (0..<(3 * image)).map { UInt8($0 % 251) }
            let b = try f.readBatch(indices: [6, 0, 3, 1])  // images 1, 2, 2, 0
            #expect(b.images == Array(all[image..<(2 * image)]) + Array(all[(2 * image)...]) + Array(all[(2 * image)...])
                + Array(all[0..<image]))
            #expect(try f.normalizedImages(indices: [1]).shape == [1, 3, 2, 3])
        }

        let bad = try python("""
            import sys, h5py
            with h5py.File(sys.argv[1], "r+") as f: f["image_index"][6] = 3
            """, [p])
        #expect(bad.status == 0, "\(bad.stderr)")
        expectShardError(.badValue, mentioning: [p, "/image_index", "row 6", "0..<3 (I, the rows of /images)", "found 3"]) {
            _ = try DatasetFile(path: p)
        }
    }

    struct Mutation: CustomTestStringConvertible, Sendable {
        var name: String
        var apply: @Sendable (inout DatasetContents) -> Void
        var mentions: [String]
        var testDescription: String { name }
    }

    static let mutations: [Mutation] = [
        Mutation(name: "length 0", apply: { $0.lengths[3] = 0 }, mentions: ["/lengths", "row 3", "1...8 (T)", "found 0"]),
        Mutation(name: "length past T", apply: { $0.lengths[3] = 9 }, mentions: ["/lengths", "row 3", "1...8", "found 9"]),
        Mutation(name: "has_image 2", apply: { $0.hasImage[5] = 2 }, mentions: ["/has_image", "row 5", "0 or 1", "found 2"]),
        Mutation(name: "num_choices 0", apply: { $0.numChoices![1] = 0 },
                 mentions: ["/num_choices", "row 1", "1...5 (C = choice_token_ids count)", "found 0"]),
        Mutation(name: "num_choices past C", apply: { $0.numChoices![1] = 6; $0.answer![1] = 0 },
                 mentions: ["/num_choices", "row 1", "1...5", "found 6"]),
        Mutation(name: "answer negative", apply: { $0.answer![2] = -1 }, mentions: ["/answer", "row 2", "0..<4", "found -1"]),
        Mutation(name: "answer past num_choices", apply: { $0.answer![2] = 4 }, mentions: ["/answer", "row 2", "0..<4 (num_choices)", "found 4"]),
        // Row 4 has length 7 of T = 8 (makeContents): position 7 is padding, never a real token.
        Mutation(name: "answer_position at the length", apply: { $0.answerPosition![4] = 7 },
                 mentions: ["/answer_position", "row 4", "0..<7 (the row's length)", "found 7"]),
        Mutation(name: "answer_position negative", apply: { $0.answerPosition![4] = -1 },
                 mentions: ["/answer_position", "row 4", "found -1"]),
        Mutation(name: "subject 3", apply: { $0.subject![6] = 3 }, mentions: ["/meta/subject", "row 6", "0..<3 (NAT, SOC, LAN)", "found 3"]),
        Mutation(name: "context 3", apply: { $0.context![7] = 3 }, mentions: ["/meta/context", "row 7", "0..<3 (TXT, IMG, NO)", "found 3"]),
        Mutation(name: "grade 2", apply: { $0.grade![8] = 2 }, mentions: ["/meta/grade", "row 8", "0..<2 (G1-6, G7-12)", "found 2"]),
        Mutation(name: "label -1", apply: { $0.labels[9 * 8 + 6] = -1 },
                 mentions: ["/labels", "row 9", "-100 (no loss) or a token id >= 0", "found -1 at position 6"]),
    ]

    @Test("every id and index out of its range is an error at open naming the dataset, the row and the value",
          arguments: mutations)
    func ranges(_ m: Mutation) throws {
        let dir = try TemporaryDirectory("shard")
        defer { dir.cleanup() }
        var c = makeContents()
        m.apply(&c)
        let p = dir.file("d.h5")
        try DatasetWriter.write(c, to: p)
        expectShardError(.badValue, mentioning: [p, "value out of range"] + m.mentions) { _ = try DatasetFile(path: p) }
    }

    @Test("token ids are checked against the vocabulary, chunk by chunk, naming the dataset, row, value and size")
    func tokenIDs() throws {
        let dir = try TemporaryDirectory("shard")
        defer { dir.cleanup() }
        // 10000 rows: the scan reads 4096 rows at a time, so row 9000 is in its third read.
        let n = 10000, t = 8
        var c = makeContents(n: n, t: t, h: 2, w: 2, meta: false)
        for i in 0..<c.inputIDs.count { c.inputIDs[i] = Int32(i % 50) }
        for i in 0..<c.labels.count { c.labels[i] = i % 3 == 0 ? Int32(i % 40) : -100 }
        let good = dir.file("good.h5")
        try DatasetWriter.write(c, to: good)
        let f = try DatasetFile(path: good)
        try f.checkTokenIDs(vocabularySize: 50)  // ids 0...49, choices 11...15, pad 0
        expectShardError(.badValue, mentioning: [good, "/input_ids", "row 6", "found 49 at position 1",
                                                 "0..<49 (the language model's vocabulary size is 49)"]) {
            try f.checkTokenIDs(vocabularySize: 49)
        }
        expectShardError(.badValue, mentioning: ["/choice_token_ids", "found 11", "vocabulary size is 11"]) {
            try f.checkTokenIDs(vocabularySize: 11)
        }

        var d = c
        d.inputIDs[9000 * t + 5] = 50
        let far = dir.file("far.h5")
        try DatasetWriter.write(d, to: far)
        expectShardError(.badValue, mentioning: [far, "/input_ids", "token id outside the model's vocabulary at row 9000",
                                                 "found 50 at position 5", "vocabulary size is 50"]) {
            try DatasetFile(path: far).checkTokenIDs(vocabularySize: 50)
        }
        d = c
        d.labels[7777 * t + 2] = 60
        let label = dir.file("label.h5")
        try DatasetWriter.write(d, to: label)
        expectShardError(.badValue, mentioning: [label, "/labels", "row 7777", "found 60 at position 2", ", or -100"]) {
            try DatasetFile(path: label).checkTokenIDs(vocabularySize: 50)
        }
        d = c
        d.inputIDs[3 * t] = -7
        let negative = dir.file("negative.h5")
        try DatasetWriter.write(d, to: negative)
        expectShardError(.badValue, mentioning: ["/input_ids", "row 3", "found -7 at position 0"]) {
            try DatasetFile(path: negative).checkTokenIDs(vocabularySize: 50)
        }
        d = c
        d.padID = 50
        let pad = dir.file("pad.h5")
        try DatasetWriter.write(d, to: pad)
        expectShardError(.badValue, mentioning: [pad, "@pad_id", "found 50"]) {
            try DatasetFile(path: pad).checkTokenIDs(vocabularySize: 50)
        }
    }

    @Test("a dataset too large for 4096-row reads at T = 65536 is scanned 64 rows at a time")
    func longRows() throws {
        let dir = try TemporaryDirectory("shard")
        defer { dir.cleanup() }
        var c = DatasetContents(task: .caption, count: 130, tokens: 65536, imageHeight: 1, imageWidth: 1)
        for r in 0..<130 { c.lengths[r] = 1 }
        c.inputIDs[129 * 65536 + 65535] = 1000
        let p = dir.file("long.h5")
        try DatasetWriter.write(c, to: p)
        expectShardError(.badValue, mentioning: ["/input_ids", "row 129", "found 1000 at position 65535"]) {
            try DatasetFile(path: p).checkTokenIDs(vocabularySize: 1000)
        }
    }
}
