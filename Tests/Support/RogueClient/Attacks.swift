import Cluster
import Foundation
import Model
import Transport

/// Every attack the rogue knows, in the order it cycles through them.
enum Attack: CaseIterable, CustomStringConvertible {
    // As a stranger (never joined): none of these may get past the socket thread, except a Hello.
    case garbage, helloGarbageBody, truncatedHeader, oversizedFrame, strangerResult, strangerFailed
    case probeFlood, oldProtocolHeader, oldProtocolHello, wrongComputeID
    // With CURVE on: a key that is not listed, and the rogue's listed key under a real worker's routing id.
    case unlistedKey, impersonation
    // As an admitted member (the job's real fingerprint and compute id).
    case resultNotGiven, failedNotGiven, resultNaN, resultHuge, resultUnknownName, resultWrongShape, resultLabelCount
    case holdWithoutAnswering

    var description: String {
        switch self {
        case .garbage: "garbage frames"
        case .helloGarbageBody: "a Hello header with a garbage body"
        case .truncatedHeader: "a truncated header"
        case .oversizedFrame: "a frame larger than the job's largest"
        case .strangerResult: "a Result from a peer that never joined"
        case .strangerFailed: "a Failed from a peer that never joined"
        case .probeFlood: "a probe Hello flood"
        case .oldProtocolHeader: "a Hello with header version 1"
        case .oldProtocolHello: "a Hello saying protocol version 1"
        case .wrongComputeID: "a Hello with the right fingerprint and a wrong compute id"
        case .unlistedKey: "a CURVE key that is not listed"
        case .impersonation: "the rogue's listed key under a real worker's routing id"
        case .resultNotGiven: "a member's Result for a micro-batch it was not given"
        case .failedNotGiven: "a member's Failed for a micro-batch it was not given"
        case .resultNaN: "a member's Result with a NaN"
        case .resultHuge: "a member's Result with 1e30"
        case .resultUnknownName: "a member's Result with an unknown tensor name"
        case .resultWrongShape: "a member's Result with a wrong shape"
        case .resultLabelCount: "a member's Result with label count Int64.max"
        case .holdWithoutAnswering: "a member holding its micro-batch, heartbeating only"
        }
    }

    var needsCurve: Bool { self == .unlistedKey || self == .impersonation }

    /// Whether the coordinator counts this attack as a failure of the micro-batch held (an invalid result,
    /// a missed deadline). Three failures of one micro-batch in one step end the job by design (a row no
    /// worker can compute), so the rogue spoils a step at most once: an insider that wants the job dead
    /// can have it, and this soak is about everything else.
    var failsTheMicroBatch: Bool {
        switch self {
        case .resultNaN, .resultHuge, .resultUnknownName, .resultWrongShape, .resultLabelCount, .holdWithoutAnswering: true
        default: false
        }
    }
}

/// The attacker: one fresh socket per attack (a new routing id, so nothing carries over), tallies of what
/// each attack got back.
final class Rogue {
    /// Set by SIGTERM/SIGINT: finish the attack in hand (its waits end within 200 ms) and stop.
    static var stopping: Bool { Interruption.signal != nil }
    static let started = monotonicMillis()

    static func say(_ line: String) {
        let t = Double(monotonicMillis() - started) / 1000
        FileHandle.standardError.write(Data("rogue: [\(String(format: "%6.1f", t))s] \(line)\n".utf8))
    }

    let context: ZMQContext
    let endpoint: String
    let curve: CurveRole?
    let unlisted: CurveRole?
    let insider: Insider
    let impersonate: [String]
    let attacks: [Attack]
    private var rng: SplitMix
    private var serial = 0
    private var tally: [Attack: (count: Int, outcomes: [String: Int])] = [:]
    /// Steps in which an attack made a micro-batch fail (see ``Attack/failsTheMicroBatch``).
    private var spoiled: Set<UInt64> = []

    init(endpoint: String, curve: CurveRole?, unlisted: CurveRole?, insider: Insider, impersonate: [String], seed: UInt64) throws {
        context = try ZMQContext()
        self.endpoint = endpoint
        self.curve = curve
        self.unlisted = unlisted
        self.insider = insider
        self.impersonate = impersonate
        rng = SplitMix(seed)
        attacks = Attack.allCases.filter { a in
            if a == .unlistedKey { return curve != nil }
            if a == .impersonation { return curve != nil && !impersonate.isEmpty }
            return true
        }
    }

