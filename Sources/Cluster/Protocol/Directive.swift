import Model

/// What the coordinator-side state machines (``Membership``, ``StepScheduler``) ask their shell to do.
public enum Directive: Sendable, Equatable {
    public enum Level: Sendable, Equatable { case debug, info, warning }

    /// Send this envelope to that worker.
    case send(to: WorkerID, Envelope)
    case log(Level, String)
    case workerJoined(WorkerID, name: String)
    /// Silent for longer than `timeout_ms`: its work must go to others (``StepScheduler/workerGone(_:now:)``).
    case workerDied(WorkerID, name: String)
    /// Said Bye.
    case workerLeft(WorkerID, name: String)
    /// Broke the protocol (a result it was not given, an invalid record, no answer within the work
    /// deadline): taken out of the job and refused; its work goes to others.
    case workerEvicted(WorkerID, reason: String)
    /// A micro-batch failed ``StepScheduler/Policy/maxFailures`` times or on every live worker: the job
    /// cannot go on; the reasons say why (a bad row, a full disk, diverged training).
    case stepFailed(step: UInt64, microBatch: UInt32, reasons: [String])
    /// Every micro-batch of the step has exactly one accepted result; here they are, in micro-batch order.
    case stepComplete(step: UInt64, results: [WorkResult])
    /// Every unit of an evaluation (its envelope step, ``evaluationStep(_:)``) has exactly one accepted
    /// result; here they are, in unit order.
    case evaluationComplete(step: UInt64, results: [EvalResult])
}
