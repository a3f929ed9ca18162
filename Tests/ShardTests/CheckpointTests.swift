import Foundation
import Model
import Shard
import TestSupport
import Testing

/// A checkpoint whose every value is a function of `step`, so a reader can tell a complete one.
func sampleCheckpoint(step: Int, big: Bool = false) -> Checkpoint {
    func t(_ shape: [Int], _ salt: Float) -> Tensor {
        let n = shape.reduce(1, *)
        return Tensor(shape: shape, values: (0..<n).map { Float(step) * 1000 + salt + Float($0) * 0.001 })
    }
    let shapes: [(String, [Int])] = [
        ("router.weight", big ? [4, 4, 4096] : [2, 3, 4]), ("router.bias", [2, 3]),
        ("projector.fc1.weight", [5, 6]), ("projector.fc1.bias", [5]), ("prompt.key_pos", [7, 4]),
    ]
    return Checkpoint(
        step: step, epoch: step / 3, seed: 0xDEAD_BEEF_0000_0001, config: "{\"model\": {\"fusion\": \"dehvf\"}, \"ü\": 1}",
        backbone: "vision 123 sha256:ab; language 456 sha256:cd",
        params: TensorSet(shapes.map { ($0.0, t($0.1, 0.25)) }), expAvg: TensorSet(shapes.map { ($0.0, t($0.1, 0.5)) }),
        expAvgSq: TensorSet(shapes.map { ($0.0, t($0.1, 0.75)) }), lossHistory: (0..<step).map { Float($0) * 0.5 + 1 })
}

func sameCheckpoint(_ a: Checkpoint, _ b: Checkpoint) -> Bool {
    a.step == b.step && a.epoch == b.epoch && a.seed == b.seed && a.config == b.config && a.backbone == b.backbone
        && a.params == b.params && a.expAvg == b.expAvg && a.expAvgSq == b.expAvgSq
        && a.lossHistory.map(\.bitPattern) == b.lossHistory.map(\.bitPattern)
}

@Suite("Checkpoints", .serialized)
struct CheckpointTests {
    @Test("write then read gives back every value bitwise, in order, with latest naming it")
    func roundTrip() throws {
        let dir = try TemporaryDirectory("shard")
        defer { dir.cleanup() }
        #expect(try Checkpoint.readLatest(dir: dir.path) == nil)
        let c = sampleCheckpoint(step: 5)
        c.params[0].tensor.data[0] = .nan
        c.params[0].tensor.data[1] = -0.0
        c.params[0].tensor.data[2] = .leastNonzeroMagnitude
        let path = try c.write(to: dir.path, keep: 2)
        #expect(path.hasSuffix("/step-00000005.h5"))
        #expect(try String(contentsOfFile: dir.file("latest"), encoding: .utf8) == "step-00000005.h5\n")
        let r = try #require(try Checkpoint.readLatest(dir: dir.path))
        #expect(sameCheckpoint(c, r))
        #expect(r.params.names == ["router.weight", "router.bias", "projector.fc1.weight", "projector.fc1.bias", "prompt.key_pos"])
        #expect(r.source == path)
    }