    func perform(_ attack: Attack, until end: Millis) {
        serial += 1
        let outcome: String
        do { outcome = try run(attack, until: end) } catch { outcome = "could not attack: \(error)" }
        tally[attack, default: (0, [:])].count += 1
        tally[attack]!.outcomes[outcome, default: 0] += 1
    }

    func summary() {
        let total = tally.values.reduce(0) { $0 + $1.count }
        Rogue.say("summary: \(total) attacks, \(Set(tally.keys).count) of \(attacks.count) kinds")
        for a in attacks {
            guard let t = tally[a] else {
                Rogue.say("summary: \(a): not reached")
                continue
            }
            let outcomes = t.outcomes.sorted { $0.value > $1.value }.map { "\($0.value) x \($0.key)" }.joined(separator: "; ")
            Rogue.say("summary: \(a): \(t.count) (\(outcomes))")
        }
    }

    // MARK: the attacks

    private func peer(_ name: String, curve: CurveRole?? = nil) throws -> Peer {
        try Peer(context: context, endpoint: endpoint, routingID: name, curve: curve ?? self.curve)
    }

    private var fullHello: Hello {
        Hello(workerName: "rogue", backbone: insider.fingerprint, computeID: insider.computeID)
    }

    /// Logs what came back and returns the outcome to tally.
    private func report(_ attack: Attack, _ sent: String, _ replies: [Reply], expected: String) -> String {
        let got = replies.isEmpty ? "nothing came back" : replies.map(\.summary).joined(separator: " | ")
        Rogue.say("#\(serial) \(attack): \(sent); \(got)")
        if let r = replies.compactMap(\.refusal).first { return "refused: " + Self.gist(r) }
        return replies.isEmpty ? expected : replies.map { $0.summary.prefix(40) }.joined(separator: ", ")
    }

    /// The first words of a refusal, without the numbers that change between occurrences.
    static func gist(_ reason: String) -> String {
        let words = reason.split(separator: " ").prefix(9).map { $0.allSatisfy { $0.isNumber || $0 == "," } ? "N" : String($0) }
        return Sanitized.text(words.joined(separator: " "), limit: 90)
    }

