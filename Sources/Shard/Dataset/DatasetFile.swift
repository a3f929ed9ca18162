import Model

/// What a dataset file trains: DESIGN §5 `task`.
public enum DatasetTask: String, Sendable, CaseIterable {
    case multipleChoice = "multiple-choice"
    case caption
}

/// A dataset file (DESIGN §5), validated completely when opened so that a bad file fails before
/// training starts, naming the file, the dataset, the expected and the found type, shape or value.
///
/// Every file is treated as hostile. Opening checks, in this order and before reading any data: the
/// root attributes; every dataset's type and shape; the declared sizes against the format's limits
/// (`DatasetFile.Limits`); and the bytes of each column read at open against the file's size
/// (`HDF5File.ReadBudget`). Only then are the small per-row columns (`has_image`, `lengths`, the
/// multiple-choice columns, `meta/*`, `image_index`) read, range-checked and kept in memory, and `labels`
/// is scanned in bounded chunks. `images`, `input_ids` and `labels` are read per batch. Token ids against
/// a model's vocabulary are checked by `checkTokenIDs(vocabularySize:)`, since only the model knows it.
/// Safe to share between threads: every HDF5 call is serialised by the wrapper's lock.
public final class DatasetFile: @unchecked Sendable {
    public static let format = "dehvf-dataset"
    public static let version: Int64 = 1

    /// The largest sizes a dataset file may declare: anything larger is refused at open.
    public enum Limits {
        /// N and I: row and image ids are int32.
        public static let rows = Int(Int32.max)
        /// T, tokens per row.
        public static let tokens = 65536
        /// H and W, image height and width.
        public static let imageSide = 8192
        /// C, choice letters of a multiple-choice file.
        public static let choices = 1024
        /// Rows per chunk when a token column is scanned (fewer when T is large: at most 4 Mi values).
        static func scanRows(tokens: Int) -> Int { max(1, min(4096, (4 << 20) / max(1, tokens))) }
    }

    public let path: String
    public let task: DatasetTask
    /// N, the number of rows.
    public let count: Int
    /// T, tokens per row.
    public let tokens: Int
    /// I, the images in `images`: N unless rows share images through `image_index`.
    public let imageCount: Int
    public let imageHeight: Int
    public let imageWidth: Int
    public let padID: Int32
    public let imageMean: [Float]
    public let imageStd: [Float]
    /// Multiple-choice only: token id of each choice letter (C entries).
    public let choiceTokenIDs: [Int32]?

    private let file: HDF5File
    private let images: HDF5Dataset
    private let inputIDs: HDF5Dataset
    private let labels: HDF5Dataset
    private let hasImage: [UInt8]
    private let lengths: [Int32]
    private let answer: [Int32]?
    private let numChoices: [Int32]?
    private let answerPosition: [Int32]?
    private let subject: [UInt8]?
    private let context: [UInt8]?
    private let grade: [UInt8]?
    /// Row -> row of `images` when the file shares images between rows (`image_index`); nil: row i uses image i.
    private let imageIndex: [Int32]?

