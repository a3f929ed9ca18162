// The HDF5 wrapper (this folder) is the only code in the project that touches CHDF5. Every handle is
// owned by a final class that closes it in deinit, every call is checked, and every call runs under one
// process-wide recursive lock: Debian's libhdf5 is built without thread safety.
import CHDF5
import Foundation

// MARK: - Lock and error capture

let hdf5Lock: NSRecursiveLock = {
    let lock = NSRecursiveLock()
    lock.name = "dehvf.hdf5"
    return lock
}()

/// Runs `body` holding the HDF5 lock, with HDF5's stderr printer silenced: its errors come back as
/// `ShardError`s carrying the stack text instead.
@inline(__always) @discardableResult
func withHDF5<T>(_ body: () throws -> T) rethrows -> T {
    hdf5Lock.lock()
    defer { hdf5Lock.unlock() }
    _ = hdf5Initialised
    // The automatic stderr printer is per thread in this build (it is thread-safe after all, but the
    // project does not rely on that): switch it off on whichever thread is calling.
    dehvf_h5_silence_errors()
    return try body()
}

let hdf5Initialised: Bool = {
    _ = H5open()
    return true
}()

/// HDF5's current error stack as text, cleared afterwards. Call right after a failing call.
func takeErrorStack() -> String {
    var buf = [CChar](repeating: 0, count: 2048)
    dehvf_h5_take_error_stack(&buf, buf.count)
    return String(cString: buf)
}

/// Builds the error for a failed call; a failing checksum becomes `.corrupt`.
func failure(_ what: String, path: String?, object: String?, code: ShardError.Code) -> ShardError {
    let stack = takeErrorStack()
    let lower = stack.lowercased()
    let isChecksum = lower.contains("checksum") || lower.contains("fletcher")
    let isDamaged = isChecksum || lower.contains("truncated") || lower.contains("signature")
        || lower.contains("bad value") || lower.contains("addr overflow") || lower.contains("decode")
    let c: ShardError.Code = isDamaged ? .corrupt : code
    let message = c == .corrupt
        ? "\(what) failed: the file is damaged (truncated, or a checksum or structure does not verify); "
            + "restore or re-create it"
        : "\(what) failed"
    return ShardError(c, message, path: path, object: object, hdf5Stack: stack)
}

@discardableResult
func check(_ rc: herr_t, _ what: @autoclosure () -> String, path: String?, object: String?,
                   code: ShardError.Code = .hdf5) throws -> herr_t {
    if rc < 0 { throw failure(what(), path: path, object: object, code: code) }
    return rc
}

func checkID(_ id: hid_t, _ what: @autoclosure () -> String, path: String?, object: String?,
                     code: ShardError.Code = .hdf5) throws -> hid_t {
    if id < 0 { throw failure(what(), path: path, object: object, code: code) }
    return id
}

// MARK: - Global heap check

/// Variable-length strings live in "global heap collections" (GCOL), the one piece of HDF5 metadata
/// without a checksum. HDF5 1.10.8 trusts the object sizes stored there and copies that many bytes, so a
/// single damaged size field crashes the process (found by this project's byte-flip test). Before the
/// first variable-length read from a file, every collection in it is walked and each object must fit
/// inside its collection; a damaged one is a `.corrupt` error instead of a crash.
///
/// The file is memory-mapped and searched for the signature with memchr (memory speed), a window at a
/// time. A candidate whose version or reserved bytes are wrong is not a collection (HDF5 itself rejects
/// those cleanly).
enum GlobalHeapCheck {
    /// How much of the file the scan holds mapped in at once (a multiple of the page size).
    static let scanWindow = 4 << 20