    private func run(_ attack: Attack, until end: Millis) throws -> String {
        let name = "stranger-\(serial)"
        switch attack {
        case .garbage:
            let p = try peer(name)
            let frames: [[[UInt8]]] = [[bytes(1 + rng.below(200))], [bytes(24), bytes(rng.below(64))],
                                       [bytes(3), bytes(3), bytes(3)], []]
            for f in frames where !f.isEmpty { p.send(raw: f) }
            return report(attack, "sent 3 messages of random bytes", p.replies(within: 400), expected: "no reply (dropped unread)")
        case .helloGarbageBody:
            let p = try peer(name)
            p.send(raw: [header(kind: .hello), bytes(16 + rng.below(64))])
            return report(attack, "sent a valid Hello header and 16+ random bytes", p.replies(within: 400),
                          expected: "no reply (decoded as a Hello, dropped as malformed)")
        case .truncatedHeader:
            let p = try peer(name)
            p.send(raw: [Array(header(kind: .result).prefix(10)), bytes(8)])
            return report(attack, "sent a 10-byte header and a body", p.replies(within: 400), expected: "no reply (dropped unread)")
        case .oversizedFrame:
            let p = try peer(name)
            let size = Int(insider.maxFrameBytes) + 1
            p.send(raw: [header(kind: .hello), [UInt8](repeating: 0x41, count: size)])
            let first = p.replies(within: 500)
            // The DEALER reconnects by itself: a probe on the same socket shows the coordinator still serves.
            p.send(Envelope(jobID: 0, step: 0, .hello(Hello(workerName: "probe", backbone: "", computeID: 0))))
            let after = p.replies(within: 2000) { if case .envelope(let e) = $0, case .welcome = e.message { true } else { false } }
            let outcome = report(attack, "sent a \(size)-byte frame (the coordinator's ZMQ_MAXMSGSIZE is \(insider.maxFrameBytes)), "
                                 + "then a probe Hello on the same socket", first + after, expected: "")
            return first.isEmpty ? (after.isEmpty ? "no reply, not even to the probe after it" : "no reply; the probe after it was answered")
                : outcome
        case .strangerResult:
            let p = try peer(name)
            p.send(Envelope(jobID: insider.jobID, step: 0, .result(WorkResult(microBatch: 0, gradients: grads()))))
            return report(attack, "sent a well-formed Result for micro-batch 0", p.replies(within: 400), expected: "no reply (dropped unread)")
        case .strangerFailed:
            let p = try peer(name)
            p.send(Envelope(jobID: insider.jobID, step: 0, .failed(Failed(microBatch: 0, reason: "rogue"))))
            return report(attack, "sent a Failed for micro-batch 0", p.replies(within: 400), expected: "no reply (dropped unread)")
        case .probeFlood:
            return probeFlood()
        case .oldProtocolHeader:
            let p = try peer(name)
            p.send(Envelope(jobID: 0, step: 0, .hello(fullHello), version: 1))
            return report(attack, "sent a Hello with header version 1", p.replies(within: 1500) { $0.refusal != nil }, expected: "no reply")
        case .oldProtocolHello:
            let p = try peer(name)
            var h = fullHello
            h.protocolVersion = 1
            p.send(Envelope(jobID: 0, step: 0, .hello(h)))
            return report(attack, "sent a Hello whose body says protocol version 1", p.replies(within: 1500) { $0.refusal != nil },
                          expected: "no reply")
        case .wrongComputeID:
            let p = try peer(name)
            var h = fullHello
            h.computeID ^= 0x5eed
            p.send(Envelope(jobID: 0, step: 0, .hello(h)))
            return report(attack, "sent a Hello with the job's fingerprint and compute id xor 0x5eed",
                          p.replies(within: 1500) { $0.refusal != nil }, expected: "no reply")
        case .unlistedKey:
            let p = try peer(name, curve: .some(unlisted))
            p.send(Envelope(jobID: 0, step: 0, .hello(fullHello)))
            return report(attack, "sent the job's Hello over CURVE with a fresh key", p.replies(within: 800),
                          expected: "no reply (refused by ZAP in the handshake)")
        case .impersonation:
            let id = impersonate[serial % impersonate.count]
            let p = try peer(id)
            p.send(Envelope(jobID: 0, step: 0, .hello(fullHello)))
            let replies = p.replies(within: 1500) { if case .envelope(let e) = $0 { e.message.kind == .refuse || e.message.kind == .welcome } else { false } }
            for case .envelope(let e) in replies {
                guard case .welcome = e.message else { continue }
                // Nobody held that routing id at this moment (its worker was restarting): leave at once.
                p.send(Envelope(jobID: e.jobID, step: e.step, .bye(unfinished: [])))
                Thread.sleep(forTimeInterval: 0.05)
            }
            return report(attack, "presented routing id \(id) with the rogue's key", replies, expected: "no reply")
        case .resultNotGiven, .failedNotGiven, .resultNaN, .resultHuge, .resultUnknownName, .resultWrongShape, .resultLabelCount,
             .holdWithoutAnswering:
            return try member(attack, until: end)
        }
    }

    private func probeFlood() -> String {
        let n = 24
        var peers: [Peer] = []
        for i in 0..<n {
            guard let p = try? peer("probe-\(serial)-\(i)") else { continue }
            p.send(Envelope(jobID: 0, step: 0, .hello(Hello(workerName: "probe-\(i)", backbone: "", computeID: 0))))
            peers.append(p)
        }
        let deadline = monotonicMillis() + 3000
        var welcomes = 0, withParams = 0, leaks = 0, other: [String] = []
        for p in peers {
            let replies = p.replies(within: max(1, deadline - monotonicMillis())) {
                if case .envelope(let e) = $0, case .welcome = e.message { true } else { false }
            }
            for r in replies {
                if case .envelope(let e) = r, case .welcome(let w) = e.message {
                    welcomes += 1
                    if !w.params.isEmpty { withParams += 1 }
                    if w.configJSON.contains(insider.fingerprint) { leaks += 1 }
                } else {
                    other.append(r.summary)
                }
            }
        }
        for p in peers { p.close() }
        Rogue.say("#\(serial) \(Attack.probeFlood): \(peers.count) routing ids each sent a probe Hello; \(welcomes) Welcomes came back, "
            + "\(withParams) with parameters, \(leaks) naming the fingerprint" + (other.isEmpty ? "" : "; also \(other)"))
        return welcomes == 0 ? "no Welcome" : (withParams + leaks == 0 ? "Welcomes with the worker part only" : "Welcome leaked parameters or fingerprint")
    }