    @Test("keep policy: only the newest `keep` files remain, and latest names the newest")
    func keepPolicy() throws {
        let dir = try TemporaryDirectory("shard")
        defer { dir.cleanup() }
        for step in [1, 2, 3, 10, 11] { try sampleCheckpoint(step: step).write(to: dir.path, keep: 3) }
        // A temporary left by a writer that died is cleaned up by the next write.
        FileManager.default.createFile(atPath: dir.file(".step-00000012.h5.tmp-999999"), contents: Data([1, 2]))
        try sampleCheckpoint(step: 12).write(to: dir.path, keep: 3)
        let names = try FileManager.default.contentsOfDirectory(atPath: dir.path).sorted()
        #expect(names == ["latest", "step-00000010.h5", "step-00000011.h5", "step-00000012.h5"])
        #expect(try Checkpoint.readLatest(dir: dir.path)?.step == 12)
        try sampleCheckpoint(step: 13).write(to: dir.path, keep: 1)
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir.path).sorted() == ["latest", "step-00000013.h5"])
    }

    @Test("the checkpoint `best` names outlives `keep` until best names another; `DIR/best` reads it; --fresh removes it")
    func bestPointer() throws {
        let dir = try TemporaryDirectory("shard")
        defer { dir.cleanup() }
        try sampleCheckpoint(step: 2).write(to: dir.path, keep: 1)
        try Checkpoint.markBest(Checkpoint.fileName(step: 2), in: dir.path, keep: 1)
        for step in [4, 6] { try sampleCheckpoint(step: step).write(to: dir.path, keep: 1) }
        var names = try FileManager.default.contentsOfDirectory(atPath: dir.path).sorted()
        #expect(names == ["best", "latest", "step-00000002.h5", "step-00000006.h5"])
        #expect(try Checkpoint.read(fileOrDirectory: dir.file("best")).step == 2)
        #expect(try Checkpoint.read(fileOrDirectory: dir.path).step == 6)
        // A better checkpoint: the old best goes, being beyond keep.
        try Checkpoint.markBest(Checkpoint.fileName(step: 6), in: dir.path, keep: 1)
        names = try FileManager.default.contentsOfDirectory(atPath: dir.path).sorted()
        #expect(names == ["best", "latest", "step-00000006.h5"])
        #expect(throws: ShardError.self) { try Checkpoint.markBest("../elsewhere.h5", in: dir.path, keep: 1) }
        // A damaged pointer is a clear error naming it, not a read of whatever it says.
        try "../../etc/passwd\n".write(toFile: dir.file("best"), atomically: true, encoding: .utf8)
        #expect(throws: ShardError.self) { try Checkpoint.read(fileOrDirectory: dir.file("best")) }
        let directory = CheckpointDirectory(path: dir.path)
        #expect(try directory.earlierRun().runFiles.contains("best"))
        try directory.removeEarlierRun()
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir.path).isEmpty)
    }

    @Test("a flipped byte inside a tensor's chunk is a clear corrupt-tensor error")
    func corruptTensor() throws {
        let dir = try TemporaryDirectory("shard")
        defer { dir.cleanup() }
        let c = sampleCheckpoint(step: 4)
        let path = try c.write(to: dir.path, keep: 1)
        let target = c.params[2].tensor  // projector.fc1.weight: find its stored bytes and damage one
        let at = try #require(try offset(of: bytes(of: target.array), in: path))
        try flipByte(path, at: at + 9)
        expectShardError(.corrupt, mentioning: [path, "/params/projector.fc1.weight", "corrupt"]) {
            _ = try Checkpoint.read(path: path)
        }
        expectShardError(.corrupt, mentioning: ["projector.fc1.weight"]) { _ = try Checkpoint.readLatest(dir: dir.path) }
    }

    @Test("missing attributes, a bad latest and inconsistent state are named")
    func badFiles() throws {
        let dir = try TemporaryDirectory("shard")
        defer { dir.cleanup() }
        let f = try HDF5File.create(dir.file("x.h5"))
        try f.root.setAttribute("format", string: "dehvf-checkpoint")
        try f.root.setAttribute("version", int: 1)
        try f.close()
        expectShardError(.missingAttribute, mentioning: ["x.h5", "@step"]) { _ = try Checkpoint.read(path: dir.file("x.h5")) }
        try DurableFile.write(dir.file("latest"), text: "../etc/passwd\n")
        expectShardError(.corrupt, mentioning: ["latest", "step-NNNNNNNN.h5"]) { _ = try Checkpoint.readLatest(dir: dir.path) }
        var c = sampleCheckpoint(step: 3)
        c.lossHistory.removeLast()
        expectShardError(.badShape, mentioning: ["history/loss", "[3]", "[2]"]) { try c.write(to: dir.path, keep: 1) }
        c = sampleCheckpoint(step: 3)
        c.expAvg = TensorSet(Array(c.expAvg.dropLast()))
        expectShardError(.badShape, mentioning: ["optimizer/exp_avg"]) { try c.write(to: dir.path, keep: 1) }
    }

    @Test("compatibility check names every difference")
    func validate() throws {
        let c = sampleCheckpoint(step: 1)
        let expected = c.params.shapes.map { ($0.name, $0.shape) }
        try c.validate(backbone: c.backbone, parameters: expected)
        var wrong = expected
        wrong[0].1 = [2, 3, 5]
        wrong.removeLast()
        wrong.append(("prompt.value_pos", [7, 4]))
        expectShardError(.incompatibleCheckpoint, mentioning: [
            "backbone fingerprint differs", "router.weight has shape [2, 3, 4], job expects [2, 3, 5]",
            "prompt.value_pos [7, 4] missing", "unexpected parameter prompt.key_pos",
        ]) { try c.validate(backbone: "other", parameters: wrong) }
    }

    @Test("named-tensor files for inspect gradients: groups and root tensors round trip")
    func tensorFile() throws {
        let dir = try TemporaryDirectory("shard")
        defer { dir.cleanup() }
        let grads = sampleCheckpoint(step: 2).params
        let loss = Tensor(shape: [], values: [2.5])
        try TensorFile.write(to: dir.file("g.h5"), groups: [("grads", grads)], root: [NamedTensor("loss", loss)],
                             strings: [("format", "dehvf-gradients")], ints: [("step", 2)])
        let f = try HDF5File.open(dir.file("g.h5"))
        #expect(try TensorFile.read(group: try f.root.openGroup("grads")) == grads)
        let l = try TensorFile.readTensor("loss", in: f.root)
        #expect(l.shape == [] && l.data[0] == 2.5)
        #expect(try f.root.readString("format") == "dehvf-gradients" && f.root.readInt("step") == 2)
    }

    @Test("a writer killed with SIGKILL at random moments never leaves latest naming a torn file")
    func crash() throws {
        let dir = try TemporaryDirectory("shard")
        defer { dir.cleanup() }
        let exe = try checkpointCrashWriter()
        var rng = SystemRandomNumberGenerator()
        var lastStep = 0
        var kills = 0
        var midWrite = 0  // kills that left a half-written temporary: proof the kill landed inside a write
        // 20 rounds, and more (up to 60) until a kill has landed inside a write: the window where a
        // temporary exists is a few ms of each checkpoint, and on a loaded machine 20 kills can miss it.
        var rounds = 0
        for round in 0..<60 where round < 20 || midWrite == 0 {
            rounds += 1
            let p = Process()
            p.executableURL = URL(fileURLWithPath: exe)
            p.arguments = [dir.path]
            p.standardOutput = FileHandle.nullDevice
            try p.run()
            usleep(UInt32.random(in: 20_000...250_000, using: &rng))
            if p.isRunning {
                kill(p.processIdentifier, SIGKILL)
                kills += 1
            }
            p.waitUntilExit()
            let names = (try? FileManager.default.contentsOfDirectory(atPath: dir.path)) ?? []
            if names.contains(where: { $0.hasPrefix(".") && $0.contains(".tmp-") }) { midWrite += 1 }
            guard let c = try Checkpoint.readLatest(dir: dir.path) else {
                #expect(!FileManager.default.fileExists(atPath: dir.file("latest")))
                continue
            }
            // Complete: every value is the one the writer derives from the step it claims.
            #expect(sameCheckpoint(c, sampleCheckpointForCrash(step: c.step)), "round \(round): step \(c.step) differs")
            #expect(c.step >= lastStep, "round \(round): latest went back from \(lastStep) to \(c.step)")
            lastStep = c.step
        }
        #expect(kills * 4 >= rounds * 3, "the writer exited on its own too often (\(kills) kills in \(rounds) runs)")
        #expect(lastStep > 0, "no checkpoint was ever completed in \(rounds) runs")
        #expect(midWrite > 0, "no kill landed inside a write, so nothing was tested")
    }

    /// Runs the CheckpointCrashWriter through /bin/sh with `shell` before it, to the end.
    private func runWriter(_ shell: String, _ arguments: [String]) throws -> (reason: Process.TerminationReason,
                                                                           status: Int32, stderr: String) {
        let exe = try checkpointCrashWriter()
        let err = try TemporaryDirectory("err")
        defer { err.cleanup() }
        _ = FileManager.default.createFile(atPath: err.file("stderr"), contents: nil)
        let handle = try FileHandle(forWritingTo: err.fileURL("stderr"))
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/bin/sh")
        p.arguments = ["-c", shell + "; exec \"$0\" \"$@\"", exe] + arguments
        p.standardOutput = FileHandle.nullDevice
        p.standardError = handle
        try p.run()
        p.waitUntilExit()
        try handle.close()
        return (p.terminationReason, p.terminationStatus, (try? String(contentsOfFile: err.file("stderr"), encoding: .utf8)) ?? "")
    }

    @Test("a checkpoint write that hits the file size limit (EFBIG) is a clean error: no crash, latest and the previous checkpoint intact")
    func writeFails() throws {
        let dir = try TemporaryDirectory("shard")
        defer { dir.cleanup() }
        let previous = sampleCheckpointForCrash(step: 1)
        try previous.write(to: dir.path, keep: 2)
        // 64 blocks of 512 bytes (sh's unit) is far below the 800 KB checkpoint of step 2. SIGXFSZ is
        // ignored so that write(2) returns EFBIG, as it does for a full disk with ENOSPC. Before the fix
        // this printed "File too large" and then died of SIGSEGV inside libhdf5.
        let limited = try runWriter("trap '' XFSZ; ulimit -f 64", [dir.path, "--once", "2"])
        #expect(limited.reason == .exit, "the writer died of signal \(limited.status): \(limited.stderr)")
        #expect(limited.status == 1, "\(limited.stderr)")
        for m in ["/.step-00000002.h5.tmp-", "writing the file failed: File too large", "ulimit -f"] {
            #expect(limited.stderr.contains(m), "\"\(m)\" missing from: \(limited.stderr)")
        }
        #expect(try String(contentsOfFile: dir.file("latest"), encoding: .utf8) == "step-00000001.h5\n")
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir.path).sorted() == ["latest", "step-00000001.h5"],
                "the temporary must be removed")
        let loaded = try #require(try Checkpoint.readLatest(dir: dir.path))
        #expect(sameCheckpoint(loaded, previous))

        // The same command without the limit succeeds: the failure above was the limit's.
        let free = try runWriter("trap '' XFSZ", [dir.path, "--once", "2"])
        #expect(free.reason == .exit && free.status == 0, "\(free.stderr)")
        #expect(try Checkpoint.readLatest(dir: dir.path)?.step == 2)
    }

    @Test("a write that fails half-way leaves no file and no open HDF5 handle: the same path is written next")
    func failedWriteIsClosed() throws {
        let dir = try TemporaryDirectory("shard")
        defer { dir.cleanup() }
        let p = dir.file("g.h5")
        let good = sampleCheckpoint(step: 1).params
        // The second tensor's name is refused after the first tensor is in the file.
        let bad = TensorSet([good[0], NamedTensor("a/b", good[1].tensor)])
        expectShardError(.badValue, mentioning: ["\"a/b\""]) { try TensorFile.write(to: p, groups: [("grads", bad)]) }
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir.path).isEmpty, "nothing may be left")
        // Were the failed file still open inside HDF5, creating one of the same name would fail.
        try TensorFile.write(to: p, groups: [("grads", good)])
        #expect(try TensorFile.read(group: try HDF5File.open(p).root.openGroup("grads")) == good)

        // A file created and dropped without close() never reaches the disk.
        _ = try HDF5File.create(dir.file("dropped.h5"))
        #expect(!FileManager.default.fileExists(atPath: dir.file("dropped.h5")))

        // A directory that does not exist: an .io error naming the file, for the dataset writer too.
        let missing = dir.file("no/such/dir/d.h5")
        expectShardError(.io, mentioning: ["no/such/dir", "No such file or directory"]) {
            try DatasetWriter.write(makeContents(), to: missing)
        }
    }
}

/// The CheckpointCrashWriter test-support executable, built beside the test bundle by `swift build`.
func checkpointCrashWriter() throws -> String {
    let exe = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath().deletingLastPathComponent()
        .appendingPathComponent("CheckpointCrashWriter").path
    try #require(FileManager.default.isExecutableFile(atPath: exe),
                 "build the CheckpointCrashWriter test-support target (swift build) first: \(exe)")
    return exe
}

/// Must match Tests/Support/CheckpointCrashWriter/main.swift.
func sampleCheckpointForCrash(step: Int) -> Checkpoint { sampleCheckpoint(step: step, big: true) }
