import Foundation
import Model
import TestSupport
import Testing

/// The node's F32 cache across real processes (Tests/Support/SharedBackboneProbe, which opens a
/// half-precision LLaMA through the cache as a worker does and touches every page): the pages are
/// shared, a second process does not convert again, processes started together convert each file once,
/// and a conversion that dies or fails half-way leaves nothing a later process would trust.
@Suite("F32 cache across processes")
struct F32CacheProcessTests {
    static let bf16Language = Fixtures.backbones.appendingPathComponent("bf16/language")

    @Test("two processes mapping one converted backbone share its pages: each one's PSS is about half its F32 size; the second does not convert")
    func sharedPages() throws {
        let dir = try TemporaryDirectory("f32cache")
        defer { dir.cleanup() }
        let started = Date()
        let language = try bigBF16Language(into: dir.fileURL("language"))
        let generated = Date().timeIntervalSince(started)
        let source = language.appendingPathComponent("model.safetensors")
        let cache = F32Cache(directory: dir.fileURL("cache"))
        let copy = cache.cachedFile(for: source)

        let a = try Child(try probe(), [cache.directory.path, language.path, "--wait"], log: dir.file("a.log"))
        try waitForReady(a)
        let afterA = try FileManager.default.attributesOfItem(atPath: copy.path)
        let b = try Child(try probe(), [cache.directory.path, language.path, "--wait"], log: dir.file("b.log"))
        try waitForReady(b)
        let afterB = try FileManager.default.attributesOfItem(atPath: copy.path)

        #expect(a.output.contains("file model.safetensors outcome=converted"), "\(a.output)")
        #expect(b.output.contains("file model.safetensors outcome=reused"), "\(b.output)")
        #expect(!b.output.contains("widened to F32"), "the second process must not convert: \(b.output)")
        #expect(afterB[.systemFileNumber] as? Int == afterA[.systemFileNumber] as? Int)
        #expect(afterB[.modificationDate] as? Date == afterA[.modificationDate] as? Date)

        // Both measured now, while both map it (a process's PSS falls when the other maps the pages).
        let size = try #require(afterA[.size] as? Int)
        #expect(size > 40_000_000, "big enough to measure")
        let kb = Double(size) / 1024
        let memory = [smaps(pid: a.process.processIdentifier, path: copy.path),
                      smaps(pid: b.process.processIdentifier, path: copy.path)]
        for (who, m) in zip(["first", "second"], memory) {
            // Every page was touched, so RSS is the whole file: a small PSS is sharing, not laziness.
            #expect(Double(m.rss) >= 0.95 * kb, "\(who): RSS \(m.rss) kB of a \(Int(kb)) kB file")
            #expect(Double(m.pss) <= 0.55 * kb, "\(who): PSS \(m.pss) kB of a \(Int(kb)) kB file")
        }
        let seconds = a.output.split(separator: " ").first { $0.hasPrefix("seconds=") } ?? "?"
        print("F32 cache: \(size) bytes; generating the BF16 model \(String(format: "%.1f", generated)) s; first process converted in \(seconds.dropFirst(8)) s; RSS/PSS kB first \(memory[0].rss)/\(memory[0].pss), second \(memory[1].rss)/\(memory[1].pss)")
        a.kill()
        b.kill()
    }

    @Test("processes started together convert each file once: the others wait on the entry's lock, then map the copy")
    func convertOnce() throws {
        let dir = try TemporaryDirectory("f32cache")
        defer { dir.cleanup() }
        let cache = F32Cache(directory: dir.fileURL("cache"))
        let shards = ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]
        // The test holds the first shard's entry, as a process converting it would, so that both probes
        // are sure to meet a held lock whatever their start-up times.
        try FileManager.default.createDirectory(at: cache.directory, withIntermediateDirectories: true)
        let held = open(cache.lockFile(for: Self.bf16Language.appendingPathComponent(shards[0])).path, O_RDONLY | O_CREAT, 0o644)
        #expect(held >= 0 && flock(held, LOCK_EX) == 0)
        let probes = try ["a", "b"].map { try Child(try probe(), [cache.directory.path, Self.bf16Language.path], log: dir.file("\($0).log")) }
        try waitUntil("both probes waiting for the first shard") {
            probes.allSatisfy { $0.output.contains("\(shards[0]): waiting for another process on this node") }
        }
        close(held)
        for p in probes { #expect(try p.wait() == 0, "\(p.output)") }
        let outputs = probes.map(\.output).joined(separator: "\n")
        for shard in shards {
            #expect(outputs.components(separatedBy: "file \(shard) outcome=converted").count == 2, "\(shard) once:\n\(outputs)")
            #expect(outputs.components(separatedBy: "file \(shard) outcome=reused").count == 2, "\(shard):\n\(outputs)")
        }
        let names = try FileManager.default.contentsOfDirectory(atPath: cache.directory.path)
        #expect(names.filter { $0.hasSuffix(".f32.safetensors") }.count == 2)
        #expect(!names.contains { $0.contains(".tmp-") })
    }

