import Crypto
import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// What identifies a file's contents without reading them: the inode on its device, its size, and the
/// times of its last data change (mtime) and last inode change (ctime), to the nanosecond.
///
/// Any write, truncation or replacement (a new inode) changes it, and so does `touch -d`, which can set
/// mtime but not ctime: ctime is set by the kernel to the current time and cannot be chosen by a user.
/// Some changes of metadata alone (chmod, a new hard link) change it too; that costs a rebuild, never a
/// wrong answer.
public struct FileIdentity: Codable, Equatable, Sendable, CustomStringConvertible {
    public var device: UInt64
    public var inode: UInt64
    public var size: Int
    public var modifiedNanoseconds: Int64
    public var changedNanoseconds: Int64

    enum CodingKeys: String, CodingKey {
        case device, inode, size, modifiedNanoseconds = "mtime_ns", changedNanoseconds = "ctime_ns"
    }

    init(_ st: stat) {
        device = UInt64(truncatingIfNeeded: st.st_dev)
        inode = UInt64(truncatingIfNeeded: st.st_ino)
        size = Int(st.st_size)
        #if canImport(Darwin)
        modifiedNanoseconds = Int64(st.st_mtimespec.tv_sec) * 1_000_000_000 + Int64(st.st_mtimespec.tv_nsec)
        changedNanoseconds = Int64(st.st_ctimespec.tv_sec) * 1_000_000_000 + Int64(st.st_ctimespec.tv_nsec)
        #else
        modifiedNanoseconds = Int64(st.st_mtim.tv_sec) * 1_000_000_000 + Int64(st.st_mtim.tv_nsec)
        changedNanoseconds = Int64(st.st_ctim.tv_sec) * 1_000_000_000 + Int64(st.st_ctim.tv_nsec)
        #endif
    }

    /// The identity of the file at `path` (following symbolic links), or nil if it cannot be stat'ed.
    static func of(path: String) -> FileIdentity? {
        var st = stat()
        return stat(path, &st) == 0 ? FileIdentity(st) : nil
    }

    public var description: String {
        "\(size) bytes, inode \(inode) on device \(device), mtime \(modifiedNanoseconds) ns, ctime \(changedNanoseconds) ns"
    }

    /// What differs between `self` (as recorded) and `now`, in words.
    func differences(from now: FileIdentity) -> String {
        var out: [String] = []
        if size != now.size { out.append("size \(size) -> \(now.size) bytes") }
        if device != now.device || inode != now.inode { out.append("a different file (inode \(inode) -> \(now.inode))") }
        if modifiedNanoseconds != now.modifiedNanoseconds { out.append("modified since") }
        else if changedNanoseconds != now.changedNanoseconds { out.append("its inode changed since") }
        return out.joined(separator: ", ")
    }
}

/// A `ModelError(.io)` for the failed system call `what` on `path`, with errno's words and `advice`.
func posixError(_ what: String, path: String, advice: String = "", code: Int32 = errno) -> ModelError {
    let words = String(cString: strerror(code))
    return ModelError(.io, "\(what) failed: \(words)" + (advice.isEmpty ? "" : "; \(advice)"), path: path,
                      cause: POSIXError(POSIXErrorCode(rawValue: code) ?? .EIO))
}

/// Writes all `count` bytes at `pointer` to `fd`, across short writes and interrupts.
func writeAll(_ fd: Int32, _ pointer: UnsafeRawPointer, _ count: Int, path: String, advice: String) throws {
    var done = 0
    while done < count {
        let n = write(fd, pointer + done, count - done)
        if n < 0 {
            if errno == EINTR { continue }
            throw posixError("writing", path: path, advice: advice)
        }
        done += n
    }
}

/// The system page size.
let pageSize = Int(sysconf(Int32(_SC_PAGESIZE)))

/// The identity of this boot (Linux's `boot_id`), or nil where there is none: a cache entry checked
/// during this boot need not be checked again until the next.
let currentBootID: String? = {
    #if os(Linux)
    guard let text = try? String(contentsOfFile: "/proc/sys/kernel/random/boot_id", encoding: .utf8) else { return nil }
    let id = text.trimmingCharacters(in: .whitespacesAndNewlines)
    return id.isEmpty ? nil : id
    #else
    return nil
    #endif
}()

/// Reads a file front to back with read(2) in blocks of a few MB, hashing every byte (SHA-256), and
/// hands back to the kernel the page-cache pages it brought in as soon as their block is read
/// (`posix_fadvise(POSIX_FADV_DONTNEED)`, Linux). Memory stays bounded by one block however large the file.
///
/// Pages that were already resident before the read (a backbone another process on the node uses, or
/// one a finished job left warm) are kept: the file's residency is taken with `mincore` before the first
/// read (one byte per 4 KB page: 3.4 MB for a 14 GB file), and only the pages absent then are dropped.
/// Taken once and not per block, because the kernel's readahead runs ahead of the reads (a read that
/// meets a page marked by earlier readahead starts the next window, whatever `POSIX_FADV_RANDOM` says),
/// so by the time a block is read its pages are mostly resident already. A mapped page is never dropped
/// by the kernel anyway.
struct SequentialReader: ~Copyable {
    static let blockSize = 4 << 20

