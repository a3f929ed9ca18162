import Cluster
import Foundation

/// A blocking queue that merges what a shell waits for — socket events, finished computations, signals —
/// into one loop on one thread. Producers `post` from any thread; the loop `wait`s until the next
/// deadline its state machines name (a heartbeat, a timeout) or until something is posted.
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

    /// Everything posted so far, waiting for the first item until `deadline` on the ``monotonicMillis()``
    /// clock (nil: until an item comes). Returns an empty list when the deadline passes first.
    public func wait(until deadline: Millis?) -> [Event] {
        condition.lock()
        defer { condition.unlock() }
        while items.isEmpty {
            guard let deadline else {
                condition.wait()
                continue
            }
            let left = deadline - monotonicMillis()
            if left <= 0 { break }
            _ = condition.wait(until: Date().addingTimeInterval(Double(left) / 1000))
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