    /// Joins as a member (the real fingerprint and compute id), waits for a Work, then misbehaves.
    private func member(_ attack: Attack, until end: Millis) throws -> String {
        let p = try peer("rogue-\(serial)")
        defer { p.close() }
        p.send(Envelope(jobID: 0, step: 0, .hello(fullHello)))
        let admission = p.replies(within: 3000) {
            if case .envelope(let e) = $0 { e.message.kind == .welcome || e.message.kind == .refuse } else { false }
        }
        let welcome = admission.lazy.compactMap { r -> Envelope? in
            if case .envelope(let e) = r, case .welcome = e.message { return e } else { return nil }
        }.first
        guard let welcome else {
            return report(attack, "said Hello with the job's fingerprint and compute id; not admitted", admission, expected: "no answer to Hello")
        }
        // The job id as the coordinator says it (a --set on its command line may change it), as a worker takes it.
        let job = welcome.jobID
        // A member must heartbeat, or it is declared dead before it misbehaves.
        var step: UInt64 = 0
        func waitForWork(_ ms: Millis) -> (UInt64, Work)? {
            let deadline = min(monotonicMillis() + ms, end + 2000)
            while monotonicMillis() < deadline, !Rogue.stopping {
                p.send(Envelope(jobID: job, step: step, .heartbeat))
                for r in p.replies(within: insider.heartbeatMs, until: { if case .envelope(let e) = $0 { e.message.kind == .work } else { false } }) {
                    guard case .envelope(let e) = r else { continue }
                    step = max(step, e.step)
                    if case .work(let w) = e.message { return (e.step, w) }
                    if case .refuse = e.message { return nil }
                }
            }
            return nil
        }
        guard let (workStep, work) = waitForWork(5000) else {
            p.send(Envelope(jobID: job, step: step, .bye(unfinished: [])))
            Rogue.say("#\(serial) \(attack): admitted, but no Work came within 5 s; left with Bye")
            return "admitted; no work came"
        }
        let held = work.microBatch
        if attack.failsTheMicroBatch {
            if spoiled.contains(workStep) {
                p.send(Envelope(jobID: job, step: step, .bye(unfinished: [held])))
                Rogue.say("#\(serial) \(attack): given micro-batch \(held) of step \(workStep), which it already made fail once; left with Bye")
                return "declined (step already spoiled once)"
            }
            spoiled.insert(workStep)
        }
        let other = insider.microBatches > 1 ? (held + 1) % UInt32(insider.microBatches) : held + 1
        var forged: Envelope?
        var sent: String
        switch attack {
        case .resultNotGiven:
            // Poisoned too: were it ever taken as the holder's, the values would still be refused.
            forged = result(job, workStep, other, grads(poison: .nan))
            sent = "held micro-batch \(held) of step \(workStep), sent a Result for micro-batch \(other)"
        case .failedNotGiven:
            forged = Envelope(jobID: job, step: workStep, .failed(Failed(microBatch: other, reason: "rogue")))
            sent = "held micro-batch \(held) of step \(workStep), sent a Failed for micro-batch \(other)"
        case .resultNaN:
            forged = result(job, workStep, held, grads(poison: .nan))
            sent = "sent a Result for its micro-batch \(held) of step \(workStep) with a NaN"
        case .resultHuge:
            forged = result(job, workStep, held, grads(poison: 1e30))
            sent = "sent a Result for its micro-batch \(held) of step \(workStep) with 1e30"
        case .resultUnknownName:
            var g = grads(poison: .nan)
            var entries = g.grads.entries
            entries[0].name = "rogue.extra"
            g.grads = TensorSet(entries)
            forged = result(job, workStep, held, g)
            sent = "sent a Result for its micro-batch \(held) of step \(workStep) naming a tensor rogue.extra"
        case .resultWrongShape:
            var g = grads(poison: .nan)
            var entries = g.grads.entries
            let t = entries[0].tensor
            entries[0].tensor = Tensor(zeros: t.shape.count > 1 ? [t.count] : [t.count, 1])
            g.grads = TensorSet(entries)
            forged = result(job, workStep, held, g)
            sent = "sent a Result for its micro-batch \(held) of step \(workStep) with \(entries[0].name) shaped \(entries[0].tensor.shape)"
        case .resultLabelCount:
            var g = grads(poison: .nan)
            g.labelCount = .max
            forged = result(job, workStep, held, g)
            sent = "sent a Result for its micro-batch \(held) of step \(workStep) with label count Int64.max"
        case .holdWithoutAnswering:
            sent = "held micro-batch \(held) of step \(workStep) and only heartbeated"
        default:
            return "not a member attack"
        }
        if let forged {
            p.send(forged)
            return report(attack, sent, p.replies(within: 3000) { $0.refusal != nil }, expected: "no reply (not evicted)")
        }
        // Heartbeat, hold every micro-batch given, answer none: the work deadline must evict it.
        var held_ = 1
        var refusals: [Reply] = []
        let deadline = min(monotonicMillis() + 4 * insider.workTimeoutMs + 10_000, end + 5000)
        while monotonicMillis() < deadline, refusals.isEmpty, !Rogue.stopping {
            p.send(Envelope(jobID: job, step: step, .heartbeat))
            for r in p.replies(within: insider.heartbeatMs, until: { $0.refusal != nil }) {
                if r.refusal != nil { refusals.append(r) }
                if case .envelope(let e) = r {
                    step = max(step, e.step)
                    if case .work = e.message {
                        held_ += 1
                        if spoiled.contains(e.step) {
                            // Its deadline would be a second failure in that step: leave instead.
                            p.send(Envelope(jobID: job, step: e.step, .bye(unfinished: [])))
                            Rogue.say("#\(serial) \(attack): given work in step \(e.step), already spoiled once; left with Bye")
                            return "declined (step already spoiled once)"
                        }
                        spoiled.insert(e.step)
                    }
                }
            }
        }
        return report(attack, sent + " (\(held_) Work message(s) held in all)", refusals, expected: "no reply (not evicted)")
    }