    /// Opens and validates `path`. Throws `ShardError` for a missing file, a damaged file, any missing,
    /// mistyped or misshapen attribute or dataset, a declared size past `Limits` or past what the file
    /// can hold, and any id or index out of its range.
    public init(path: String) throws {
        self.path = path
        let file = try HDF5File.open(path)
        self.file = file
        let root = file.root

        let format = try root.readString("format")
        guard format == Self.format else {
            throw ShardError(.badAttribute, "not a DEHVF dataset file", path: path, object: "@format",
                             expected: "\"\(Self.format)\"", found: "\"\(format)\"")
        }
        let version = try root.readInt("version")
        guard version == Self.version else {
            throw ShardError(.badAttribute, "unsupported dataset version", path: path, object: "@version",
                             expected: "\(Self.version)", found: "\(version)")
        }
        let taskName = try root.readString("task")
        guard let task = DatasetTask(rawValue: taskName) else {
            throw ShardError(.badAttribute, "unknown task", path: path, object: "@task",
                             expected: DatasetTask.allCases.map { "\"\($0.rawValue)\"" }.joined(separator: " or "),
                             found: "\"\(taskName)\"")
        }
        self.task = task
        let pad = try root.readInt("pad_id")
        guard let pad32 = Int32(exactly: pad) else {
            throw ShardError(.badAttribute, "pad_id out of int32 range", path: path, object: "@pad_id",
                             expected: "an int32", found: "\(pad)")
        }
        self.padID = pad32
        func rgb(_ name: String) throws -> [Float] {
            let v = try root.readFloats(name)
            guard v.count == 3 else {
                throw ShardError(.badAttribute, "wrong attribute shape", path: path, object: "@\(name)",
                                 expected: "float32[3] (one per RGB channel)", found: "float32[\(v.count)]")
            }
            return v
        }
        self.imageMean = try rgb("image_mean")
        self.imageStd = try rgb("image_std")
        if let bad = imageStd.first(where: { !($0 > 0) || !$0.isFinite }) {
            throw ShardError(.badAttribute, "image_std must be positive", path: path, object: "@image_std",
                             expected: "three positive values", found: "\(bad)")
        }
        if let bad = imageMean.first(where: { !$0.isFinite }) {
            throw ShardError(.badAttribute, "image_mean must be finite", path: path, object: "@image_mean",
                             expected: "three finite values", found: "\(bad)")
        }

        // 1. Types, shapes and declared sizes of everything, before any data is read.
        func declared(_ ds: HDF5Dataset, _ what: String, _ value: Int, _ range: ClosedRange<Int>, _ why: String) throws {
            guard range.contains(value) else {
                throw ShardError(.badShape, "declared size out of range", path: path, object: ds.name,
                                 expected: "\(what) in \(range.lowerBound)...\(range.upperBound) (\(why))",
                                 found: "\(what) = \(value) (shape \(ds.shape))")
            }
        }
        // N comes from `image_index` when the file shares images between rows, else from `images`.
        let imageIndexDS = root.contains("image_index") ? try root.openDataset("image_index") : nil
        let images = try root.openDataset("images")
        try images.require(.uint8)
        try images.require(shape: [nil, 3, nil, nil], meaning: imageIndexDS == nil ? "N, 3, H, W" : "I, 3, H, W")
        let n: Int
        if let ds = imageIndexDS {
            try ds.require(.int32)
            try ds.require(shape: [nil], meaning: "N")
            n = ds.shape[0]
            try declared(ds, "N", n, 0...Limits.rows, "row ids are int32")
            try declared(images, "I", images.shape[0], 0...Limits.rows, "image ids are int32")
        } else {
            n = images.shape[0]
            try declared(images, "N", n, 0...Limits.rows, "row ids are int32")
        }
        try declared(images, "H", images.shape[2], 1...Limits.imageSide, "image height")
        try declared(images, "W", images.shape[3], 1...Limits.imageSide, "image width")
        self.images = images
        self.count = n
        self.imageCount = images.shape[0]
        self.imageHeight = images.shape[2]
        self.imageWidth = images.shape[3]

        let inputIDs = try root.openDataset("input_ids")
        try inputIDs.require(.int32)
        try inputIDs.require(shape: [n, nil], meaning: "N, T")
        let t = inputIDs.shape[1]
        try declared(inputIDs, "T", t, 1...Limits.tokens, "tokens per row")
        self.inputIDs = inputIDs
        self.tokens = t
        let labels = try root.openDataset("labels")
        try labels.require(.int32)
        try labels.require(shape: [n, t], meaning: "N, T")
        self.labels = labels

        // The columns read whole at open: each must fit the file's read budget.
        let budget = try file.readBudget()
        func column(_ group: HDF5Group, _ name: String, _ type: HDF5ScalarType) throws -> HDF5Dataset {
            let ds = try group.openDataset(name)
            try ds.require(type)
            try ds.require(shape: [n], meaning: "N")
            try ds.requireReadable(elementSize: type.byteSize, within: budget)
            return ds
        }
        let hasImageDS = try column(root, "has_image", .uint8)
        let lengthsDS = try column(root, "lengths", .int32)
        if let ds = imageIndexDS { try ds.requireReadable(elementSize: 4, within: budget) }
        var choicesDS: HDF5Dataset?
        var multipleChoiceDS: (answer: HDF5Dataset, numChoices: HDF5Dataset, answerPosition: HDF5Dataset)?
        if task == .multipleChoice {
            let choices = try root.openDataset("choice_token_ids")
            try choices.require(.int32)
            try choices.require(shape: [nil], meaning: "C")
            try declared(choices, "C", choices.shape[0], 1...Limits.choices, "choice letters")
            choicesDS = choices
            multipleChoiceDS = (try column(root, "answer", .int32), try column(root, "num_choices", .int32),
                                try column(root, "answer_position", .int32))
        }
        var metaDS: [String: HDF5Dataset] = [:]
        if root.contains("meta") {
            let meta = try root.openGroup("meta")
            for name in ["subject", "context", "grade"] where meta.contains(name) {
                metaDS[name] = try column(meta, name, .uint8)
            }
        }

        // 2. The per-row columns, read and range-checked.
        func outOfRange(_ name: String, row: Int, expected: String, found: String) -> ShardError {
            ShardError(.badValue, "value out of range at row \(row)", path: path, object: "/\(name)",
                       expected: expected, found: found)
        }
        let hasImage = try hasImageDS.readAll(as: UInt8.self)
        if let r = hasImage.firstIndex(where: { $0 > 1 }) {
            throw outOfRange("has_image", row: r, expected: "0 or 1", found: "\(hasImage[r])")
        }
        self.hasImage = hasImage
        let lengths = try lengthsDS.readAll(as: Int32.self)
        if let r = lengths.firstIndex(where: { $0 < 1 || Int($0) > t }) {
            throw outOfRange("lengths", row: r, expected: "1...\(t) (T)", found: "\(lengths[r])")
        }
        self.lengths = lengths
        if let ds = imageIndexDS {
            let index = try ds.readAll(as: Int32.self)
            let i = images.shape[0]
            if let r = index.firstIndex(where: { $0 < 0 || Int($0) >= i }) {
                throw outOfRange("image_index", row: r, expected: "0..<\(i) (I, the rows of /images)",
                                 found: "\(index[r])")
            }
            self.imageIndex = index
        } else {
            self.imageIndex = nil
        }

        if let choices = choicesDS, let mc = multipleChoiceDS {
            let choiceIds = try choices.readAll(as: Int32.self)
            let c = choiceIds.count
            let answer = try mc.answer.readAll(as: Int32.self)
            let numChoices = try mc.numChoices.readAll(as: Int32.self)
            let answerPosition = try mc.answerPosition.readAll(as: Int32.self)
            for r in 0..<n {
                if numChoices[r] < 1 || Int(numChoices[r]) > c {
                    throw outOfRange("num_choices", row: r, expected: "1...\(c) (C = choice_token_ids count)",
                                     found: "\(numChoices[r])")
                }
                if answer[r] < 0 || answer[r] >= numChoices[r] {
                    throw outOfRange("answer", row: r, expected: "0..<\(numChoices[r]) (num_choices)",
                                     found: "\(answer[r])")
                }
                if answerPosition[r] < 0 || answerPosition[r] >= lengths[r] {
                    throw outOfRange("answer_position", row: r, expected: "0..<\(lengths[r]) (the row's length)",
                                     found: "\(answerPosition[r])")
                }
            }
            self.choiceTokenIDs = choiceIds
            self.answer = answer
            self.numChoices = numChoices
            self.answerPosition = answerPosition
        } else {
            self.choiceTokenIDs = nil
            self.answer = nil
            self.numChoices = nil
            self.answerPosition = nil
        }

        func optionalMeta(_ name: String, categories: UInt8, meaning: String) throws -> [UInt8]? {
            guard let ds = metaDS[name] else { return nil }
            let v = try ds.readAll(as: UInt8.self)
            if let r = v.firstIndex(where: { $0 >= categories }) {
                throw outOfRange("meta/\(name)", row: r, expected: "0..<\(categories) (\(meaning))", found: "\(v[r])")
            }
            return v
        }
        self.subject = try optionalMeta("subject", categories: 3, meaning: "NAT, SOC, LAN")
        self.context = try optionalMeta("context", categories: 3, meaning: "TXT, IMG, NO")
        self.grade = try optionalMeta("grade", categories: 2, meaning: "G1-6, G7-12")

        // 3. Labels are -100 (no loss) or a token id, scanned in bounded chunks of rows.
        if let bad = try Self.firstInvalid(labels, rows: n, tokens: t, valid: 0...Int32.max, except: -100) {
            throw ShardError(.badValue, "value out of range at row \(bad.row)", path: path, object: labels.name,
                             expected: "-100 (no loss) or a token id >= 0", found: "\(bad.value) at position \(bad.position)")
        }
    }

