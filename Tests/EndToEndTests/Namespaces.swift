import Foundation
import TestSupport

/// A small LAN of test hosts made of Linux network namespaces, for the multi-host tests.
///
/// ```
///            namespace PREFIX-br: bridge dehvf-br0 (no address)
///     p-c1      p-c2      p-w1      p-w2      p-w3      (veth ends, bridge ports)
///       |         |         |         |         |
///     eth0      eth0      eth0      eth0      eth0      (one namespace per host)
///   PREFIX-c1 PREFIX-c2 PREFIX-w1 PREFIX-w2 PREFIX-w3
///   .11       .12       .21       .22       .23         in 10.231.0.0/24
/// ```
/// `c1` and `c2` are coordinator hosts, `w1`..`w3` worker hosts. Nothing is created in the root
/// namespace, so the addresses cannot clash with the machine's own, and PREFIX (`dehvf-PID-RANDOM`)
/// keeps concurrent runs apart. ``teardown()`` (also run by `deinit`) kills every process started with
/// ``run(_:_:_:log:)`` and deletes the namespaces, which deletes their interfaces; namespaces left by
/// a run that crashed (its PID gone) are deleted by the next one.
final class Namespaces {
    static let subnet = "10.231.0"
    static let hostNumbers = ["c1": 11, "c2": 12, "w1": 21, "w2": 22, "w3": 23]

    /// Why these tests cannot run here, or nil when they can: they need root, iproute2's `ip`, and a
    /// kernel that lets `ip netns add` make namespaces with veth pairs and a bridge.
    static let unavailable: String? = {
        guard getuid() == 0 else { return "needs root to create network namespaces (running as uid \(getuid()))" }
        guard let ip = ipPath else { return "iproute2's `ip` is not installed (looked in /usr/sbin, /sbin, /usr/bin, /bin)" }
        let probe = "dehvf-probe-\(getpid())"
        defer { _ = try? run(ip, ["netns", "del", probe]) }
        do {
            try run(ip, ["netns", "add", probe])
            try run(ip, ["-n", probe, "link", "add", "dehvf-br0", "type", "bridge"])
            try run(ip, ["-n", probe, "link", "add", "p0", "type", "veth", "peer", "name", "p1"])
        } catch {
            return "this machine does not allow network namespaces with veth pairs and a bridge: \(error)"
        }
        return nil
    }()

    static let ipPath: String? = ["/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"]
        .first { FileManager.default.isExecutableFile(atPath: $0) }

    let prefix: String
    private var children: [Child] = []
    private var torn = false

    /// Creates the bridge namespace and one namespace per host, each host's eth0 up with its address.
    init() throws {
        Self.removeStale()
        prefix = "dehvf-\(getpid())-\(String(UInt16.random(in: 0...UInt16.max), radix: 16))"
        do {
            try ip("netns", "add", bridge)
            try ip("-n", bridge, "link", "set", "lo", "up")
            try ip("-n", bridge, "link", "add", "dehvf-br0", "type", "bridge")
            try ip("-n", bridge, "link", "set", "dehvf-br0", "up")
            for (host, number) in Self.hostNumbers.sorted(by: { $0.key < $1.key }) {
                let ns = namespace(host)
                try ip("netns", "add", ns)
                try ip("-n", ns, "link", "set", "lo", "up")
                try ip("-n", bridge, "link", "add", "p-\(host)", "type", "veth", "peer", "name", "eth0", "netns", ns)
                try ip("-n", bridge, "link", "set", "p-\(host)", "master", "dehvf-br0", "up")
                // A change of eth0's hardware address makes the kernel announce every address on it by
                // gratuitous ARP (see announce(_:)).
                try ip("netns", "exec", ns, "/bin/sh", "-c", "echo 1 > /proc/sys/net/ipv4/conf/eth0/arp_notify")
                try ip("-n", ns, "addr", "add", "\(address(host))/24", "dev", "eth0")
                try ip("-n", ns, "link", "set", "eth0", "up")
            }
        } catch {
            teardown()
            throw error
        }
    }

    deinit { teardown() }

