import CZeroMQ
import Cluster
import Foundation

/// One ZeroMQ socket living on its own dedicated thread for its whole life (ZeroMQ sockets are not
/// thread-safe), bridged to async code: incoming messages arrive on ``events``, outgoing ones go
/// through a locked mailbox that any thread may fill with ``send(_:to:)``. The thread sleeps in
/// `zmq_poll` on the socket and on a pipe that ``send(_:to:)`` writes to wake it, so it never spins and
/// the cooperative thread pool never blocks on `zmq_recv`.
///
/// ```swift
/// let router = try SocketThread(name: "coordinator", context: ctx, type: .router, bind: "tcp://127.0.0.1:*")
/// for await event in router.events {
///     if case .message(let from, _, let frames) = event { let e = try WireCodec.decode(frames); ... }
/// }
/// router.send(envelope, to: identity)
/// ```
public final class SocketThread: @unchecked Sendable {
    public enum Event: Sendable {
        /// A whole multipart message; `identity` is the ROUTER's routing frame (nil on a DEALER), `userID`
        /// the ZAP User-Id of the connection it came on (under CURVE: the key file that admitted the peer).
        case message(identity: [UInt8]?, userID: String?, frames: [ZMQMessage])
        /// Messages that arrived while ``events`` held ``SocketOptions/eventLimit`` undelivered ones, and
        /// were dropped (a consumer that falls behind, or a flood).
        case dropped(Int)
        /// A send that ZeroMQ refused (unknown peer under ROUTER_MANDATORY, full queue): the message is dropped.
        case sendFailed(identity: [UInt8]?, ZMQError)
        /// The receive side failed; the thread stops.
        case failed(ZMQError)
    }

    public enum Target: Sendable {
        case bind(String)
        case connect(String)
    }

    public let events: AsyncStream<Event>
    /// The endpoint bound or connected (with the real port after binding `:*`).
    public let endpoint: String
    public let name: String
    private let mailbox: Mailbox

    /// Creates the socket on a new thread, applies `options`, binds or connects, and returns once that
    /// is done (throwing its error, e.g. address in use).
    public init(name: String, context: ZMQContext, type: SocketType, options: SocketOptions = .init(),
                _ target: Target) throws {
        self.name = name
        let (stream, continuation) = AsyncStream.makeStream(of: Event.self, bufferingPolicy: .bufferingOldest(options.eventLimit))
        events = stream
        let mailbox = try Mailbox(continuation, filter: options.incomingFilter)
        self.mailbox = mailbox

        do {
            endpoint = try SocketOwnerThread.start(name: "zmq-\(name)", finished: mailbox.finished, make: {
                let socket = try ZMQSocket(context, type)
                try socket.apply(options, type: type)
                switch target {
                case .bind(let e): try socket.bind(e)
                case .connect(let e): try socket.connect(e)
                }
                return (socket, socket.lastEndpoint)
            }, serve: { socket in
                mailbox.run(socket, isRouter: type == .router)
            })
        } catch {
            mailbox.markJoined()
            continuation.finish()
            throw error
        }
    }

    deinit { stop() }

    /// Queues a message for the socket thread. Never blocks on the network.
    public func send(_ frames: [WireFrame], to identity: [UInt8]? = nil) {
        mailbox.post(frames, to: identity)
    }

    /// Encodes and queues an envelope.
    public func send(_ envelope: Envelope, to identity: [UInt8]? = nil) {
        send(WireCodec.encode(envelope), to: identity)
    }

    /// Sends what is queued, closes the socket (waiting at most its linger time) and ends ``events``.
    /// Waits for the thread to finish; safe to call more than once.
    public func stop() { mailbox.stop() }
}

