import Foundation
import Model
import Shard
import TestSupport
import Testing

/// Writes `c` field by field with the raw wrapper, leaving out `omit` and writing zero-filled
/// stand-ins of another type or shape for `replace`, to make each kind of broken file.
private func writeVariant(_ path: String, _ c: DatasetContents, omit: Set<String> = [],
                          replace: [String: (HDF5ScalarType, [Int])] = [:],
                          attrs: [String: String] = [:]) throws {
    let file = try HDF5File.create(path)
    let root = file.root
    if !omit.contains("@format") { try root.setAttribute("format", string: attrs["format"] ?? "dehvf-dataset") }
    if !omit.contains("@version") { try root.setAttribute("version", int: Int64(attrs["version"] ?? "1")!) }
    if !omit.contains("@task") { try root.setAttribute("task", string: attrs["task"] ?? c.task.rawValue) }
    if !omit.contains("@pad_id") { try root.setAttribute("pad_id", int: Int64(c.padID)) }
    if !omit.contains("@image_mean") {
        try root.setAttribute("image_mean", floats: attrs["image_mean"] == "4" ? [1, 2, 3, 4] : c.imageMean)
    }
    if !omit.contains("@image_std") { try root.setAttribute("image_std", floats: c.imageStd) }
    let n = c.count, t = c.tokens
    let meta = try root.createGroup("meta")
    func put<T: HDF5Element>(_ name: String, _ values: [T], _ shape: [Int]) throws {
        if omit.contains(name) { return }
        let (group, leaf) = name.hasPrefix("meta/") ? (meta, String(name.dropFirst(5))) : (root, name)
        if let (type, s) = replace[name] {
            let count = s.reduce(1, *)
            switch type {
            case .float32: try group.write(leaf, [Float](repeating: 0, count: count), shape: s)
            case .int32: try group.write(leaf, [Int32](repeating: 0, count: count), shape: s)
            case .uint8: try group.write(leaf, [UInt8](repeating: 0, count: count), shape: s)
            case .int64: try group.write(leaf, [Int64](repeating: 0, count: count), shape: s)
            }
        } else {
            try group.write(leaf, values, shape: shape)
        }
    }
    try put("images", c.images, [n, 3, c.imageHeight, c.imageWidth])
    try put("has_image", c.hasImage, [n])
    try put("input_ids", c.inputIDs, [n, t])
    try put("lengths", c.lengths, [n])
    try put("labels", c.labels, [n, t])
    try put("answer", c.answer!, [n])
    try put("num_choices", c.numChoices!, [n])
    try put("answer_position", c.answerPosition!, [n])
    try put("choice_token_ids", c.choiceTokenIDs!, [c.choiceTokenIDs!.count])
    try put("meta/subject", c.subject!, [n])
    try put("meta/context", c.context!, [n])
    try put("meta/grade", c.grade!, [n])
    try file.close()
}

@Suite("Dataset files", .serialized)
struct DatasetFileTests {
    @Test("written contents read back exactly, attributes and all")
    func roundTrip() throws {
        let dir = try TemporaryDirectory("shard")
        defer { dir.cleanup() }
        let c = makeContents()
        try DatasetWriter.write(c, to: dir.file("d.h5"), chunkRows: 3)
        let f = try DatasetFile(path: dir.file("d.h5"))
        #expect(f.task == .multipleChoice)
        #expect(f.count == 10 && f.tokens == 8 && f.imageHeight == 4 && f.imageWidth == 5)
        #expect(f.imageMean == DatasetContents.clipMean && f.imageStd == DatasetContents.clipStd)
        #expect(f.choiceTokenIDs == [11, 12, 13, 14, 15])
        let all = try f.readBatch(indices: Array(0..<10))
        #expect(all.images == c.images)
        #expect(all.inputIDs == c.inputIDs && all.labels == c.labels && all.lengths == c.lengths)
        #expect(all.hasImage == c.hasImage && all.answer == c.answer && all.numChoices == c.numChoices)
        #expect(all.answerPosition == c.answerPosition)
        #expect(all.subject == c.subject && all.context == c.context && all.grade == c.grade)
    }

