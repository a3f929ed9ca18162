import Cluster
import Foundation
import Model
import TestSupport
import Testing
import Transport

/// Who may take part in a job, tested with real processes: CURVE keys, backbone fingerprints, and
/// garbage on the coordinator's port.
@Suite("admission and bad input", .serialized)
struct AdmissionTests {
    @Test("with security.curve on, an unlisted worker key cannot join; a listed one trains")
    func curve() throws {
        let dir = try Demo.scratch("curve")
        let keys = dir.appendingPathComponent("keys")
        let k = try Child("coordinator", ["keys", "--out", keys.path, "--workers", "2"], log: dir.path + "/keys.log")
        #expect(try k.wait() == 0, "\(k.output)")
        // worker-2 is not listed: take its public key out of the allowed directory.
        try FileManager.default.removeItem(at: keys.appendingPathComponent("workers/worker-2.key"))
        let port = Demo.port()
        let job = try Demo.job(in: dir, launcher: "manual", port: port, steps: 6, extra: """
            security:
              curve: true
              secret_key: keys/coordinator.key_secret
              allowed_workers: keys/workers
            """)
        let c = try Child("coordinator", ["train", "--config", job], log: dir.path + "/coordinator.log")
        let server = ["--server-key", keys.appendingPathComponent("coordinator.key").path]
        let intruder = try Child("worker", ["--join", "tcp://127.0.0.1:\(port)", "--name", "intruder",
                                            "--curve-secret", keys.appendingPathComponent("worker-2.key_secret").path] + server,
                                 log: dir.path + "/intruder.log")
        try waitUntil("the coordinator to log the refusal", seconds: 30) { c.output.contains("refused a worker") }
        #expect(!c.output.contains("intruder"), "the unlisted worker never got as far as a Hello:\n\(c.output)")
        let member = try Child("worker", ["--join", "tcp://127.0.0.1:\(port)", "--name", "member",
                                          "--curve-secret", keys.appendingPathComponent("worker-1.key_secret").path] + server,
                               log: dir.path + "/member.log")
        #expect(try c.wait() == 0, "\(c.output)")
        #expect(try member.wait(seconds: 10) == 0, "\(member.output)")
        #expect(!intruder.output.contains("joined"), "\(intruder.output)")
        intruder.kill(SIGTERM)
        #expect(try Demo.latest(dir).step == 6)
    }

    @Test("with security.curve on and no worker key in allowed_workers, the coordinator refuses to start and says how to make keys")
    func emptyAllowList() throws {
        let dir = try Demo.scratch("curve-empty")
        let keys = dir.appendingPathComponent("keys")
        let k = try Child("coordinator", ["keys", "--out", keys.path, "--workers", "1"], log: dir.path + "/keys.log")
        #expect(try k.wait() == 0, "\(k.output)")
        try FileManager.default.removeItem(at: keys.appendingPathComponent("workers/worker-1.key"))
        let job = try Demo.job(in: dir, launcher: "manual", port: Demo.port(), steps: 2, extra: """
            security:
              curve: true
              secret_key: keys/coordinator.key_secret
              allowed_workers: keys/workers
            """)
        let c = try Child("coordinator", ["train", "--config", job], log: dir.path + "/coordinator.log")
        #expect(try c.wait(seconds: 60) == 1, "\(c.output)")
        #expect(c.output.contains("no worker public key (*.key) in \(keys.path)/workers"), "\(c.output)")
        #expect(c.output.contains("coordinator keys --out \(keys.path) --workers N"), "\(c.output)")
        #expect(!c.output.contains("listening on"), "\(c.output)")
    }

    @Test("a worker holding other backbone weights is refused, and says why")
    func wrongBackbone() throws {
        let dir = try Demo.scratch("backbone")
        let other = dir.appendingPathComponent("other")
        let d = try Child("coordinator", ["demo-data", "--out", other.path, "--train-samples", "64", "--test-samples", "8",
                                          "--backbone-seed", "99"], log: dir.path + "/demo.log")
        #expect(try d.wait() == 0)
        let port = Demo.port()
        let job = try Demo.job(in: dir, launcher: "manual", port: port, steps: 2)
        let otherJob = try Demo.job(in: other, launcher: "manual", port: port, steps: 2, data: other)
        let c = try Child("coordinator", ["train", "--config", job], log: dir.path + "/coordinator.log")
        let w = try Child("worker", ["--join", "tcp://127.0.0.1:\(port)", "--config", otherJob], log: dir.path + "/worker.log")
        #expect(try w.wait(seconds: 60) == 2, "the refused worker exits with status 2:\n\(w.output)")
        #expect(w.output.contains("wrong backbone"), "\(w.output)")
        #expect(c.output.contains("refused"), "\(c.output)")
        c.kill(SIGTERM)
        _ = try c.wait()
    }

    @Test("frames from a raw ZeroMQ client that never joined are dropped unread; a wrong-version Hello is refused; training is unaffected")
    func malformed() throws {
        let dir = try Demo.scratch("malformed")
        let port = Demo.port()
        let job = try Demo.job(in: dir, launcher: "manual", port: port, steps: 8)
        let c = try Child("coordinator", ["train", "--config", job], log: dir.path + "/coordinator.log")
        let context = try ZMQContext()
        var options = SocketOptions()
        options.routingID = Array("raw".utf8)
        let raw = try SocketThread(name: "raw", context: context, type: .dealer, options: options, .connect("tcp://127.0.0.1:\(port)"))
        // Garbage, a valid header with a truncated body, a Result for another job, and a Hello of the
        // wrong protocol version.
        var header = WireCodec.encode(Envelope(jobID: 1, step: 0, .heartbeat))
        raw.send([.bytes(Array("not a DEHVF frame".utf8))])
        if case .bytes(let b) = header[0] { header[0] = .bytes(Array(b.prefix(10))) }
        raw.send(header)
        raw.send(Envelope(jobID: 12345, step: 0, .result(WorkResult(microBatch: 0, gradients: MicroBatchGradients(lossSum: 1, labelCount: 1, grads: TensorSet())))))
        var old = Hello(workerName: "old", backbone: "x", computeID: 1)
        old.protocolVersion = 99
        raw.send(Envelope(jobID: 0, step: 0, .hello(old)))
        try waitUntil("the coordinator to refuse the old Hello", seconds: 20) { c.output.contains("protocol version 99") }
        let w = try Child("worker", ["--join", "tcp://127.0.0.1:\(port)"], log: dir.path + "/worker.log")
        #expect(try c.wait() == 0, "\(c.output)")
        #expect(try w.wait(seconds: 10) == 0)
        raw.stop()
        #expect(!c.output.contains("malformed message"), "a stranger's frames are not decoded past their header:\n\(c.output)")
        #expect(try Demo.latest(dir).step == 8)
    }
}
