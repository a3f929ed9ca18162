import CZeroMQ
import Cluster
import Foundation

/// The ZeroMQ authentication handler (ZAP, RFC 27) for a CURVE server: on its own thread it answers
/// `inproc://zeromq.zap.01` in the server's context, admitting only the listed client public keys.
///
/// Start it before the CURVE ROUTER binds, in the same ``ZMQContext``: without a handler, libzmq admits
/// every CURVE client.
public final class ZAPHandler: @unchecked Sendable {
    /// One authentication decision (the shell logs refusals).
    public struct Decision: Sendable, Equatable {
        public var admitted: Bool
        /// Z85 public key of the client, or "" for a non-CURVE attempt.
        public var publicKey: String
        /// The file that listed the key, when admitted.
        public var keyFile: String?
        /// The client's IP address.
        public var address: String
        public var mechanism: String
    }

    public static let endpoint = "inproc://zeromq.zap.01"
    private let stopFlag = StopFlag()
    private let finished = DispatchSemaphore(value: 0)

    /// Binds the handler in `context`. `allowed` maps Z85 public keys to where they came from (see
    /// ``Curve/allowedKeys(directory:)``); `onDecision` is called on the handler's thread.
    public init(context: ZMQContext, allowed: [String: String], onDecision: @escaping @Sendable (Decision) -> Void) throws {
        let flag = stopFlag
        do {
            try SocketOwnerThread.start(name: "zmq-zap", finished: finished, make: {
                let socket = try ZMQSocket(context, .rep)
                try socket.set(ZMQ_LINGER, 0, "ZMQ_LINGER")
                try socket.bind(Self.endpoint)
                return (socket, ())
            }, serve: { socket in
                Self.serve(socket, allowed: allowed, stop: flag, onDecision: onDecision)
            })
        } catch {
            stopFlag.set()
            throw error
        }
    }

    /// Loads the allowed keys from a directory of `*.key` files (`security.allowed_workers`); a directory
    /// without one is an error (``CurveError/Code/noAllowedKeys``), not a job no worker can ever join.
    public convenience init(context: ZMQContext, allowedDirectory: String, onDecision: @escaping @Sendable (Decision) -> Void) throws {
        try self.init(context: context, allowed: Curve.allowedKeys(directory: allowedDirectory), onDecision: onDecision)
    }

    deinit { stop() }

    /// Stops the handler thread (it notices within 100 ms) and waits for it.
    public func stop() {
        if stopFlag.set() { finished.wait() }
    }

    private static func serve(_ socket: ZMQSocket, allowed: [String: String], stop: StopFlag,
                              onDecision: @Sendable (Decision) -> Void) {
        var item = zmq_pollitem_t(socket: socket.handle, fd: 0, events: Int16(ZMQ_POLLIN), revents: 0)
        while !stop.isSet {
            // The short timeout is how the thread sees stop(); ZAP requests are rare, so this costs nothing.
            if zmq_poll(&item, 1, 100) <= 0 { continue }
            guard let request = try? socket.receive() else { continue }
            let f = request.map(\.bytes)
            // version, request id, domain, address, routing id, mechanism, credentials...
            guard f.count >= 6 else { continue }
            let requestID = f[1]
            let address = String(decoding: f[3], as: UTF8.self)
            let mechanism = String(decoding: f[5], as: UTF8.self)
            var key = ""
            var file: String?
            if mechanism == "CURVE", f.count >= 7, let z = Curve.encodeZ85(f[6]) {
                key = z
                file = allowed[z]
            }
            let ok = file != nil
            onDecision(Decision(admitted: ok, publicKey: key, keyFile: file, address: address, mechanism: mechanism))
            let reply: [[UInt8]] = [
                Array("1.0".utf8), requestID, Array((ok ? "200" : "400").utf8),
                Array((ok ? "OK" : "public key not in the allowed workers directory").utf8),
                Array((file ?? "").utf8), [],
            ]
            try? socket.send(reply.map { .bytes($0) })
        }
    }
}

/// A set-once flag readable from any thread.
final class StopFlag: @unchecked Sendable {
    private let lock = NSLock()
    private var value = false
    var isSet: Bool { lock.lock(); defer { lock.unlock() }; return value }
    /// Sets the flag; true if this call set it.
    @discardableResult func set() -> Bool {
        lock.lock(); defer { lock.unlock() }
        if value { return false }
        value = true
        return true
    }
}