    @Test("a conversion killed half-way (SIGXFSZ) leaves a temporary that the next process removes; one that fails (EFBIG) says what to do")
    func interrupted() throws {
        let dir = try TemporaryDirectory("f32cache")
        defer { dir.cleanup() }
        let cache = dir.fileURL("cache")
        // The first shard's copy is about 80 KB; 40 blocks of 512 bytes stop it half-way. SIGXFSZ reaches
        // the test ignored, which a shell cannot undo: the probe restores its default action, death.
        let killed = try shell("ulimit -f 40", [cache.path, Self.bf16Language.path, "--die-at-file-limit"],
                               log: dir.file("killed.log"))
        #expect(try killed.wait() != 0)
        #expect(killed.process.terminationReason == .uncaughtSignal && killed.process.terminationStatus == SIGXFSZ, "\(killed.output)")
        var names = try FileManager.default.contentsOfDirectory(atPath: cache.path)
        #expect(names.contains { $0.hasPrefix(".model-00001-of-00002-") && $0.contains(".f32.safetensors.tmp-") }, "\(names)")
        #expect(!names.contains { $0.hasSuffix(".f32.safetensors") || $0.hasSuffix(".json") }, "\(names)")

        let failed = try shell("trap '' XFSZ; ulimit -f 40", [cache.path, Self.bf16Language.path], log: dir.file("failed.log"))
        #expect(try failed.wait() == 1)
        for phrase in ["left by a conversion that was interrupted", "File too large", "DEHVF_CACHE_DIR", "node-local disk"] {
            #expect(failed.output.contains(phrase), "\"\(phrase)\" missing from:\n\(failed.output)")
        }
        names = try FileManager.default.contentsOfDirectory(atPath: cache.path)
        #expect(!names.contains { $0.contains(".tmp-") }, "\(names)")

        let fine = try shell("trap '' XFSZ", [cache.path, Self.bf16Language.path], log: dir.file("fine.log"))
        #expect(try fine.wait() == 0, "\(fine.output)")
        #expect(fine.output.components(separatedBy: "outcome=converted").count == 3, "\(fine.output)")
    }

    @Test("conversion streams: a process widening a 100 MB BF16 file to 200 MB of F32 never holds more than a few tens of MB, nor leaves the source in the page cache")
    func boundedMemory() throws {
        let dir = try TemporaryDirectory("f32cache")
        defer { dir.cleanup() }
        let count = 50 << 20
        try FileManager.default.createDirectory(at: dir.fileURL("weights"), withIntermediateDirectories: true)
        let source = dir.fileURL("weights/model.safetensors")
        try rawSafetensors(header: #"{"w": {"dtype": "BF16", "shape": [\#(count)], "data_offsets": [0, \#(2 * count)]}}"#,
                           data: [UInt8](randomBytes(2 * count, seed: 9)))
            .write(to: source)
        let fd = open(source.path, O_RDONLY)
        #expect(fsync(fd) == 0 && posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED) == 0)
        close(fd)
        #expect(try residentFraction(source) < 0.05, "the page cache would not drop the file: nothing to measure")
        let c = try Child(try probe(), [dir.file("cache"), dir.file("weights"), "--weights-only"], log: dir.file("probe.log"))
        #expect(try c.wait() == 0, "\(c.output)")
        #expect(c.output.contains("file model.safetensors outcome=converted"), "\(c.output)")
        let peak = try #require(c.output.split(separator: "\n").last { $0.hasPrefix("peak_rss_kb=") }.flatMap { Int($0.dropFirst(12)) },
                                "\(c.output)")
        // The process alone peaks at about 25 MB; the conversion adds its ~10 MB of buffers. Converting in
        // memory would need the 200 MB of F32 at least.
        #expect(peak < 64 << 10, "peak RSS \(peak) kB")
        // The source is read once and given back. What stays is the kernel's read-around of the header
        // page, read through the map before the conversion starts: read_ahead_kb (128 KB by default).
        let left = try residentFraction(source)
        #expect(left < 0.1, "\(Int(left * 100))% of the source is still in the page cache")
        let copy = try FileManager.default.attributesOfItem(atPath: F32Cache(directory: dir.fileURL("cache")).cachedFile(for: source).path)
        #expect(copy[.size] as? Int ?? 0 > 4 * count)
        print("F32 cache: widening \(2 * count) bytes of BF16 peaked at \(peak) kB RSS; \(Int(left * 100))% of the source left in the page cache")
    }

    @Test("a read-only cache directory is an error that says what to do",
          .enabled(if: Mounts.unavailable == nil, Comment(rawValue: Mounts.unavailable ?? "")))
    func readOnly() throws {
        let dir = try TemporaryDirectory("f32cache")
        defer { dir.cleanup() }
        let cache = dir.fileURL("cache")
        try FileManager.default.createDirectory(at: cache, withIntermediateDirectories: true)
        let c = try Child("/usr/bin/unshare", ["-m", "/bin/sh", "-c", "mount -o bind,ro \"$1\" \"$1\" && exec \"$0\" \"$1\" \"$2\"",
                                               try probe(), cache.path, Self.bf16Language.path], log: dir.file("ro.log"))
        #expect(try c.wait() == 1)
        for phrase in ["Read-only file system", "DEHVF_CACHE_DIR", "writable directory on a node-local disk", cache.path] {
            #expect(c.output.contains(phrase), "\"\(phrase)\" missing from:\n\(c.output)")
        }
    }

    @Test("a cache directory without room for the copy is an error before anything is written, saying how much is needed",
          .enabled(if: Mounts.unavailable == nil, Comment(rawValue: Mounts.unavailable ?? "")))
    func full() throws {
        let dir = try TemporaryDirectory("f32cache")
        defer { dir.cleanup() }
        let cache = dir.fileURL("cache")
        try FileManager.default.createDirectory(at: cache, withIntermediateDirectories: true)
        // 64 KB of tmpfs: the lock files fit, the first shard's 80 KB copy does not.
        let c = try Child("/usr/bin/unshare", ["-m", "/bin/sh", "-c",
                                               "mount -t tmpfs -o size=64k tmpfs \"$1\" && \"$0\" \"$1\" \"$2\"; s=$?; ls -a \"$1\"; exit $s",
                                               try probe(), cache.path, Self.bf16Language.path], log: dir.file("full.log"))
        #expect(try c.wait() == 1)
        for phrase in ["free, but the F32 copy of model-00001-of-00002.safetensors needs", "DEHVF_CACHE_DIR", "with room"] {
            #expect(c.output.contains(phrase), "\"\(phrase)\" missing from:\n\(c.output)")
        }
        #expect(!c.output.contains(".tmp-"), "nothing is written: \(c.output)")
    }
}

