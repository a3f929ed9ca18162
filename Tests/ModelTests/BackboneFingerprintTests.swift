import Crypto
import Foundation
import Model
import TestSupport
import Testing

@Suite("backbone fingerprint")
struct BackboneFingerprintTests {
    @Test("chunked SHA-256 equals the one-shot digest, including across the 16 MiB chunk boundary")
    func chunkedHash() {
        #expect(Array("abc".utf8).withUnsafeBytes { BackboneFingerprint.sha256Hex($0) }
                == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        var rng = SplitMix64(seed: 3)
        let bytes = (0..<(40 << 20) + 13).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
        let oneShot = SHA256.hash(data: bytes).map { String(format: "%02x", $0) }.joined()
        #expect(bytes.withUnsafeBytes { BackboneFingerprint.sha256Hex($0) } == oneShot)
    }

    @Test("one file: name, size and digest; a changed byte changes it; shards are listed in order")
    func directories() throws {
        let dir = try TemporaryDirectory()
        defer { dir.cleanup() }
        try SafetensorsWriter.write(TensorSet([("w", Tensor(shape: [4], values: [1, 2, 3, 4]))]), to: dir.fileURL("model.safetensors"))
        try dir.write("config.json", "{}")
        let data = try Data(contentsOf: dir.fileURL("model.safetensors"))
        let digest = SHA256.hash(data: data).map { String(format: "%02x", $0) }.joined()
        let first = try BackboneFingerprint.of(directory: dir.url)
        #expect(first == "model.safetensors:\(data.count):\(digest)")
        #expect(try BackboneFingerprint.of(directory: dir.url) == first, "stable")

        var changed = data
        changed[changed.count - 1] ^= 1
        try dir.write("model.safetensors", changed)
        #expect(try BackboneFingerprint.of(directory: dir.url) != first)

        let sharded = Fixtures.safetensors.appendingPathComponent("sharded")
        let parts = try BackboneFingerprint.of(directory: sharded).split(separator: ",")
        #expect(parts.count == 2)
        #expect(parts[0].hasPrefix("model-00001-of-00002.safetensors:") && parts[1].hasPrefix("model-00002-of-00002.safetensors:"))
        let pair = try BackboneFingerprint.of(vision: dir.url, language: sharded)
        #expect(pair.hasPrefix("vision=model.safetensors:") && pair.contains(";language=model-00001-of-00002"))
    }

    @Test("the streaming hash equals the mapped one and the one-shot digest, across its 4 MiB blocks")
    func streamingValue() throws {
        let dir = try TemporaryDirectory()
        defer { dir.cleanup() }
        let bytes = randomBytes(3 * (4 << 20) + 13, seed: 5)
        try dir.write("model.safetensors", bytes)
        let streamed = try BackboneFingerprint.sha256HexStreaming(dir.fileURL("model.safetensors"))
        #expect(streamed.size == bytes.count)
        #expect(streamed.digest == SHA256.hash(data: bytes).map { String(format: "%02x", $0) }.joined())
        #expect(try BackboneFingerprint.of(directory: dir.url, reading: .streaming) == BackboneFingerprint.of(directory: dir.url))
        let sharded = Fixtures.safetensors.appendingPathComponent("sharded")
        #expect(try BackboneFingerprint.of(directory: sharded, reading: .streaming) == BackboneFingerprint.of(directory: sharded))
        try dir.write("empty", Data())
        #expect(try BackboneFingerprint.sha256HexStreaming(dir.fileURL("empty")).digest
                == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
    }

    @Test("the streaming hash leaves the page cache as it found it: the pages it read are dropped, those already there kept")
    func streamingPages() throws {
        let dir = try TemporaryDirectory()
        defer { dir.cleanup() }
        try dir.write("model.safetensors", randomBytes(32 << 20, seed: 6))
        let url = dir.fileURL("model.safetensors")
        let fd = open(url.path, O_RDONLY)
        defer { close(fd) }
        #expect(fsync(fd) == 0 && posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED) == 0)
        #expect(try residentFraction(url) < 0.05, "the page cache would not drop the file: nothing to measure")

        let cold = try BackboneFingerprint.of(directory: dir.url, reading: .streaming)
        #expect(try residentFraction(url) < 0.05, "hashing a cold file must not leave it in the page cache")
        // The mapped hash keeps the pages (for a process about to load the model); that is what the
        // streaming one is measured against.
        #expect(try BackboneFingerprint.of(directory: dir.url) == cold)
        #expect(try residentFraction(url) > 0.95)
        #expect(try BackboneFingerprint.of(directory: dir.url, reading: .streaming) == cold)
        #expect(try residentFraction(url) > 0.95, "pages another process brought in are left where they were")
    }
}