    /// Checks every token id the model would embed or score against its vocabulary: `input_ids` (padding
    /// included, since a micro-batch is computed at its longest row's length), `labels` other than -100,
    /// `choice_token_ids` and `pad_id`, all in 0..<`vocabularySize`. `input_ids` and `labels` are read in
    /// chunks of at most 4096 rows, never whole. Throws `.badValue` naming the dataset, the row, the value
    /// and the vocabulary size.
    public func checkTokenIDs(vocabularySize v: Int) throws {
        let vocabulary = "0..<\(v) (the language model's vocabulary size is \(v))"
        guard v >= 1 else {
            throw ShardError(.badValue, "the vocabulary is empty", path: path, expected: "a vocabulary size >= 1",
                             found: "\(v)")
        }
        if padID < 0 || Int(padID) >= v {
            throw ShardError(.badValue, "pad_id is not a token of the model", path: path, object: "@pad_id",
                             expected: vocabulary, found: "\(padID)")
        }
        if let ids = choiceTokenIDs, let k = ids.firstIndex(where: { $0 < 0 || Int($0) >= v }) {
            throw ShardError(.badValue, "choice \(k) is not a token of the model", path: path,
                             object: "/choice_token_ids", expected: vocabulary, found: "\(ids[k])")
        }
        let valid = 0...Int32(clamping: v - 1)
        for (ds, except) in [(inputIDs, nil), (labels, Int32(-100))] as [(HDF5Dataset, Int32?)] {
            if let bad = try Self.firstInvalid(ds, rows: count, tokens: tokens, valid: valid, except: except) {
                throw ShardError(.badValue, "token id outside the model's vocabulary at row \(bad.row)", path: path,
                                 object: ds.name, expected: vocabulary + (except == nil ? "" : ", or -100"),
                                 found: "\(bad.value) at position \(bad.position)")
            }
        }
    }

