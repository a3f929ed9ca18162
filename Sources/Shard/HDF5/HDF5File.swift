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
    public static func create(_ path: String) throws -> HDF5File {
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
            let id = try checkID(H5Fcreate(path, dehvf_H5F_ACC_TRUNC(), fcpl.id, fapl.id), "creating the file",
                                 path: path, object: nil, code: .io)
            let file = HDF5File(path: path, handle: H5Handle(id, .file))
            file.markTrusted()
            return file
        }
    }

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

    /// Flushes HDF5's buffers to the operating system (not to the disk: fsync is the caller's job).
    public func flush() throws {
        try withHDF5 {
            try check(H5Fflush(handle.id, H5F_SCOPE_GLOBAL), "flushing", path: path, object: nil, code: .io)
        }
    }

    /// Closes the file now, reporting a failure instead of swallowing it in deinit.
    public func close() throws {
        let rc = handle.close()
        if rc < 0 { try withHDF5 { try check(rc, "closing", path: path, object: nil, code: .io) } }
    }
}
