// Part of the HDF5 wrapper, the only code in the project that touches CHDF5 (see HDF5Library.swift).
import CHDF5
import Foundation

// MARK: - Files

/// An open HDF5 file. Its root group's operations are on `root`.
public final class HDF5File {
    public let path: String
    let handle: H5Handle

    private init(path: String, handle: H5Handle) {
        self.path = path
        self.handle = handle
    }

    /// Opens an existing file read-only.
    public static func open(_ path: String) throws -> HDF5File {
        try withHDF5 {
            guard FileManager.default.fileExists(atPath: path) else {
                throw ShardError(.cannotOpen, "no such file", path: path)
            }
            if H5Fis_hdf5(path) <= 0 {
                throw ShardError(.cannotOpen, "not an HDF5 file (or its superblock is damaged)", path: path,
                                 hdf5Stack: takeErrorStack())
            }
            let id = try checkID(H5Fopen(path, dehvf_H5F_ACC_RDONLY(), dehvf_H5P_DEFAULT()),
                                 "opening the file read-only", path: path, object: nil, code: .cannotOpen)
            return HDF5File(path: path, handle: H5Handle(id, .file))
        }
    }

    /// Creates a file, replacing any file at `path`. Groups made in it track link creation order, so
    /// tensors read back in the order they were written.
    ///
    /// The file is built in memory (HDF5's core driver, no backing store) and written to `path` by
    /// `close()` with plain POSIX writes. HDF5 1.10 cannot survive a failed write of its own: after a
    /// flush that fails (EFBIG from `ulimit -f`, ENOSPC, EIO) `H5Fclose` fails too, the file stays open
    /// inside the library, and the library's exit handler (or a second close) dereferences freed cache
    /// state: a SIGSEGV after the error was reported. Here HDF5 never writes to the disk, so its close
    /// always succeeds, and a failed write is an ordinary `.io` error. The cost: the whole file is held in
    /// memory until `close()`, and copied once there. `path` itself is created (empty) here, so a missing
    /// directory or a permission problem fails before any work, and it is removed again if the file is
    /// discarded or its write fails.
    /// - warning: nothing reaches `path` unless `close()` is called and succeeds; a file released without
    ///   `close()` is discarded. Prefer `create(_:_:)`, which closes on every path.
    public static func create(_ path: String) throws -> HDF5File {
        let output = Foundation.open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o666)  // 0666 less umask, as HDF5
        if output < 0 { throw ioError("creating the file", path: path) }
        do {
            let file = try createInMemory(path)
            file.output = output
            return file
        } catch {
            Foundation.close(output)
            unlink(path)
            throw error
        }
    }

    private static func createInMemory(_ path: String) throws -> HDF5File {
        try withHDF5 {
            let fcpl = H5Handle(try checkID(H5Pcreate(dehvf_H5P_FILE_CREATE()), "H5Pcreate", path: path,
                                            object: nil), .plist)
            try check(H5Pset_link_creation_order(fcpl.id, dehvf_H5P_CRT_ORDER_TRACKED_INDEXED()),
                      "setting creation order", path: path, object: nil)
            let fapl = H5Handle(try checkID(H5Pcreate(dehvf_H5P_FILE_ACCESS()), "H5Pcreate", path: path,
                                            object: nil), .plist)
            // Closing the file closes everything still open in it, so close() really releases it.
            try check(H5Pset_fclose_degree(fapl.id, H5F_CLOSE_STRONG), "setting close degree", path: path,
                      object: nil)
            // The 1.10 file format checksums all metadata (superblock v3, object header v2, chunk indexes
            // as fixed/extensible arrays), so a damaged byte in it is a clean error: HDF5 1.10 can crash decoding
            // damaged metadata of the older format. Readable by HDF5 >= 1.10 and by h5py.
            try check(H5Pset_libver_bounds(fapl.id, H5F_LIBVER_V110, H5F_LIBVER_V110), "setting format version",
                      path: path, object: nil)
            // In memory, grown 4 MiB at a time; never written by HDF5 (see above).
            try check(H5Pset_fapl_core(fapl.id, 4 << 20, false), "selecting the in-memory driver", path: path, object: nil)
            let id = try checkID(H5Fcreate(path, dehvf_H5F_ACC_TRUNC(), fcpl.id, fapl.id), "creating the file",
                                 path: path, object: nil, code: .io)
            let file = HDF5File(path: path, handle: H5Handle(id, .file))
            file.markTrusted()
            return file
        }
    }

    /// Creates `path`, lets `fill` write into it, and closes it (writing it to disk). On any error, from
    /// `fill` or from the write, the file is closed, nothing is left at `path`, and the error is rethrown.
    public static func create(_ path: String, _ fill: (HDF5File) throws -> Void) throws {
        let file = try create(path)
        do {
            try fill(file)
        } catch {
            file.discard()
            throw error
        }
        try file.close()
    }

    /// For a file created here (built in memory): the destination, open for writing until `close()`.
    private var output: Int32 = -1

    deinit { discard() }

    /// The root group.
    public var root: HDF5Group { HDF5Group(file: self, handle: nil, name: "/") }

    private var heapsVerified = false

    /// Runs `GlobalHeapCheck` once, before the first variable-length read of a file opened for reading.
    func verifyGlobalHeaps() throws {
        if heapsVerified { return }
        try GlobalHeapCheck.verify(path)
        heapsVerified = true
    }

    /// Files this process creates need no check.
    fileprivate func markTrusted() { heapsVerified = true }

    /// How much data a file may ask a reader to hold in memory: 16 x its size on disk (room for
    /// compression) + 1 MiB. A file must hold its data; one that declares more (an HDF5 dataset can
    /// declare 2^40 rows in a few KB, its chunks never written) is refused before anything is allocated.
    public struct ReadBudget: Sendable {
        public let fileSize: Int
        public var bytes: Int { fileSize > (Int.max - (1 << 20)) / 16 ? .max : 16 * fileSize + (1 << 20) }
        /// The rule, for messages.
        public var rule: String { "16 x the file's \(fileSize) bytes + 1 MiB" }
    }

    /// The read budget of this file, from its size on disk now.
    public func readBudget() throws -> ReadBudget {
        var st = stat()
        guard stat(path, &st) == 0 else {
            throw ShardError(.io, "cannot stat: \(String(cString: strerror(errno)))", path: path)
        }
        return ReadBudget(fileSize: Int(st.st_size))
    }

    /// Flushes HDF5's buffers to the operating system (not to the disk: fsync is the caller's job). For
    /// a file created here, which reaches the disk only at `close()`, this checks the in-memory image.
    public func flush() throws {
        try withHDF5 {
            try check(H5Fflush(handle.id, H5F_SCOPE_GLOBAL), "flushing", path: path, object: nil, code: .io)
        }
    }

    /// Closes the file now, reporting a failure instead of swallowing it in deinit. A file created here is
    /// written to `path` first: if that fails (full disk, `ulimit -f`, I/O error), the HDF5 file is still
    /// closed, the partial file at `path` is removed, and the error is `.io` with the system's error as its
    /// cause.
    public func close() throws {
        guard output >= 0 else {
            let rc = handle.close()
            if rc < 0 { try withHDF5 { try check(rc, "closing", path: path, object: nil, code: .io) } }
            return
        }
        var image: [UInt8]
        do {
            image = try withHDF5 {
                try check(H5Fflush(handle.id, H5F_SCOPE_GLOBAL), "flushing", path: path, object: nil, code: .io)
                let size = H5Fget_file_image(handle.id, nil, 0)
                if size < 0 { throw failure("taking the file image", path: path, object: nil, code: .io) }
                return try [UInt8](unsafeUninitializedCapacity: max(size, 1)) { buf, n in
                    n = 0
                    if H5Fget_file_image(handle.id, buf.baseAddress, size) != size {
                        throw failure("taking the file image", path: path, object: nil, code: .io)
                    }
                    n = size
                }
            }
            if handle.close() < 0 { _ = withHDF5 { takeErrorStack() } }  // memory only: nothing to fail on
            try SuperblockImage.repair(&image, path: path)
            try write(image)
        } catch {
            discard()
            throw error
        }
        let fd = output
        output = -1
        if Foundation.close(fd) != 0 {
            let e = Self.ioError("closing the file", path: path)
            unlink(path)
            throw e
        }
    }

    /// Closes a file created here without writing it: nothing is left at `path`. Does nothing for a file
    /// opened for reading or already closed.
    public func discard() {
        guard output >= 0 else { return }
        if handle.close() < 0 { _ = withHDF5 { takeErrorStack() } }
        Foundation.close(output)
        output = -1
        unlink(path)
    }

    /// Writes `bytes` to `output` from its start, whole (retrying short writes and EINTR).
    private func write(_ bytes: [UInt8]) throws {
        var done = 0
        while done < bytes.count {
            let n = bytes[done...].withUnsafeBytes { Foundation.write(output, $0.baseAddress, min($0.count, 1 << 30)) }
            if n < 0 {
                if errno == EINTR { continue }
                throw Self.ioError("writing the file", path: path)
            }
            done += n
        }
    }

    /// `.io` for the failed system call `what` on `path`, keeping errno as the cause.
    private static func ioError(_ what: String, path: String) -> ShardError {
        let code = errno
        return ShardError(.io, "\(what) failed: \(String(cString: strerror(code))); check the free space, the file "
                          + "size limit (ulimit -f) and the directory's permissions", path: path,
                          cause: POSIXError(POSIXErrorCode(rawValue: code) ?? .EIO))
    }
}

