import Foundation
import Model
import TestSupport
import Testing

/// DESIGN.md §6 and §7 across hosts: the coordinator and the workers each on their own host (a network
/// namespace with its own address on a bridged LAN, see ``Namespaces``), and the network failing under
/// them: a worker's link cut mid-step and plugged back in, the coordinator's host lost and the job
/// resumed on another host that takes over its address. Each run ends bitwise equal to the in-process one.
@Suite("multi-host training in network namespaces", .serialized,
       .enabled(if: Namespaces.unavailable == nil, Comment(rawValue: Namespaces.unavailable ?? "")))
struct NetworkNamespaceTests {
    /// The namespaces' bridge is a private LAN: bind to it without CURVE, as a user on a trusted network may.
    static let trustedLAN = "security:\n  insecure: true"
    static let steps = 160
    static let timeoutMs = 1000

    static let reference: Result<TensorSet, Error> = Result { try Demo.reference(steps: steps) }

    func expectReference(_ dir: URL, _ what: String) throws {
        try Demo.expectSame(dir, steps: Self.steps, as: Self.reference, what)
    }

    /// Workers notice a silent coordinator as fast as the coordinator notices them (the CLI default is 5 s).
    func worker(_ net: Namespaces, on host: String, name: String, join address: String, port: Int, dir: URL) throws -> Child {
        try net.run(host, "worker", ["--join", "tcp://\(address):\(port)", "--name", name, "--heartbeat-ms", "100",
                                     "--timeout-ms", "\(Self.timeoutMs)"], log: dir.path + "/\(name).log")
    }

    /// N in the coordinator's "worker NAME (NAME) silent for N ms (timeout T ms): declared dead".
    static func silence(of name: String, in log: String) -> Int? {
        guard let r = log.range(of: "worker \(name) (\(name)) silent for ") else { return nil }
        return Int(log[r.upperBound...].prefix { $0.isNumber })
    }

    /// The steps of a worker's "joined at step N" lines, in order.
    static func joinedSteps(_ log: String) -> [Int] {
        log.split(separator: "\n").compactMap { line in
            guard let r = line.range(of: "worker: joined at step ") else { return nil }
            return Int(line[r.upperBound...].prefix { $0.isNumber })
        }
    }

    static func count(_ s: String, in log: String) -> Int { log.components(separatedBy: s).count - 1 }

    /// What a log gained after it was `bytes` long (UTF-8 bytes: the progress lines' "\r" would merge
    /// with a later "\n" into one Character and shift a Character count).
    static func tail(_ log: String, after bytes: Int) -> String { String(decoding: log.utf8.dropFirst(bytes), as: UTF8.self) }

