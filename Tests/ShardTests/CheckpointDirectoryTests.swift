import Foundation
import Model
import Shard
import TestSupport
import Testing

/// Whether another process can take `path`'s flock right now: `flock -n FILE true` (util-linux) exits 0
/// when it got the lock, 1 when someone holds it.
private func flockFree(_ path: String) throws -> Bool {
    let r = try run("/usr/bin/flock", ["-n", "-E", "75", path, "true"])
    try #require(r.status == 0 || r.status == 75, "flock failed: \(r.stderr)")
    return r.status == 0
}

/// The same question asked by Python's fcntl.flock, non-blocking.
private func pythonFlockFree(_ path: String) throws -> Bool {
    let r = try python("""
        import sys, fcntl
        with open(sys.argv[1], "r+") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                sys.exit(3)
        """, [path])
    try #require(r.status == 0 || r.status == 3, "python failed: \(r.stderr)")
    return r.status == 0
}

@Suite("Checkpoint directories", .serialized)
struct CheckpointDirectoryTests {
    @Test("lock: another process cannot take it while held, and can once it is released or the object goes away")
    func lockExcludesOthers() throws {
        let dir = try TemporaryDirectory("shard")
        defer { dir.cleanup() }
        let path = dir.file("run/ckpt")  // created by lock()
        let lockFile = path + "/.lock"
        do {
            let owner = CheckpointDirectory(path: path)
            try owner.lock()
            #expect(owner.isLocked)
            #expect(try !flockFree(lockFile))
            #expect(try !pythonFlockFree(lockFile))
            let mode = (try FileManager.default.attributesOfItem(atPath: lockFile)[.posixPermissions] as? NSNumber)?.intValue
            #expect(mode == 0o644)
            let note = try String(contentsOfFile: lockFile, encoding: .utf8)
            #expect(note.hasPrefix("pid \(getpid()) on host "), "\(note)")
            owner.unlock()
            #expect(try flockFree(lockFile))
            try owner.lock()
            #expect(try !flockFree(lockFile))
        }
        // Released with its object.
        #expect(try flockFree(lockFile))
    }

    @Test("lock: a child process started while it is held does not inherit it")
    func lockNotInherited() throws {
        let dir = try TemporaryDirectory("shard")
        defer { dir.cleanup() }
        let owner = CheckpointDirectory(path: dir.path)
        try owner.lock()
        let child = Process()
        child.executableURL = URL(fileURLWithPath: "/bin/sleep")
        child.arguments = ["30"]
        try child.run()
        defer {
            kill(child.processIdentifier, SIGKILL)
            child.waitUntilExit()
        }
        owner.unlock()
        #expect(try flockFree(dir.path + "/.lock"), "the child kept the coordinator's lock (a local worker would)")
    }

    @Test("lock: a second locker is told the holder's pid and host; the lock is free once the holder is SIGKILLed")
    func secondLocker() throws {
        let dir = try TemporaryDirectory("shard")
        defer { dir.cleanup() }
        let holder = Process()
        holder.executableURL = URL(fileURLWithPath: try checkpointCrashWriter())
        holder.arguments = [dir.path, "--lock"]
        let out = Pipe()
        holder.standardOutput = out
        try holder.run()
        var killed = false
        defer {
            if !killed {
                kill(holder.processIdentifier, SIGKILL)
                holder.waitUntilExit()
            }
        }
        let line = String(decoding: out.fileHandleForReading.availableData, as: UTF8.self)
        try #require(line.contains("locked"), "the holder did not take the lock: \(line)")

        let me = CheckpointDirectory(path: dir.path)
        expectShardError(.io, mentioning: [dir.path + "/.lock", "checkpoint.dir is in use by another training run",
                                           "held by pid \(holder.processIdentifier) on host ",
                                           "stop that run, or set checkpoint.dir to another directory"]) {
            try me.lock()
        }
        #expect(!me.isLocked)

        kill(holder.processIdentifier, SIGKILL)
        holder.waitUntilExit()
        killed = true
        #expect(holder.terminationReason == .uncaughtSignal)
        // The .lock file is still there, naming the dead holder: the kernel released the flock anyway.
        #expect(try String(contentsOfFile: dir.file(".lock"), encoding: .utf8).contains("pid \(holder.processIdentifier)"))
        try me.lock()
        #expect(me.isLocked)
        #expect(try String(contentsOfFile: dir.file(".lock"), encoding: .utf8).hasPrefix("pid \(getpid()) "))
    }

