import Foundation

/// Writes Float32 tensors as a `.safetensors` file, stored as F32, F16 or BF16 (rounded to nearest
/// even). The layout matches Python `safetensors`: header JSON padded with spaces to a multiple of 8
/// bytes, tensors packed back to back in the order given. Used for the tiny demo backbones and by tests.
public enum SafetensorsWriter {
    public enum StoredType: String, Sendable {
        case f32 = "F32", f16 = "F16", bf16 = "BF16"
        var byteSize: Int { self == .f32 ? 4 : 2 }
    }

    /// Writes `tensors` (names must be unique and not `__metadata__`) to `url`, replacing it atomically.
    public static func write(_ tensors: TensorSet, as stored: StoredType = .f32,
                             metadata: [String: String] = [:], to url: URL) throws {
        try encode(tensors, as: stored, metadata: metadata).write(to: url, options: .atomic)
    }

    /// The bytes of such a file.
    public static func encode(_ tensors: TensorSet, as stored: StoredType = .f32,
                              metadata: [String: String] = [:]) throws -> Data {
        let layouts = zip(tensors.names, tensors.tensors).map { TensorLayout($0, shape: $1.shape) }
        let (prefix, offset) = try header(layouts, as: stored, metadata: metadata)
        var out = Data(capacity: prefix.count + offset)
        out.append(prefix)
        for tensor in tensors.tensors {
            switch stored {
            case .f32:
                var values = tensor.array.map { $0.bitPattern.littleEndian }
                values.withUnsafeMutableBytes { out.append(contentsOf: $0) }
            case .f16, .bf16:
                var values = tensor.array.map {
                    (stored == .f16 ? HalfConversion.half(from: $0) : HalfConversion.bfloat16(from: $0)).littleEndian
                }
                values.withUnsafeMutableBytes { out.append(contentsOf: $0) }
            }
        }
        return out
    }

    /// The 8-byte length and the space-padded header JSON of a file holding `tensors` in this order, and
    /// the size of its data section.
    static func header(_ tensors: [TensorLayout], as stored: StoredType,
                       metadata: [String: String]) throws -> (bytes: Data, dataSize: Int) {
        var header: [String: Any] = [:]
        if !metadata.isEmpty { header["__metadata__"] = metadata }
        var offset = 0
        for t in tensors {
            guard t.name != "__metadata__", header[t.name] == nil else {
                throw ModelError(.badInput, "cannot write tensor name '\(t.name)' twice or as '__metadata__'")
            }
            let size = t.count * stored.byteSize
            header[t.name] = ["dtype": stored.rawValue, "shape": t.shape, "data_offsets": [offset, offset + size]]
            offset += size
        }
        var json = try JSONSerialization.data(withJSONObject: header, options: [.sortedKeys])
        json.append(contentsOf: [UInt8](repeating: 0x20, count: (8 - json.count % 8) % 8))
        var out = Data(capacity: 8 + json.count)
        withUnsafeBytes(of: UInt64(json.count).littleEndian) { out.append(contentsOf: $0) }
        out.append(json)
        return (out, offset)
    }
}