/// Whether the tests that give a child a read-only or tiny cache directory (a mount in a private mount
/// namespace) can run here; nil when they can.
enum Mounts {
    static let unavailable: String? = {
        guard getuid() == 0 else { return "needs root to mount in a private mount namespace (running as uid \(getuid()))" }
        guard FileManager.default.isExecutableFile(atPath: "/usr/bin/unshare") else { return "util-linux's unshare is not installed" }
        guard let dir = try? TemporaryDirectory("mount-probe") else { return "no temporary directory" }
        defer { dir.cleanup() }
        let probe = try? run("/usr/bin/unshare", ["-m", "/bin/sh", "-c", "mount -t tmpfs -o size=64k tmpfs \"$0\"", dir.path])
        return probe?.status == 0 ? nil : "this machine does not allow mounts in a private namespace: \(probe?.stderr ?? "")"
    }()
}

/// The SharedBackboneProbe test-support executable, built beside the test bundle.
func probe() throws -> String {
    let exe = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath().deletingLastPathComponent()
        .appendingPathComponent("SharedBackboneProbe").path
    try #require(FileManager.default.isExecutableFile(atPath: exe),
                 "build the SharedBackboneProbe test-support target (swift build) first: \(exe)")
    return exe
}

/// The probe run by /bin/sh with `setup` first.
func shell(_ setup: String, _ arguments: [String], log: String) throws -> Child {
    try Child("/bin/sh", ["-c", setup + "; exec \"$0\" \"$@\"", try probe()] + arguments, log: log)
}

func waitForReady(_ child: Child) throws {
    try waitUntil("the probe to map the backbone") { child.output.contains("ready") || !child.process.isRunning }
    try #require(child.output.contains("ready"), "\(child.output)")
}

/// Rss and Pss in kB of process `pid`'s mappings of `path`.
func smaps(pid: pid_t, path: String) -> (rss: Int, pss: Int) {
    guard let handle = FileHandle(forReadingAtPath: "/proc/\(pid)/smaps"), let data = try? handle.readToEnd() else { return (0, 0) }
    var rss = 0, pss = 0, inside = false
    for line in String(decoding: data, as: UTF8.self).split(separator: "\n") {
        let parts = line.split(separator: " ", omittingEmptySubsequences: true)
        guard let key = parts.first else { continue }
        if key.hasSuffix(":") {
            guard inside, parts.count >= 2, let kb = Int(parts[1]) else { continue }
            if key == "Rss:" { rss += kb } else if key == "Pss:" { pss += kb }
        } else {
            inside = parts.count >= 6 && parts[5...].joined(separator: " ") == path
        }
    }
    return (rss, pss)
}

/// A LlamaForCausalLM of about 46 MB as F32 (vocabulary 16384, width 256, 4 layers, untied), stored as
/// BF16 in one `model.safetensors`: big enough that page sharing shows in /proc/PID/smaps.
func bigBF16Language(into directory: URL) throws -> URL {
    let config = LlamaConfig(hiddenSize: 256, intermediateSize: 704, numHiddenLayers: 4, numAttentionHeads: 4,
                             vocabSize: 16384)
    let (json, tensors) = RandomBackbone.llama(config, seed: 7, weightScale: 1)
    try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    try Data(json.utf8).write(to: directory.appendingPathComponent("config.json"))
    try SafetensorsWriter.write(tensors, as: .bf16, to: directory.appendingPathComponent("model.safetensors"))
    return directory
}
