import Foundation

/// A checkpoint directory (`checkpoint.dir`) as one training run owns it: an exclusive lock so that two
/// coordinators never write into one directory, and the earlier run it may hold, told apart from
/// everything else a user keeps there.
///
/// The lock is an `flock` on `DIR/.lock`, so the kernel releases it when its holder exits, however it
/// exits (SIGKILL included): a stale `.lock` file never blocks anyone. The file holds the holder's pid and
/// host, for the message the next would-be owner sees.
///
/// An earlier run is made of exactly: regular files named `step-NNNNNNNN.h5` (8 or more digits) that open
/// as DEHVF checkpoints, and the regular files `latest`, `best` and `train.jsonl`, and its `worker-N.log` files. Symbolic links, directories, and files that only look like checkpoints
/// (`step-notes.h5`, a `step-00000001.h5` that is not a DEHVF checkpoint) are never touched.
public final class CheckpointDirectory {
    public static let lockName = ".lock"
    public static let logName = "train.jsonl"
    /// The coordinator's TensorBoard event files: `tb/events.out.tfevents.*` (`logging.tensorboard`).
    public static let eventDirectory = "tb", eventFilePrefix = "events.out.tfevents."

    public let path: String
    /// The open `.lock` while this object holds the lock, else -1.
    private var lockFD: Int32 = -1

    public init(path: String) {
        self.path = path
    }

    deinit { unlock() }

    private func file(_ name: String) -> String { (path as NSString).appendingPathComponent(name) }

    // MARK: Lock

    /// Whether this object holds the lock.
    public var isLocked: Bool { lockFD >= 0 }