    @Test("a batch of scattered, unsorted, repeated rows equals the same rows of a full read")
    func batchMatchesFullRead() throws {
        let dir = try TemporaryDirectory("shard")
        defer { dir.cleanup() }
        let c = makeContents(n: 23)
        try DatasetWriter.write(c, to: dir.file("d.h5"), chunkRows: 4)
        let f = try DatasetFile(path: dir.file("d.h5"))
        let full = try f.readBatch(indices: Array(0..<23))
        let rows = [17, 3, 4, 5, 22, 0, 9, 4, 10, 11]
        let b = try f.readBatch(indices: rows)
        #expect(b.indices == rows)
        let img = 3 * 4 * 5
        for (k, r) in rows.enumerated() {
            #expect(Array(b.images[(k * img)..<((k + 1) * img)]) == Array(full.images[(r * img)..<((r + 1) * img)]))
            #expect(Array(b.inputIDs[(k * 8)..<((k + 1) * 8)]) == Array(c.inputIDs[(r * 8)..<((r + 1) * 8)]))
            #expect(Array(b.labels[(k * 8)..<((k + 1) * 8)]) == Array(c.labels[(r * 8)..<((r + 1) * 8)]))
            #expect(b.lengths[k] == c.lengths[r] && b.hasImage[k] == c.hasImage[r])
            #expect(b.answer![k] == c.answer![r] && b.grade![k] == c.grade![r])
        }
        expectShardError(.badValue, mentioning: ["0..<23", "23"]) { _ = try f.readBatch(indices: [1, 23]) }
    }

    @Test("normalised images are (x/255 - mean)/std per channel")
    func normalisation() throws {
        let dir = try TemporaryDirectory("shard")
        defer { dir.cleanup() }
        let c = makeContents(n: 3)
        try DatasetWriter.write(c, to: dir.file("d.h5"))
        let b = try DatasetFile(path: dir.file("d.h5")).readBatch(indices: [2, 0])
        let x = b.normalizedImages()
        #expect(x.shape == [2, 3, 4, 5])
        let plane = 20
        for k in 0..<2 {
            let r = [2, 0][k]
            for ch in 0..<3 {
                for p in 0..<plane {
                    let raw = Float(c.images[(r * 3 + ch) * plane + p])
                    let want = (raw / 255 - DatasetContents.clipMean[ch]) / DatasetContents.clipStd[ch]
                    #expect(x.data[(k * 3 + ch) * plane + p] == want)  // same operations in the same order: exact
                }
            }
        }
    }

    @Test("a caption file needs no multiple-choice datasets and keeps its references")
    func captionFile() throws {
        let dir = try TemporaryDirectory("shard")
        defer { dir.cleanup() }
        var c = makeContents(task: .caption, n: 4, meta: false)
        c.references = ["[\"a cat\", \"a cät sitting\"]", "[]", "[\"x\"]", "[\"ü\"]"]
        try DatasetWriter.write(c, to: dir.file("c.h5"))
        let f = try DatasetFile(path: dir.file("c.h5"))
        #expect(f.task == .caption && f.choiceTokenIDs == nil)
        let b = try f.readBatch(indices: [1])
        #expect(b.answer == nil && b.subject == nil)
        #expect(try f.references() == c.references)
    }

    static let missing = ["images", "has_image", "input_ids", "lengths", "labels", "answer", "num_choices",
                          "answer_position", "choice_token_ids"]

    @Test("each missing dataset is named", arguments: missing)
    func missingDataset(name: String) throws {
        let dir = try TemporaryDirectory("shard")
        defer { dir.cleanup() }
        try writeVariant(dir.file("d.h5"), makeContents(), omit: [name])
        expectShardError(.missingDataset, mentioning: [dir.file("d.h5"), "/" + name]) {
            _ = try DatasetFile(path: dir.file("d.h5"))
        }
    }

    struct Bad: CustomTestStringConvertible, Sendable {
        var name: String
        var type: HDF5ScalarType
        var shape: [Int]
        var code: ShardError.Code
        var mentions: [String]
        var testDescription: String { "\(name) as \(type)\(shape)" }
    }