    static func verify(_ path: String) throws {
        let fd = open(path, O_RDONLY)
        if fd < 0 { throw ShardError(.cannotOpen, "cannot open for checking: \(String(cString: strerror(errno)))", path: path) }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw ShardError(.io, "cannot stat", path: path) }
        let size = Int(st.st_size)
        if size < 16 { return }
        guard let base = mmap(nil, size, PROT_READ, MAP_PRIVATE, fd, 0), base != MAP_FAILED else {
            throw ShardError(.io, "cannot map for checking: \(String(cString: strerror(errno)))", path: path)
        }
        defer { munmap(base, size) }
        let bytes = base.assumingMemoryBound(to: UInt8.self)
        // Only 8-byte lengths are understood (every HDF5 writer's default); otherwise leave it to HDF5.
        if lengthSize(bytes, size) != 8 { return }
        func u16(_ o: Int) -> Int { Int(bytes[o]) | (Int(bytes[o + 1]) << 8) }
        func u64(_ o: Int) -> UInt64 {
            var v: UInt64 = 0
            for k in 0..<8 { v |= UInt64(bytes[o + k]) << UInt64(8 * k) }
            return v
        }
        // The scan only moves forward, so the pages behind it are handed back a window at a time: the
        // process holds at most a window or two of the file, not all of it (a dataset of images is GBs).
        // MADV_DONTNEED on a read-only private mapping drops this process's pages only (the page cache
        // keeps them; a page touched again is read again).
        var released = 0
        func release(below offset: Int) {
            let upTo = offset / scanWindow * scanWindow
            if upTo > released {
                _ = madvise(base + released, upTo - released, MADV_DONTNEED)
                released = upTo
            }
        }
        var from = 0
        while from + 16 <= size {
            // memchr for 'G' (libc speed) within the current window, then the other three signature bytes.
            let limit = min(size, (from / scanWindow + 1) * scanWindow)
            guard let hit = memchr(bytes + from, 0x47, limit - from) else {
                from = limit
                release(below: from)
                continue
            }
            let start: Int = UnsafeRawPointer(bytes).distance(to: UnsafeRawPointer(hit))
            from = start + 1
            release(below: from)
            guard start + 16 <= size, bytes[start + 1] == 0x43, bytes[start + 2] == 0x4F, bytes[start + 3] == 0x4C,
                  bytes[start + 4] == 1, bytes[start + 5] == 0, bytes[start + 6] == 0, bytes[start + 7] == 0
            else { continue }
            let collection: UInt64 = u64(start + 8)
            guard collection >= 16, collection <= UInt64(size - start) else {
                throw damaged(path, start, "collection size \(collection) runs past the end of the file")
            }
            let end: Int = start + Int(collection)
            // The same walk as HDF5's H5HG__cache_heap_deserialize, with the bounds checks it lacks: it
            // loops forever on a free-space block of size 0 and reads past the collection on an
            // oversized object.
            var pos: Int = start + 16
            while pos + 16 <= end {
                let index: Int = u16(pos)
                let objectSize: UInt64 = u64(pos + 8)
                let room: Int = end - pos
                // Object 0 is free space and its size includes its own 16-byte header.
                let need: UInt64 = index == 0 ? objectSize : 16 + (objectSize + 7) / 8 * 8
                guard index != 0 || objectSize >= 16 else {
                    throw damaged(path, start, "free-space block of \(objectSize) bytes")
                }
                guard objectSize <= UInt64(room), need <= UInt64(room) else {
                    throw damaged(path, start, "object \(index) claims \(objectSize) bytes, the collection has \(room) left")
                }
                pos += Int(need)
            }
        }
    }

    /// Size of lengths from a superblock at offset 0 (v0/1: byte 14; v2/3: byte 10); nil if not found there.
    private static func lengthSize(_ b: UnsafePointer<UInt8>, _ size: Int) -> Int? {
        let magic: [UInt8] = [0x89, 0x48, 0x44, 0x46, 0x0d, 0x0a, 0x1a, 0x0a]
        guard size >= 16, (0..<8).allSatisfy({ b[$0] == magic[$0] }) else { return nil }
        return b[8] <= 1 ? Int(b[14]) : Int(b[10])
    }

    private static func damaged(_ path: String, _ offset: Int, _ what: String) -> ShardError {
        ShardError(.corrupt, "the file is damaged: global heap at byte \(offset): \(what); restore or re-create it",
                   path: path)
    }
}
