import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A tensor's name and shape, for writers that take the values from elsewhere.
public struct TensorLayout: Sendable, Equatable {
    public var name: String
    public var shape: [Int]
    public init(_ name: String, shape: [Int]) {
        self.name = name
        self.shape = shape
    }
    public var count: Int { shape.reduce(1, *) }
}

extension SafetensorsWriter {
    /// Hands out a tensor's values a chunk at a time: `fill(tensor, offset, values)` writes the values of
    /// elements `offset ..< offset + values.count` (row-major) of `tensors[tensor]` into `values`.
    public typealias Fill = (_ tensor: Int, _ offset: Int, _ values: UnsafeMutableBufferPointer<Float>) throws -> Void

    /// Writes a `.safetensors` file holding `tensors` in this order, asking `fill` for their values a chunk
    /// of `chunk` elements at a time, so memory stays at one chunk however large the file (a 7B shard is
    /// 10 GB). The bytes equal `encode` of the same values. Written under a temporary name and renamed.
    /// Without `fill`, the data section is left a hole: a sparse file of the right size whose tensors read
    /// as zeros and take no disk, for tools that read only headers (`coordinator plan` of a 7B model).
    public static func stream(_ tensors: [TensorLayout], as stored: StoredType = .f32, metadata: [String: String] = [:],
                              to url: URL, chunk: Int = 1 << 20, fill: Fill?) throws {
        precondition(chunk > 0, "chunk must be positive")
        let (header, dataSize) = try header(tensors, as: stored, metadata: metadata)
        let temporary = url.deletingLastPathComponent()
            .appendingPathComponent(".\(url.lastPathComponent).tmp-\(getpid())").path
        let fd = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw posixError("creating", path: temporary) }
        do {
            defer { close(fd) }
            try header.withUnsafeBytes { try writeAll(fd, $0.baseAddress!, $0.count, path: temporary, advice: "") }
            guard let fill else {
                if ftruncate(fd, off_t(header.count + dataSize)) != 0 { throw posixError("extending", path: temporary) }
                if rename(temporary, url.path) != 0 { throw posixError("renaming \(temporary) to", path: url.path) }
                return
            }
            let values = UnsafeMutableBufferPointer<Float>.allocate(capacity: chunk)
            let bytes = UnsafeMutableRawBufferPointer.allocate(byteCount: chunk * 4, alignment: 16)
            defer { values.deallocate(); bytes.deallocate() }
            for (index, t) in tensors.enumerated() {
                var offset = 0
                while offset < t.count {
                    let n = min(chunk, t.count - offset)
                    let part = UnsafeMutableBufferPointer(rebasing: values[0..<n])
                    try fill(index, offset, part)
                    switch stored {
                    case .f32:
                        let out = bytes.bindMemory(to: UInt32.self)
                        for i in 0..<n { out[i] = part[i].bitPattern.littleEndian }
                    case .f16:
                        let out = bytes.bindMemory(to: UInt16.self)
                        for i in 0..<n { out[i] = HalfConversion.half(from: part[i]).littleEndian }
                    case .bf16:
                        let out = bytes.bindMemory(to: UInt16.self)
                        for i in 0..<n { out[i] = HalfConversion.bfloat16(from: part[i]).littleEndian }
                    }
                    try writeAll(fd, bytes.baseAddress!, n * stored.byteSize, path: temporary, advice: "")
                    offset += n
                }
            }
            if fsync(fd) != 0 { throw posixError("fsync of", path: temporary) }
            if rename(temporary, url.path) != 0 { throw posixError("renaming \(temporary) to", path: url.path) }
        } catch {
            unlink(temporary)
            throw error
        }
    }

    /// Writes `tensors` as a sharded set in `directory`, as transformers' `save_pretrained` lays one out:
    /// `model-00001-of-0000N.safetensors` ... (consecutive tensors, split where the running size crosses
    /// each N-th of the total) and `model.safetensors.index.json` (`metadata.total_size`, `weight_map`),
    /// written last. With `shards` 1 it writes `model.safetensors` and no index. Values come from `fill`
    /// as for `stream` (none: sparse files of zeros). Returns the shard files.
    @discardableResult
    public static func writeSharded(_ tensors: [TensorLayout], as stored: StoredType = .f32, shards: Int,
                                    in directory: URL, chunk: Int = 1 << 20, fill: Fill?) throws -> [URL] {
        guard shards >= 1, shards <= max(1, tensors.count) else {
            throw ModelError(.badInput, "cannot split \(tensors.count) tensors into \(shards) shards")
        }
        if shards == 1 {
            let url = directory.appendingPathComponent(SafetensorsArchive.singleFileName)
            try stream(tensors, as: stored, to: url, chunk: chunk, fill: fill)
            return [url]
        }
        // Contiguous groups: tensor i goes to the shard its starting byte falls in (never an empty shard).
        let sizes = tensors.map { $0.count * stored.byteSize }
        let total = sizes.reduce(0, +)
        var groups = [[Int]](repeating: [], count: shards)
        var start = 0
        for (i, size) in sizes.enumerated() {
            let byPosition = total == 0 ? 0 : min(shards - 1, start * shards / total)
            // Leave at least one tensor for each later shard.
            let latest = shards - (tensors.count - i)
            groups[max(byPosition, latest, 0)].append(i)
            start += size
        }
        for s in 0..<shards where groups[s].isEmpty {
            throw ModelError(.badInput, "shard \(s + 1) of \(shards) would be empty: use fewer shards")
        }
        var urls: [URL] = []
        var weightMap: [String: String] = [:]
        for (s, group) in groups.enumerated() {
            let name = String(format: "model-%05d-of-%05d.safetensors", s + 1, shards)
            let url = directory.appendingPathComponent(name)
            try stream(group.map { tensors[$0] }, as: stored, to: url, chunk: chunk,
                       fill: fill.map { fill in { try fill(group[$0], $1, $2) } })
            for i in group { weightMap[tensors[i].name] = name }
            urls.append(url)
        }
        let index: [String: Any] = ["metadata": ["total_size": total], "weight_map": weightMap]
        let json = try JSONSerialization.data(withJSONObject: index, options: [.prettyPrinted, .sortedKeys])
        try json.write(to: directory.appendingPathComponent(SafetensorsArchive.indexFileName), options: .atomic)
        return urls
    }

    /// `writeSharded` of tensors held in memory (tests and tiny models).
    @discardableResult
    public static func writeSharded(_ tensors: TensorSet, as stored: StoredType = .f32, shards: Int,
                                    in directory: URL) throws -> [URL] {
        let layouts = zip(tensors.names, tensors.tensors).map { TensorLayout($0, shape: $1.shape) }
        return try writeSharded(layouts, as: stored, shards: shards, in: directory) { index, offset, values in
            let source = tensors.tensors[index].data + offset
            for i in 0..<values.count { values[i] = source[i] }
        }
    }
}