    /// Takes the directory (creating it if needed) for this process: an exclusive, non-blocking `flock`
    /// on `DIR/.lock` (created 0644), held until `unlock()`, this object's release, or the process's exit.
    /// Throws `.io` naming the holder's pid and host when another process holds it.
    public func lock() throws {
        if isLocked { return }
        do {
            try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        } catch {
            throw ShardError(.io, "cannot create the checkpoint directory (checkpoint.dir)", path: path, cause: error)
        }
        let lockPath = file(Self.lockName)
        // O_CLOEXEC: a worker this process starts must not inherit the lock and hold it after we exit.
        // O_NOFOLLOW: a symbolic link planted as .lock is refused, not followed.
        let fd = open(lockPath, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0o644)
        if fd < 0 {
            let code = errno
            throw ShardError(.io, "cannot open the lock file: \(String(cString: strerror(code))); check the "
                             + "directory's permissions", path: lockPath,
                             cause: POSIXError(POSIXErrorCode(rawValue: code) ?? .EIO))
        }
        var rc: Int32
        repeat { rc = flock(fd, LOCK_EX | LOCK_NB) } while rc != 0 && errno == EINTR
        if rc != 0 {
            let code = errno
            let holder = code == EWOULDBLOCK ? Self.describeHolder(fd) : nil
            close(fd)
            if code == EWOULDBLOCK {
                throw ShardError(.io, "checkpoint.dir is in use by another training run (\(holder ?? "holder unknown")); "
                                 + "stop that run, or set checkpoint.dir to another directory", path: lockPath)
            }
            throw ShardError(.io, "cannot lock the checkpoint directory: \(String(cString: strerror(code)))",
                             path: lockPath, cause: POSIXError(POSIXErrorCode(rawValue: code) ?? .EIO))
        }
        // Ours: record who holds it. A failure here only loses the note, not the lock.
        let note = Array("pid \(getpid()) on host \(Self.hostName())\n".utf8)
        if ftruncate(fd, 0) == 0 {
            _ = note.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, 0) }
        }
        lockFD = fd
    }

    /// Releases the lock (the `.lock` file stays: removing it would let a third process lock a new file
    /// while a second still waits on the old one).
    public func unlock() {
        guard lockFD >= 0 else { return }
        close(lockFD)  // closing the only descriptor of the open file releases the flock
        lockFD = -1
    }

    /// The holder's note ("pid 123 on host node1"), read from the locked file.
    private static func describeHolder(_ fd: Int32) -> String? {
        var buf = [UInt8](repeating: 0, count: 256)
        let n = buf.withUnsafeMutableBytes { pread(fd, $0.baseAddress, $0.count, 0) }
        guard n > 0 else { return nil }
        let text = String(decoding: buf[0..<n], as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        // Only the first line, printable characters: the file is another process's, not trusted.
        let line = text.split(separator: "\n").first.map(String.init) ?? ""
        let clean = String(line.unicodeScalars.filter { $0.value >= 0x20 && $0.value != 0x7f }.prefix(120))
        return clean.isEmpty ? nil : "held by " + clean
    }

    private static func hostName() -> String {
        var buf = [CChar](repeating: 0, count: 256)
        guard gethostname(&buf, buf.count - 1) == 0 else { return "unknown" }
        return String(cString: buf)
    }

    // MARK: The earlier run

    /// What a directory holds of an earlier run, and what it holds that looks like one but is not.
    public struct EarlierRun: Sendable, Equatable {
        /// Checkpoint files (regular, `step-NNNNNNNN.h5`, DEHVF format), oldest step first.
        public var checkpoints: [String] = []
        /// `latest`, `best` and `train.jsonl`, those present as regular files.
        public var runFiles: [String] = []
        /// `worker-N.log` regular files (removed with the run, but alone they are no earlier run).
        public var workerLogs: [String] = []
        /// `tb/events.out.tfevents.*` regular files: the run's TensorBoard log, which goes with train.jsonl.
        public var eventFiles: [String] = []
        /// Names that look like the run's but are left alone, with the reason.
        public var leftAlone: [LeftAlone] = []

        /// Whether there is an earlier run to resume or to start over from: a checkpoint, or `latest`.
        /// A log alone (`train.jsonl`, worker logs: a run that stopped before its first checkpoint, a
        /// Slurm job requeued before it saved one) is no run to resume, and a new run appends to it.
        public var exists: Bool { !checkpoints.isEmpty || runFiles.contains(Checkpoint.latestName) }
        /// Everything `removeEarlierRun()` removes, in order.
        public var files: [String] { checkpoints + runFiles + workerLogs + eventFiles }
    }

    public struct LeftAlone: Sendable, Equatable, CustomStringConvertible {
        public var name: String
        public var reason: String
        public var description: String { "\(name) (\(reason))" }
    }

    /// What the directory holds of an earlier run (nothing if it does not exist). Reads every candidate
    /// checkpoint's `format` attribute; nothing is removed.
    public func earlierRun() throws -> EarlierRun {
        var run = EarlierRun()
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else { return run }
        guard isDirectory.boolValue else {
            throw ShardError(.io, "checkpoint.dir is not a directory", path: path)
        }
        let names: [String]
        do {
            names = try FileManager.default.contentsOfDirectory(atPath: path).sorted()
        } catch {
            throw ShardError(.io, "cannot list the checkpoint directory", path: path, cause: error)
        }
        var steps: [(String, Int)] = []
        for name in names {
            let kind = Self.kind(of: name)
            guard kind != .unrelated else { continue }
            if let problem = regularFileProblem(name) {
                run.leftAlone.append(LeftAlone(name: name, reason: problem))
                continue
            }
            switch kind {
            case .checkpoint(let step):
                if let problem = notACheckpoint(name) {
                    run.leftAlone.append(LeftAlone(name: name, reason: problem))
                } else {
                    steps.append((name, step))
                }
            case .runFile: run.runFiles.append(name)
            case .workerLog: run.workerLogs.append(name)
            case .lookalike: run.leftAlone.append(LeftAlone(name: name, reason: "not named step-NNNNNNNN.h5"))
            case .unrelated: break
            }
        }
        let events = file(Self.eventDirectory)
        for name in ((try? FileManager.default.contentsOfDirectory(atPath: events)) ?? []).sorted()
        where name.hasPrefix(Self.eventFilePrefix) {
            let relative = (Self.eventDirectory as NSString).appendingPathComponent(name)
            if let problem = regularFileProblem(relative) {
                run.leftAlone.append(LeftAlone(name: relative, reason: problem))
            } else {
                run.eventFiles.append(relative)
            }
        }
        run.checkpoints = steps.sorted { $0.1 < $1.1 }.map(\.0)
        run.runFiles.sort { $0 == Checkpoint.latestName && $1 != Checkpoint.latestName }
        return run
    }

    /// What `removeEarlierRun()` did.
    public struct Removal: Sendable, Equatable {
        /// Names removed: checkpoints, `latest`, `best`, `train.jsonl`, worker logs, TensorBoard event files.
        public var removed: [String]
        /// The earlier run's checkpoints among `removed`.
        public var checkpoints: Int
        /// Names that looked like the run's and were left alone, with the reason.
        public var leftAlone: [LeftAlone]
    }

    /// Removes exactly the earlier run's files (`earlierRun().files`) and nothing else. The lock should be
    /// held (`lock()`), so that no other run is writing them.
    @discardableResult
    public func removeEarlierRun() throws -> Removal {
        let run = try earlierRun()
        var removed: [String] = []
        for name in run.files {
            if unlink(file(name)) != 0 && errno != ENOENT {
                let code = errno
                throw ShardError(.io, "cannot remove a file of the earlier run: \(String(cString: strerror(code)))",
                                 path: file(name), cause: POSIXError(POSIXErrorCode(rawValue: code) ?? .EIO))
            }
            removed.append(name)
        }
        if !run.eventFiles.isEmpty { rmdir(file(Self.eventDirectory)) }   // only if nothing else is in it
        if !removed.isEmpty { try? DurableFile.fsync(path: path, directory: true) }
        return Removal(removed: removed, checkpoints: run.checkpoints.count, leftAlone: run.leftAlone)
    }

    // MARK: Names

    private enum Kind: Equatable {
        case checkpoint(step: Int), runFile, workerLog, lookalike, unrelated
    }

    /// What a name would be if it were a regular file of the right format.
    private static func kind(of name: String) -> Kind {
        if let step = Checkpoint.step(ofFileName: name) { return .checkpoint(step: step) }
        if name == Checkpoint.latestName || name == Checkpoint.bestName || name == logName { return .runFile }
        if name.hasPrefix("worker-"), name.hasSuffix(".log") {
            let digits = name.dropFirst(7).dropLast(4)
            if !digits.isEmpty, digits.allSatisfy({ $0.isASCII && $0.isNumber }) { return .workerLog }
        }
        if name.hasPrefix("step-") && name.hasSuffix(".h5") { return .lookalike }
        return .unrelated
    }

    /// Why `name` is not a regular file (lstat: a symbolic link is not followed), or nil if it is one.
    private func regularFileProblem(_ name: String) -> String? { Self.regularFileProblem(file(name)) }

    private static func regularFileProblem(_ path: String) -> String? {
        var st = stat()
        guard lstat(path, &st) == 0 else { return "cannot stat: \(String(cString: strerror(errno)))" }
        switch st.st_mode & S_IFMT {
        case S_IFREG: return nil
        case S_IFLNK: return "a symbolic link"
        case S_IFDIR: return "a directory"
        default: return "not a regular file"
        }
    }

    /// Why the regular file `name` is not a DEHVF checkpoint, or nil if it opens as one.
    private func notACheckpoint(_ name: String) -> String? { Self.notACheckpoint(file(name)) }

    private static func notACheckpoint(_ path: String) -> String? {
        do {
            let format = try HDF5File.open(path).root.readString("format")
            return format == Checkpoint.format ? nil : "not a DEHVF checkpoint: format \"\(format.prefix(40))\""
        } catch let e as ShardError {
            return "not a DEHVF checkpoint: \(e.object.map { $0 + ": " } ?? "")\(e.message.prefix(120))"
        } catch {
            return "not a DEHVF checkpoint: \(error)"
        }
    }

    /// Whether `path` is a checkpoint file a run may delete: a regular file (not a link) that opens as a
    /// DEHVF checkpoint. The keep policy (`Checkpoint.prune`) uses the same rule as `--fresh`.
    static func isCheckpointFile(_ path: String) -> Bool {
        regularFileProblem(path) == nil && notACheckpoint(path) == nil
    }
}
