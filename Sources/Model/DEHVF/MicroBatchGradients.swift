/// One micro-batch's contribution to a step (DESIGN.md §4): the summed token loss, the number of label
/// tokens, and the summed gradient of every trainable tensor, never a mean (the step divides by the
/// global batch's label count).
///
/// The one gradient record of the project: ``DEHVFModel/gradients(_:params:dropout:)`` makes it, a
/// worker sends it inside a `WorkResult`, the coordinator's exact sum combines a step's records into one,
/// and `TrainState.apply` takes that.
public struct MicroBatchGradients: Sendable, Equatable {
    public var lossSum: Double
    public var labelCount: Int64
    public var grads: TensorSet

    public init(lossSum: Double, labelCount: Int64, grads: TensorSet) {
        self.lossSum = lossSum
        self.labelCount = labelCount
        self.grads = grads
    }

    /// Whether the loss sum and every gradient element are finite.
    public var isFinite: Bool {
        lossSum.isFinite && grads.allSatisfy { $0.tensor.buffer.allSatisfy(\.isFinite) }
    }

    /// Bitwise: the loss sum's bits, the count, and every gradient's bits.
    public static func == (a: MicroBatchGradients, b: MicroBatchGradients) -> Bool {
        a.lossSum.bitPattern == b.lossSum.bitPattern && a.labelCount == b.labelCount && a.grads == b.grads
    }
}