    /// The first value of the int32 [rows, tokens] dataset `ds` outside `valid` and not `except`, reading
    /// `Limits.scanRows` rows at a time (a large column is never held whole).
    private static func firstInvalid(_ ds: HDF5Dataset, rows: Int, tokens: Int, valid: ClosedRange<Int32>,
                                     except: Int32?) throws -> (row: Int, position: Int, value: Int32)? {
        let step = Limits.scanRows(tokens: tokens)
        var start = 0
        while start < rows {
            let end = min(rows, start + step)
            let values = try ds.readRows(sorted: Array(start..<end), as: Int32.self)
            let bad = values.withUnsafeBufferPointer { b -> Int? in
                for k in 0..<b.count where !valid.contains(b[k]) && b[k] != except { return k }
                return nil
            }
            if let k = bad { return (start + k / tokens, k % tokens, values[k]) }
            start = end
        }
        return nil
    }

    /// Per row, for `coordinator plan`: its label tokens (labels other than -100), and the tokens a
    /// micro-batch computes for it (``MicroBatch/workingLength(length:labels:)``). Reads `labels` in
    /// bounded chunks.
    public func labelSummary() throws -> (labelTokens: [Int32], workingLengths: [Int32]) {
        let step = Limits.scanRows(tokens: tokens)
        var counts: [Int32] = [], working: [Int32] = []
        counts.reserveCapacity(count)
        working.reserveCapacity(count)
        var start = 0
        while start < count {
            let end = min(count, start + step)
            let values = try labels.readRows(sorted: Array(start..<end), as: Int32.self)
            for r in 0..<(end - start) {
                let row = values[(r * tokens)..<((r + 1) * tokens)]
                counts.append(Int32(row.reduce(0) { $0 + ($1 != -100 ? 1 : 0) }))
                working.append(Int32(MicroBatch.workingLength(length: lengths[start + r], labels: row)))
            }
            start = end
        }
        return (counts, working)
    }

