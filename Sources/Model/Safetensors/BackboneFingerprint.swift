import Crypto
import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The identity of a frozen backbone's weights, stored as the checkpoint's `backbone` attribute
/// (DESIGN §5) and compared by a worker before it accepts a job (§7).
///
/// For one model directory: the safetensors files its weights are loaded from (the shards the index
/// names, else `model.safetensors`), in file-name order, each as `name:size:sha256hex`, joined by `,`.
/// For a vision + language pair: `vision=<that>;language=<that>`. Only the weight files count, not
/// `config.json`; a changed architecture changes tensor shapes and fails loading anyway.
public enum BackboneFingerprint {
    /// How `of(directory:reading:)` reads the files.
    public enum Reading: Sendable, Equatable {
        /// Through a memory map: the pages stay in the page cache, for a process about to load the model.
        case mapped
        /// With read(2) in blocks, dropping the pages it brought into the page cache as it goes: for a
        /// process that never loads the model (a coordinator checking what its workers hold), so hashing
        /// 14 GB does not push 14 GB of the node's page cache out for nothing.
        case streaming
    }

    /// The fingerprint of one model directory's weights.
    /// Shards are hashed concurrently (SHA-256 runs at about 1 GB/s per core here, so a 14 GB 7B model
    /// in several shards is hashed in seconds rather than tens of seconds).
    public static func of(directory: URL, reading: Reading = .mapped) throws -> String {
        let urls = try SafetensorsArchive.weightFiles(in: directory)
        return try concurrently(urls.count) { i in
            switch reading {
            case .mapped:
                let map = try MappedFile(url: urls[i])
                return "\(urls[i].lastPathComponent):\(map.count):\(sha256Hex(map.bytes))"
            case .streaming:
                let (size, digest) = try sha256HexStreaming(urls[i])
                return "\(urls[i].lastPathComponent):\(size):\(digest)"
            }
        }.joined(separator: ",")
    }

    /// The fingerprint of an opened model directory's weights: the same value as `of(directory:)`, with
    /// the digests the node's F32 cache recorded when it converted a half-precision file (that file is
    /// not read again), the others hashed through their maps.
    public static func of(archive: SafetensorsArchive) throws -> String {
        let files = archive.files
        return try concurrently(files.count) { i in
            "\(files[i].url.lastPathComponent):\(files[i].sourceIdentity.size):\(files[i].sha256())"
        }.joined(separator: ",")
    }

    /// SHA-256 of the file at `url` as hex, and its size, read with read(2) in blocks whose page-cache
    /// pages are dropped once read (except those that were resident before): memory stays bounded and
    /// the page cache is left as it was found.
    public static func sha256HexStreaming(_ url: URL) throws -> (size: Int, digest: String) {
        let fd = open(url.path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else {
            let code = errno
            throw ModelError(code == ENOENT ? .fileNotFound : .io, "cannot open for reading: \(String(cString: strerror(code)))",
                             path: url.path)
        }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw posixError("stat", path: url.path) }
        var reader = SequentialReader(fd: fd, path: url.path, size: Int(st.st_size), dropPages: true)
        return (Int(st.st_size), try reader.finish())
    }

    private static func concurrently(_ count: Int, _ body: @Sendable (Int) throws -> String) throws -> [String] {
        var results = [Result<String, Error>](repeating: .success(""), count: count)
        let lock = NSLock()
        DispatchQueue.concurrentPerform(iterations: count) { i in
            let result = Result<String, Error> { try body(i) }
            lock.withLock { results[i] = result }
        }
        return try results.map { try $0.get() }
    }

    /// The fingerprint of a vision + language backbone pair.
    public static func of(vision: URL, language: URL) throws -> String {
        pair(vision: try of(directory: vision), language: try of(directory: language))
    }

    /// `vision=<vision>;language=<language>`: a pair's fingerprint from its two directories' fingerprints.
    public static func pair(vision: String, language: String) -> String { "vision=\(vision);language=\(language)" }