/// HDF5 1.10.8's `H5Fget_file_image` clears the superblock's "open for writing" flags in the image it
/// returns but leaves the superblock checksum computed with them set, so the image does not open
/// ("incorrect metadata checksum"). `repair` recomputes it. The checksum is HDF5's: Jenkins' lookup3
/// (`H5_checksum_lookup3`, byte-wise `hashlittle`, seed 0) over the superblock before it. The stored
/// value is first matched against the same superblock with some flags byte set, which proves both that
/// this is the known defect and that the hash here is HDF5's; anything else is an error, never a guess.
enum SuperblockImage {
    static func repair(_ b: inout [UInt8], path: String) throws {
        let signature: [UInt8] = [0x89, 0x48, 0x44, 0x46, 0x0d, 0x0a, 0x1a, 0x0a]
        // Version 2 and 3 superblocks: signature, version, sizes of offsets and lengths, flags, four
        // addresses, checksum. Older versions have no checksum and no flags to fix.
        guard b.count >= 12, Array(b[0..<8]) == signature, b[8] >= 2 else { return }
        let at = 12 + 4 * Int(b[9])
        guard b.count >= at + 4 else {
            throw ShardError(.hdf5, "the file image is shorter than its superblock", path: path)
        }
        let stored = UInt32(b[at]) | UInt32(b[at + 1]) << 8 | UInt32(b[at + 2]) << 16 | UInt32(b[at + 3]) << 24
        if lookup3(b[0..<at]) == stored { return }
        var probe = Array(b[0..<at])
        guard (1...255).contains(where: { flags in
            probe[11] = UInt8(flags)
            return lookup3(probe[...]) == stored
        }) else {
            throw ShardError(.hdf5, "the file image's superblock checksum does not verify", path: path,
                             expected: "\(stored)", found: "\(lookup3(b[0..<at]))")
        }
        let fixed = lookup3(b[0..<at])
        for k in 0..<4 { b[at + k] = UInt8(truncatingIfNeeded: fixed >> (8 * UInt32(k))) }
    }

