import Foundation

/// A blocking queue that merges what a shell waits for — socket events, finished computations, signals —
/// into one loop on one thread. Producers `post` from any thread; the loop `wait`s with a deadline so it
/// can also run its timers (heartbeats, timeouts).
public final class EventQueue<Event>: @unchecked Sendable {
    private let condition = NSCondition()
    private var items: [Event] = []

    public init() {}

    public func post(_ e: Event) {
        condition.lock()
        items.append(e)
        condition.signal()
        condition.unlock()
    }

    /// Everything posted so far, waiting up to `timeoutMs` for the first item.
    public func wait(timeoutMs: Int64) -> [Event] {
        condition.lock()
        defer { condition.unlock() }
        if items.isEmpty {
            _ = condition.wait(until: Date().addingTimeInterval(Double(max(timeoutMs, 0)) / 1000))
        }
        defer { items.removeAll() }
        return items
    }
}

extension SocketThread {
    /// Forwards this socket's events into `queue` (from a detached task that lives as long as the stream).
    public func forward<E>(into queue: EventQueue<E>, _ wrap: @escaping @Sendable (SocketThread.Event) -> E) {
        let stream = events
        Task.detached {
            for await e in stream { queue.post(wrap(e)) }
        }
    }
}

/// Milliseconds on the monotonic clock the shells pass to the state machines.
public func monotonicMillis() -> Millis { Millis(DispatchTime.now().uptimeNanoseconds / 1_000_000) }
