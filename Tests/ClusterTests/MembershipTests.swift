import Cluster
import Model
import TestSupport
import Testing

@Suite("Membership state machine")
struct MembershipTests {
    let a = WorkerID("a"), b = WorkerID("b")

    @Test("joins, heartbeats every heartbeat_ms, death after timeout_ms of silence")
    func lifecycle() {
        var m = Membership(jobID: 5, heartbeatMs: 100, timeoutMs: 350)
        #expect(m.join(a, name: "wa", now: 0).contains(.workerJoined(a, name: "wa")))
        _ = m.join(b, name: "wb", now: 10)
        #expect(m.live == [a, b])
        #expect(m.tick(now: 50).isEmpty)
        m.step = 4
        let beats = m.tick(now: 100)
        #expect(beats == [.send(to: a, Envelope(jobID: 5, step: 4, .heartbeat)), .send(to: b, Envelope(jobID: 5, step: 4, .heartbeat))])
        #expect(m.tick(now: 150).isEmpty)
        // b keeps talking, a is silent.
        _ = m.heard(from: b, now: 300)
        #expect(!m.tick(now: 350).contains(.workerDied(a, name: "wa")))  // exactly the timeout: not yet
        let later = m.tick(now: 351)
        #expect(later.contains(.workerDied(a, name: "wa")))
        #expect(!later.contains { if case .workerDied(let id, _) = $0 { id == b } else { false } })
        #expect(m.live == [b])
        #expect(m.nextDeadline != nil)
    }

    @Test("Bye leaves; messages from non-members are logged, not trusted")
    func byeAndStrangers() {
        var m = Membership(jobID: 1, heartbeatMs: 100, timeoutMs: 300)
        _ = m.join(a, name: "wa", now: 0)
        #expect(m.leave(a, now: 5).contains(.workerLeft(a, name: "wa")))
        #expect(m.live.isEmpty)
        #expect(m.leave(a, now: 6).isEmpty)
        let d = m.heard(from: b, now: 7)
        #expect(d.count == 1)
        if case .log = d.first {} else { Issue.record("expected a log directive") }
        #expect(m.tick(now: 10_000).allSatisfy { if case .send = $0 { false } else { true } })
    }

    @Test("a stalled shell does not burst missed heartbeats")
    func noBurst() {
        var m = Membership(jobID: 1, heartbeatMs: 100, timeoutMs: 10_000)
        _ = m.join(a, name: "wa", now: 0)
        #expect(m.tick(now: 1000).count == 1)
        #expect(m.tick(now: 1001).isEmpty)
        #expect(m.tick(now: 1100).count == 1)
    }
}

@Suite("Worker connection state machine")
struct WorkerConnectionTests {
    let hello = Hello(workerName: "w", backbone: "fp", computeID: 1)

    func welcome(job: UInt64 = 9, step: UInt64 = 3) -> Envelope {
        Envelope(jobID: job, step: step, .welcome(Welcome(configJSON: "{}", params: TensorSet())))
    }

    @Test("connect, join, heartbeat, lose the coordinator, back off exponentially (capped), rejoin")
    func lifecycle() {
        var c = WorkerConnection(hello: hello, heartbeatMs: 100, timeoutMs: 300, backoffBaseMs: 50, backoffCapMs: 300)
        #expect(c.start(now: 0) == [.connect, .send(Envelope(jobID: 0, step: 0, .hello(hello)))])
        let j = c.received(welcome(), now: 10)
        #expect(j.contains(.joined(jobID: 9, step: 3, Welcome(configJSON: "{}", params: TensorSet()))))
        #expect(c.state == .joined(jobID: 9, lastHeard: 10))
        #expect(c.tick(now: 110) == [.send(Envelope(jobID: 9, step: 3, .heartbeat))])
        _ = c.received(Envelope(jobID: 9, step: 4, .heartbeat), now: 200)
        #expect(c.tick(now: 500).isEmpty == false)  // 300 ms since 200: not yet lost, but a heartbeat is due
        #expect(c.state == .joined(jobID: 9, lastHeard: 200))
        // Silent past the timeout: lost, retry after base backoff.
        #expect(c.tick(now: 501).contains(.disconnect))
        #expect(c.state == .lost(attempt: 0, retryAt: 551))
        #expect(c.tick(now: 550).isEmpty)
        #expect(c.tick(now: 551).first == .connect)
        // Hello unanswered: each failure doubles the wait, up to the cap.
        var waits: [Millis] = []
        var now: Millis = 551
        for _ in 0..<5 {
            now += 301
            _ = c.tick(now: now)
            guard case .lost(_, let retryAt) = c.state else { Issue.record("expected lost, got \(c.state)"); return }
            waits.append(retryAt - now)
            now = retryAt
            #expect(c.tick(now: now).first == .connect)
        }
        #expect(waits == [100, 200, 300, 300, 300])
        // A resumed coordinator welcomes us again.
        _ = c.received(welcome(step: 40), now: now + 1)
        #expect(c.jobID == 9 && c.step == 40)
        #expect(c.backoff(attempt: 1) == 50)
    }

    @Test("refusal and stop end the connection; other jobs' messages are dropped")
    func refusal() {
        var c = WorkerConnection(hello: hello, heartbeatMs: 100, timeoutMs: 300)
        _ = c.start(now: 0)
        let d = c.received(Envelope(jobID: 9, step: 0, .refuse(reason: "wrong backbone")), now: 1)
        #expect(d == [.stop(.refused("wrong backbone"))])
        #expect(c.tick(now: 10_000).isEmpty)

        var k = WorkerConnection(hello: hello, heartbeatMs: 100, timeoutMs: 300)
        _ = k.start(now: 0)
        _ = k.received(welcome(), now: 1)
        let other = k.received(Envelope(jobID: 8, step: 99, .heartbeat), now: 2)
        #expect(other.count == 1 && k.step == 3)
        #expect(k.leave(unfinished: [2]) == [.send(Envelope(jobID: 9, step: 3, .bye(unfinished: [2])))])
        #expect(k.state == .stopped(.left))
    }
}
