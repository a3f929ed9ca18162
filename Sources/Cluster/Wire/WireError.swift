/// Why a received message was rejected. A peer controls these bytes, so every case is an error to log
/// (and usually to drop the message), never a crash.
public enum WireError: Error, Equatable, Sendable, CustomStringConvertible {
    case badMagic(UInt32)
    /// The peer speaks another protocol version: upgrade the older side.
    case unsupportedVersion(UInt16)
    case unknownKind(UInt8)
    case reservedBitsSet(UInt8)
    case wrongFrameCount(expected: Int, found: Int)
    case truncated(String)
    case trailingBytes(String, Int)
    case tooLarge(String, value: UInt64, limit: UInt64)
    case shapeMismatch(name: String, expectedBytes: UInt64, foundBytes: Int)
    case badUTF8(String)
    case badValue(String)

    public var description: String {
        switch self {
        case .badMagic(let m): "not a DEHVF message (magic 0x\(String(m, radix: 16)))"
        case .unsupportedVersion(let v): "protocol version \(v), this build speaks \(wireProtocolVersion): run the same build on both sides"
        case .unknownKind(let k): "unknown message kind \(k)"
        case .reservedBitsSet(let b): "reserved header byte is \(b), expected 0"
        case .wrongFrameCount(let e, let f): "expected \(e) frames, found \(f)"
        case .truncated(let what): "truncated while reading \(what)"
        case .trailingBytes(let what, let n): "\(n) unexpected trailing bytes after \(what)"
        case .tooLarge(let what, let v, let l): "\(what) is \(v), more than the limit \(l)"
        case .shapeMismatch(let name, let e, let f): "tensor \(name): shape needs \(e) bytes, frame has \(f)"
        case .badUTF8(let what): "\(what) is not valid UTF-8"
        case .badValue(let what): "invalid \(what)"
        }
    }
}
