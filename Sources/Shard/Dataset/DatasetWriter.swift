/// Everything a dataset file holds (DESIGN §5), in memory: flat row-major arrays.
public struct DatasetContents: Sendable {
    public var task: DatasetTask
    public var padID: Int32
    public var imageMean: [Float]
    public var imageStd: [Float]
    /// N, T, H, W.
    public var count: Int
    public var tokens: Int
    public var imageHeight: Int
    public var imageWidth: Int
    /// [N, 3, H, W], or [I, 3, H, W] with `imageIndex`.
    public var images: [UInt8]
    /// Optional `image_index` [N]: row -> image in `images`, for rows that share images (set `images` to
    /// the I distinct images).
    public var imageIndex: [Int32]?
    public var hasImage: [UInt8]
    public var inputIDs: [Int32]
    public var lengths: [Int32]
    public var labels: [Int32]
    /// Multiple-choice only.
    public var answer: [Int32]?
    public var numChoices: [Int32]?
    public var answerPosition: [Int32]?
    public var choiceTokenIDs: [Int32]?
    /// Optional `meta/*` columns.
    public var subject: [UInt8]?
    public var context: [UInt8]?
    public var grade: [UInt8]?
    /// Optional caption references, one JSON list per row.
    public var references: [String]?

    /// An all-zero dataset of the given size; fill the arrays, then write it.
    public init(task: DatasetTask, count: Int, tokens: Int, imageHeight: Int, imageWidth: Int, padID: Int32 = 0,
                imageMean: [Float] = DatasetContents.clipMean, imageStd: [Float] = DatasetContents.clipStd) {
        self.task = task
        self.padID = padID
        self.imageMean = imageMean
        self.imageStd = imageStd
        self.count = count
        self.tokens = tokens
        self.imageHeight = imageHeight
        self.imageWidth = imageWidth
        images = Array(repeating: 0, count: count * 3 * imageHeight * imageWidth)
        hasImage = Array(repeating: 0, count: count)
        inputIDs = Array(repeating: padID, count: count * tokens)
        lengths = Array(repeating: 0, count: count)
        labels = Array(repeating: -100, count: count * tokens)
        if task == .multipleChoice {
            answer = Array(repeating: 0, count: count)
            numChoices = Array(repeating: 1, count: count)
            answerPosition = Array(repeating: 0, count: count)
            choiceTokenIDs = []
        }
    }

    /// CLIP's pixel mean and standard deviation (OpenAI CLIP preprocessing).
    public static let clipMean: [Float] = [0.48145466, 0.4578275, 0.40821073]
    public static let clipStd: [Float] = [0.26862954, 0.26130258, 0.27577711]
}

/// Writes `DatasetContents` in the DESIGN §5 format, every dataset chunked along N and Fletcher-32
/// checksummed (so a damaged byte in a file this writes fails the read instead of training on it).
public enum DatasetWriter {
    /// Rows per chunk when not given: about 64 KiB per chunk, at least one row, at most 1024. A
    /// micro-batch reads a few random rows, and HDF5 decodes (and checksums) whole chunks, so chunks
    /// stay small: one 224x224 image per chunk, 32 rows of 512 int32 tokens.
    public static func automaticChunkRows(rowBytes: Int) -> Int { max(1, min(1024, (64 << 10) / max(1, rowBytes))) }