    // MARK: forging

    private func result(_ job: UInt64, _ step: UInt64, _ mb: UInt32, _ g: MicroBatchGradients) -> Envelope {
        Envelope(jobID: job, step: step, .result(WorkResult(microBatch: mb, gradients: g, computeSeconds: 0.01)))
    }

    /// A record shaped like the job's, with `poison` as the first gradient element.
    private func grads(poison: Float = 0) -> MicroBatchGradients {
        let set = TensorSet.zeros(like: insider.parameters)
        if let first = set.first, first.tensor.count > 0 { first.tensor.data[0] = poison }
        return MicroBatchGradients(lossSum: 1, labelCount: 1, grads: set)
    }

    private func header(kind: MessageKind) -> [UInt8] {
        WireCodec.encode(Envelope(jobID: insider.jobID, step: 0, .heartbeat))[0].bytes.enumerated().map { $0.offset == 6 ? kind.rawValue : $0.element }
    }

    private func bytes(_ n: Int) -> [UInt8] { (0..<n).map { _ in UInt8(truncatingIfNeeded: rng.next()) } }
}

/// A small seeded generator for the garbage (reproducible per --seed).
struct SplitMix {
    var state: UInt64
    init(_ seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9e37_79b9_7f4a_7c15
        var z = state
        z = (z ^ (z >> 30)) &* 0xbf58_476d_1ce4_e5b9
        z = (z ^ (z >> 27)) &* 0x94d0_49bb_1331_11eb
        return z ^ (z >> 31)
    }
    mutating func below(_ n: Int) -> Int { Int(next() % UInt64(max(n, 1))) }
}
