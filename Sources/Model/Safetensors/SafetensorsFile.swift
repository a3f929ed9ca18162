import Foundation

/// One `.safetensors` file, memory-mapped and checked on open (see `SafetensorsHeader` for what is
/// checked), read as a strict `WeightSource`.
///
/// `take` returns F32 data zero-copy: a borrowed `Tensor` pointing into the map, which it keeps alive, so
/// workers on one node share the pages (a tensor whose data is not 4-byte aligned in the file is copied
/// instead). A file holding F16 or BF16 tensors that is opened through a `F32Cache` (as
/// `SafetensorsArchive(directory:cache:)` does) is read from its F32 copy in the cache the same way;
/// opened alone, its F16, BF16 and F64 tensors are converted into owned Float32 tensors on each `take`.
/// Tensors of other dtypes (an `I64` `position_ids` buffer, say) do not stop the file from opening;
/// taking one throws `.badDType`. Taking the same tensor twice is allowed (tied embeddings).
public final class SafetensorsFile: WeightSource, @unchecked Sendable {
    public let url: URL
    /// The header's `__metadata__` (empty when absent).
    public let metadata: [String: String]
    /// The mapped file tensors are read from: the file at `url`, or its F32 copy in the node's cache.
    public let storage: MappedFile
    /// The F32 copy tensors are read from, and how it was obtained; nil when they are read from `url`.
    public let cacheEntry: F32Cache.Entry?
    /// The identity of the file at `url` when it was opened.
    public let sourceIdentity: FileIdentity
    /// The tensors as the file at `url` holds them (what `info` and `names` report).
    let sourceTensors: [String: SafetensorsTensorInfo]
    /// The same tensors as `storage` holds them (F32 where the source has F16/BF16, for a cached copy).
    private let stored: [String: SafetensorsTensorInfo]
    private let lock = NSLock()
    private var taken: Set<String> = []

    public init(url: URL) throws {
        self.url = url
        storage = try MappedFile(url: url)
        let parsed = try SafetensorsHeader.parse(storage.bytes, path: url.path)
        sourceTensors = parsed.tensors
        stored = parsed.tensors
        metadata = parsed.metadata
        sourceIdentity = storage.identity
        cacheEntry = nil
    }

    /// `source` read from its F32 copy `storage`, whose header holds `tensors` (checked by the cache).
    init(widened source: SafetensorsFile, storage: MappedFile, tensors: [String: SafetensorsTensorInfo], entry: F32Cache.Entry) {
        url = source.url
        metadata = source.metadata
        sourceIdentity = source.sourceIdentity
        sourceTensors = source.sourceTensors
        self.storage = storage
        stored = tensors
        cacheEntry = entry
    }

    /// Whether the file holds F16 or BF16 tensors (which a `F32Cache` serves from an F32 copy).
    public var holdsHalfPrecision: Bool { HalfWidening.needed(sourceTensors.values) }

    /// The SHA-256 of the file at `url`, as hex: the one the cache computed while converting it, else
    /// hashed through the map (whose pages the process is about to use).
    public func sha256() -> String { cacheEntry?.sourceSHA256 ?? BackboneFingerprint.sha256Hex(storage.bytes) }

    /// Every tensor name, sorted.
    public var names: [String] { sourceTensors.keys.sorted() }

    public func contains(_ name: String) -> Bool { sourceTensors[name] != nil }

    /// The header entry for `name` in the file at `url` (its dtype as shipped), if present.
    public func info(_ name: String) -> SafetensorsTensorInfo? { sourceTensors[name] }

    public func take(_ name: String, shape: [Int]) throws -> Tensor {
        guard let info = stored[name] else {
            throw ModelError(.missingTensor, "tensor '\(name)' (expected shape \(shape)) is not in this file",
                             path: url.path)
        }
        guard info.shape == shape else {
            throw ModelError(.badShape, "tensor '\(name)' has shape \(info.shape), expected \(shape)", path: url.path)
        }
        let tensor = try read(info)
        lock.withLock { _ = taken.insert(name) }
        return tensor
    }

    /// Reads `name` as Float32 in whatever shape the file gives, without marking it taken (for tools and
    /// tests; models use `take`).
    public func tensor(_ name: String) throws -> Tensor {
        guard let info = stored[name] else {
            throw ModelError(.missingTensor, "tensor '\(name)' is not in this file", path: url.path)
        }
        return try read(info)
    }