    /// SHA-256 of `bytes` as lowercase hex, hashed in 16 MiB chunks straight from the buffer (a memory map,
    /// so nothing is copied and only the chunk being hashed needs to be resident).
    public static func sha256Hex(_ bytes: UnsafeRawBufferPointer) -> String {
        var hasher = SHA256()
        let chunk = 16 << 20
        var start = 0
        while start < bytes.count {
            let end = min(start + chunk, bytes.count)
            hasher.update(bufferPointer: UnsafeRawBufferPointer(rebasing: bytes[start..<end]))
            start = end
        }
        return hasher.finalize().map { String(format: "%02x", $0) }.joined()
    }
}

/// The `config.json` fields that change a backbone's numbers, as one canonical line: `key=value` sorted by
/// key, integers in decimal, floats as the hex bits of their float32 value (the precision the model
/// computes in), except the RoPE scaling parameters, which transformers reads as Python floats: the hex
/// bits of their float64 value. Python reproduces it exactly (Scripts/reference/fingerprint.py). Its
/// SHA-256 goes into the fingerprint: the same weights with another `rope_theta`, rope scaling,
/// `max_position_embeddings` or `rms_norm_eps` compute other numbers (or refuse other inputs), and a
/// worker holding them must not be admitted.
public protocol MathSignature {
    var mathFields: [(String, String)] { get }
}

extension MathSignature {
    public var mathSignature: String { mathFields.sorted { $0.0 < $1.0 }.map { "\($0.0)=\($0.1)" }.joined(separator: ";") }

    /// The first 16 hex digits of the signature's SHA-256.
    public var mathDigest: String {
        let bytes = Array(mathSignature.utf8)
        return String(bytes.withUnsafeBytes { BackboneFingerprint.sha256Hex($0) }.prefix(16))
    }

    static func bits(_ f: Float) -> String { "0x" + String(f.bitPattern, radix: 16) }
    static func bits(_ d: Double) -> String { "0x" + String(d.bitPattern, radix: 16) }
}

extension CLIPVisionConfig: MathSignature {
    public var mathFields: [(String, String)] {
        [("hidden_size", "\(hiddenSize)"), ("intermediate_size", "\(intermediateSize)"),
         ("num_hidden_layers", "\(numHiddenLayers)"), ("num_attention_heads", "\(numAttentionHeads)"),
         ("num_channels", "\(numChannels)"), ("image_size", "\(imageSize)"), ("patch_size", "\(patchSize)"),
         ("layer_norm_eps", Self.bits(layerNormEps)), ("hidden_act", hiddenAct)]
    }
}

extension LlamaConfig: MathSignature {
    public var mathFields: [(String, String)] {
        [("hidden_size", "\(hiddenSize)"), ("intermediate_size", "\(intermediateSize)"),
         ("num_hidden_layers", "\(numHiddenLayers)"), ("num_attention_heads", "\(numAttentionHeads)"),
         ("num_key_value_heads", "\(numKeyValueHeads)"), ("head_dim", "\(headDim)"), ("vocab_size", "\(vocabSize)"),
         ("rms_norm_eps", Self.bits(rmsNormEps)), ("rope_theta", Self.bits(ropeTheta)),
         ("tie_word_embeddings", "\(tieWordEmbeddings)"), ("hidden_act", hiddenAct),
         ("attention_bias", "\(attentionBias)"), ("mlp_bias", "\(mlpBias)"),
         ("max_position_embeddings", "\(maxPositionEmbeddings)"), ("rope_type", ropeScaling.typeName)]
            + ropeFields
    }

    /// The scaling type's own parameters, `rope_`-prefixed (none for default).
    private var ropeFields: [(String, String)] {
        switch ropeScaling {
        case .none: []
        case .linear(let factor), .dynamic(let factor): [("rope_factor", Self.bits(factor))]
        case .llama3(let factor, let low, let high, let original):
            [("rope_factor", Self.bits(factor)), ("rope_low_freq_factor", Self.bits(low)),
             ("rope_high_freq_factor", Self.bits(high)), ("rope_original_max_position_embeddings", "\(original)")]
        }
    }
}
