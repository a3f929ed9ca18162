import Crypto
import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The node's F32 copies of half-precision safetensors files (DESIGN §3): widening F16/BF16 to F32 is
/// exact, so the first process that needs a file converts it once into this directory and every process
/// on the node maps the copy, sharing its pages as it would share an F32 file's.
///
/// One entry per source file (keyed by its real path), three files named after it:
/// `NAME-KEY.f32.safetensors` (the copy), `NAME-KEY.json` (its manifest: the source's identity and
/// SHA-256, the copy's size and SHA-256) and `NAME-KEY.lock`. Everything happens under an exclusive
/// `flock` on the lock file, so of the processes that start together exactly one converts and the
/// others wait, then map its result. A copy is written under a temporary name, fsynced and renamed
/// before its manifest is, so a crash leaves either no entry or a complete one.
///
/// An entry is used when its manifest records the source's current `FileIdentity` (device, inode, size,
/// mtime and ctime: a stat, where hashing a 14 GB shard takes 10 s and reads it all), the copy has the
/// size the source's header implies, and the copy's header holds the source's tensors as F32. Its SHA-256
/// is checked when written and then by the first process that uses it in each boot (or every time, with
/// `.always`); the source's SHA-256, computed as it streamed through the conversion, is the file's
/// fingerprint (`BackboneFingerprint`). Anything else is reported, removed and rebuilt.
/// - warning: the copies are mapped: delete an entry only by removing its files (safe even while a job
///   maps them), never by truncating or editing one in place.
public final class F32Cache: Sendable {
    /// The environment variable that names the cache directory.
    public static let environmentVariable = "DEHVF_CACHE_DIR"

    public enum Verification: Sendable {
        /// The copy's SHA-256 is checked by the first process that uses it after each boot; later ones
        /// check its identity, size and header. A 27 GB copy costs about 20 s to hash: once per boot, not
        /// once per worker.
        case oncePerBoot
        /// The copy's SHA-256 is checked on every use.
        case always
    }

    /// What opening an entry took.
    public enum Outcome: Sendable, Equatable, CustomStringConvertible {
        /// There was no entry; this process wrote it.
        case converted
        /// A valid entry was mapped as it is.
        case reused
        /// The entry was damaged or stale (the reason); this process removed it and wrote it again.
        case rebuilt(reason: String)

        public var description: String {
            switch self {
            case .converted: "converted"
            case .reused: "reused"
            case .rebuilt: "rebuilt"
            }
        }
    }

    /// The F32 copy a `SafetensorsFile` reads from.
    public struct Entry: Sendable {
        /// The copy in the cache directory.
        public let file: URL
        public let outcome: Outcome
        /// Wall time spent on this entry (waiting for its lock, checking, converting), in seconds.
        public let seconds: Double
        /// SHA-256 of the source file, as hex (computed while converting it).
        public let sourceSHA256: String
    }

    public let directory: URL
    public let verification: Verification
    private let report: @Sendable (String) -> Void

    /// A cache in `directory` (created when first needed). `report` receives one line per conversion,
    /// reuse, wait and repair.
    public init(directory: URL, verification: Verification = .oncePerBoot,
                report: @escaping @Sendable (String) -> Void = { F32Cache.printToStandardError($0) }) {
        self.directory = directory.standardizedFileURL
        self.verification = verification
        self.report = report
    }

    public static func printToStandardError(_ line: String) {
        FileHandle.standardError.write(Data("dehvf: \(line)\n".utf8))
    }