    let fd: Int32
    let path: String
    /// The size the file must have; reading stops there and `finish` checks that the file ends there.
    let size: Int
    private var hasher = SHA256()
    private let block: UnsafeMutableRawPointer
    private var blockStart = 0, blockCount = 0
    /// The next byte to hand out (absolute offset).
    private(set) var offset = 0

    /// The file's pages in the page cache before the first read (`mincore`'s bit 0 per page), when
    /// dropping pages; nil when not dropping.
    private let residentBefore: [UInt8]?

    init(fd: Int32, path: String, size: Int, dropPages: Bool) {
        self.fd = fd
        self.path = path
        self.size = size
        block = .allocate(byteCount: Self.blockSize, alignment: pageSize)
        residentBefore = dropPages ? Self.residency(fd: fd, size: size) : nil
    }

    deinit { block.deallocate() }

    /// Copies the next `count` bytes into `destination`.
    mutating func read(into destination: UnsafeMutableRawPointer, count: Int) throws {
        var done = 0
        while done < count {
            if offset == blockStart + blockCount { try refill() }
            let n = min(count - done, blockStart + blockCount - offset)
            destination.advanced(by: done).copyMemory(from: block + (offset - blockStart), byteCount: n)
            offset += n
            done += n
        }
    }

    /// Reads (and hashes) up to `target` without handing the bytes out.
    mutating func skip(to target: Int) throws {
        while offset < target {
            if offset == blockStart + blockCount { try refill() }
            offset = min(target, blockStart + blockCount)
        }
    }

    /// Reads to the end, checks that the file ends at `size`, and returns the SHA-256 of every byte as hex.
    mutating func finish() throws -> String {
        try skip(to: size)
        var probe: UInt8 = 0
        let extra = pread(fd, &probe, 1, off_t(size))
        if extra != 0 {
            throw ModelError(.io, "the file \(extra < 0 ? "cannot be read to its end" : "grew") while being read (expected \(size) bytes); it must not change while in use",
                             path: path)
        }
        return hasher.finalize().map { String(format: "%02x", $0) }.joined()
    }

    private mutating func refill() throws {
        blockStart += blockCount
        let wanted = min(Self.blockSize, size - blockStart)
        guard wanted > 0 else {
            throw ModelError(.io, "the file ends before byte \(size) that it had when opened; it must not change while in use", path: path)
        }
        var got = 0
        while got < wanted {
            let n = pread(fd, block + got, wanted - got, off_t(blockStart + got))
            if n < 0 {
                if errno == EINTR { continue }
                throw posixError("reading", path: path)
            }
            if n == 0 {
                throw ModelError(.io, "the file ends at byte \(blockStart + got), before the \(size) it had when opened; it must not change while in use",
                                 path: path)
            }
            got += n
        }
        blockCount = wanted
        hasher.update(bufferPointer: UnsafeRawBufferPointer(start: block, count: wanted))
        if let residentBefore { Self.drop(fd: fd, blockStart: blockStart, count: wanted, keeping: residentBefore) }
    }

    /// Which of the file's pages are in the page cache now. When residency cannot be taken, none counts
    /// as resident: the point is not to keep the pages.
    private static func residency(fd: Int32, size: Int) -> [UInt8] {
        var resident = [UInt8](repeating: 0, count: (size + pageSize - 1) / pageSize)
        #if os(Linux)
        guard size > 0, let map = mmap(nil, size, PROT_READ, MAP_SHARED, fd, 0), map != MAP_FAILED else { return resident }
        defer { munmap(map, size) }
        if mincore(map, size, &resident) != 0 { return [UInt8](repeating: 0, count: resident.count) }
        #endif
        return resident
    }

    /// Drops from the page cache each run of the block's pages that `keeping` does not mark resident.
    private static func drop(fd: Int32, blockStart: Int, count: Int, keeping resident: [UInt8]) {
        #if os(Linux)
        let first = blockStart / pageSize, end = (blockStart + count + pageSize - 1) / pageSize
        var page = first
        while page < end {
            guard resident[page] & 1 == 0 else { page += 1; continue }
            let run = page
            while page < end && resident[page] & 1 == 0 { page += 1 }
            let start = run * pageSize
            _ = posix_fadvise(fd, off_t(start), off_t(min(page * pageSize, blockStart + count) - start), POSIX_FADV_DONTNEED)
        }
        #endif
    }
}