    /// Writes `contents` to `path`, replacing it durably (`DurableFile`). `chunkRows` rows per chunk for every dataset, or
    /// `automaticChunkRows` per dataset when nil.
    public static func write(_ contents: DatasetContents, to path: String, chunkRows: Int? = nil) throws {
        let c = contents
        let n = c.count, t = c.tokens
        func size<T>(_ name: String, _ a: [T]?, _ expected: Int) throws {
            if let a, a.count != expected {
                throw ShardError(.badShape, "contents have the wrong element count", path: path, object: name,
                                 expected: "\(expected)", found: "\(a.count)")
            }
        }
        let imageBytes = 3 * c.imageHeight * c.imageWidth
        let imageCount = c.imageIndex == nil ? n : c.images.count / max(1, imageBytes)
        try size("images", c.images, imageCount * imageBytes)
        try size("image_index", c.imageIndex, n)
        try size("has_image", c.hasImage, n)
        try size("input_ids", c.inputIDs, n * t)
        try size("lengths", c.lengths, n)
        try size("labels", c.labels, n * t)
        for (name, a) in [("answer", c.answer), ("num_choices", c.numChoices), ("answer_position", c.answerPosition)] {
            try size(name, a, n)
        }
        for (name, a) in [("meta/subject", c.subject), ("meta/context", c.context), ("meta/grade", c.grade)] {
            try size(name, a, n)
        }
        try size("references", c.references, n)
        if c.task == .multipleChoice && (c.answer == nil || c.numChoices == nil || c.answerPosition == nil
                                         || c.choiceTokenIDs == nil) {
            throw ShardError(.missingDataset, "a multiple-choice dataset needs answer, num_choices, answer_position "
                             + "and choice_token_ids", path: path)
        }

        // Durably, under a temporary name: on any error the file is closed, the temporary removed, and a
        // file already at `path` left as it was.
        try DurableFile.write(path) { tmp in try HDF5File.create(tmp) { file in
            let root = file.root
            try root.setAttribute("format", string: DatasetFile.format)
            try root.setAttribute("version", int: DatasetFile.version)
            try root.setAttribute("task", string: c.task.rawValue)
            try root.setAttribute("pad_id", int: Int64(c.padID))
            try root.setAttribute("image_mean", floats: c.imageMean)
            try root.setAttribute("image_std", floats: c.imageStd)

            func rows(_ rowBytes: Int, of count: Int = n) -> Int {
                max(1, min(chunkRows ?? automaticChunkRows(rowBytes: rowBytes), count))
            }
            let imageRows = rows(imageBytes, of: imageCount), tokenRows = rows(4 * t)
            let byteRows = rows(1), intRows = rows(4)
            try root.write("images", c.images, shape: [imageCount, 3, c.imageHeight, c.imageWidth],
                           chunk: [imageRows, 3, c.imageHeight, c.imageWidth], fletcher32: true)
            if let index = c.imageIndex { try root.write("image_index", index, shape: [n], chunk: [intRows], fletcher32: true) }
            try root.write("has_image", c.hasImage, shape: [n], chunk: [byteRows], fletcher32: true)
            try root.write("input_ids", c.inputIDs, shape: [n, t], chunk: [tokenRows, t], fletcher32: true)
            try root.write("lengths", c.lengths, shape: [n], chunk: [intRows], fletcher32: true)
            try root.write("labels", c.labels, shape: [n, t], chunk: [tokenRows, t], fletcher32: true)
            if c.task == .multipleChoice, let answer = c.answer, let numChoices = c.numChoices,
               let answerPosition = c.answerPosition, let choiceTokenIDs = c.choiceTokenIDs {
                try root.write("answer", answer, shape: [n], chunk: [intRows], fletcher32: true)
                try root.write("num_choices", numChoices, shape: [n], chunk: [intRows], fletcher32: true)
                try root.write("answer_position", answerPosition, shape: [n], chunk: [intRows], fletcher32: true)
                try root.write("choice_token_ids", choiceTokenIDs, shape: [choiceTokenIDs.count], fletcher32: true)
            }
            if c.subject != nil || c.context != nil || c.grade != nil {
                let meta = try root.createGroup("meta")
                if let v = c.subject { try meta.write("subject", v, shape: [n], chunk: [byteRows], fletcher32: true) }
                if let v = c.context { try meta.write("context", v, shape: [n], chunk: [byteRows], fletcher32: true) }
                if let v = c.grade { try meta.write("grade", v, shape: [n], chunk: [byteRows], fletcher32: true) }
            }
            if let refs = c.references { try root.writeStrings("references", refs) }
        } }
    }
}
