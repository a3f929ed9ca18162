import Cluster
import Foundation
import Transport

/// What came back to a rogue socket: a message that decoded with the project's codec, or one that did
/// not (the rogue never trusts the coordinator's bytes either).
enum Reply {
    case envelope(Envelope)
    case undecodable(String)

    var refusal: String? {
        if case .envelope(let e) = self, case .refuse(let reason) = e.message { return reason }
        return nil
    }

    var summary: String {
        switch self {
        case .undecodable(let why): return "an undecodable message (\(why))"
        case .envelope(let e):
            switch e.message {
            case .refuse(let reason): return "Refuse: \(Sanitized.text(reason, limit: 240))"
            case .welcome(let w):
                return "Welcome (step \(e.step), config \(w.configJSON.utf8.count) bytes, \(w.params.count) parameter tensors)"
            case .work(let w): return "Work (step \(e.step), micro-batch \(w.microBatch))"
            default: return "\(e.message.kind) (step \(e.step))"
            }
        }
    }
}

/// One DEALER connection to the coordinator with a routing id the rogue chooses, through the project's
/// own socket thread and codec. Under CURVE it authenticates with the key it is given.
final class Peer {
    let routingID: String
    private let socket: SocketThread
    private let queue = EventQueue<SocketThread.Event>()

    init(context: ZMQContext, endpoint: String, routingID: String, curve: CurveRole?) throws {
        self.routingID = routingID
        var options = SocketOptions()
        options.routingID = Array(routingID.utf8)
        options.curve = curve
        socket = try SocketThread(name: "rogue-\(routingID)", context: context, type: .dealer, options: options, .connect(endpoint))
        socket.forward(into: queue) { $0 }
    }

    deinit { socket.stop() }

    func send(_ e: Envelope) { socket.send(e) }

    /// Raw frames, as they are: garbage, truncated or oversized.
    func send(raw frames: [[UInt8]]) { socket.send(frames.map { .bytes($0) }) }

    /// Everything that arrives within `ms` (or until `stop` says so), decoded where it can be.
    func replies(within ms: Millis, until stop: (Reply) -> Bool = { _ in false }) -> [Reply] {
        var out: [Reply] = []
        let deadline = monotonicMillis() + ms
        while monotonicMillis() < deadline, !Rogue.stopping {
            // Wake at least every 200 ms to see a stop signal.
            for event in queue.wait(until: min(deadline, monotonicMillis() + 200)) {
                guard case .message(_, _, let frames) = event else { continue }
                let reply: Reply
                do { reply = .envelope(try WireCodec.decode(frames)) } catch { reply = .undecodable("\(error)") }
                out.append(reply)
                if stop(reply) { return out }
            }
        }
        return out
    }

    func close() { socket.stop() }
}
