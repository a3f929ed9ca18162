import Crypto
import Foundation
import Model
import TestSupport
import Testing

/// The node's F32 cache of half-precision backbones, within one process: the numbers equal those of the
/// same weights saved as F32, bit for bit; entries are reused; damaged and stale ones are found and
/// rebuilt. The multi-process behaviour (shared pages, one conversion) is in F32CacheProcessTests.
@Suite("F32 cache of half-precision backbones")
struct F32CacheTests {
    static let bf16 = Fixtures.backbones.appendingPathComponent("bf16")

    @Test("a half-precision backbone read through the cache equals its F32 twin bit for bit: every tensor and both forward passes",
          arguments: [SafetensorsWriter.StoredType.bf16, .f16])
    func bitwise(stored: SafetensorsWriter.StoredType) throws {
        let dir = try TemporaryDirectory("f32cache")
        defer { dir.cleanup() }
        // BF16: transformers' own files (sharded language, I64 buffer in vision). F16: the same values
        // rounded to F16 by our writer, in the same layout.
        var vision = Self.bf16.appendingPathComponent("vision"), language = Self.bf16.appendingPathComponent("language")
        if stored == .f16 {
            vision = try rewrite(vision, as: .f16, into: dir.fileURL("f16-vision"))
            language = try rewrite(language, as: .f16, into: dir.fileURL("f16-language"))
        }
        let twinVision = try rewrite(vision, as: .f32, into: dir.fileURL("twin-vision"))
        let twinLanguage = try rewrite(language, as: .f32, into: dir.fileURL("twin-language"))
        let lines = Lines()
        let cache = F32Cache(directory: dir.fileURL("cache"), report: lines.add)

        let cachedVision = try VisionBackboneDirectory.open(vision, cache: cache)
        let cachedLanguage = try LanguageBackboneDirectory.open(language, cache: cache)
        let f32Vision = try VisionBackboneDirectory.open(twinVision, cache: cache)
        let f32Language = try LanguageBackboneDirectory.open(twinLanguage, cache: cache)
        #expect(cachedLanguage.archive.files.count == 2)
        for file in cachedVision.archive.files + cachedLanguage.archive.files {
            #expect(file.cacheEntry?.outcome == .converted, "\(file.url.lastPathComponent)")
            #expect(file.storage.url == cache.cachedFile(for: file.url))
            #expect(file.names.allSatisfy { ["I64", stored.rawValue].contains(file.info($0)!.dtype.description) },
                    "info reports the dtypes as shipped")
        }
        for file in f32Vision.archive.files + f32Language.archive.files {
            #expect(file.cacheEntry == nil && file.storage.url == file.url, "F32 files are read in place")
        }

        for (cached, twin) in [(cachedVision.archive, f32Vision.archive), (cachedLanguage.archive, f32Language.archive)] {
            var compared = 0
            for name in cached.names where cached.info(name)!.dtype.isReadableAsFloat {
                let shape = cached.info(name)!.shape
                let a = try cached.take(name, shape: shape), b = try twin.take(name, shape: shape)
                #expect(bits(a) == bits(b), "\(name)")
                let again = try cached.take(name, shape: shape)
                #expect(a.count == 0 || a.data == again.data, "\(name) is borrowed from the copy's map, zero-copy")
                compared += 1
            }
            #expect(compared > 20)
        }

        let inputs = try SafetensorsFile(url: Self.bf16.appendingPathComponent("inputs.safetensors"))
        let c = cachedVision.config
        let pixels = try inputs.take("pixel_values", shape: [2, c.numChannels, c.imageSize, c.imageSize])
        let hiddenA = try CLIPVisionModel(config: c, weights: cachedVision.weights).forward(pixelValues: pixels)
        let hiddenB = try CLIPVisionModel(config: f32Vision.config, weights: f32Vision.weights).forward(pixelValues: pixels)
        #expect(hiddenA.map(bits) == hiddenB.map(bits), "vision hidden states")

