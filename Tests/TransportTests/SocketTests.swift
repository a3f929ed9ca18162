import CZeroMQ
import Cluster
import Foundation
import Model
import TestSupport
import Testing
import Transport

/// Drains a socket's event stream in the background (cancelling an AsyncStream consumer would end
/// the stream, so one long-lived consumer per socket) and lets tests wait for matching events.
final class Inbox: @unchecked Sendable {
    private let lock = NSLock()
    private var events: [SocketThread.Event] = []
    private var task: Task<Void, Never>?

    init(_ socket: SocketThread) {
        let stream = socket.events
        task = Task.detached { [weak self] in
            for await e in stream {
                guard let self else { return }
                self.lock.withLock { self.events.append(e) }
            }
        }
    }

    /// Removes and returns everything received so far.
    func drain() -> [SocketThread.Event] {
        lock.withLock {
            defer { events.removeAll() }
            return events
        }
    }

    /// Removes and returns the first event matching `match`, waiting up to `timeout` seconds.
    func first(timeout: Double = 5, where match: (SocketThread.Event) -> Bool) async -> SocketThread.Event? {
        let deadline = Date().addingTimeInterval(timeout)
        while true {
            let found: SocketThread.Event? = lock.withLock {
                guard let i = events.firstIndex(where: match) else { return nil }
                return events.remove(at: i)
            }
            if let found { return found }
            if Date() > deadline { return nil }
            try? await Task.sleep(nanoseconds: 5_000_000)
        }
    }
}

func firstEvent(_ inbox: Inbox, timeout: Double = 5, where match: (SocketThread.Event) -> Bool) async -> SocketThread.Event? {
    await inbox.first(timeout: timeout, where: match)
}

func isMessage(_ e: SocketThread.Event) -> Bool { if case .message = e { true } else { false } }

/// Collects ZAP decisions from the handler's thread.
final class DecisionLog: @unchecked Sendable {
    private let lock = NSLock()
    private var items: [ZAPHandler.Decision] = []
    func add(_ d: ZAPHandler.Decision) { lock.lock(); items.append(d); lock.unlock() }
    var all: [ZAPHandler.Decision] { lock.lock(); defer { lock.unlock() }; return items }
}

@Suite("ZeroMQ sockets on 127.0.0.1", .serialized)
struct SocketTests {
    @Test("ROUTER/DEALER round trip of a real message with tensors, both ways")
    func roundTrip() async throws {
        let ctx = try ZMQContext()
        let router = try SocketThread(name: "router", context: ctx, type: .router, .bind("tcp://127.0.0.1:*"))
        let routerIn = Inbox(router)
        #expect(router.endpoint.hasPrefix("tcp://127.0.0.1:") && !router.endpoint.hasSuffix(":*"))
        var opts = SocketOptions()
        opts.routingID = Array("worker-1".utf8)
        let dealer = try SocketThread(name: "dealer", context: ctx, type: .dealer, options: opts, .connect(router.endpoint))
        let dealerIn = Inbox(dealer)
        defer { dealer.stop(); router.stop() }

        var rng = TestRNG(3)
        let grads: TensorSet = [NamedTensor("projector.fc1.weight", rng.tensor([128, 64])), NamedTensor("projector.fc1.bias", rng.tensor([128]))]
        let sent = Envelope(jobID: 11, step: 2, .result(WorkResult(microBatch: 1, gradients: MicroBatchGradients(lossSum: 3.25, labelCount: 17, grads: grads))))
        dealer.send(sent)
        guard case .message(let from, _, let frames)? = await firstEvent(routerIn, where: isMessage) else {
            Issue.record("router received nothing"); return
        }
        #expect(from == Array("worker-1".utf8))
        #expect(try WireCodec.decode(frames) == sent)

        let reply = Envelope(jobID: 11, step: 3, .params(grads))
        router.send(reply, to: from)
        guard case .message(nil, _, let back)? = await firstEvent(dealerIn, where: isMessage) else {
            Issue.record("dealer received nothing"); return
        }
        #expect(try WireCodec.decode(back) == reply)
    }

    @Test("ROUTER_MANDATORY reports a send to an unknown worker")
    func unroutable() async throws {
        let ctx = try ZMQContext()
        let router = try SocketThread(name: "router", context: ctx, type: .router, .bind("tcp://127.0.0.1:*"))
        let routerIn = Inbox(router)
        defer { router.stop() }
        router.send(Envelope(jobID: 1, step: 1, .heartbeat), to: Array("nobody".utf8))
        let e = await firstEvent(routerIn) { if case .sendFailed = $0 { true } else { false } }
        guard case .sendFailed(let id, let err)? = e else { Issue.record("no sendFailed event"); return }
        #expect(id == Array("nobody".utf8))
        #expect(err.code == EHOSTUNREACH)
    }

