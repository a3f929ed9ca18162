import Foundation
import Model
import Shard
import TestSupport
import Testing

/// Writes a checkpoint with h5py: `tensors` maps "params/router.weight" (and the optimizer groups) to a
/// shape; a tensor of more than `full` values is created with its shape only (no chunk stored), so the
/// file stays a few KB whatever it declares. `loss` is the history's length, `step` the attribute.
@discardableResult
func writeCheckpoint(_ path: String, tensors: [String: [Int]], loss: Int, step: Int, full: Int = 1 << 20) throws -> Int {
    let spec: [String: Any] = ["tensors": tensors, "loss": loss, "step": step, "full": full]
    let json = String(data: try JSONSerialization.data(withJSONObject: spec), encoding: .utf8)!
    let r = try python("""
        import sys, json, h5py, numpy as np
        s = json.loads(sys.argv[2])
        def put(f, name, shape):
            count = int(np.prod(shape, dtype=object))
            if count <= s["full"]:
                f.create_dataset(name, data=np.full(shape, 0.5, np.float32))
            else:
                chunks = tuple([1] * (len(shape) - 1) + [min(shape[-1], 1 << 16)])
                f.create_dataset(name, shape=shape, dtype=np.float32, chunks=chunks)
        with h5py.File(sys.argv[1], "w") as f:
            for k, v in dict(format="dehvf-checkpoint", config="{}", backbone="fp").items(): f.attrs[k] = v
            for k, v in dict(version=1, step=s["step"], epoch=0, seed=1).items(): f.attrs[k] = v
            for g in ("params", "optimizer/exp_avg", "optimizer/exp_avg_sq"): f.require_group(g)
            for name, shape in s["tensors"].items(): put(f, name, tuple(shape))
            put(f, "history/loss", (s["loss"],))
        """, [path, json])
    guard r.status == 0 else { throw TestFailure("h5py could not write the checkpoint: \(r.stderr)") }
    return (try FileManager.default.attributesOfItem(atPath: path)[.size] as? NSNumber)?.intValue ?? 0
}

/// The same tensor shapes in all three groups.
private func everywhere(_ shapes: [String: [Int]]) -> [String: [Int]] {
    var out: [String: [Int]] = [:]
    for g in ["params", "optimizer/exp_avg", "optimizer/exp_avg_sq"] {
        for (k, v) in shapes { out["\(g)/\(k)"] = v }
    }
    return out
}

@Suite("Hostile checkpoints", .serialized)
struct HostileCheckpointTests {
    @Test("with the job's shapes, a matching checkpoint reads and every difference in every group is listed")
    func expectation() throws {
        let dir = try TemporaryDirectory("shard")
        defer { dir.cleanup() }
        let c = sampleCheckpoint(step: 3)
        let path = try c.write(to: dir.path, keep: 1)
        let shapes: Checkpoint.Expectation = c.params.shapes.map { ($0.name, $0.shape) }
        #expect(sameCheckpoint(try Checkpoint.read(path: path, expecting: shapes), c))
        #expect(try Checkpoint.readLatest(dir: dir.path, expecting: shapes)?.step == 3)
        #expect(try Checkpoint.read(fileOrDirectory: dir.path, expecting: shapes).step == 3)

        var wrong = shapes
        wrong[0].shape = [2, 3, 5]
        wrong.removeLast()
        wrong.append((name: "prompt.value_pos", shape: [7, 4]))
        for read in [{ _ = try Checkpoint.read(path: path, expecting: wrong) },
                     { _ = try Checkpoint.readLatest(dir: dir.path, expecting: wrong) },
                     { _ = try Checkpoint.read(fileOrDirectory: dir.path, expecting: wrong) }] as [() throws -> Void] {
            expectShardError(.incompatibleCheckpoint, mentioning: [
                path, "checkpoint does not belong to this job",
                "params/router.weight has shape [2, 3, 4], job expects [2, 3, 5]",
                "params/prompt.value_pos [7, 4] missing", "unexpected tensor params/prompt.key_pos [7, 4]",
                "optimizer/exp_avg and optimizer/exp_avg_sq differ the same way", "start a new checkpoint.dir",
            ], read)
        }
    }

