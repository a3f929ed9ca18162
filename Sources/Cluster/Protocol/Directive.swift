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
    /// Every micro-batch of the step has exactly one accepted result; here they are, in micro-batch order.
    case stepComplete(step: UInt64, results: [WorkResult])
}
