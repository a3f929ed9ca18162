import CZeroMQ
import Cluster
import Foundation
import Model

/// A failed ZeroMQ call: the operation, errno and libzmq's text.
public struct ZMQError: Error, Sendable, Equatable, CustomStringConvertible {
    public var operation: String
    public var code: Int32
    public var message: String

    init(_ operation: String, code: Int32 = zmq_errno()) {
        self.operation = operation
        self.code = code
        self.message = String(cString: zmq_strerror(code))
    }

    public var description: String { "\(operation): \(message) (errno \(code))" }
}

/// A ZeroMQ context, terminated in `deinit` (after every socket holding it has closed).
public final class ZMQContext: @unchecked Sendable {
    let handle: UnsafeMutableRawPointer

    public init() throws {
        guard let h = zmq_ctx_new() else { throw ZMQError("zmq_ctx_new") }
        handle = h
    }

    deinit { zmq_ctx_term(handle) }
}

/// One received frame, owned (closed in `deinit`); its bytes are read without a copy.
public final class ZMQMessage: @unchecked Sendable, WireFrameBytes {
    let msg: UnsafeMutablePointer<zmq_msg_t>

    init() {
        msg = .allocate(capacity: 1)
        zmq_msg_init(msg)
    }

    deinit {
        zmq_msg_close(msg)
        msg.deallocate()
    }

    public var count: Int { zmq_msg_size(msg) }

    public func withWireBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        try body(UnsafeRawBufferPointer(start: zmq_msg_data(msg), count: zmq_msg_size(msg)))
    }

    public var bytes: [UInt8] { withWireBytes { Array($0) } }

    /// The ZAP User-Id of the connection this frame came on (under CURVE, what the ZAP handler named the
    /// peer's key), or nil.
    public var userID: String? {
        guard let p = zmq_msg_gets(msg, "User-Id") else { return nil }
        let s = String(cString: p)
        return s.isEmpty ? nil : s
    }
}

/// Socket options applied before bind/connect.
public struct SocketOptions: Sendable {
    /// Decides on the socket's thread whether a received message is delivered: (routing id, ZAP User-Id,
    /// frames) → keep it. A coordinator drops strangers' messages here, before they queue up.
    public typealias IncomingFilter = @Sendable (_ identity: [UInt8]?, _ userID: String?, _ frames: [ZMQMessage]) -> Bool

    /// ZMQ_MAXMSGSIZE: a peer sending a larger frame is disconnected (-1: no limit).
    public var maxMessageBytes: Int64 = 1 << 30
    /// Undelivered events ``SocketThread/events`` holds before it drops new messages.
    public var eventLimit = 4096
    public var incomingFilter: IncomingFilter?
    /// ZMQ_LINGER: how long unsent messages delay close.
    public var lingerMs: Int32 = 200
    /// ZMQ_RECONNECT_IVL and ZMQ_RECONNECT_IVL_MAX: the DEALER's reconnect backoff.
    public var reconnectIvlMs: Int32 = 100
    public var reconnectIvlMaxMs: Int32 = 5000
    /// ZMQ_ROUTER_MANDATORY: sending to an unknown identity is an error (reported), not a silent drop.
    public var routerMandatory = true
    /// ZMQ_ROUTER_HANDOVER: a new connection presenting a routing identity already in use takes it over.
    /// Without it the ROUTER silently ignores the newcomer while the old connection lingers, so a worker
    /// that reconnects after a network partition is locked out until the coordinator's TCP stack gives
    /// up on the old connection (its next retransmission after the heal: seconds to minutes).
    public var routerHandover = true
    /// ZMQ_HEARTBEAT_IVL / ZMQ_HEARTBEAT_TIMEOUT (ZMTP-level pings), off when nil.
    public var heartbeatIvlMs: Int32? = nil
    public var heartbeatTimeoutMs: Int32? = nil
    /// ZMQ_ROUTING_ID of a DEALER (otherwise the ROUTER makes one up).
    public var routingID: [UInt8]? = nil
    public var curve: CurveRole? = nil

    public init() {}
}

/// CURVE configuration of a socket.
public enum CurveRole: Sendable {
    /// ROUTER side: the coordinator's key pair; clients are vetted by the ``ZAPHandler``.
    case server(CurveKeyPair)
    /// DEALER side: the worker's own key pair and the coordinator's public key (Z85).
    case client(CurveKeyPair, serverPublicKey: String)
}

public enum SocketType: Sendable {
    case router, dealer, rep, pair
    var raw: Int32 {
        switch self {
        case .router: ZMQ_ROUTER
        case .dealer: ZMQ_DEALER
        case .rep: ZMQ_REP
        case .pair: ZMQ_PAIR
        }
    }
}

/// An owned ZeroMQ socket, closed in `deinit`.
///
/// - warning: Not thread-safe (ZeroMQ sockets are not). Create, use and release it on one thread;
///   ``SocketThread`` does that for you.
public final class ZMQSocket {
    let handle: UnsafeMutableRawPointer
    let context: ZMQContext  // keeps the context alive until the socket is closed

    public init(_ context: ZMQContext, _ type: SocketType) throws {
        guard let h = zmq_socket(context.handle, type.raw) else { throw ZMQError("zmq_socket") }
        self.handle = h
        self.context = context
    }

    deinit { zmq_close(handle) }

    public func set(_ option: Int32, _ value: Int32, _ name: String) throws {
        var v = value
        if zmq_setsockopt(handle, option, &v, MemoryLayout<Int32>.size) != 0 { throw ZMQError("set \(name)") }
    }

    public func set(_ option: Int32, int64 value: Int64, _ name: String) throws {
        var v = value
        if zmq_setsockopt(handle, option, &v, MemoryLayout<Int64>.size) != 0 { throw ZMQError("set \(name)") }
    }