    /// `$DEHVF_CACHE_DIR`, else `$XDG_CACHE_HOME/dehvf`, else `$HOME/.cache/dehvf` (relative values are
    /// ignored, as the XDG spec asks). The copies are derived data that can always be rebuilt, which is
    /// what the XDG cache directory is for, and each node needs its own: where home directories are on
    /// network storage, point `DEHVF_CACHE_DIR` at a local disk.
    public static func defaultDirectory(environment: [String: String] = ProcessInfo.processInfo.environment) -> URL {
        func absolute(_ key: String) -> String? {
            guard let value = environment[key], value.hasPrefix("/") else { return nil }
            return value
        }
        if let explicit = environment[environmentVariable], !explicit.isEmpty {
            return URL(fileURLWithPath: explicit, isDirectory: true)
        }
        if let xdg = absolute("XDG_CACHE_HOME") { return URL(fileURLWithPath: xdg).appendingPathComponent("dehvf", isDirectory: true) }
        let home = absolute("HOME") ?? NSHomeDirectory()
        return URL(fileURLWithPath: home).appendingPathComponent(".cache/dehvf", isDirectory: true)
    }

    /// The cache at `defaultDirectory()`, reporting on standard error.
    public static func forThisNode(environment: [String: String] = ProcessInfo.processInfo.environment) -> F32Cache {
        F32Cache(directory: defaultDirectory(environment: environment))
    }

    // MARK: Entry files

    /// `NAME-KEY`: the source's file name without `.safetensors`, and 16 hex digits of the SHA-256 of its
    /// real path (symbolic links resolved, so the snapshots of a Hugging Face hub cache that link one blob
    /// share one entry).
    func stem(for source: URL) -> String {
        let real = source.path.withCString { pointer -> String in
            guard let resolved = realpath(pointer, nil) else { return source.standardizedFileURL.path }
            defer { free(resolved) }
            return String(cString: resolved)
        }
        let key = SHA256.hash(data: Data(real.utf8)).prefix(8).map { String(format: "%02x", $0) }.joined()
        var name = source.lastPathComponent
        if name.hasSuffix(".safetensors") { name.removeLast(".safetensors".count) }
        return "\(name)-\(key)"
    }

    /// The F32 copy of `source` (whether or not it exists yet).
    public func cachedFile(for source: URL) -> URL { directory.appendingPathComponent(stem(for: source) + ".f32.safetensors") }
    /// The manifest of `source`'s entry.
    public func manifestFile(for source: URL) -> URL { directory.appendingPathComponent(stem(for: source) + ".json") }
    /// The lock file of `source`'s entry: a process holding an exclusive `flock` on it owns the entry.
    public func lockFile(for source: URL) -> URL { directory.appendingPathComponent(stem(for: source) + ".lock") }

    private var advice: String {
        "F16/BF16 weights are widened to F32 once per node into \(directory.path), which every process maps; set \(Self.environmentVariable) to a writable directory on a node-local disk"
    }

    // MARK: Opening

    /// The files of `sources` (each holding F16 or BF16 tensors) re-opened on their F32 copies, in the
    /// same order, converting those without a valid entry. An entry another process holds is waited for
    /// only when no other is free, so processes that start together convert different shards at once.
    func copies(of sources: [SafetensorsFile]) throws -> [SafetensorsFile] {
        try makeDirectory()
        var opened = [SafetensorsFile?](repeating: nil, count: sources.count)
        var pending = Array(sources.indices)
        while let first = pending.first {
            var done: [Int] = []
            for i in pending {
                let started = Date()
                guard let lock = try EntryLock.take(lockFile(for: sources[i].url).path, wait: false, advice: advice) else { continue }
                opened[i] = try withExtendedLifetime(lock) { try prepare(sources[i], started: started) }
                done.append(i)
            }
            if done.isEmpty {
                let started = Date()
                let lockPath = lockFile(for: sources[first].url).path
                report("\(sources[first].url.path): waiting for another process on this node to finish with its F32 copy (lock \(lockPath))")
                let lock = try EntryLock.take(lockPath, wait: true, advice: advice)
                opened[first] = try withExtendedLifetime(lock) { try prepare(sources[first], started: started) }
                done.append(first)
            }
            pending.removeAll { done.contains($0) }
        }
        return opened.map { $0! }
    }