/// `count` pseudo-random bytes, filled eight at a time (a closure per byte is slow in debug builds).
func randomBytes(_ count: Int, seed: UInt64) -> Data {
    var rng = SplitMix64(seed: seed)
    var words = [UInt64](repeating: 0, count: (count + 7) / 8)
    for i in words.indices { words[i] = rng.next() }
    return words.withUnsafeBytes { Data($0.prefix(count)) }
}

/// The fraction of `url`'s pages in the page cache (mincore on a fresh mapping, which faults none in).
func residentFraction(_ url: URL) throws -> Double {
    let fd = open(url.path, O_RDONLY)
    try #require(fd >= 0)
    defer { close(fd) }
    var st = stat()
    try #require(fstat(fd, &st) == 0 && st.st_size > 0)
    let size = Int(st.st_size), page = Int(sysconf(Int32(_SC_PAGESIZE)))
    let map = try #require(mmap(nil, size, PROT_READ, MAP_SHARED, fd, 0))
    try #require(map != MAP_FAILED)
    defer { munmap(map, size) }
    var vector = [UInt8](repeating: 0, count: (size + page - 1) / page)
    try #require(mincore(map, size, &vector) == 0)
    return Double(vector.filter { $0 & 1 != 0 }.count) / Double(vector.count)
}

/// The language config's math signature (the `|config:` part of a backbone fingerprint) for each RoPE type,
/// as Scripts/reference/fingerprint.py prints it for the same config.json (`language_fields`, the lines
/// below were produced by it). The Python side stamps the checkpoint fixtures, so the two must agree.
@Suite("language config signature")
struct LlamaSignatureTests {
    static let common = #""hidden_size": 32, "intermediate_size": 8, "num_hidden_layers": 1, "num_attention_heads": 2, "vocab_size": 10"#
    static let prefix = "attention_bias=false;head_dim=16;hidden_act=silu;hidden_size=32;intermediate_size=8;"
    static let cases: [(String, String)] = [
        ("", "max_position_embeddings=2048;mlp_bias=false;num_attention_heads=2;num_hidden_layers=1;num_key_value_heads=2;rms_norm_eps=0x358637bd;rope_theta=0x461c4000;rope_type=default;tie_word_embeddings=false;vocab_size=10"),
        (#", "rope_scaling": {"type": "linear", "factor": 1.1}, "rope_theta": 1000.0, "max_position_embeddings": 64"#,
         "max_position_embeddings=64;mlp_bias=false;num_attention_heads=2;num_hidden_layers=1;num_key_value_heads=2;rms_norm_eps=0x358637bd;rope_factor=0x3ff199999999999a;rope_theta=0x447a0000;rope_type=linear;tie_word_embeddings=false;vocab_size=10"),
        (#", "rope_parameters": {"rope_type": "dynamic", "factor": 2.0, "rope_theta": 1000.0}, "max_position_embeddings": 16"#,
         "max_position_embeddings=16;mlp_bias=false;num_attention_heads=2;num_hidden_layers=1;num_key_value_heads=2;rms_norm_eps=0x358637bd;rope_factor=0x4000000000000000;rope_theta=0x447a0000;rope_type=dynamic;tie_word_embeddings=false;vocab_size=10"),
        (#", "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}, "rope_theta": 500000.0, "max_position_embeddings": 131072, "original_max_position_embeddings": 4096"#,
         "max_position_embeddings=131072;mlp_bias=false;num_attention_heads=2;num_hidden_layers=1;num_key_value_heads=2;rms_norm_eps=0x358637bd;rope_factor=0x4020000000000000;rope_high_freq_factor=0x4010000000000000;rope_low_freq_factor=0x3ff0000000000000;rope_original_max_position_embeddings=4096;rope_theta=0x48f42400;rope_type=llama3;tie_word_embeddings=false;vocab_size=10"),
    ]

    @Test("equal to fingerprint.py's for default, linear (legacy type), dynamic and llama3; each rope setting changes it")
    func signatures() throws {
        var digests = Set<String>()
        for (keys, expected) in Self.cases {
            let c = try JSONDecoder().decode(LlamaConfig.self, from: Data(("{" + Self.common + keys + "}").utf8))
            #expect(c.mathSignature == Self.prefix + expected)
            digests.insert(c.mathDigest)
        }
        #expect(digests.count == Self.cases.count)
        let base = try JSONDecoder().decode(LlamaConfig.self, from: Data(("{" + Self.common + Self.cases[2].0 + "}").utf8))
        var other = base
        other.ropeScaling = .dynamic(factor: 2.0000001)
        #expect(other.mathDigest != base.mathDigest, "a factor that differs below float32 precision still counts")
        other = base
        other.maxPositionEmbeddings = 17
        #expect(other.mathDigest != base.mathDigest)
    }
}
