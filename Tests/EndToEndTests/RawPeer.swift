import Cluster
import Foundation
import Model
import TestSupport
import Transport

/// A raw ZeroMQ DEALER that speaks the wire protocol as the tests choose: an attacker on a real socket.
final class RawPeer {
    let context: ZMQContext
    let socket: SocketThread
    let queue = EventQueue<SocketThread.Event>()
    /// Decoded messages taken from the queue and not yet handed out (a wait returns several at once).
    private var pending: [Envelope] = []

    init(_ endpoint: String, routingID: String, curve: CurveRole? = nil) throws {
        context = try ZMQContext()
        var o = SocketOptions()
        o.routingID = Array(routingID.utf8)
        o.curve = curve
        socket = try SocketThread(name: routingID, context: context, type: .dealer, options: o, .connect(endpoint))
        socket.forward(into: queue) { $0 }
    }

    func send(_ e: Envelope) { socket.send(e) }
    func send(_ frames: [WireFrame]) { socket.send(frames) }

    /// The next envelope from the coordinator, or nil after `seconds`.
    func next(seconds: Double = 10) -> Envelope? {
        let deadline = monotonicMillis() + Millis(seconds * 1000)
        while pending.isEmpty && monotonicMillis() < deadline {
            for event in queue.wait(until: deadline) {
                if case .message(_, _, let frames) = event, let e = try? WireCodec.decode(frames) { pending.append(e) }
            }
        }
        return pending.isEmpty ? nil : pending.removeFirst()
    }

    /// Waits for a message matching `match`, skipping heartbeats and the rest.
    func await<T>(seconds: Double = 20, _ match: (Envelope) -> T?) -> T? {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            guard let e = next(seconds: deadline.timeIntervalSinceNow) else { return nil }
            if let t = match(e) { return t }
        }
        return nil
    }

    deinit { socket.stop() }
}

/// The fingerprint and compute id of a job file, as an insider holding the same files computes them.
func insiderIdentity(job: String) throws -> (fingerprint: String, computeID: UInt64) {
    let config = try JobConfig.load(file: job)
    let fingerprint = BackboneFingerprint.pair(
        vision: try VisionBackboneDirectory.open(URL(fileURLWithPath: config.model.vision.path)).fingerprint(),
        language: try LanguageBackboneDirectory.open(URL(fileURLWithPath: config.model.language.path)).fingerprint())
    return (fingerprint, config.computeID)
}

/// Resident memory of a process in bytes (Linux /proc).
func residentBytes(pid: Int32) -> Int {
    guard let text = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8),
          let line = text.split(separator: "\n").first(where: { $0.hasPrefix("VmRSS:") }),
          let kb = Int(line.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first ?? "") else { return 0 }
    return kb * 1024
}

/// The pids of a process's children (Linux /proc).
func childPIDs(of pid: Int32) -> [Int32] {
    let text = (try? String(contentsOfFile: "/proc/\(pid)/task/\(pid)/children", encoding: .utf8)) ?? ""
    return text.split(separator: " ").compactMap { Int32($0) }
}

func isAlive(_ pid: Int32) -> Bool {
    guard kill(pid, 0) == 0 else { return false }
    // A zombie (exited, not yet reaped) counts as gone.
    let stat = (try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8)) ?? ""
    return !stat.contains(") Z ")
}