    public func set(_ option: Int32, bytes: [UInt8], _ name: String) throws {
        let rc = bytes.withUnsafeBytes { zmq_setsockopt(handle, option, $0.baseAddress, $0.count) }
        if rc != 0 { throw ZMQError("set \(name)") }
    }

    public func apply(_ o: SocketOptions, type: SocketType) throws {
        try set(ZMQ_MAXMSGSIZE, int64: o.maxMessageBytes, "ZMQ_MAXMSGSIZE")
        try set(ZMQ_LINGER, o.lingerMs, "ZMQ_LINGER")
        try set(ZMQ_RECONNECT_IVL, o.reconnectIvlMs, "ZMQ_RECONNECT_IVL")
        try set(ZMQ_RECONNECT_IVL_MAX, o.reconnectIvlMaxMs, "ZMQ_RECONNECT_IVL_MAX")
        if type == .router, o.routerMandatory { try set(ZMQ_ROUTER_MANDATORY, 1, "ZMQ_ROUTER_MANDATORY") }
        if type == .router, o.routerHandover { try set(ZMQ_ROUTER_HANDOVER, 1, "ZMQ_ROUTER_HANDOVER") }
        if let hb = o.heartbeatIvlMs { try set(ZMQ_HEARTBEAT_IVL, hb, "ZMQ_HEARTBEAT_IVL") }
        if let ht = o.heartbeatTimeoutMs { try set(ZMQ_HEARTBEAT_TIMEOUT, ht, "ZMQ_HEARTBEAT_TIMEOUT") }
        if let id = o.routingID { try set(ZMQ_ROUTING_ID, bytes: id, "ZMQ_ROUTING_ID") }
        switch o.curve {
        case nil: break
        case .server(let keys)?:
            try set(ZMQ_CURVE_SERVER, 1, "ZMQ_CURVE_SERVER")
            try set(ZMQ_CURVE_SECRETKEY, bytes: Array(keys.secretKey.utf8), "ZMQ_CURVE_SECRETKEY")
            // A domain makes ZeroMQ consult the ZAP handler for every connection.
            try set(ZMQ_ZAP_DOMAIN, bytes: Array("dehvf".utf8), "ZMQ_ZAP_DOMAIN")
        case .client(let keys, let server)?:
            try set(ZMQ_CURVE_SERVERKEY, bytes: Array(server.utf8), "ZMQ_CURVE_SERVERKEY")
            try set(ZMQ_CURVE_PUBLICKEY, bytes: Array(keys.publicKey.utf8), "ZMQ_CURVE_PUBLICKEY")
            try set(ZMQ_CURVE_SECRETKEY, bytes: Array(keys.secretKey.utf8), "ZMQ_CURVE_SECRETKEY")
        }
    }

    public func bind(_ endpoint: String) throws {
        if zmq_bind(handle, endpoint) != 0 { throw ZMQError("bind \(endpoint)") }
    }

    public func connect(_ endpoint: String) throws {
        if zmq_connect(handle, endpoint) != 0 { throw ZMQError("connect \(endpoint)") }
    }

    /// The endpoint actually bound (resolves `tcp://127.0.0.1:*` to the ephemeral port).
    public var lastEndpoint: String {
        var buf = [CChar](repeating: 0, count: 256)
        var len = buf.count
        guard zmq_getsockopt(handle, ZMQ_LAST_ENDPOINT, &buf, &len) == 0 else { return "" }
        return String(cString: buf)
    }

    /// Sends a multipart message without blocking; tensor frames are handed to ZeroMQ without a copy.
    ///
    /// - warning: A tensor sent here must not be modified until ZeroMQ has transmitted it (it keeps a
    ///   reference and frees nothing); send a copy of anything you will change in place.
    public func send(_ frames: [WireFrame], identity: [UInt8]? = nil) throws {
        var parts = frames
        if let identity { parts.insert(.bytes(identity), at: 0) }
        for (i, f) in parts.enumerated() {
            let flags = ZMQ_DONTWAIT | (i < parts.count - 1 ? ZMQ_SNDMORE : 0)
            switch f {
            case .bytes(let b):
                let rc = b.withUnsafeBytes { zmq_send(handle, $0.baseAddress, $0.count, flags) }
                if rc < 0 { throw ZMQError("send") }
            case .tensor(let t):
                var msg = zmq_msg_t()
                let bytes = t.count * 4
                if bytes == 0 {
                    zmq_msg_init_size(&msg, 0)
                } else {
                    let hint = Unmanaged.passRetained(t).toOpaque()
                    let rc = zmq_msg_init_data(&msg, t.data, bytes, { _, hint in
                        Unmanaged<Tensor>.fromOpaque(hint!).release()
                    }, hint)
                    if rc != 0 {
                        Unmanaged<Tensor>.fromOpaque(hint).release()
                        throw ZMQError("zmq_msg_init_data")
                    }
                }
                if zmq_msg_send(&msg, handle, flags) < 0 {
                    let err = ZMQError("send")
                    zmq_msg_close(&msg)
                    throw err
                }
            }
        }
    }

    /// Receives one whole multipart message, or nil if none is waiting.
    public func receive() throws -> [ZMQMessage]? {
        var frames: [ZMQMessage] = []
        while true {
            let m = ZMQMessage()
            if zmq_msg_recv(m.msg, handle, frames.isEmpty ? ZMQ_DONTWAIT : 0) < 0 {
                let e = zmq_errno()
                if e == EAGAIN && frames.isEmpty { return nil }
                throw ZMQError("receive", code: e)
            }
            frames.append(m)
            if zmq_msg_more(m.msg) == 0 { return frames }
        }
    }
}
