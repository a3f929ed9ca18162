import Foundation

/// The element type of a safetensors tensor. Every dtype the format defines is recognised (so a file that
/// holds, say, an `I64` buffer still opens and its byte ranges are checked); only `F32`, `F16`, `BF16` and
/// `F64` can be read as Float32. A dtype string the format does not define is kept as `.unknown` and
/// fails only when that tensor is taken.
public enum SafetensorsDType: Hashable, Sendable, CustomStringConvertible {
    case f64, f32, f16, bf16, i64, i32, i16, i8, u64, u32, u16, u8, bool, f8e4m3, f8e5m2
    case unknown(String)

    public init(_ string: String) {
        switch string {
        case "F64": self = .f64
        case "F32": self = .f32
        case "F16": self = .f16
        case "BF16": self = .bf16
        case "I64": self = .i64
        case "I32": self = .i32
        case "I16": self = .i16
        case "I8": self = .i8
        case "U64": self = .u64
        case "U32": self = .u32
        case "U16": self = .u16
        case "U8": self = .u8
        case "BOOL": self = .bool
        case "F8_E4M3": self = .f8e4m3
        case "F8_E5M2": self = .f8e5m2
        default: self = .unknown(string)
        }
    }

    public var description: String {
        switch self {
        case .f64: "F64"
        case .f32: "F32"
        case .f16: "F16"
        case .bf16: "BF16"
        case .i64: "I64"
        case .i32: "I32"
        case .i16: "I16"
        case .i8: "I8"
        case .u64: "U64"
        case .u32: "U32"
        case .u16: "U16"
        case .u8: "U8"
        case .bool: "BOOL"
        case .f8e4m3: "F8_E4M3"
        case .f8e5m2: "F8_E5M2"
        case .unknown(let s): s
        }
    }

    /// Bytes per element, or nil for a dtype string the format does not define.
    public var byteSize: Int? {
        switch self {
        case .f64, .i64, .u64: 8
        case .f32, .i32, .u32: 4
        case .f16, .bf16, .i16, .u16: 2
        case .i8, .u8, .bool, .f8e4m3, .f8e5m2: 1
        case .unknown: nil
        }
    }

    /// Whether `take` can return this dtype as Float32.
    public var isReadableAsFloat: Bool {
        switch self {
        case .f32, .f16, .bf16, .f64: true
        default: false
        }
    }
}

/// One tensor's entry in a safetensors header, after validation.
public struct SafetensorsTensorInfo: Sendable, Equatable {
    public let name: String
    public let dtype: SafetensorsDType
    public let shape: [Int]
    /// Byte range relative to the start of the file (not of the data section).
    public let byteRange: Range<Int>

    public var elementCount: Int { shape.reduce(1, *) }
}

/// Parses and checks a safetensors header against the file it came from. The format: an 8-byte
/// little-endian header length N, N bytes of JSON `{name: {dtype, shape, data_offsets: [begin, end]},
/// "__metadata__": {string: string}}`, then the data section; offsets are relative to the data section.
///
/// Every claim of the header is checked before any tensor byte is touched: the length against the file
/// and a 100 MB cap, the JSON itself, offsets inside the data section with begin <= end, byte size equal
/// to shape x dtype size (for known dtypes), and no two non-empty ranges overlapping. Gaps between
/// tensors are tolerated (they cost nothing to skip). Anything else is a `.badHeader` error naming the file.
enum SafetensorsHeader {
    static let maxHeaderBytes = 100_000_000

    struct Parsed {
        var tensors: [String: SafetensorsTensorInfo]
        var metadata: [String: String]
    }