        let ids = try inputs.int32Values("input_ids", shape: [2, 8])
        let mask = Tensor(shape: [2, 8], values: try inputs.int32Values("attention_mask", shape: [2, 8]).map(Float.init))
        func run(_ d: LanguageBackboneDirectory) throws -> [[UInt32]] {
            let model = try LlamaModel(config: d.config, weights: d.weights)
            let (final, hidden) = try model.forward(embeddings: try model.embed(ids: ids, batch: 2, length: 8), keyMask: mask,
                                                    workspace: model.makeWorkspace(batch: 2, length: 8, training: false),
                                                    outputHiddenStates: true)
            return hidden.map(bits) + [bits(model.logits(final))]
        }
        #expect(try run(cachedLanguage) == run(f32Language), "language hidden states and logits")

        // The fingerprint is the files' own, without reading the converted sources again.
        #expect(try BackboneFingerprint.of(archive: cachedLanguage.archive) == BackboneFingerprint.of(directory: language))
        #expect(try BackboneFingerprint.of(archive: cachedVision.archive) == BackboneFingerprint.of(directory: vision))

        // Opened again: the copies are reused, not rewritten.
        let copy = cache.cachedFile(for: language.appendingPathComponent("model-00001-of-00002.safetensors"))
        let before = try FileManager.default.attributesOfItem(atPath: copy.path)
        let reopened = try LanguageBackboneDirectory.open(language, cache: cache)
        #expect(reopened.archive.files.map { $0.cacheEntry?.outcome } == [.reused, .reused])
        let after = try FileManager.default.attributesOfItem(atPath: copy.path)
        #expect(after[.systemFileNumber] as? Int == before[.systemFileNumber] as? Int)
        #expect(after[.modificationDate] as? Date == before[.modificationDate] as? Date)
        #expect(lines.text.contains("widened to F32 once for this node") && lines.text.contains("using the node's F32 copy"))
    }

    @Test("F32 weights are read in place: the cache directory is not even created")
    func f32Direct() throws {
        let dir = try TemporaryDirectory("f32cache")
        defer { dir.cleanup() }
        let cache = F32Cache(directory: dir.fileURL("never/made"))
        let language = try LanguageBackboneDirectory.open(Fixtures.backbones.appendingPathComponent("llama-gqa/language"), cache: cache)
        #expect(language.archive.files.allSatisfy { $0.cacheEntry == nil && $0.storage.url == $0.url })
        #expect(!FileManager.default.fileExists(atPath: dir.file("never")))
    }

    @Test("a damaged copy is found and rebuilt: truncated, header overwritten, a flipped byte, no manifest")
    func damaged() throws {
        let dir = try TemporaryDirectory("f32cache")
        defer { dir.cleanup() }
        let language = Self.bf16.appendingPathComponent("language")
        let source = language.appendingPathComponent("model-00001-of-00002.safetensors")
        let lines = Lines()
        let cache = F32Cache(directory: dir.fileURL("cache"), report: lines.add)
        let copy = cache.cachedFile(for: source)
        func open(_ verification: F32Cache.Verification = .oncePerBoot) throws -> SafetensorsFile {
            try SafetensorsArchive(directory: language, cache: F32Cache(directory: cache.directory, verification: verification,
                                                                          report: lines.add)).files[0]
        }
        let first = try open()
        #expect(first.cacheEntry?.outcome == .converted)
        let good = try Data(contentsOf: copy)
        let expected = try first.names.map { try bits(first.tensor($0)) }
        func expectRebuilt(_ file: SafetensorsFile, _ phrase: String, sourceLocation: SourceLocation = #_sourceLocation) throws {
            guard case .rebuilt(let reason)? = file.cacheEntry?.outcome else {
                Issue.record("expected a rebuild, got \(String(describing: file.cacheEntry?.outcome))", sourceLocation: sourceLocation)
                return
            }
            #expect(reason.contains(phrase), "\(reason)", sourceLocation: sourceLocation)
            #expect(lines.text.contains("cannot be used: \(reason); removing and rebuilding it"), sourceLocation: sourceLocation)
            #expect(try Data(contentsOf: copy) == good, "the rebuilt copy is the same bytes", sourceLocation: sourceLocation)
            #expect(try file.names.map { try bits(file.tensor($0)) } == expected, sourceLocation: sourceLocation)
        }

        // Cheap checks, made by every process: size and header.
        try good.prefix(good.count - 100).write(to: copy)
        try expectRebuilt(try open(), "truncated")
        var garbled = good
        garbled.replaceSubrange(8..<16, with: Array("not json".utf8))
        try garbled.write(to: copy)
        try expectRebuilt(try open(), "not a valid safetensors file")

        // A flipped data byte keeps size and header: only the SHA-256 sees it. The first process of a boot
        // checks it (a new boot is simulated by editing the boot the manifest records); later ones do not.
        var flipped = good
        flipped[good.count - 5] ^= 0x40
        try flipped.write(to: copy)
        #if os(Linux)
        #expect(try open().cacheEntry?.outcome == .reused, "checked once per boot, and this boot already checked it")
        #endif
        let manifestURL = cache.manifestFile(for: source)
        let manifest = try String(contentsOf: manifestURL, encoding: .utf8)
        #expect(manifest.contains("\"verified_boot\""))
        let rebooted = manifest.replacingOccurrences(of: #""verified_boot"\s*:\s*"[^"]*""#, with: #""verified_boot" : "an earlier boot""#,
                                                    options: .regularExpression)
        #expect(rebooted != manifest)
        try rebooted.write(to: manifestURL, atomically: true, encoding: .utf8)
        try expectRebuilt(try open(), "SHA-256")
        try flipped.write(to: copy)
        try expectRebuilt(try open(.always), "SHA-256")

        // A crash between the copy's rename and its manifest's.
        try FileManager.default.removeItem(at: manifestURL)
        try expectRebuilt(try open(), "no manifest")
        #expect(try open().cacheEntry?.outcome == .reused)
    }

    @Test("a source changed in place, even with its mtime put back, makes its entry stale: rebuilt with the new values")
    func stale() throws {
        let dir = try TemporaryDirectory("f32cache")
        defer { dir.cleanup() }
        let model = dir.fileURL("model")
        try FileManager.default.copyItem(at: Self.bf16.appendingPathComponent("vision"), to: model)
        let source = model.appendingPathComponent("model.safetensors")
        let lines = Lines()
        let cache = F32Cache(directory: dir.fileURL("cache"), report: lines.add)
        #expect(try SafetensorsArchive(directory: model, cache: cache).files[0].cacheEntry?.outcome == .converted)

        // Timestamps are as fine as the kernel's clock tick: change the file a tick after it was written.
        usleep(50_000)
        var before = stat()
        #expect(stat(source.path, &before) == 0)
        let info = try #require(try SafetensorsFile(url: source).info("vision_model.pre_layrnorm.weight"))
        let handle = try FileHandle(forUpdating: source)
        try handle.seek(toOffset: UInt64(info.byteRange.lowerBound))
        try handle.write(contentsOf: Data([0x80, 0x3f, 0x00, 0x40]))   // BF16 1.0, 2.0
        try handle.close()
        var times = [before.st_atim, before.st_mtim]
        #expect(utimensat(AT_FDCWD, source.path, &times, 0) == 0)
        var after = stat()
        #expect(stat(source.path, &after) == 0)
        #expect(after.st_size == before.st_size && after.st_ino == before.st_ino
                && after.st_mtim.tv_sec == before.st_mtim.tv_sec && after.st_mtim.tv_nsec == before.st_mtim.tv_nsec,
                "size, inode and mtime are as before: only the inode's ctime tells")

        let reopened = try SafetensorsArchive(directory: model, cache: cache).files[0]
        guard case .rebuilt(let reason)? = reopened.cacheEntry?.outcome else {
            Issue.record("expected a rebuild, got \(String(describing: reopened.cacheEntry?.outcome))")
            return
        }
        #expect(reason.contains("stale"), "\(reason)")
        let weight = try reopened.tensor("vision_model.pre_layrnorm.weight")
        #expect(Array(weight.array.prefix(2)) == [1, 2])
        #expect(try bits(weight) == bits(SafetensorsFile(url: source).tensor("vision_model.pre_layrnorm.weight")))
    }

    @Test("the cache directory: DEHVF_CACHE_DIR, else XDG_CACHE_HOME/dehvf, else ~/.cache/dehvf; relative XDG paths are ignored")
    func location() {
        func dir(_ environment: [String: String]) -> String { F32Cache.defaultDirectory(environment: environment).path }
        #expect(dir(["DEHVF_CACHE_DIR": "/scratch/me/dehvf", "XDG_CACHE_HOME": "/x", "HOME": "/h"]) == "/scratch/me/dehvf")
        #expect(dir(["XDG_CACHE_HOME": "/x", "HOME": "/h"]) == "/x/dehvf")
        #expect(dir(["XDG_CACHE_HOME": "relative", "HOME": "/h"]) == "/h/.cache/dehvf")
        #expect(dir(["HOME": "/h", "DEHVF_CACHE_DIR": ""]) == "/h/.cache/dehvf")
    }

    @Test("entries are named after the source and its real path: a symbolic link shares its target's entry")
    func entryNames() throws {
        let dir = try TemporaryDirectory("f32cache")
        defer { dir.cleanup() }
        let cache = F32Cache(directory: dir.fileURL("cache"))
        let target = Self.bf16.appendingPathComponent("vision/model.safetensors")
        try FileManager.default.createDirectory(at: dir.fileURL("snapshot"), withIntermediateDirectories: true)
        let link = dir.fileURL("snapshot/model.safetensors")
        try FileManager.default.createSymbolicLink(at: link, withDestinationURL: target)
        let name = cache.cachedFile(for: target).lastPathComponent
        #expect(name.hasPrefix("model-") && name.hasSuffix(".f32.safetensors") && name.count == "model-".count + 16 + ".f32.safetensors".count)
        #expect(cache.cachedFile(for: link) == cache.cachedFile(for: target))
        #expect(cache.cachedFile(for: Self.bf16.appendingPathComponent("language/model-00001-of-00002.safetensors")).lastPathComponent
                .hasPrefix("model-00001-of-00002-"))
    }
}

