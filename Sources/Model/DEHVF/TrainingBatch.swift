/// One micro-batch of text with its images' candidate features, as the model consumes it.
public struct TrainingBatch {
    /// T: padded tokens per row.
    public var tokens: Int
    /// [B * T] each, row-major.
    public var inputIDs: [Int32]
    public var labels: [Int32]
    public var lengths: [Int32]
    /// Dataset indices (they key dropout masks).
    public var sampleIndices: [Int]
    /// Candidate features [S, M, Dv] per sample, nil for a sample without an image.
    public var features: [Tensor?]

    public init(tokens: Int, inputIDs: [Int32], labels: [Int32], lengths: [Int32], sampleIndices: [Int], features: [Tensor?]) {
        self.tokens = tokens
        self.inputIDs = inputIDs
        self.labels = labels
        self.lengths = lengths
        self.sampleIndices = sampleIndices
        self.features = features
    }

    public var batch: Int { sampleIndices.count }
}