    /// Each row's length (real tokens), read at open: the sampler's grouping by length uses it.
    public var rowLengths: [Int32] { lengths }

    /// The image (row of `images`, 0..<imageCount) of dataset row `row`: `image_index[row]`, or `row` in a
    /// file without one. Rows with one image share its id, so anything computed from the image alone
    /// (the frozen ViT's features) can be keyed by it. The row must be in 0..<count.
    public func image(ofRow row: Int) -> Int { imageIndex.map { Int($0[row]) } ?? row }

    /// The rows of `images` that hold the images of dataset rows `rows`.
    private func imageRows(_ rows: [Int]) -> [Int] { imageIndex.map { index in rows.map { Int(index[$0]) } } ?? rows }

    /// The images of dataset rows `indices`, [B, 3, H, W] flat, in that order.
    private func readImages(_ indices: [Int]) throws -> [UInt8] { try readImages(images: imageRows(indices)) }

    /// Rows `wanted` of `images` (image ids, any order, repeats allowed), [B, 3, H, W] flat, in that order.
    private func readImages(images wanted: [Int]) throws -> [UInt8] {
        let unique = Array(Set(wanted)).sorted()
        var position: [Int: Int] = [:]
        for (p, i) in unique.enumerated() { position[i] = p }
        return gather(try images.readRows(sorted: unique, as: UInt8.self), rowSize: 3 * imageHeight * imageWidth,
                      order: wanted.map { position[$0]! })
    }

    /// Reads the rows `indices` (any order, repeats allowed) as one micro-batch in that order. The file
    /// is read in sorted order with consecutive rows coalesced into hyperslabs, then reordered.
    /// With `images: false` the images column is not read (`images` is empty): the trainer reads only the
    /// images whose features it has not cached, with `normalizedImages(images:)`.
    public func readBatch(indices: [Int], images withImages: Bool = true) throws -> MicroBatch {
        for i in indices where i < 0 || i >= count {
            throw ShardError(.badValue, "row index out of range", path: path, expected: "0..<\(count)", found: "\(i)")
        }
        let unique = Array(Set(indices)).sorted()
        var position: [Int: Int] = [:]
        for (p, i) in unique.enumerated() { position[i] = p }
        let order = indices.map { position[$0]! }

        let images = withImages ? try readImages(indices) : []
        let ids = gather(try inputIDs.readRows(sorted: unique, as: Int32.self), rowSize: tokens, order: order)
        let labs = gather(try labels.readRows(sorted: unique, as: Int32.self), rowSize: tokens, order: order)
        func pick<T>(_ column: [T]?) -> [T]? { column.map { c in indices.map { c[$0] } } }
        return MicroBatch(
            indices: indices, tokens: tokens, imageHeight: imageHeight, imageWidth: imageWidth,
            imageMean: imageMean, imageStd: imageStd, images: images, hasImage: indices.map { hasImage[$0] },
            inputIDs: ids, lengths: indices.map { lengths[$0] }, labels: labs, answer: pick(answer),
            numChoices: pick(numChoices), answerPosition: pick(answerPosition), subject: pick(subject),
            context: pick(context), grade: pick(grade))
    }

    /// The images of `indices` alone, in CLIP units [B, 3, H, W] (see `MicroBatch.normalizedImages`).
    public func normalizedImages(indices: [Int]) throws -> Tensor {
        for i in indices where i < 0 || i >= count {
            throw ShardError(.badValue, "row index out of range", path: path, expected: "0..<\(count)", found: "\(i)")
        }
        return normalize(try readImages(indices), indices: indices)
    }

    /// Images `ids` (rows of `images`, see `image(ofRow:)`) in CLIP units [B, 3, H, W].
    public func normalizedImages(images ids: [Int]) throws -> Tensor {
        for i in ids where i < 0 || i >= imageCount {
            throw ShardError(.badValue, "image id out of range", path: path, object: "/images",
                             expected: "0..<\(imageCount)", found: "\(i)")
        }
        return normalize(try readImages(images: ids), indices: ids)
    }

