import Cluster
import Foundation

/// A blocking queue that merges what a shell waits for — socket events, finished computations, signals —
/// into one loop on one thread. Producers `post` from any thread; the loop `wait`s until the next
/// deadline its state machines name (a heartbeat, a timeout) or until something is posted.
///
/// Bounded: beyond `limit` waiting items, a droppable post (a socket's message) is refused and counted,
/// while the few events that must not be lost (signals, a finished computation) are always taken.
public final class EventQueue<Event>: @unchecked Sendable {
    private let condition = NSCondition()
    private var items: [Event] = []
    public let limit: Int
    /// Droppable posts refused so far.
    public private(set) var dropped = 0

    public init(limit: Int = 4096) { self.limit = limit }

    /// Queues `e`; returns false (and counts it) if it is droppable and the queue is full.
    @discardableResult
    public func post(_ e: Event, droppable: Bool = false) -> Bool {
        condition.lock()
        defer { condition.unlock() }
        if droppable && items.count >= limit {
            dropped += 1
            return false
        }
        items.append(e)
        condition.signal()
        return true
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
            for await e in stream { queue.post(wrap(e), droppable: true) }
        }
    }
}