/// The state shared between callers and the socket thread: the outbox, the stop flag, the wake pipe.
private final class Mailbox: @unchecked Sendable {
    let continuation: AsyncStream<SocketThread.Event>.Continuation
    let filter: SocketOptions.IncomingFilter?
    /// Messages the full stream refused since the last report.
    var dropped = 0
    let lock = NSLock()
    var outbox: [(identity: [UInt8]?, frames: [WireFrame])] = []
    var stopping = false
    var joined = false
    let wakeRead: Int32
    let wakeWrite: Int32
    let finished = DispatchSemaphore(value: 0)

    init(_ continuation: AsyncStream<SocketThread.Event>.Continuation, filter: SocketOptions.IncomingFilter?) throws {
        self.continuation = continuation
        self.filter = filter
        var fds: [Int32] = [0, 0]
        guard pipe(&fds) == 0 else { throw ZMQError("pipe", code: errno) }
        _ = fcntl(fds[0], F_SETFL, fcntl(fds[0], F_GETFL) | O_NONBLOCK)
        _ = fcntl(fds[1], F_SETFL, fcntl(fds[1], F_GETFL) | O_NONBLOCK)
        wakeRead = fds[0]
        wakeWrite = fds[1]
    }

    deinit {
        close(wakeRead)
        close(wakeWrite)
    }

    func markJoined() {
        lock.lock()
        stopping = true
        joined = true
        lock.unlock()
    }

    func post(_ frames: [WireFrame], to identity: [UInt8]?) {
        lock.lock()
        let accepted = !stopping
        if accepted { outbox.append((identity, frames)) }
        lock.unlock()
        if accepted { wake() }
    }

    func stop() {
        lock.lock()
        let already = joined
        stopping = true
        joined = true
        lock.unlock()
        if already { return }
        wake()
        finished.wait()
    }

    func wake() {
        var b: UInt8 = 1
        _ = write(wakeWrite, &b, 1)  // EAGAIN means a wake-up is already pending: fine
    }

    func run(_ socket: ZMQSocket, isRouter: Bool) {
        var items = [
            zmq_pollitem_t(socket: socket.handle, fd: 0, events: Int16(ZMQ_POLLIN), revents: 0),
            zmq_pollitem_t(socket: nil, fd: wakeRead, events: Int16(ZMQ_POLLIN), revents: 0),
        ]
        var drain = [UInt8](repeating: 0, count: 64)
        loop: while true {
            if zmq_poll(&items, 2, -1) < 0 {
                if zmq_errno() == EINTR { continue }
                continuation.yield(.failed(ZMQError("zmq_poll")))
                break
            }
            if items[1].revents != 0 {
                while read(wakeRead, &drain, drain.count) > 0 {}
            }
            lock.lock()
            let batch = outbox
            outbox.removeAll()
            let stop = stopping
            lock.unlock()
            for (identity, frames) in batch {
                do { try socket.send(frames, identity: identity) } catch let e as ZMQError {
                    deliver(.sendFailed(identity: identity, e))
                } catch {}
            }
            if stop { break loop }
            // zmq_poll may report a ZeroMQ socket readable spuriously; receive() returns nil then.
            while true {
                do {
                    guard var frames = try socket.receive() else { break }
                    var identity: [UInt8]?
                    if isRouter, !frames.isEmpty { identity = frames.removeFirst().bytes }
                    let userID = frames.first?.userID
                    // Refused here, on the socket's thread, a message is released before anything else
                    // sees it: a stranger's frames never queue up in the process.
                    if let filter, !filter(identity, userID, frames) { continue }
                    deliver(.message(identity: identity, userID: userID, frames: frames))
                } catch let e as ZMQError {
                    continuation.yield(.failed(e))
                    break loop
                } catch { break loop }
            }
        }
        continuation.finish()
    }

    /// Yields an event, counting what a full stream drops and reporting the count once it has room.
    private func deliver(_ event: SocketThread.Event) {
        if dropped > 0, case .enqueued = continuation.yield(.dropped(dropped)) { dropped = 0 }
        if case .dropped = continuation.yield(event) { dropped += 1 }
    }
}
