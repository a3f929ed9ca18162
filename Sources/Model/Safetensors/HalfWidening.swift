import Crypto
import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The F32 twin of a safetensors file: every F16 and BF16 tensor widened to F32 (exact), every other
/// tensor's bytes copied as they are, same names, shapes and `__metadata__`. Tensors keep the source's
/// order and are packed back to back as Python `safetensors` writes them; an F32 tensor that would start
/// off a 4-byte boundary (only after a 1- or 2-byte integer tensor of odd length) is moved to the next
/// one, so that every F32 tensor is read in place from the map. The header is padded to 8 bytes.
struct HalfWidening {
    struct Piece {
        /// The tensor in the source file.
        let source: SafetensorsTensorInfo
        /// Where its bytes start in the widened file (absolute).
        let start: Int
        let widened: Bool
        var byteCount: Int { widened ? 2 * source.byteRange.count : source.byteRange.count }
    }

    /// The 8-byte length and the padded JSON header.
    let header: [UInt8]
    /// In the source file's order.
    let pieces: [Piece]
    /// The size of the widened file.
    let size: Int

    /// Whether a file with these tensors needs widening (holds an F16 or BF16 tensor).
    static func needed(_ tensors: some Collection<SafetensorsTensorInfo>) -> Bool {
        tensors.contains { $0.dtype == .f16 || $0.dtype == .bf16 }
    }

    init(tensors: [String: SafetensorsTensorInfo], metadata: [String: String]) throws {
        let ordered = tensors.values.sorted { ($0.byteRange.lowerBound, $0.name) < ($1.byteRange.lowerBound, $1.name) }
        var json: [String: Any] = [:]
        if !metadata.isEmpty { json["__metadata__"] = metadata }
        var relative: [(SafetensorsTensorInfo, Int, Bool)] = []
        var offset = 0
        for info in ordered {
            let widened = info.dtype == .f16 || info.dtype == .bf16
            if (widened || info.dtype == .f32) && offset % 4 != 0 { offset += 4 - offset % 4 }
            let count = widened ? 2 * info.byteRange.count : info.byteRange.count
            json[info.name] = ["dtype": widened ? "F32" : info.dtype.description, "shape": info.shape,
                               "data_offsets": [offset, offset + count]]
            relative.append((info, offset, widened))
            offset += count
        }
        var text = try JSONSerialization.data(withJSONObject: json, options: [.sortedKeys])
        text.append(contentsOf: [UInt8](repeating: 0x20, count: (8 - text.count % 8) % 8))
        var header: [UInt8] = []
        withUnsafeBytes(of: UInt64(text.count).littleEndian) { header.append(contentsOf: $0) }
        header.append(contentsOf: text)
        self.header = header
        pieces = relative.map { Piece(source: $0.0, start: header.count + $0.1, widened: $0.2) }
        size = header.count + offset
    }

    /// Source bytes handled at a time: 2 MiB of halves become 4 MiB of floats, so conversion holds about
    /// 10 MB (this, its output and the reader's block) whatever the size of the file.
    static let chunkBytes = 2 << 20

    /// Streams the source file open at `source` (whose tensors and size are this layout's) into `output`,
    /// a new file, and returns the SHA-256 of every source byte and of every byte written, as hex.
    /// Source pages are dropped from the page cache behind the read (see `SequentialReader`); the
    /// written pages are left for the processes about to map them.
    func write(source: Int32, sourcePath: String, sourceSize: Int, output: Int32, outputPath: String,
               advice: String) throws -> (source: String, output: String) {
        var reader = SequentialReader(fd: source, path: sourcePath, size: sourceSize, dropPages: true)
        var hasher = SHA256()
        var written = 0
        let input = UnsafeMutableRawPointer.allocate(byteCount: Self.chunkBytes, alignment: 16)
        let floats = UnsafeMutablePointer<Float>.allocate(capacity: Self.chunkBytes / 2)
        defer { input.deallocate(); floats.deallocate() }

        func emit(_ pointer: UnsafeRawPointer, _ count: Int) throws {
            hasher.update(bufferPointer: UnsafeRawBufferPointer(start: pointer, count: count))
            try writeAll(output, pointer, count, path: outputPath, advice: advice)
            written += count
        }
        try header.withUnsafeBytes { try emit($0.baseAddress!, $0.count) }
        for piece in pieces {
            try reader.skip(to: piece.source.byteRange.lowerBound)
            if written < piece.start {
                let zeros = [UInt8](repeating: 0, count: piece.start - written)
                try zeros.withUnsafeBytes { try emit($0.baseAddress!, $0.count) }
            }
            var left = piece.source.byteRange.count
            while left > 0 {
                let n = min(left, Self.chunkBytes)
                try reader.read(into: input, count: n)
                if piece.widened {
                    HalfConversion.convert(halves: input, count: n / 2, bfloat: piece.source.dtype == .bf16, into: floats)
                    try emit(floats, 2 * n)
                } else {
                    try emit(input, n)
                }
                left -= n
            }
        }
        let sourceDigest = try reader.finish()
        guard written == size else {
            throw ModelError(.io, "wrote \(written) bytes, but the F32 layout has \(size)", path: outputPath)
        }
        return (sourceDigest, hasher.finalize().map { String(format: "%02x", $0) }.joined())
    }

    /// Whether `stored` (the tensors of a widened file) is what this layout puts there for `source`;
    /// the reason when not.
    static func mismatch(stored: [String: SafetensorsTensorInfo], source: [String: SafetensorsTensorInfo]) -> String? {
        if stored.count != source.count { return "it holds \(stored.count) tensors, the source \(source.count)" }
        for (name, info) in source {
            guard let copy = stored[name] else { return "tensor '\(name)' is missing" }
            let dtype: SafetensorsDType = info.dtype == .f16 || info.dtype == .bf16 ? .f32 : info.dtype
            if copy.shape != info.shape || copy.dtype != dtype {
                return "tensor '\(name)' is \(copy.dtype) \(copy.shape), expected \(dtype) \(info.shape)"
            }
        }
        return nil
    }
}
