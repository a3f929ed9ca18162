import Foundation

/// The weights of one Hugging Face model directory: `model.safetensors`, or the shards listed by
/// `model.safetensors.index.json` (`weight_map`: tensor name -> shard file name), read as one strict
/// `WeightSource`.
///
/// A sharded set is checked when opened: shard names must be plain file names inside the directory, every
/// `weight_map` entry must be in the shard it names, and no tensor may appear in two shards.
///
/// Opened with a `F32Cache`, files holding F16/BF16 tensors are read from their F32 copies in the node's
/// cache (converted by the first process that needs them), so their pages are shared like an F32 file's;
/// without one, such tensors are converted on each `take` into this process's memory.
public final class SafetensorsArchive: WeightSource, @unchecked Sendable {
    public static let singleFileName = "model.safetensors"
    public static let indexFileName = "model.safetensors.index.json"

    public let directory: URL
    /// The open files, in file-name order.
    public let files: [SafetensorsFile]
    private let owner: [String: SafetensorsFile]

    /// Opens the safetensors weights of the model directory `directory`, reading half-precision files
    /// from their F32 copies in `cache` when one is given.
    public convenience init(directory: URL, cache: F32Cache? = nil) throws {
        try self.init(directory: directory, fileURLs: Self.weightFiles(in: directory), cache: cache)
    }

    /// The safetensors files a model directory's weights live in: the shards named by the index when
    /// there is one, else `model.safetensors`. Throws `.fileNotFound` when there is neither.
    public static func weightFiles(in directory: URL) throws -> [URL] {
        let fm = FileManager.default
        var isDirectory: ObjCBool = false
        guard fm.fileExists(atPath: directory.path, isDirectory: &isDirectory), isDirectory.boolValue else {
            throw ModelError(.fileNotFound, "model directory does not exist (check the model path in the job config)",
                             path: directory.path)
        }
        let index = directory.appendingPathComponent(indexFileName)
        if fm.fileExists(atPath: index.path) {
            let map = try readWeightMap(index)
            return Set(map.values).sorted().map { directory.appendingPathComponent($0) }
        }
        let single = directory.appendingPathComponent(singleFileName)
        if fm.fileExists(atPath: single.path) { return [single] }
        throw ModelError(.fileNotFound,
            "no \(singleFileName) or \(indexFileName) here; only safetensors weights are supported (convert pytorch_model.bin with transformers' save_pretrained(safe_serialization=True))",
            path: directory.path)
    }

    private init(directory: URL, fileURLs: [URL], cache: F32Cache?) throws {
        self.directory = directory
        var files = try fileURLs.map { try SafetensorsFile(url: $0) }
        let half = files.indices.filter { files[$0].holdsHalfPrecision }
        if let cache, !half.isEmpty {
            for (i, copy) in zip(half, try cache.copies(of: half.map { files[$0] })) { files[i] = copy }
        }
        self.files = files
        var owner: [String: SafetensorsFile] = [:]
        for file in files {
            for name in file.names {
                if let other = owner[name] {
                    throw ModelError(.badHeader,
                        "tensor '\(name)' is in both \(other.url.lastPathComponent) and \(file.url.lastPathComponent)",
                        path: directory.path)
                }
                owner[name] = file
            }
        }
        self.owner = owner
        let index = directory.appendingPathComponent(Self.indexFileName)
        if FileManager.default.fileExists(atPath: index.path) {
            for (name, shard) in try Self.readWeightMap(index) where owner[name]?.url.lastPathComponent != shard {
                throw ModelError(.badHeader, "the index puts tensor '\(name)' in \(shard), but that shard does not hold it",
                                 path: index.path)
            }
        }
    }

    private static func readWeightMap(_ index: URL) throws -> [String: String] {
        struct Index: Decodable {
            var weightMap: [String: String]
            enum CodingKeys: String, CodingKey { case weightMap = "weight_map" }
        }
        let data: Data
        do { data = try Data(contentsOf: index) } catch {
            throw ModelError(.fileNotFound, "cannot read the shard index", path: index.path, cause: error)
        }
        let map: [String: String]
        do { map = try JSONDecoder().decode(Index.self, from: data).weightMap } catch {
            throw ModelError(.badHeader, "the shard index is not JSON with a 'weight_map' of name -> file",
                             path: index.path, cause: error)
        }
        for shard in Set(map.values) {
            guard !shard.isEmpty, !shard.contains("/"), !shard.contains("\\"), shard != ".", shard != ".." else {
                throw ModelError(.badHeader, "the index names shard '\(shard)', which is not a file name in this directory",
                                 path: index.path)
            }
        }
        guard !map.isEmpty else {
            throw ModelError(.badHeader, "the shard index has an empty weight_map", path: index.path)
        }
        return map
    }

    public var names: [String] { owner.keys.sorted() }

    public func contains(_ name: String) -> Bool { owner[name] != nil }

    /// The header entry for `name`, if present.
    public func info(_ name: String) -> SafetensorsTensorInfo? { owner[name]?.info(name) }

    public func take(_ name: String, shape: [Int]) throws -> Tensor {
        guard let file = owner[name] else {
            throw ModelError(.missingTensor,
                "tensor '\(name)' (expected shape \(shape)) is not in the model's weights",
                path: directory.path)
        }
        return try file.take(name, shape: shape)
    }

    /// Reads `name` in its stored shape without marking it taken.
    public func tensor(_ name: String) throws -> Tensor {
        guard let file = owner[name] else {
            throw ModelError(.missingTensor, "tensor '\(name)' is not in the model's weights", path: directory.path)
        }
        return try file.tensor(name)
    }

    public func finish(ignoringPrefixes prefixes: [String]) throws {
        let left = files.flatMap { $0.untaken(ignoringPrefixes: prefixes) }.sorted()
        guard left.isEmpty else { throw SafetensorsFile.unusedError(left, path: directory.path) }
    }
}

/// A view of another `WeightSource` under a name prefix: `take("encoder.layers.0...")` reads
/// `prefix + "encoder.layers.0..."`, `names` lists only names under the prefix (stripped), and `finish`
/// checks only the names under the prefix: what lies outside (a full CLIPModel's text tower and
/// projections, beside its `vision_model.` tower) belongs to another model. Lets one model
/// implementation read both `vision_model.encoder...` and `encoder...` spellings.
public final class PrefixedWeightSource: WeightSource {
    public let base: WeightSource
    public let prefix: String

    public init(_ base: WeightSource, prefix: String) {
        self.base = base
        self.prefix = prefix
    }

    public func take(_ name: String, shape: [Int]) throws -> Tensor { try base.take(prefix + name, shape: shape) }
    public func contains(_ name: String) -> Bool { base.contains(prefix + name) }
    public var names: [String] {
        base.names.filter { $0.hasPrefix(prefix) }.map { String($0.dropFirst(prefix.count)) }
    }
    public func finish(ignoringPrefixes prefixes: [String]) throws {
        let outside = prefix.isEmpty ? [] : base.names.filter { !$0.hasPrefix(prefix) }
        try base.finish(ignoringPrefixes: prefixes.map { prefix + $0 } + outside)
    }
}