    private func normalize(_ pixels: [UInt8], indices: [Int]) -> Tensor {
        let batch = MicroBatch(indices: indices, tokens: tokens, imageHeight: imageHeight, imageWidth: imageWidth,
                               imageMean: imageMean, imageStd: imageStd, images: pixels, hasImage: [], inputIDs: [],
                               lengths: [], labels: [], answer: nil, numChoices: nil, answerPosition: nil,
                               subject: nil, context: nil, grade: nil)
        return batch.normalizedImages()
    }

    /// Caption evaluation files: the reference captions of each row (a JSON list per row in the
    /// variable-length UTF-8 string dataset `references` [N]); nil when the file has none.
    public func references() throws -> [String]? {
        guard file.root.contains("references") else { return nil }
        let ds = try file.root.openDataset("references")
        try ds.require(shape: [count], meaning: "N")
        return try ds.readStrings()
    }
}

/// Rows of `rowSize` elements from `rows`, picked in `order`.
private func gather<T>(_ rows: [T], rowSize: Int, order: [Int]) -> [T] {
    if rowSize == 0 || order.isEmpty { return [] }
    var out: [T] = []
    out.reserveCapacity(order.count * rowSize)
    for p in order { out.append(contentsOf: rows[(p * rowSize)..<((p + 1) * rowSize)]) }
    return out
}

/// One micro-batch of B rows, in the order they were asked for. Arrays are row-major and flat:
/// `images` [B, 3, H, W], `inputIDs` and `labels` [B, T]; the rest [B].
public struct MicroBatch: Sendable {
    /// Dataset row of each batch row.
    public var indices: [Int]
    public var tokens: Int
    public var imageHeight: Int
    public var imageWidth: Int
    public var imageMean: [Float]
    public var imageStd: [Float]
    public var images: [UInt8]
    public var hasImage: [UInt8]
    public var inputIDs: [Int32]
    public var lengths: [Int32]
    public var labels: [Int32]
    public var answer: [Int32]?
    public var numChoices: [Int32]?
    public var answerPosition: [Int32]?
    public var subject: [UInt8]?
    public var context: [UInt8]?
    public var grade: [UInt8]?

    public var count: Int { indices.count }

    /// The tokens this micro-batch needs: its longest row (a row's length, or its last label if a label
    /// lies beyond it). Rows are padded to the file's T, but a micro-batch is computed at this length,
    /// which depends only on its own rows (DESIGN.md §5).
    public var workingLength: Int {
        (0..<count).reduce(1) { longest, b in
            max(longest, Self.workingLength(length: lengths[b], labels: labels[(b * tokens)..<((b + 1) * tokens)]))
        }
    }

    /// The tokens one row needs: its `length`, or its last label + 1 if a label lies beyond it, within
    /// 1...`labels.count` (the row's padded labels).
    public static func workingLength(length: Int32, labels: ArraySlice<Int32>) -> Int {
        let last = labels.lastIndex(where: { $0 != -100 }).map { $0 - labels.startIndex + 1 } ?? 0
        return min(labels.count, max(1, Int(length), last))
    }

    /// The same rows cut to ``workingLength`` tokens (nothing but padding is dropped).
    public func trimmed() -> MicroBatch {
        let width = workingLength
        guard width < tokens else { return self }
        var out = self
        func cut(_ a: [Int32]) -> [Int32] {
            var r: [Int32] = []
            r.reserveCapacity(count * width)
            for b in 0..<count { r.append(contentsOf: a[(b * tokens)..<(b * tokens + width)]) }
            return r
        }
        out.inputIDs = cut(inputIDs)
        out.labels = cut(labels)
        out.tokens = width
        return out
    }

    /// The images in CLIP units, [B, 3, H, W]: (x/255 - mean[c]) / std[c] per channel.
    public func normalizedImages() -> Tensor {
        let plane = imageHeight * imageWidth
        let t = Tensor(zeros: [count, 3, imageHeight, imageWidth])
        images.withUnsafeBufferPointer { src in
            for b in 0..<count {
                for c in 0..<3 {
                    // x/255 then (x - mean)/std, as DESIGN §4 writes it, so results match that order exactly.
                    let mean = imageMean[c], std = imageStd[c]
                    let base = (b * 3 + c) * plane
                    for k in 0..<plane { t.data[base + k] = (Float(src[base + k]) / 255 - mean) / std }
                }
            }
        }
        return t
    }
}