    /// Opens `source`'s entry, repairing or writing it as needed. The caller holds the entry's lock.
    private func prepare(_ source: SafetensorsFile, started: Date) throws -> SafetensorsFile {
        let entryStem = stem(for: source.url)
        let dataURL = cachedFile(for: source.url), manifestURL = manifestFile(for: source.url)
        removeTemporaries(of: entryStem)
        guard FileIdentity.of(path: source.url.path) == source.sourceIdentity else {
            throw ModelError(.io, "the file changed or was replaced while being opened; open the model again once nothing writes to it",
                             path: source.url.path)
        }
        let layout = try HalfWidening(tensors: source.sourceTensors, metadata: source.metadata)

        var outcome = Outcome.converted
        switch check(source, layout: layout, data: dataURL, manifest: manifestURL) {
        case .valid(let map, let parsed, let manifest):
            let entry = Entry(file: dataURL, outcome: .reused, seconds: Date().timeIntervalSince(started),
                              sourceSHA256: manifest.sourceSHA256)
            report("\(source.url.path): using the node's F32 copy \(dataURL.path)")
            return SafetensorsFile(widened: source, storage: map, tensors: parsed.tensors, entry: entry)
        case .absent:
            break
        case .invalid(let reason):
            report("\(source.url.path): its F32 copy \(dataURL.path) cannot be used: \(reason); removing and rebuilding it")
            unlink(manifestURL.path)
            unlink(dataURL.path)
            outcome = .rebuilt(reason: reason)
        }

        let converting = Date()
        let manifest = try convert(source, layout: layout, stem: entryStem, data: dataURL, manifest: manifestURL)
        let conversion = Date().timeIntervalSince(converting)
        let map = try MappedFile(url: dataURL)
        let parsed = try SafetensorsHeader.parse(map.bytes, path: dataURL.path)
        if let problem = HalfWidening.mismatch(stored: parsed.tensors, source: source.sourceTensors) {
            throw ModelError(.io, "the F32 copy just written does not hold the source's tensors: \(problem)", path: dataURL.path)
        }
        report("\(source.url.path): widened to F32 once for this node in \(String(format: "%.1f", conversion)) s: \(dataURL.path) (\(megabytes(layout.size)))")
        let entry = Entry(file: dataURL, outcome: outcome, seconds: Date().timeIntervalSince(started), sourceSHA256: manifest.sourceSHA256)
        return SafetensorsFile(widened: source, storage: map, tensors: parsed.tensors, entry: entry)
    }

    private enum Check {
        case valid(MappedFile, SafetensorsHeader.Parsed, Manifest)
        case absent
        case invalid(String)
    }

    private func check(_ source: SafetensorsFile, layout: HalfWidening, data: URL, manifest manifestURL: URL) -> Check {
        let dataIdentity = FileIdentity.of(path: data.path)
        guard let manifestData = FileManager.default.contents(atPath: manifestURL.path) else {
            return dataIdentity == nil ? .absent : .invalid("damaged: there is no manifest \(manifestURL.lastPathComponent) beside it (an interrupted conversion?)")
        }
        guard let manifest = try? JSONDecoder().decode(Manifest.self, from: manifestData) else {
            return .invalid("damaged: its manifest \(manifestURL.lastPathComponent) is not one this program reads")
        }
        guard manifest.format == Manifest.currentFormat else {
            return .invalid("stale: it was written in layout \(manifest.format), this program writes layout \(Manifest.currentFormat)")
        }
        guard manifest.sourceIdentity == source.sourceIdentity else {
            return .invalid("stale: the source is not the file it was converted from (\(manifest.sourceIdentity.differences(from: source.sourceIdentity)))")
        }
        guard let dataIdentity else { return .invalid("damaged: the F32 file is missing") }
        guard dataIdentity.size == layout.size, manifest.size == layout.size else {
            return .invalid("damaged: it has \(dataIdentity.size) bytes, but the source's tensors as F32 take \(layout.size) (truncated?)")
        }
        let map: MappedFile, parsed: SafetensorsHeader.Parsed
        do {
            map = try MappedFile(url: data)
            parsed = try SafetensorsHeader.parse(map.bytes, path: data.path)
        } catch {
            return .invalid("damaged: \(error)")
        }
        if let problem = HalfWidening.mismatch(stored: parsed.tensors, source: source.sourceTensors) {
            return .invalid("damaged: \(problem)")
        }
        if verification == .always || currentBootID == nil || manifest.verifiedBoot != currentBootID {
            // Hashed through the map: these are the pages this process is about to use.
            let digest = BackboneFingerprint.sha256Hex(map.bytes)
            guard digest == manifest.sha256 else {
                return .invalid("damaged: its SHA-256 is \(digest), not the \(manifest.sha256) recorded when it was written")
            }
            if let boot = currentBootID, manifest.verifiedBoot != boot {
                var checked = manifest
                checked.verifiedBoot = boot
                // Best effort: in a cache made read-only after it was filled, the next process checks again.
                try? writeManifest(checked, to: manifestURL)
            }
        }
        return .valid(map, parsed, manifest)
    }

