import Foundation

/// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), the checksum of TFRecord framing.
public enum CRC32C {
    private static let table: [UInt32] = (UInt32(0)..<256).map { i -> UInt32 in
        var c = i
        for _ in 0..<8 { c = c & 1 == 1 ? (c >> 1) ^ 0x82F6_3B78 : c >> 1 }
        return c
    }

    public static func checksum(_ bytes: some Sequence<UInt8>) -> UInt32 {
        var crc: UInt32 = 0xFFFF_FFFF
        for b in bytes { crc = table[Int((crc ^ UInt32(b)) & 0xFF)] ^ (crc >> 8) }
        return crc ^ 0xFFFF_FFFF
    }

    /// TensorFlow's masked form, stored in records so that a CRC of data holding CRCs stays well mixed.
    public static func masked(_ crc: UInt32) -> UInt32 { ((crc >> 15) | (crc << 17)) &+ 0xA282_EAD8 }
}

/// TFRecord framing, as TensorBoard event files use it: uint64 length (little-endian), masked CRC-32C of
/// those 8 bytes, the data, masked CRC-32C of the data.
public enum TFRecord {
    public static func frame(_ data: [UInt8]) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(data.count + 16)
        let length = littleEndian(UInt64(data.count))
        out += length
        out += littleEndian(CRC32C.masked(CRC32C.checksum(length)))
        out += data
        out += littleEndian(CRC32C.masked(CRC32C.checksum(data)))
        return out
    }

    static func littleEndian<T: FixedWidthInteger>(_ v: T) -> [UInt8] {
        (0..<(T.bitWidth / 8)).map { UInt8(truncatingIfNeeded: v >> ($0 * 8)) }
    }
}

/// The `tensorboard.Event` protobuf messages the coordinator writes (tensorboard/compat/proto/event.proto,
/// summary.proto), serialised by hand: the fields are few and fixed, and no protobuf dependency is needed.
/// Every event has `wall_time` (field 1, double) and `step` (field 2, int64), then one of
/// `file_version` (3, string), `summary` (5: `Summary.value` (1) = {`tag` (1), `simple_value` (2, float)})
/// or `session_log` (7: `SessionLog.status` (1) = START).
public enum SummaryEvent {
    /// The first event of every file: the format version TensorBoard's loaders expect.
    public static let fileVersion = "brain.Event:2"

    public static func fileVersion(wallTime: Double) -> [UInt8] {
        var m = header(wallTime: wallTime, step: 0)
        bytesField(3, Array(fileVersion.utf8), into: &m)
        return m
    }

    /// `SessionLog.START` at `step`: with file version 2, TensorBoard's loaders discard every point they
    /// have read (from older files) at `step` or later, so a run resumed from an earlier checkpoint
    /// replaces the points of the steps it computes again instead of adding duplicates.
    public static func sessionStart(wallTime: Double, step: Int) -> [UInt8] {
        var m = header(wallTime: wallTime, step: step)
        var log: [UInt8] = []
        varintField(1, 1, into: &log)   // SessionLog.SessionStatus.START
        bytesField(7, log, into: &m)
        return m
    }

    /// One `Summary` of `simple_value` scalars, in the given order.
    public static func scalars(wallTime: Double, step: Int, _ values: [(tag: String, value: Float)]) -> [UInt8] {
        var summary: [UInt8] = []
        for (tag, value) in values {
            var v: [UInt8] = []
            bytesField(1, Array(tag.utf8), into: &v)
            v.append(2 << 3 | 5)   // field 2, wire type 5 (32-bit)
            v += TFRecord.littleEndian(value.bitPattern)
            bytesField(1, v, into: &summary)
        }
        var m = header(wallTime: wallTime, step: step)
        bytesField(5, summary, into: &m)
        return m
    }

    /// wall_time and step; as proto3 serialisers do, a field at its default (0) is left out.
    private static func header(wallTime: Double, step: Int) -> [UInt8] {
        var m: [UInt8] = []
        if wallTime != 0 {
            m.append(1 << 3 | 1)   // field 1, wire type 1 (64-bit)
            m += TFRecord.littleEndian(wallTime.bitPattern)
        }
        if step != 0 { varintField(2, UInt64(bitPattern: Int64(step)), into: &m) }
        return m
    }

    private static func varint(_ value: UInt64, into out: inout [UInt8]) {
        var v = value
        while v >= 0x80 {
            out.append(UInt8(v & 0x7F) | 0x80)
            v >>= 7
        }
        out.append(UInt8(v))
    }

    private static func varintField(_ field: UInt64, _ value: UInt64, into out: inout [UInt8]) {
        varint(field << 3, into: &out)
        varint(value, into: &out)
    }

    private static func bytesField(_ field: UInt64, _ bytes: [UInt8], into out: inout [UInt8]) {
        varint(field << 3 | 2, into: &out)
        varint(UInt64(bytes.count), into: &out)
        out += bytes
    }
}
