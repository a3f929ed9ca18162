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
///     if case .message(let from, let frames) = event { let e = try WireCodec.decode(frames); ... }
/// }
/// router.send(envelope, to: identity)
/// ```
public final class SocketThread: @unchecked Sendable {
    public enum Event: Sendable {
        /// A whole multipart message; `identity` is the ROUTER's routing frame (nil on a DEALER).
        case message(identity: [UInt8]?, frames: [ZMQMessage])
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
        let (stream, continuation) = AsyncStream.makeStream(of: Event.self, bufferingPolicy: .unbounded)
        events = stream
        let mailbox = try Mailbox(continuation)
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
    let lock = NSLock()
    var outbox: [(identity: [UInt8]?, frames: [WireFrame])] = []
    var stopping = false
    var joined = false
    let wakeRead: Int32
    let wakeWrite: Int32
    let finished = DispatchSemaphore(value: 0)

    init(_ continuation: AsyncStream<SocketThread.Event>.Continuation) throws {
        self.continuation = continuation
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
                    continuation.yield(.sendFailed(identity: identity, e))
                } catch {}
            }
            if stop { break loop }
            // zmq_poll may report a ZeroMQ socket readable spuriously; receive() returns nil then.
            while true {
                do {
                    guard var frames = try socket.receive() else { break }
                    var identity: [UInt8]?
                    if isRouter, !frames.isEmpty { identity = frames.removeFirst().bytes }
                    continuation.yield(.message(identity: identity, frames: frames))
                } catch let e as ZMQError {
                    continuation.yield(.failed(e))
                    break loop
                } catch { break loop }
            }
        }
        continuation.finish()
    }
}