    @Test("a 4 TB tensor declared in a few KB: refused from its shape, with or without the job's shapes")
    func hollowTensor() throws {
        let dir = try TemporaryDirectory("shard")
        defer { dir.cleanup() }
        let p = dir.file("hollow.h5")
        let size = try writeCheckpoint(p, tensors: everywhere(["router.bias": [2, 3], "router.weight": [1 << 20, 1 << 20]]),
                                       loss: 2, step: 2)
        #expect(size < 64 << 10, "\(size) bytes")
        // `checkpoint show`: no expectation, so the file's size bounds what it may ask for.
        expectShardError(.badShape, mentioning: [p, "/params/router.weight", "declares more data than the file can hold",
                                                 "16 x the file's \(size) bytes + 1 MiB", "4398046511104 bytes for float32"]) {
            _ = try Checkpoint.read(path: p)
        }
        // Resume: the job's shapes are checked first, so nothing of the file's size is ever allocated.
        expectShardError(.incompatibleCheckpoint, mentioning: [
            "params/router.weight has shape [1048576, 1048576], job expects [4, 6]"]) {
            _ = try Checkpoint.read(path: p, expecting: [("router.bias", [2, 3]), ("router.weight", [4, 6])])
        }
        // Tensors each within the budget but too many together.
        let q = dir.file("many.h5")
        let many = try writeCheckpoint(q, tensors: everywhere(Dictionary(uniqueKeysWithValues: (0..<40).map {
            ("t\($0)", [512, 512])  // 1 MiB each: within the budget one by one, never all 120
        })), loss: 0, step: 0, full: 0)
        #expect(many < 64 << 10, "\(many) bytes")
        expectShardError(.badShape, mentioning: [q, "the tensors declare more data than the file can hold"]) {
            _ = try Checkpoint.read(path: q)
        }
    }

    @Test("a loss history longer than 2^31 or than the file can hold is refused before it is read")
    func hollowHistory() throws {
        let dir = try TemporaryDirectory("shard")
        defer { dir.cleanup() }
        let p = dir.file("long.h5")
        try writeCheckpoint(p, tensors: everywhere(["router.bias": [2, 3]]), loss: 1 << 32, step: 3)
        expectShardError(.badShape, mentioning: [p, "/history/loss", "history/loss is too long",
                                                 "at most 2147483647 losses", "[4294967296]"]) {
            _ = try Checkpoint.read(path: p, expecting: [("router.bias", [2, 3])])
        }
        let q = dir.file("hollow.h5")
        try writeCheckpoint(q, tensors: everywhere(["router.bias": [2, 3]]), loss: 1 << 30, step: 1 << 30)
        for expecting in [nil, [("router.bias", [2, 3])]] as [Checkpoint.Expectation?] {
            expectShardError(.badShape, mentioning: [q, "/history/loss", "declares more data than the file can hold"]) {
                _ = try Checkpoint.read(path: q, expecting: expecting)
            }
        }
        let r = dir.file("step.h5")
        try writeCheckpoint(r, tensors: everywhere(["router.bias": [2, 3]]), loss: 2, step: -5)
        expectShardError(.badAttribute, mentioning: [r, "@step", "found -5"]) { _ = try Checkpoint.read(path: r) }
    }

    @Test("moments that do not match the parameters are named from the metadata")
    func momentsMismatch() throws {
        let dir = try TemporaryDirectory("shard")
        defer { dir.cleanup() }
        let p = dir.file("m.h5")
        var tensors = everywhere(["router.bias": [2, 3]])
        tensors["optimizer/exp_avg_sq/router.bias"] = [3, 2]
        try writeCheckpoint(p, tensors: tensors, loss: 1, step: 1)
        expectShardError(.badShape, mentioning: [p, "optimizer/exp_avg_sq", "optimizer state does not match the parameters",
                                                 "router.bias[2, 3]", "router.bias[3, 2]"]) {
            _ = try Checkpoint.read(path: p)
        }
        // Against the job's shapes, the one group that differs is named alone.
        do {
            _ = try Checkpoint.read(path: p, expecting: [("router.bias", [2, 3])])
            Issue.record("read without error")
        } catch let e as ShardError {
            #expect(e.code == .incompatibleCheckpoint)
            #expect(e.message.contains("optimizer/exp_avg_sq/router.bias has shape [3, 2], job expects [2, 3]"), "\(e)")
            #expect(!e.message.contains("params/") && !e.message.contains("optimizer/exp_avg/"), "\(e)")
        }
    }

    @Test("a huge latest file is read 4 KiB at most and named as not a checkpoint name")
    func hugeLatest() throws {
        let dir = try TemporaryDirectory("shard")
        defer { dir.cleanup() }
        try Data(repeating: 0x41, count: 1 << 20).write(to: URL(fileURLWithPath: dir.file("latest")))
        expectShardError(.corrupt, mentioning: ["latest does not name a checkpoint file", "step-NNNNNNNN.h5"]) {
            _ = try Checkpoint.readLatest(dir: dir.path)
        }
    }
}