    static let misshapen: [Bad] = [
        Bad(name: "images", type: .float32, shape: [10, 3, 4, 5], code: .badType, mentions: ["/images", "uint8", "float32"]),
        Bad(name: "images", type: .uint8, shape: [10, 4, 4, 5], code: .badShape, mentions: ["/images", "[*, 3, *, *]", "[10, 4, 4, 5]"]),
        Bad(name: "images", type: .uint8, shape: [10, 3, 4], code: .badShape, mentions: ["/images", "N, 3, H, W"]),
        Bad(name: "input_ids", type: .int64, shape: [10, 8], code: .badType, mentions: ["/input_ids", "int32", "int64"]),
        Bad(name: "input_ids", type: .int32, shape: [9, 8], code: .badShape, mentions: ["/input_ids", "[10, *]", "[9, 8]"]),
        Bad(name: "labels", type: .int32, shape: [10, 9], code: .badShape, mentions: ["/labels", "[10, 8]", "[10, 9]"]),
        Bad(name: "lengths", type: .int32, shape: [11], code: .badShape, mentions: ["/lengths", "[10]", "[11]"]),
        Bad(name: "has_image", type: .int32, shape: [10], code: .badType, mentions: ["/has_image", "uint8", "int32"]),
        Bad(name: "answer", type: .int32, shape: [10, 1], code: .badShape, mentions: ["/answer", "[10]"]),
        Bad(name: "num_choices", type: .uint8, shape: [10], code: .badType, mentions: ["/num_choices", "int32"]),
        Bad(name: "answer_position", type: .float32, shape: [10], code: .badType, mentions: ["/answer_position"]),
        Bad(name: "choice_token_ids", type: .int32, shape: [5, 1], code: .badShape, mentions: ["/choice_token_ids", "C"]),
        Bad(name: "meta/subject", type: .int32, shape: [10], code: .badType, mentions: ["/meta/subject", "uint8"]),
        Bad(name: "meta/grade", type: .uint8, shape: [3], code: .badShape, mentions: ["/meta/grade", "[10]", "[3]"]),
    ]

    @Test("each mistyped or misshapen dataset is named with expected and found", arguments: misshapen)
    func misshapenDataset(bad: Bad) throws {
        let dir = try TemporaryDirectory("shard")
        defer { dir.cleanup() }
        try writeVariant(dir.file("d.h5"), makeContents(), replace: [bad.name: (bad.type, bad.shape)])
        expectShardError(bad.code, mentioning: [dir.file("d.h5")] + bad.mentions) {
            _ = try DatasetFile(path: dir.file("d.h5"))
        }
    }

    @Test("bad root attributes are named")
    func badAttributes() throws {
        let dir = try TemporaryDirectory("shard")
        defer { dir.cleanup() }
        let c = makeContents()
        let cases: [(Set<String>, [String: String], ShardError.Code, [String])] = [
            (["@format"], [:], .missingAttribute, ["@format"]),
            ([], ["format": "something-else"], .badAttribute, ["@format", "dehvf-dataset", "something-else"]),
            ([], ["version": "2"], .badAttribute, ["@version", "expected 1", "found 2"]),
            ([], ["task": "vqa"], .badAttribute, ["@task", "multiple-choice", "vqa"]),
            (["@pad_id"], [:], .missingAttribute, ["@pad_id"]),
            (["@image_std"], [:], .missingAttribute, ["@image_std"]),
            ([], ["image_mean": "4"], .badAttribute, ["@image_mean", "float32[3]", "float32[4]"]),
        ]
        for (omit, attrs, code, mentions) in cases {
            let p = dir.file("a-\(UUID().uuidString).h5")
            try writeVariant(p, c, omit: omit, attrs: attrs)
            expectShardError(code, mentioning: [p] + mentions) { _ = try DatasetFile(path: p) }
        }
    }

