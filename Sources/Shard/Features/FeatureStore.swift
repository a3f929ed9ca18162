import Crypto
import Foundation
import Model

/// Candidate ViT features on disk, shared by every process that points at the same directory: workers on
/// one node (or on a shared filesystem) then run the frozen ViT once per image per run, not once per
/// image per worker, and a worker's memory no longer holds every image's features (4 MB an image at
/// ViT-L/14 with four candidate layers: 25 GB for ScienceQA's training images).
///
/// One file per image, `<image id>.f32` (`DatasetFile.image(ofRow:)`): the magic "DEHVFFT1", the rank and
/// dimensions (UInt32 LE), the float32 values (LE), and the SHA-256 of everything before it. Features are
/// stored exactly, so a feature read back is bitwise the one computed (DESIGN.md §6). Files are written to
/// a temporary name and renamed, so a reader never sees half a file; two processes writing the same image
/// write the same bytes. A file that does not verify is reported through `onDamaged`, removed and computed again.
public final class FeatureStore: @unchecked Sendable {
    public let directory: URL
    private let onDamaged: (String) -> Void
    private static let magic = Array("DEHVFFT1".utf8)

    /// Opens (creating it if needed) `directory`.
    public init(directory: URL, onDamaged: @escaping (String) -> Void = { _ in }) throws {
        self.directory = directory
        self.onDamaged = onDamaged
        do {
            try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        } catch {
            throw ShardError(.io, "cannot create the feature cache directory (data.feature_cache): check that it is writable on this node",
                             path: directory.path, cause: error)
        }
    }

    private func url(_ key: Int) -> URL { directory.appendingPathComponent("\(key).f32") }

    /// The stored features of image `key` with `shape`, or nil if there are none (or they were damaged).
    public func read(_ key: Int, shape: [Int]) -> Tensor? {
        let path = url(key).path
        guard let data = FileManager.default.contents(atPath: path) else { return nil }
        let count = shape.reduce(1, *)
        let header = Self.magic.count + 4 * (1 + shape.count)
        guard data.count == header + 4 * count + 32 else {
            damaged(path, "has \(data.count) bytes, expected \(header + 4 * count + 32) for shape \(shape)")
            return nil
        }
        return data.withUnsafeBytes { raw -> Tensor? in
            let digest = SHA256.hash(data: UnsafeRawBufferPointer(rebasing: raw[0..<(data.count - 32)]))
            guard Array(digest) == Array(raw[(data.count - 32)...]) else {
                damaged(path, "does not match its checksum")
                return nil
            }
            guard Array(raw[0..<Self.magic.count]) == Self.magic,
                  Self.dimensions(raw, rank: shape.count) == shape else {
                damaged(path, "holds features of another shape than \(shape)")
                return nil
            }
            let t = Tensor(zeros: shape)
            for i in 0..<count {
                t.data[i] = Float(bitPattern: UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: header + 4 * i, as: UInt32.self)))
            }
            return t
        }
    }

    /// Stores the features of image `key` (atomically: written under a temporary name, then renamed).
    public func write(_ key: Int, _ t: Tensor) throws {
        var bytes = Self.magic
        func append(_ v: UInt32) { withUnsafeBytes(of: v.littleEndian) { bytes += $0 } }
        append(UInt32(t.shape.count))
        for d in t.shape { append(UInt32(d)) }
        bytes.reserveCapacity(bytes.count + 4 * t.count + 32)
        for i in 0..<t.count { append(t.data[i].bitPattern) }
        bytes += Array(SHA256.hash(data: bytes))
        let final = url(key)
        let temp = directory.appendingPathComponent(".\(key).\(getpid()).\(UInt32.random(in: 0...UInt32.max)).tmp")
        do {
            try Data(bytes).write(to: temp)
            if rename(temp.path, final.path) != 0 { throw POSIXError(POSIXErrorCode(rawValue: errno) ?? .EIO) }
        } catch {
            try? FileManager.default.removeItem(at: temp)
            throw ShardError(.io, "cannot write features (data.feature_cache): check that the directory is writable and has space",
                             path: final.path, cause: error)
        }
    }

    private static func dimensions(_ raw: UnsafeRawBufferPointer, rank: Int) -> [Int]? {
        let at = magic.count
        guard UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: at, as: UInt32.self)) == UInt32(rank) else { return nil }
        return (0..<rank).map { Int(UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: at + 4 * (1 + $0), as: UInt32.self))) }
    }

    private func damaged(_ path: String, _ why: String) {
        onDamaged("feature cache file \(path) \(why); computing it again")
        try? FileManager.default.removeItem(atPath: path)
    }
}