    @Test("lock: a symbolic link planted as .lock is refused, not followed")
    func lockSymlink() throws {
        let dir = try TemporaryDirectory("shard")
        defer { dir.cleanup() }
        try Data("keep me\n".utf8).write(to: URL(fileURLWithPath: dir.file("target")))
        try FileManager.default.createSymbolicLink(atPath: dir.file(".lock"), withDestinationPath: dir.file("target"))
        expectShardError(.io, mentioning: [".lock", "cannot open the lock file"]) {
            try CheckpointDirectory(path: dir.path).lock()
        }
        #expect(try String(contentsOfFile: dir.file("target"), encoding: .utf8) == "keep me\n")
    }

    /// A directory with an earlier run and everything a user might keep beside it that looks like one.
    private func populate(_ dir: TemporaryDirectory) throws -> TemporaryDirectory {
        let fm = FileManager.default
        for step in [1, 12] { try sampleCheckpoint(step: step).write(to: dir.path, keep: 5) }  // latest -> 12
        try Data("{\"step\": 0}\n".utf8).write(to: dir.fileURL("train.jsonl"))
        for name in ["worker-1.log", "worker-2.log", "worker-x.log", "notes.txt", "step-notes.h5"] {
            try Data("user data\n".utf8).write(to: dir.fileURL(name))
        }
        try fm.createDirectory(atPath: dir.file("step-00000003.h5/inside"), withIntermediateDirectories: true)
        try Data("inside\n".utf8).write(to: dir.fileURL("step-00000003.h5/inside/file"))
        // A real checkpoint outside, linked in under a checkpoint's name: neither the link nor it is removed.
        let outside = try TemporaryDirectory("outside")
        try sampleCheckpoint(step: 4).write(to: outside.path, keep: 1)
        try fm.createSymbolicLink(atPath: dir.file("step-00000004.h5"), withDestinationPath: outside.file("step-00000004.h5"))
        try fm.createSymbolicLink(atPath: dir.file("worker-3.log"), withDestinationPath: outside.file("latest"))
        try Data("not hdf5\n".utf8).write(to: dir.fileURL("step-00000005.h5"))
        try DatasetWriter.write(makeContents(n: 2), to: dir.file("step-00000006.h5"))  // HDF5, another format
        try Data("x".utf8).write(to: dir.fileURL("step-0000007.h5"))                   // 7 digits
        // The TensorBoard log: its event files go with the run; anything else in tb/, or a link, stays.
        try fm.createDirectory(atPath: dir.file("tb"), withIntermediateDirectories: true)
        for name in ["events.out.tfevents.1700000000.a", "events.out.tfevents.1700000009.a", "notes.txt"] {
            try Data("x".utf8).write(to: dir.fileURL("tb/\(name)"))
        }
        try fm.createSymbolicLink(atPath: dir.file("tb/events.out.tfevents.1700000010.a"), withDestinationPath: dir.file("tb/notes.txt"))
        return outside
    }