    /// Writes the F32 copy of `source` and its manifest, durably.
    private func convert(_ source: SafetensorsFile, layout: HalfWidening, stem: String, data: URL,
                         manifest manifestURL: URL) throws -> Manifest {
        // Checked first: the copy of a 7B model is tens of GB, and a write that fails at the end wastes minutes.
        var fs = statvfs()
        if statvfs(directory.path, &fs) == 0 {
            let free = Int(fs.f_bavail) * Int(fs.f_frsize)
            if free < layout.size {
                throw ModelError(.io,
                    "the F32 cache directory has \(megabytes(free)) free, but the F32 copy of \(source.url.lastPathComponent) needs \(megabytes(layout.size)): free space there (the entries of backbones no longer used can be deleted) or \(advice) with room",
                    path: directory.path)
            }
        }
        let input = open(source.url.path, O_RDONLY | O_CLOEXEC)
        guard input >= 0 else { throw posixError("opening for reading", path: source.url.path) }
        defer { close(input) }
        var st = stat()
        guard fstat(input, &st) == 0, FileIdentity(st) == source.sourceIdentity else {
            throw ModelError(.io, "the file changed or was replaced while being opened; open the model again once nothing writes to it",
                             path: source.url.path)
        }
        let temporary = directory.appendingPathComponent(".\(stem).f32.safetensors.tmp-\(getpid())").path
        // Never more readable than the source: private weights stay private.
        let output = open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, (st.st_mode & 0o644) | 0o600)
        guard output >= 0 else { throw posixError("creating the F32 copy", path: temporary, advice: advice) }
        let digests: (source: String, output: String)
        do {
            defer { close(output) }
            digests = try layout.write(source: input, sourcePath: source.url.path, sourceSize: source.sourceIdentity.size,
                                       output: output, outputPath: temporary,
                                       advice: "the copy needs \(megabytes(layout.size)); \(advice) with room")
            if fsync(output) != 0 { throw posixError("fsync of the F32 copy", path: temporary, advice: advice) }
            var after = stat()
            guard fstat(input, &after) == 0, FileIdentity(after) == source.sourceIdentity else {
                throw ModelError(.io, "the file changed while being converted to F32; convert it again once nothing writes to it",
                                 path: source.url.path)
            }
            if rename(temporary, data.path) != 0 { throw posixError("renaming \(temporary) to", path: data.path, advice: advice) }
        } catch {
            unlink(temporary)
            throw error
        }
        let manifest = Manifest(format: Manifest.currentFormat, source: source.url.path, sourceIdentity: source.sourceIdentity,
                                sourceSHA256: digests.source, size: layout.size, sha256: digests.output,
                                verifiedBoot: currentBootID)
        try writeManifest(manifest, to: manifestURL)
        return manifest
    }

    /// Writes `manifest` under a temporary name, fsyncs it, renames it into place and fsyncs the directory.
    private func writeManifest(_ manifest: Manifest, to url: URL) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        let bytes = Array(try encoder.encode(manifest))
        let temporary = directory.appendingPathComponent(".\(url.lastPathComponent).tmp-\(getpid())").path
        let fd = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw posixError("creating", path: temporary, advice: advice) }
        do {
            defer { close(fd) }
            try writeAll(fd, bytes, bytes.count, path: temporary, advice: advice)
            if fsync(fd) != 0 { throw posixError("fsync of", path: temporary, advice: advice) }
            if rename(temporary, url.path) != 0 { throw posixError("renaming \(temporary) to", path: url.path, advice: advice) }
        } catch {
            unlink(temporary)
            throw error
        }
        let dir = open(directory.path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if dir >= 0 {
            defer { close(dir) }
            if fsync(dir) != 0 { throw posixError("fsync of the F32 cache directory", path: directory.path, advice: advice) }
        }
    }

    /// Removes what a conversion of this entry killed half-way left behind (the caller holds the lock, so
    /// no one is writing them).
    private func removeTemporaries(of stem: String) {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory.path)) ?? []
        for name in names where name.hasPrefix(".\(stem).") && name.contains(".tmp-") {
            let path = directory.appendingPathComponent(name).path
            if unlink(path) == 0 { report("removed \(path), left by a conversion that was interrupted") }
        }
    }

    /// Creates the directory and its parents (mkdir -p), with an error that says what to do.
    private func makeDirectory() throws {
        var path = ""
        for component in directory.pathComponents {
            path = path.isEmpty ? component : (path as NSString).appendingPathComponent(component)
            if mkdir(path, 0o755) != 0 && errno != EEXIST {
                throw posixError("creating the F32 cache directory", path: directory.path, advice: advice)
            }
        }
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: directory.path, isDirectory: &isDirectory), isDirectory.boolValue else {
            throw ModelError(.io, "the F32 cache directory is not a directory; \(advice)", path: directory.path)
        }
    }

    private func megabytes(_ bytes: Int) -> String { String(format: "%.1f MB", Double(bytes) / 1e6) }
}

