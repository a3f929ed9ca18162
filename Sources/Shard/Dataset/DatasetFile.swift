import Model

/// What a dataset file trains: DESIGN §5 `task`.
public enum DatasetTask: String, Sendable, CaseIterable {
    case multipleChoice = "multiple-choice"
    case caption
}

/// A dataset file (DESIGN §5), validated completely when opened so that a bad file fails before
/// training starts, naming the file, the dataset, the expected and the found type or shape.
///
/// The small per-row columns (`has_image`, `lengths`, the multiple-choice columns, `meta/*`) are read
/// and range-checked at open and served from memory; `images`, `input_ids` and `labels` are read per
/// batch. Safe to share between threads: every HDF5 call is serialised by the wrapper's lock.
public final class DatasetFile: @unchecked Sendable {
    public static let format = "dehvf-dataset"
    public static let version: Int64 = 1

    public let path: String
    public let task: DatasetTask
    /// N, the number of rows.
    public let count: Int
    /// T, tokens per row.
    public let tokens: Int
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

    /// Opens and validates `path`. Throws `ShardError` for a missing file, a damaged file, or any missing,
    /// mistyped or misshapen attribute or dataset.
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

        // Shapes: N from images, everything else must agree with it.
        let images = try root.openDataset("images")
        try images.require(.uint8)
        try images.require(shape: [nil, 3, nil, nil], meaning: "N, 3, H, W")
        let n = images.shape[0]
        self.images = images
        self.count = n
        self.imageHeight = images.shape[2]
        self.imageWidth = images.shape[3]

        let inputIDs = try root.openDataset("input_ids")
        try inputIDs.require(.int32)
        try inputIDs.require(shape: [n, nil], meaning: "N, T")
        let t = inputIDs.shape[1]
        self.inputIDs = inputIDs
        self.tokens = t
        let labels = try root.openDataset("labels")
        try labels.require(.int32)
        try labels.require(shape: [n, t], meaning: "N, T")
        self.labels = labels

        func column<T: HDF5Element>(_ group: HDF5Group, _ name: String, _ type: T.Type) throws -> [T] {
            let ds = try group.openDataset(name)
            try ds.require(T.hdf5Type)
            try ds.require(shape: [n], meaning: "N")
            return try ds.readAll(as: T.self)
        }
        func outOfRange(_ name: String, row: Int, expected: String, found: String) -> ShardError {
            ShardError(.badValue, "value out of range at row \(row)", path: path, object: "/\(name)",
                       expected: expected, found: found)
        }

        let hasImage = try column(root, "has_image", UInt8.self)
        if let r = hasImage.firstIndex(where: { $0 > 1 }) {
            throw outOfRange("has_image", row: r, expected: "0 or 1", found: "\(hasImage[r])")
        }
        self.hasImage = hasImage
        let lengths = try column(root, "lengths", Int32.self)
        if let r = lengths.firstIndex(where: { $0 < 0 || Int($0) > t }) {
            throw outOfRange("lengths", row: r, expected: "0...\(t)", found: "\(lengths[r])")
        }
        self.lengths = lengths

        if task == .multipleChoice {
            let choices = try root.openDataset("choice_token_ids")
            try choices.require(.int32)
            try choices.require(shape: [nil], meaning: "C")
            let choiceIds = try choices.readAll(as: Int32.self)
            let c = choiceIds.count
            let answer = try column(root, "answer", Int32.self)
            let numChoices = try column(root, "num_choices", Int32.self)
            let answerPosition = try column(root, "answer_position", Int32.self)
            for r in 0..<n {
                if numChoices[r] < 1 || Int(numChoices[r]) > c {
                    throw outOfRange("num_choices", row: r, expected: "1...\(c) (C = choice_token_ids count)",
                                     found: "\(numChoices[r])")
                }
                if answer[r] < 0 || answer[r] >= numChoices[r] {
                    throw outOfRange("answer", row: r, expected: "0..<\(numChoices[r])", found: "\(answer[r])")
                }
                if answerPosition[r] < 0 || Int(answerPosition[r]) >= t {
                    throw outOfRange("answer_position", row: r, expected: "0..<\(t)", found: "\(answerPosition[r])")
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

        if root.contains("meta") {
            let meta = try root.openGroup("meta")
            func optionalMeta(_ name: String, limit: UInt8) throws -> [UInt8]? {
                guard meta.contains(name) else { return nil }
                let v = try column(meta, name, UInt8.self)
                if let r = v.firstIndex(where: { $0 > limit }) {
                    throw outOfRange("meta/\(name)", row: r, expected: "0...\(limit)", found: "\(v[r])")
                }
                return v
            }
            self.subject = try optionalMeta("subject", limit: 2)
            self.context = try optionalMeta("context", limit: 2)
            self.grade = try optionalMeta("grade", limit: 1)
        } else {
            self.subject = nil
            self.context = nil
            self.grade = nil
        }
    }

    /// Reads the rows `indices` (any order, repeats allowed) as one micro-batch in that order. The file
    /// is read in sorted order with consecutive rows coalesced into hyperslabs, then reordered.
    /// With `images: false` the images column is not read (`images` is empty): the trainer reads only the
    /// images whose features it has not cached, with `normalizedImages(indices:)`.
    public func readBatch(indices: [Int], images withImages: Bool = true) throws -> MicroBatch {
        for i in indices where i < 0 || i >= count {
            throw ShardError(.badValue, "row index out of range", path: path, expected: "0..<\(count)", found: "\(i)")
        }
        let unique = Array(Set(indices)).sorted()
        var position: [Int: Int] = [:]
        for (p, i) in unique.enumerated() { position[i] = p }
        let order = indices.map { position[$0]! }

        let imageRow = 3 * imageHeight * imageWidth
        let images = withImages ? gather(try self.images.readRows(sorted: unique, as: UInt8.self), rowSize: imageRow, order: order) : []
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
        let unique = Array(Set(indices)).sorted()
        var position: [Int: Int] = [:]
        for (p, i) in unique.enumerated() { position[i] = p }
        let pixels = gather(try images.readRows(sorted: unique, as: UInt8.self), rowSize: 3 * imageHeight * imageWidth,
                            order: indices.map { position[$0]! })
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
