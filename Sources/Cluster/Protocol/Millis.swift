import Dispatch

/// Milliseconds on a monotonic clock. The state machines never read a clock: the shells pass `now`
/// (from ``monotonicMillis()``) into every handler, so the machines are tested without sleeps.
public typealias Millis = Int64

/// Milliseconds on the monotonic clock the shells pass to the state machines.
public func monotonicMillis() -> Millis { Millis(DispatchTime.now().uptimeNanoseconds / 1_000_000) }