    @Test("earlierRun: only regular DEHVF checkpoint files, latest and train.jsonl are the earlier run")
    func earlierRun() throws {
        let dir = try TemporaryDirectory("shard")
        defer { dir.cleanup() }
        #expect(try !CheckpointDirectory(path: dir.file("absent")).earlierRun().exists)
        #expect(try !CheckpointDirectory(path: dir.path).earlierRun().exists)
        let outside = try populate(dir)
        defer { outside.cleanup() }
        let run = try CheckpointDirectory(path: dir.path).earlierRun()
        #expect(run.exists)
        #expect(run.checkpoints == ["step-00000001.h5", "step-00000012.h5"])
        #expect(run.runFiles == ["latest", "train.jsonl"])
        #expect(run.workerLogs == ["worker-1.log", "worker-2.log"])
        #expect(run.eventFiles == ["tb/events.out.tfevents.1700000000.a", "tb/events.out.tfevents.1700000009.a"])
        let reasons = Dictionary(uniqueKeysWithValues: run.leftAlone.map { ($0.name, $0.reason) })
        #expect(Set(reasons.keys) == ["step-00000003.h5", "step-00000004.h5", "step-00000005.h5", "step-00000006.h5",
                                      "step-notes.h5", "step-0000007.h5", "worker-3.log", "tb/events.out.tfevents.1700000010.a"])
        #expect(reasons["tb/events.out.tfevents.1700000010.a"] == "a symbolic link")
        #expect(reasons["step-00000003.h5"] == "a directory")
        #expect(reasons["step-00000004.h5"] == "a symbolic link")
        #expect(reasons["worker-3.log"] == "a symbolic link")
        #expect(reasons["step-00000005.h5"]?.contains("not a DEHVF checkpoint") == true)
        #expect(reasons["step-00000006.h5"] == "not a DEHVF checkpoint: format \"dehvf-dataset\"")
        #expect(reasons["step-notes.h5"] == "not named step-NNNNNNNN.h5")

        // Only look-alikes (and worker logs): no earlier run.
        let other = try TemporaryDirectory("shard")
        defer { other.cleanup() }
        try FileManager.default.createDirectory(atPath: other.file("step-00000001.h5"), withIntermediateDirectories: true)
        try Data("x".utf8).write(to: other.fileURL("step-notes.h5"))
        try Data("x".utf8).write(to: other.fileURL("worker-1.log"))
        try FileManager.default.createSymbolicLink(atPath: other.file("latest"), withDestinationPath: dir.file("latest"))
        let none = try CheckpointDirectory(path: other.path).earlierRun()
        #expect(!none.exists && none.checkpoints.isEmpty && none.runFiles.isEmpty, "\(none)")
        #expect(none.workerLogs == ["worker-1.log"] && none.files == ["worker-1.log"])

        // A log alone (a run stopped before its first checkpoint) is no run to resume; latest alone is.
        try Data("{}\n".utf8).write(to: other.fileURL("train.jsonl"))
        let log = try CheckpointDirectory(path: other.path).earlierRun()
        #expect(!log.exists && log.runFiles == ["train.jsonl"])
        try FileManager.default.removeItem(atPath: other.file("latest"))
        try Data("step-00000001.h5\n".utf8).write(to: other.fileURL("latest"))
        #expect(try CheckpointDirectory(path: other.path).earlierRun().exists)
    }

    @Test("removeEarlierRun removes exactly the run's files and reports what it left alone")
    func removeEarlierRun() throws {
        let dir = try TemporaryDirectory("shard")
        defer { dir.cleanup() }
        let outside = try populate(dir)
        defer { outside.cleanup() }
        let owner = CheckpointDirectory(path: dir.path)
        try owner.lock()
        let removal = try owner.removeEarlierRun()
        #expect(removal.removed == ["step-00000001.h5", "step-00000012.h5", "latest", "train.jsonl",
                                    "worker-1.log", "worker-2.log",
                                    "tb/events.out.tfevents.1700000000.a", "tb/events.out.tfevents.1700000009.a"])
        #expect(removal.checkpoints == 2)
        #expect(removal.leftAlone.count == 8)
        let left = try FileManager.default.contentsOfDirectory(atPath: dir.path).sorted()
        #expect(left == [".lock", "notes.txt", "step-00000003.h5", "step-00000004.h5", "step-00000005.h5",
                         "step-00000006.h5", "step-0000007.h5", "step-notes.h5", "tb", "worker-3.log", "worker-x.log"])
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir.file("tb")).sorted()
                == ["events.out.tfevents.1700000010.a", "notes.txt"])
        #expect(FileManager.default.fileExists(atPath: dir.file("step-00000003.h5/inside/file")))
        #expect(try Checkpoint.read(path: outside.file("step-00000004.h5")).step == 4, "the link's target is untouched")
        #expect(try String(contentsOfFile: dir.file("step-notes.h5"), encoding: .utf8) == "user data\n")
        #expect(try !owner.earlierRun().exists)
        #expect(try owner.removeEarlierRun().removed.isEmpty)
    }
}