/// What the cache knows of one entry, beside the copy (`NAME-KEY.json`).
struct Manifest: Codable, Equatable {
    /// The widening layout (`HalfWidening`); a change of layout makes older entries stale.
    static let currentFormat = 1

    var format: Int
    /// The source as it was opened (for people reading the cache).
    var source: String
    var sourceIdentity: FileIdentity
    var sourceSHA256: String
    /// The copy's size and SHA-256.
    var size: Int
    var sha256: String
    /// The boot during which the copy's SHA-256 was last checked against the file (`currentBootID`).
    var verifiedBoot: String?

    enum CodingKeys: String, CodingKey {
        case format, source, sourceIdentity = "source_identity", sourceSHA256 = "source_sha256", size, sha256
        case verifiedBoot = "verified_boot"
    }
}

/// An exclusive `flock` on an entry's lock file, released when this is deallocated (or the process dies).
final class EntryLock {
    private let fd: Int32

    private init(fd: Int32) { self.fd = fd }

    /// Takes the lock, waiting for it when `wait`; nil when not waiting and another process holds it.
    static func take(_ path: String, wait: Bool, advice: String) throws -> EntryLock? {
        // Read-only is enough for flock, and lets a cache another user filled be used.
        let fd = open(path, O_RDONLY | O_CREAT | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw posixError("creating the lock file", path: path, advice: advice) }
        while flock(fd, LOCK_EX | (wait ? 0 : LOCK_NB)) != 0 {
            let code = errno
            if code == EINTR { continue }
            close(fd)
            if code == EWOULDBLOCK { return nil }
            throw posixError("locking", path: path, code: code)
        }
        return EntryLock(fd: fd)
    }

    deinit { close(fd) }
}