/// Rewrites every weight file of the model directory `source` into `destination` with its float tensors
/// stored as `stored` (the config and the shard index copied; integer buffers dropped, as the models
/// ignore them). Returns `destination`.
func rewrite(_ source: URL, as stored: SafetensorsWriter.StoredType, into destination: URL) throws -> URL {
    try FileManager.default.createDirectory(at: destination, withIntermediateDirectories: true)
    for name in ["config.json", SafetensorsArchive.indexFileName]
    where FileManager.default.fileExists(atPath: source.appendingPathComponent(name).path) {
        try FileManager.default.copyItem(at: source.appendingPathComponent(name), to: destination.appendingPathComponent(name))
    }
    for url in try SafetensorsArchive.weightFiles(in: source) {
        let file = try SafetensorsFile(url: url)
        let names = file.names.filter { file.info($0)!.dtype.isReadableAsFloat }
        try SafetensorsWriter.write(TensorSet(try names.map { ($0, try file.tensor($0)) }), as: stored,
                                    metadata: file.metadata, to: destination.appendingPathComponent(url.lastPathComponent))
    }
    return destination
}

/// The cache's report lines, kept.
final class Lines: @unchecked Sendable {
    private let lock = NSLock()
    private var lines: [String] = []
    var add: @Sendable (String) -> Void { { line in self.lock.withLock { self.lines.append(line) } } }
    var text: String { lock.withLock { lines.joined(separator: "\n") } }
}