    @Test("a frame over ZMQ_MAXMSGSIZE is dropped (the sender is disconnected)")
    func maxMessageSize() async throws {
        let ctx = try ZMQContext()
        var small = SocketOptions()
        small.maxMessageBytes = 4096
        let router = try SocketThread(name: "router", context: ctx, type: .router, options: small, .bind("tcp://127.0.0.1:*"))
        let routerIn = Inbox(router)
        let dealer = try SocketThread(name: "dealer", context: ctx, type: .dealer, .connect(router.endpoint))
        defer { dealer.stop(); router.stop() }
        // A small message gets through first (the connection works)...
        dealer.send(Envelope(jobID: 1, step: 1, .heartbeat))
        #expect(await firstEvent(routerIn, where: isMessage) != nil)
        // ...a 40 KB tensor frame does not.
        dealer.send(Envelope(jobID: 1, step: 1, .params([NamedTensor("big", Tensor(zeros: [10_000]))])))
        #expect(await firstEvent(routerIn, timeout: 1, where: isMessage) == nil)
    }

    @Test("an endpoint already in use is a typed error from init")
    func addressInUse() throws {
        let ctx = try ZMQContext()
        let a = try SocketThread(name: "a", context: ctx, type: .router, .bind("tcp://127.0.0.1:*"))
        defer { a.stop() }
        #expect(throws: ZMQError.self) { _ = try SocketThread(name: "b", context: ctx, type: .router, .bind(a.endpoint)) }
    }

    @Test("CURVE: a listed worker key exchanges messages; an unlisted one gets nothing through and is reported")
    func curve() async throws {
        let tmp = try TemporaryDirectory("curve")
        defer { tmp.cleanup() }
        let dir = tmp.file("keys")
        let (coordinator, workers, _) = try Curve.generateJobKeys(out: dir, workers: 1)
        #expect(FileManager.default.fileExists(atPath: dir + "/coordinator.key"))
        #expect(try CurveKeyPair(secretKeyFile: dir + "/coordinator.key_secret") == coordinator)
        #expect(try CurveKeyPair(secretKeyFile: dir + "/worker-1.key_secret") == workers[0])
        let perms = try FileManager.default.attributesOfItem(atPath: dir + "/worker-1.key_secret")[.posixPermissions] as? Int
        #expect(perms == 0o600)

        let ctx = try ZMQContext()
        let log = DecisionLog()
        let zap = try ZAPHandler(context: ctx, allowedDirectory: dir + "/workers") { log.add($0) }
        defer { zap.stop() }
        var serverOpts = SocketOptions()
        serverOpts.curve = .server(coordinator)
        let router = try SocketThread(name: "router", context: ctx, type: .router, options: serverOpts, .bind("tcp://127.0.0.1:*"))
        let routerIn = Inbox(router)
        defer { router.stop() }

        // The listed worker.
        var good = SocketOptions()
        good.curve = .client(workers[0], serverPublicKey: coordinator.publicKey)
        let listed = try SocketThread(name: "listed", context: ZMQContext(), type: .dealer, options: good, .connect(router.endpoint))
        let listedIn = Inbox(listed)
        defer { listed.stop() }
        listed.send(Envelope(jobID: 1, step: 0, .hello(Hello(workerName: "listed", backbone: "fp", computeID: 1))))
        guard case .message(let id?, _, let frames)? = await firstEvent(routerIn, where: isMessage) else {
            Issue.record("listed worker's Hello never arrived"); return
        }
        guard case .hello(let h) = try WireCodec.decode(frames).message else { Issue.record("not a hello"); return }
        #expect(h.workerName == "listed")
        router.send(Envelope(jobID: 1, step: 0, .heartbeat), to: id)
        #expect(await firstEvent(listedIn, where: isMessage) != nil)

        // An unlisted worker with a valid key pair and the right server key.
        var bad = SocketOptions()
        bad.curve = .client(try CurveKeyPair.generate(), serverPublicKey: coordinator.publicKey)
        let stranger = try SocketThread(name: "stranger", context: ZMQContext(), type: .dealer, options: bad, .connect(router.endpoint))
        defer { stranger.stop() }
        stranger.send(Envelope(jobID: 1, step: 0, .hello(Hello(workerName: "stranger", backbone: "fp", computeID: 1))))
        #expect(await firstEvent(routerIn, timeout: 1.5, where: isMessage) == nil)
        let decisions = log.all
        #expect(decisions.contains { $0.admitted && $0.publicKey == workers[0].publicKey && $0.keyFile == "worker-1.key" })
        #expect(decisions.contains { !$0.admitted && $0.mechanism == "CURVE" && $0.address == "127.0.0.1" })
    }

    @Test("key files: Z85 round trip, bad keys are typed errors")
    func keyFiles() throws {
        let pair = try CurveKeyPair.generate()
        #expect(pair.publicKey.utf8.count == 40 && pair.secretKey.utf8.count == 40)
        let raw = try #require(Curve.decodeZ85(pair.publicKey))
        #expect(Curve.encodeZ85(raw) == pair.publicKey)
        #expect(throws: CurveError.self) { try CurveKeyPair(secretKey: "short") }
        let tmp = try TemporaryDirectory("curve")
        defer { tmp.cleanup() }
        let dir = tmp.path
        try "# nothing here\n".write(toFile: dir + "/x.key", atomically: true, encoding: .utf8)
        #expect(throws: CurveError.self) { try Curve.allowedKeys(directory: dir) }
        #expect(throws: CurveError.self) { try Curve.readKey(file: dir + "/missing.key") }
    }
}