    static func parse(_ bytes: UnsafeRawBufferPointer, path: String) throws -> Parsed {
        func bad(_ message: String) -> ModelError {
            ModelError(.badHeader, "not a valid safetensors file: \(message)", path: path)
        }
        guard bytes.count >= 8 else {
            throw bad("the file has \(bytes.count) bytes, fewer than the 8-byte header length")
        }
        let declared = UInt64(littleEndian: bytes.loadUnaligned(fromByteOffset: 0, as: UInt64.self))
        guard declared <= UInt64(maxHeaderBytes) else {
            throw bad("the header claims \(declared) bytes, more than the \(maxHeaderBytes)-byte limit")
        }
        let headerLength = Int(declared)
        guard headerLength <= bytes.count - 8 else {
            throw bad("the header claims \(headerLength) bytes but the file has only \(bytes.count - 8) after the length")
        }
        let dataStart = 8 + headerLength
        let dataLength = bytes.count - dataStart
        let json = Data(bytes: bytes.baseAddress! + 8, count: headerLength)

        let raw: RawHeader
        do {
            raw = try JSONDecoder().decode(RawHeader.self, from: json)
        } catch let error as ModelError {
            throw bad(error.message)
        } catch {
            throw bad("the header is not the expected JSON (\(Self.describe(error)))")
        }

        var tensors: [String: SafetensorsTensorInfo] = [:]
        tensors.reserveCapacity(raw.entries.count)
        for (name, entry) in raw.entries {
            guard entry.shape.allSatisfy({ $0 >= 0 }) else {
                throw bad("tensor '\(name)' has a negative dimension in shape \(entry.shape)")
            }
            guard entry.dataOffsets.count == 2 else {
                throw bad("tensor '\(name)' has \(entry.dataOffsets.count) data_offsets, expected [begin, end]")
            }
            let begin = entry.dataOffsets[0], end = entry.dataOffsets[1]
            guard begin >= 0, end >= 0, begin <= end else {
                throw bad("tensor '\(name)' has data_offsets [\(begin), \(end)]: begin must not exceed end")
            }
            guard end <= dataLength else {
                throw bad("tensor '\(name)' ends at data offset \(end), past the data section of \(dataLength) bytes (truncated file?)")
            }
            let dtype = SafetensorsDType(entry.dtype)
            var elements = 1
            for d in entry.shape {
                let (product, overflow) = elements.multipliedReportingOverflow(by: d)
                guard !overflow else { throw bad("tensor '\(name)' has shape \(entry.shape), too large") }
                elements = product
            }
            if let size = dtype.byteSize {
                let (bytesNeeded, overflow) = elements.multipliedReportingOverflow(by: size)
                guard !overflow, bytesNeeded == end - begin else {
                    throw bad("tensor '\(name)' is \(dtype) \(entry.shape), which takes \(overflow ? "too many" : String(bytesNeeded)) bytes, but its data_offsets span \(end - begin)")
                }
            }
            tensors[name] = SafetensorsTensorInfo(name: name, dtype: dtype, shape: entry.shape,
                                                  byteRange: (dataStart + begin)..<(dataStart + end))
        }

        let ordered = tensors.values.filter { !$0.byteRange.isEmpty }
            .sorted { ($0.byteRange.lowerBound, $0.name) < ($1.byteRange.lowerBound, $1.name) }
        for (a, b) in zip(ordered, ordered.dropFirst()) where b.byteRange.lowerBound < a.byteRange.upperBound {
            throw bad("tensors '\(a.name)' and '\(b.name)' overlap in the data section")
        }
        return Parsed(tensors: tensors, metadata: raw.metadata)
    }

    private static func describe(_ error: Error) -> String {
        switch error {
        case DecodingError.dataCorrupted(let c): return c.underlyingError.map { "\($0)" } ?? c.debugDescription
        case DecodingError.keyNotFound(let key, let c):
            return "missing '\(key.stringValue)' at \(c.codingPath.map(\.stringValue).joined(separator: "."))"
        case DecodingError.typeMismatch(_, let c), DecodingError.valueNotFound(_, let c):
            return "\(c.debugDescription) at \(c.codingPath.map(\.stringValue).joined(separator: "."))"
        default: return "\(error)"
        }
    }

    private struct Entry: Decodable {
        var dtype: String
        var shape: [Int]
        var dataOffsets: [Int]
        enum CodingKeys: String, CodingKey { case dtype, shape, dataOffsets = "data_offsets" }
    }

    private struct AnyKey: CodingKey {
        var stringValue: String
        var intValue: Int? { nil }
        init(stringValue: String) { self.stringValue = stringValue }
        init?(intValue: Int) { nil }
    }

    private struct RawHeader: Decodable {
        var entries: [String: Entry] = [:]
        var metadata: [String: String] = [:]
        init(from decoder: Decoder) throws {
            let c = try decoder.container(keyedBy: AnyKey.self)
            for key in c.allKeys {
                if key.stringValue == "__metadata__" {
                    metadata = try c.decode([String: String].self, forKey: key)
                } else {
                    entries[key.stringValue] = try c.decode(Entry.self, forKey: key)
                }
            }
        }
    }
}