    /// Bob Jenkins' lookup3 `hashlittle`, byte by byte, seed 0: HDF5's `H5_checksum_lookup3`.
    static func lookup3(_ key: ArraySlice<UInt8>) -> UInt32 {
        func rot(_ x: UInt32, _ k: UInt32) -> UInt32 { (x << k) | (x >> (32 - k)) }
        var length = key.count
        var a: UInt32 = 0xdeadbeef &+ UInt32(truncatingIfNeeded: length)
        var b = a, c = a
        var k = key.startIndex
        func word(_ i: Int, _ n: Int) -> UInt32 {
            var w: UInt32 = 0
            for j in 0..<n { w |= UInt32(key[i + j]) << (8 * UInt32(j)) }
            return w
        }
        while length > 12 {
            a &+= word(k, 4); b &+= word(k + 4, 4); c &+= word(k + 8, 4)
            a &-= c; a ^= rot(c, 4); c &+= b
            b &-= a; b ^= rot(a, 6); a &+= c
            c &-= b; c ^= rot(b, 8); b &+= a
            a &-= c; a ^= rot(c, 16); c &+= b
            b &-= a; b ^= rot(a, 19); a &+= c
            c &-= b; c ^= rot(b, 4); b &+= a
            length -= 12
            k += 12
        }
        if length == 0 { return c }
        a &+= word(k, min(length, 4))
        if length > 4 { b &+= word(k + 4, min(length - 4, 4)) }
        if length > 8 { c &+= word(k + 8, length - 8) }
        c ^= b; c &-= rot(b, 14)
        a ^= c; a &-= rot(c, 11)
        b ^= a; b &-= rot(a, 25)
        c ^= b; c &-= rot(b, 16)
        a ^= c; a &-= rot(c, 4)
        b ^= a; b &-= rot(a, 14)
        c ^= b; c &-= rot(b, 24)
        return c
    }
}