    /// The namespace of a host (`c1`, `w2`, ...), or of the bridge.
    func namespace(_ host: String) -> String { "\(prefix)-\(host)" }
    var bridge: String { "\(prefix)-br" }
    func address(_ host: String) -> String { "\(Self.subnet).\(Self.hostNumbers[host]!)" }

    /// Starts a built product (`coordinator`, `worker`) on `host`; it is killed at teardown.
    func run(_ host: String, _ product: String, _ args: [String], log: String) throws -> Child {
        let child = try Child(Self.ipPath!, ["netns", "exec", namespace(host), try Products.path(product)] + args, log: log)
        children.append(child)
        return child
    }

    /// Cuts a host off the LAN (its eth0 goes down: nothing in or out) or plugs it back in.
    func link(_ host: String, up: Bool) throws {
        try ip("-n", namespace(host), "link", "set", "eth0", up ? "up" : "down")
    }

    /// Adds an extra address (a floating one) to a host's eth0.
    func addAddress(_ address: String, to host: String) throws {
        try ip("-n", namespace(host), "addr", "add", "\(address)/24", "dev", "eth0")
    }

    /// Makes `host` tell the LAN, by gratuitous ARP, which hardware address its addresses now live at, as
    /// a failover daemon (keepalived) does after taking a floating address. There is no `arping` here,
    /// so the kernel sends it: with arp_notify on, a new hardware address on eth0 is announced for every
    /// address on it. Without this, the other hosts keep the old host's MAC in their ARP cache
    /// (REACHABLE for 15-45 s, then a few seconds of probing) and cannot reach the new one.
    func announce(_ host: String) throws {
        let mac = String(format: "02:e1:%02x:%02x:%02x:%02x", UInt8.random(in: 0...255), UInt8.random(in: 0...255),
                         UInt8.random(in: 0...255), UInt8(Self.hostNumbers[host]!))
        try ip("-n", namespace(host), "link", "set", "eth0", "address", mac)
    }

    /// Kills the processes started here and deletes the namespaces. Safe to call more than once.
    func teardown() {
        guard !torn else { return }
        torn = true
        for c in children where c.process.isRunning { c.kill(SIGKILL) }
        for c in children { _ = try? c.wait(seconds: 5) }
        for host in Self.hostNumbers.keys { _ = try? ip("netns", "del", namespace(host)) }
        _ = try? ip("netns", "del", bridge)
    }

    @discardableResult
    private func ip(_ args: String...) throws -> String {
        try Self.run(Self.ipPath!, args)
    }

    /// Deletes the namespaces of earlier runs whose test process is gone (it was killed before tearing
    /// down), first killing what still runs in them (a worker retries forever).
    private static func removeStale() {
        guard let ip = ipPath, let list = try? run(ip, ["netns", "list"]) else { return }
        for line in list.split(separator: "\n") {
            let name = String(line.split(separator: " ").first ?? "")
            let parts = name.split(separator: "-")
            // dehvf-PID-RANDOM-HOST, or dehvf-probe-PID
            guard parts.count >= 3, parts[0] == "dehvf", let pid = Int32(parts[1] == "probe" ? parts[2] : parts[1]),
                  pid != getpid(), kill(pid, 0) != 0, errno == ESRCH else { continue }
            for p in ((try? run(ip, ["netns", "pids", name])) ?? "").split(separator: "\n").compactMap({ Int32($0) }) {
                kill(p, SIGKILL)
            }
            _ = try? run(ip, ["netns", "del", name])
        }
    }

    /// Runs a command to completion; throws with its output if it fails.
    @discardableResult
    static func run(_ executable: String, _ args: [String]) throws -> String {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: executable)
        p.arguments = args
        let out = Pipe()
        p.standardOutput = out
        p.standardError = out
        try p.run()
        let data = out.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        let text = String(decoding: data, as: UTF8.self)
        guard p.terminationStatus == 0 else {
            throw TestFailure("`\(([executable] + args).joined(separator: " "))` exited with \(p.terminationStatus): \(text)")
        }
        return text
    }
}