    /// Reads an integer tensor (`I32` or `I64`, for example token ids in a test fixture) as Int32 values,
    /// checking the shape like `take`. Throws `.badDType` for other dtypes or an I64 value outside Int32.
    public func int32Values(_ name: String, shape: [Int]) throws -> [Int32] {
        guard let info = stored[name] else {
            throw ModelError(.missingTensor, "tensor '\(name)' (expected shape \(shape)) is not in this file", path: url.path)
        }
        guard info.shape == shape else {
            throw ModelError(.badShape, "tensor '\(name)' has shape \(info.shape), expected \(shape)", path: url.path)
        }
        guard let base = storage.bytes.baseAddress, info.elementCount > 0 else { return [] }
        let source = base + info.byteRange.lowerBound
        switch info.dtype {
        case .i32:
            return (0..<info.elementCount).map {
                Int32(littleEndian: source.loadUnaligned(fromByteOffset: 4 * $0, as: Int32.self))
            }
        case .i64:
            return try (0..<info.elementCount).map {
                let value = Int64(littleEndian: source.loadUnaligned(fromByteOffset: 8 * $0, as: Int64.self))
                guard let narrow = Int32(exactly: value) else {
                    throw ModelError(.badDType, "tensor '\(name)' holds \(value), outside Int32", path: url.path)
                }
                return narrow
            }
        default:
            throw ModelError(.badDType, "tensor '\(name)' has dtype \(info.dtype); expected I32 or I64", path: url.path)
        }
    }

    /// Names never taken, excluding those starting with one of `prefixes`, sorted.
    public func untaken(ignoringPrefixes prefixes: [String]) -> [String] {
        let done = lock.withLock { taken }
        return sourceTensors.keys.filter { name in
            !done.contains(name) && !prefixes.contains(where: { name.hasPrefix($0) })
        }.sorted()
    }

    public func finish(ignoringPrefixes prefixes: [String]) throws {
        let left = untaken(ignoringPrefixes: prefixes)
        guard left.isEmpty else { throw Self.unusedError(left, path: url.path) }
    }

    static func unusedError(_ names: [String], path: String) -> ModelError {
        let shown = names.prefix(20).joined(separator: ", ")
        let more = names.count > 20 ? " and \(names.count - 20) more" : ""
        return ModelError(.unexpectedTensor,
            "\(names.count) tensor(s) were never used by the model: \(shown)\(more); the checkpoint does not match the architecture in config.json",
            path: path)
    }

    private func read(_ info: SafetensorsTensorInfo) throws -> Tensor {
        guard info.dtype.isReadableAsFloat else {
            throw ModelError(.badDType,
                "tensor '\(info.name)' has dtype \(info.dtype); only F32, F16, BF16 and F64 can be read as float32",
                path: url.path)
        }
        let count = info.elementCount
        guard count > 0, let base = storage.bytes.baseAddress else { return Tensor(zeros: info.shape) }
        let source = base + info.byteRange.lowerBound
        switch info.dtype {
        case .f32:
            if Int(bitPattern: source) % MemoryLayout<Float>.alignment == 0 {
                // The map is copy-on-write: a write changes this process's copy of the page, not the file.
                let pointer = UnsafeMutableRawPointer(mutating: source).assumingMemoryBound(to: Float.self)
                return Tensor(shape: info.shape, borrowing: pointer, owner: storage)
            }
            let tensor = Tensor(zeros: info.shape)
            UnsafeMutableRawPointer(tensor.data).copyMemory(from: source, byteCount: 4 * count)
            return tensor
        case .f16, .bf16:
            let tensor = Tensor(zeros: info.shape)
            HalfConversion.convert(halves: source, count: count, bfloat: info.dtype == .bf16, into: tensor.data)
            return tensor
        case .f64:
            let tensor = Tensor(zeros: info.shape)
            for i in 0..<count {
                tensor.data[i] = Float(source.loadUnaligned(fromByteOffset: 8 * i, as: Double.self))
            }
            return tensor
        default:
            preconditionFailure("unreachable: dtype \(info.dtype) passed isReadableAsFloat")
        }
    }
}