    @Test("out-of-range values are rejected at open")
    func badValues() throws {
        let dir = try TemporaryDirectory("shard")
        defer { dir.cleanup() }
        var c = makeContents()
        c.lengths[4] = 9
        try DatasetWriter.write(c, to: dir.file("l.h5"))
        expectShardError(.badValue, mentioning: ["/lengths", "row 4", "1...8", "9"]) {
            _ = try DatasetFile(path: dir.file("l.h5"))
        }
        c = makeContents()
        c.answer![2] = c.numChoices![2]
        try DatasetWriter.write(c, to: dir.file("a.h5"))
        expectShardError(.badValue, mentioning: ["/answer", "row 2"]) { _ = try DatasetFile(path: dir.file("a.h5")) }
    }

    @Test("a missing file, a non-HDF5 file and a truncated file are errors, not crashes")
    func truncated() throws {
        let dir = try TemporaryDirectory("shard")
        defer { dir.cleanup() }
        expectShardError(.cannotOpen, mentioning: ["nope.h5", "no such file"]) {
            _ = try DatasetFile(path: dir.file("nope.h5"))
        }
        try Data("hello, not hdf5".utf8).write(to: URL(fileURLWithPath: dir.file("text.h5")))
        expectShardError(.cannotOpen, mentioning: ["text.h5", "not an HDF5 file"]) {
            _ = try DatasetFile(path: dir.file("text.h5"))
        }
        let c = makeContents(n: 40, h: 16, w: 16)
        try DatasetWriter.write(c, to: dir.file("d.h5"), chunkRows: 8)
        let whole = try Data(contentsOf: URL(fileURLWithPath: dir.file("d.h5")))
        // Cut at several points: each must throw some ShardError (open, validate or read), never crash.
        var failures = 0
        for fraction in [0.05, 0.3, 0.5, 0.7, 0.9, 0.99] {
            let p = dir.file("t\(fraction).h5")
            try whole.prefix(Int(Double(whole.count) * fraction)).write(to: URL(fileURLWithPath: p))
            do {
                let f = try DatasetFile(path: p)
                _ = try f.readBatch(indices: Array(0..<40))
                Issue.record("truncated at \(fraction) read without error")
            } catch let e as ShardError {
                #expect(e.description.contains(p))
                #expect(e.code == .corrupt, "\(e)")
                failures += 1
            }
        }
        #expect(failures == 6)
    }

    @Test("a flipped byte anywhere in a file written here is an error or harmless, never wrong data or a crash")
    func byteFlips() throws {
        let dir = try TemporaryDirectory("shard")
        defer { dir.cleanup() }
        let c = makeContents(n: 12, h: 8, w: 8)
        try DatasetWriter.write(c, to: dir.file("d.h5"), chunkRows: 4)
        let whole = try Data(contentsOf: URL(fileURLWithPath: dir.file("d.h5")))
        let original = try DatasetFile(path: dir.file("d.h5")).readBatch(indices: Array(0..<12))
        // Metadata is checksummed (1.8+ format) and every dataset is Fletcher-32: a flip either fails or
        // landed in bytes nothing reads.
        var errors = 0, harmless = 0
        // Every 7th byte: all the metadata kinds and every chunk get hit, in about 10 s.
        for off in stride(from: 0, to: whole.count, by: 7) {
            var d = whole
            d[off] ^= 0x10
            let p = dir.file("f.h5")
            try d.write(to: URL(fileURLWithPath: p))
            do {
                let f = try DatasetFile(path: p)
                let b = try f.readBatch(indices: Array(0..<12))
                let same = b.images == original.images && b.inputIDs == original.inputIDs
                    && b.labels == original.labels && b.lengths == original.lengths && b.hasImage == original.hasImage
                    && b.answer == original.answer && b.subject == original.subject && b.grade == original.grade
                    && b.context == original.context && f.choiceTokenIDs == [11, 12, 13, 14, 15]
                    && f.imageMean == c.imageMean && f.imageStd == c.imageStd && f.padID == c.padID
                #expect(same, "flip at byte \(off) of \(whole.count) changed data without an error")
                harmless += 1
            } catch is ShardError {
                errors += 1
            }
        }
        #expect(errors > harmless, "\(errors) errors, \(harmless) harmless flips")
    }
}
