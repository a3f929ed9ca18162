/// Anything holding one received frame's bytes (a `[UInt8]`, or a ``ZMQMessage`` without a copy).
public protocol WireFrameBytes {
    func withWireBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R
}

extension Array: WireFrameBytes where Element == UInt8 {
    public func withWireBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        try withUnsafeBytes { try body($0) }
    }
}

/// Little-endian writer for header and meta frames.
struct ByteWriter {
    var bytes: [UInt8] = []

    mutating func u8(_ v: UInt8) { bytes.append(v) }
    mutating func u16(_ v: UInt16) { withUnsafeBytes(of: v.littleEndian) { bytes.append(contentsOf: $0) } }
    mutating func u32(_ v: UInt32) { withUnsafeBytes(of: v.littleEndian) { bytes.append(contentsOf: $0) } }
    mutating func u64(_ v: UInt64) { withUnsafeBytes(of: v.littleEndian) { bytes.append(contentsOf: $0) } }
    mutating func i64(_ v: Int64) { u64(UInt64(bitPattern: v)) }
    mutating func i32(_ v: Int32) { u32(UInt32(bitPattern: v)) }
    mutating func f64(_ v: Double) { u64(v.bitPattern) }

    /// u32 byte length, then UTF-8 bytes.
    mutating func string(_ s: String) {
        let utf8 = Array(s.utf8)
        u32(UInt32(utf8.count))
        bytes.append(contentsOf: utf8)
    }
}

/// Little-endian bounds-checked reader; every read failure is a ``WireError``.
struct ByteReader {
    let bytes: UnsafeRawBufferPointer
    var offset = 0

    init(_ bytes: UnsafeRawBufferPointer) { self.bytes = bytes }

    var remaining: Int { bytes.count - offset }

    mutating func take(_ n: Int, _ what: String) throws -> UnsafeRawBufferPointer {
        guard n >= 0, n <= remaining else { throw WireError.truncated(what) }
        defer { offset += n }
        return UnsafeRawBufferPointer(rebasing: bytes[offset..<offset + n])
    }

    mutating func u8(_ what: String) throws -> UInt8 { try take(1, what)[0] }
    mutating func u16(_ what: String) throws -> UInt16 { UInt16(littleEndian: try take(2, what).loadUnaligned(as: UInt16.self)) }
    mutating func u32(_ what: String) throws -> UInt32 { UInt32(littleEndian: try take(4, what).loadUnaligned(as: UInt32.self)) }
    mutating func u64(_ what: String) throws -> UInt64 { UInt64(littleEndian: try take(8, what).loadUnaligned(as: UInt64.self)) }
    mutating func i64(_ what: String) throws -> Int64 { Int64(bitPattern: try u64(what)) }
    mutating func i32(_ what: String) throws -> Int32 { Int32(bitPattern: try u32(what)) }
    mutating func f64(_ what: String) throws -> Double { Double(bitPattern: try u64(what)) }

    mutating func bool(_ what: String) throws -> Bool {
        switch try u8(what) {
        case 0: return false
        case 1: return true
        case let b: throw WireError.badValue("\(what): boolean byte \(b)")
        }
    }

    /// A count that is checked against a limit and against the bytes left (each item needs at least
    /// `minBytesEach`), so a forged count cannot make us allocate gigabytes.
    mutating func count(_ what: String, limit: Int, minBytesEach: Int) throws -> Int {
        let n = try u32(what)
        guard n <= limit else { throw WireError.tooLarge(what, value: UInt64(n), limit: UInt64(limit)) }
        guard Int(n) * minBytesEach <= remaining else { throw WireError.truncated(what) }
        return Int(n)
    }

    mutating func string(_ what: String, limit: Int) throws -> String {
        let n = try u32("\(what) length")
        guard n <= limit else { throw WireError.tooLarge("\(what) length", value: UInt64(n), limit: UInt64(limit)) }
        let raw = try take(Int(n), what)
        guard let s = String(validating: raw, as: UTF8.self) else { throw WireError.badUTF8(what) }
        return s
    }

    func expectEnd(_ what: String) throws {
        if remaining != 0 { throw WireError.trailingBytes(what, remaining) }
    }
}