    /// Death is declared once a worker has been silent for more than timeout_ms; the coordinator checks
    /// every heartbeat_ms / 2 and the worker was last heard at most heartbeat_ms before the cut, so
    /// 500 ms of slack covers that with room for a loaded machine.
    func expectDeclaredDead(_ name: String, _ log: String, seenAfter seconds: Double) {
        let silent = Self.silence(of: name, in: log)
        #expect(silent.map { $0 > Self.timeoutMs && $0 <= Self.timeoutMs + 500 } == true,
                "\(name) declared dead after \(silent.map(String.init) ?? "?") ms of silence (timeout \(Self.timeoutMs) ms):\n\(log)")
        #expect(seconds * 1000 < Double(Self.timeoutMs + 1000), "\(name) declared dead \(Int(seconds * 1000)) ms after its link went down")
        print("netns: \(name) declared dead after \(silent ?? -1) ms of silence, seen \(Int(seconds * 1000)) ms after its link went down")
    }

    @Test("a worker cut off mid-step is declared dead within timeout_ms and the step completes on the others; plugged back in, it rejoins and computes")
    func partitionAndHeal() throws {
        let net = try Namespaces()
        defer { net.teardown() }
        let dir = try Demo.scratch("netns-partition")
        let port = Demo.port(), host = net.address("c1")
        let job = try Demo.job(in: dir, launcher: "manual", host: host, port: port, steps: Self.steps, timeoutMs: Self.timeoutMs,
                               extra: Self.trustedLAN)
        let coordinator = try net.run("c1", "coordinator", ["train", "--config", job], log: dir.path + "/coordinator.log")
        _ = try worker(net, on: "w1", name: "a", join: host, port: port, dir: dir)
        _ = try worker(net, on: "w2", name: "b", join: host, port: port, dir: dir)
        let c = try worker(net, on: "w3", name: "c", join: host, port: port, dir: dir)
        try waitUntil("three workers and a few steps", seconds: 60) { coordinator.output.contains("3 live") && Demo.logLines(dir) >= 5 }

        // Steps run back to back and each of the three workers holds one of a step's four micro-batches
        // almost all the time, so the cut lands mid-step with a micro-batch out on w3.
        let before = coordinator.output.utf8.count
        let stepsAtCut = Demo.logLines(dir)
        var cut = Date()
        try net.link("w3", up: false)
        try waitUntil("c declared dead", seconds: 10) { coordinator.output.contains("worker c (c) silent for") }
        expectDeclaredDead("c", coordinator.output, seenAfter: Date().timeIntervalSince(cut))
        let after = Self.tail(coordinator.output, after: before)
        // Usually c holds a micro-batch when cut, and the log shows it going back to the queue; on a loaded
        // machine c may have been idle at that instant. Either way the steps go on without it (next line)
        // and the final parameters are bitwise those of the undisturbed run.
        if !(after.contains("of c goes back to the queue") || after.contains("backing up slow micro-batch")) {
            print("netns: c held no micro-batch when it was cut off")
        }
        try waitUntil("steps on a and b while c is cut off", seconds: 20) { Demo.logLines(dir) >= stepsAtCut + 3 }

        // Cut a and b too: the job stalls, and every step after c comes back is c's work alone.
        cut = Date()
        try net.link("w1", up: false)
        try net.link("w2", up: false)
        try waitUntil("a and b declared dead", seconds: 10) {
            coordinator.output.contains("worker a (a) silent for") && coordinator.output.contains("worker b (b) silent for")
        }
        let seen = Date().timeIntervalSince(cut)
        expectDeclaredDead("a", coordinator.output, seenAfter: seen)
        expectDeclaredDead("b", coordinator.output, seenAfter: seen)
        let stalled = Demo.logLines(dir)

        // Heal once c has failed a few Hellos: the coordinator's connection from before the cut is still
        // open then, and c is waiting out a backoff, so the Hello after the heal is the first to get
        // through and must be answered (the ROUTER must not ignore it for the stale connection).
        try waitUntil("c to retry a few times", seconds: 30) { Self.count("no answer to Hello", in: c.output) >= 3 }
        let healed = Date(), beforeHeal = c.output.utf8.count
        try net.link("w3", up: true)
        try waitUntil("c to rejoin", seconds: 30) { Self.count("worker c (c) joined", in: coordinator.output) == 2 }
        print("netns: c rejoined \(Int(Date().timeIntervalSince(healed) * 1000)) ms after its link came back")
        let afterHeal = Self.tail(c.output, after: beforeHeal)
        #expect(!(afterHeal.components(separatedBy: "joined at step").first ?? "").contains("no answer to Hello"),
                "c's first Hello after the heal was answered:\n\(afterHeal)")
        try waitUntil("steps computed by c alone", seconds: 30) { Demo.logLines(dir) >= stalled + 3 }

        #expect(try coordinator.wait(seconds: 60) == 0, "\(coordinator.output)")
        #expect(try c.wait(seconds: 10) == 0, "\(c.output)")
        let joins = Self.joinedSteps(c.output)
        #expect(joins.count == 2 && joins[1] >= stalled, "c joined once at the start and once more where the job stalled (step \(stalled)): \(joins)\n\(c.output)")
        #expect(c.output.contains("coordinator silent for"), "c noticed the partition:\n\(c.output)")
        try expectReference(dir, "partition and heal")
    }

    /// The coordinator's host dies and a standby host takes over its floating address (10.231.0.10), as
    /// keepalived would: the address moves to the standby's eth0 and is announced by gratuitous ARP. The
    /// workers were told only that address, so they find the resumed job without being told anything.
    @Test("the coordinator's host lost: resumed from latest on another host that takes over its address, the workers follow")
    func coordinatorHostLost() throws {
        let net = try Namespaces()
        defer { net.teardown() }
        let dir = try Demo.scratch("netns-failover")
        let port = Demo.port(), vip = "\(Namespaces.subnet).10"
        try net.addAddress(vip, to: "c1")
        let job = try Demo.job(in: dir, launcher: "manual", host: vip, port: port, steps: Self.steps, every: 4,
                               timeoutMs: Self.timeoutMs, extra: Self.trustedLAN)
        let first = try net.run("c1", "coordinator", ["train", "--config", job], log: dir.path + "/coordinator-c1.log")
        let a = try worker(net, on: "w1", name: "a", join: vip, port: port, dir: dir)
        let b = try worker(net, on: "w2", name: "b", join: vip, port: port, dir: dir)
        try waitUntil("two workers, a checkpoint and steps past it", seconds: 60) {
            first.output.contains("2 live") && Demo.logLines(dir) >= 22
        }

        first.kill(SIGKILL)
        _ = try first.wait()
        let lost = Date()
        try net.link("c1", up: false)   // the host is gone from the LAN
        let checkpoint = try Demo.latest(dir).step
        try net.addAddress(vip, to: "c2")
        try net.announce("c2")
        let resumed = try net.run("c2", "coordinator", ["train", "--config", job, "--resume", "latest"], log: dir.path + "/coordinator-c2.log")
        try waitUntil("both workers to join the resumed job", seconds: 30) {
            resumed.output.contains("worker a (a) joined") && resumed.output.contains("worker b (b) joined")
        }
        print("netns: both workers joined the coordinator on c2 \(Int(Date().timeIntervalSince(lost) * 1000)) ms after c1 was lost")

        #expect(try resumed.wait(seconds: 60) == 0, "\(resumed.output)")
        #expect(resumed.output.contains("at step \(checkpoint)") && resumed.output.contains("resumed from"), "\(resumed.output)")
        #expect(resumed.output.contains("listening on tcp://\(vip):\(port)"), "\(resumed.output)")
        for w in [a, b] {
            #expect(try w.wait(seconds: 10) == 0, "\(w.output)")
            #expect(w.output.contains("coordinator silent for"), "the worker noticed the loss:\n\(w.output)")
            let joins = Self.joinedSteps(w.output)
            // Joined at the start, then the resumed job. With timeout_ms 1000 on a loaded two-core machine a
            // worker may time out once more and rejoin the same resumed job (seen: [0, 20, 22]); that is the
            // protocol working, and the parameters are checked against the reference below.
            #expect(joins.count >= 2 && joins[0] == 0 && joins.dropFirst().allSatisfy { $0 >= checkpoint },
                    "joined once at the start, then the resumed job at or after step \(checkpoint): \(joins)\n\(w.output)")
        }
        try expectReference(dir, "coordinator host lost")
    }
}
