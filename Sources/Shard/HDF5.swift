// The only file in the project that touches CHDF5. Every handle is owned by a final class that closes
// it in deinit, every call is checked, and every call runs under one process-wide recursive lock:
// Debian's libhdf5 is built without thread safety.
import CHDF5
import Foundation

// MARK: - Lock and error capture

private let hdf5Lock: NSRecursiveLock = {
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

private let hdf5Initialised: Bool = {
    _ = H5open()
    return true
}()

/// HDF5's current error stack as text, cleared afterwards. Call right after a failing call.
private func takeErrorStack() -> String {
    var buf = [CChar](repeating: 0, count: 2048)
    dehvf_h5_take_error_stack(&buf, buf.count)
    return String(cString: buf)
}

/// Builds the error for a failed call; a failing checksum becomes `.corrupt`.
private func failure(_ what: String, path: String?, object: String?, code: ShardError.Code) -> ShardError {
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
private func check(_ rc: herr_t, _ what: @autoclosure () -> String, path: String?, object: String?,
                   code: ShardError.Code = .hdf5) throws -> herr_t {
    if rc < 0 { throw failure(what(), path: path, object: object, code: code) }
    return rc
}

private func checkID(_ id: hid_t, _ what: @autoclosure () -> String, path: String?, object: String?,
                     code: ShardError.Code = .hdf5) throws -> hid_t {
    if id < 0 { throw failure(what(), path: path, object: object, code: code) }
    return id
}

// MARK: - Owned handles

/// One HDF5 identifier and the call that releases it.
final class H5Handle {
    enum Kind { case file, group, dataset, dataspace, datatype, plist, attribute }
    let id: hid_t
    let kind: Kind
    private(set) var isOpen = true

    init(_ id: hid_t, _ kind: Kind) {
        self.id = id
        self.kind = kind
    }

    /// Releases the identifier now; later calls and deinit do nothing. Returns the close status.
    @discardableResult
    func close() -> herr_t {
        withHDF5 {
            guard isOpen else { return 0 }
            isOpen = false
            // A file created with close degree STRONG closes its objects itself: nothing left to do.
            if H5Iis_valid(id) <= 0 { return 0 }
            switch kind {
            case .file: return H5Fclose(id)
            case .group: return H5Gclose(id)
            case .dataset: return H5Dclose(id)
            case .dataspace: return H5Sclose(id)
            case .datatype: return H5Tclose(id)
            case .plist: return H5Pclose(id)
            case .attribute: return H5Aclose(id)
            }
        }
    }

    deinit {
        if isOpen {
            if close() < 0 { _ = withHDF5 { takeErrorStack() } }
        }
    }
}

// MARK: - Element types

/// The element types the project stores.
public enum HDF5ScalarType: String, Sendable {
    case float32, int32, uint8, int64

    var nativeType: hid_t {
        switch self {
        case .float32: return dehvf_H5T_NATIVE_FLOAT()
        case .int32: return dehvf_H5T_NATIVE_INT32()
        case .uint8: return dehvf_H5T_NATIVE_UINT8()
        case .int64: return dehvf_H5T_NATIVE_INT64()
        }
    }
}

/// A Swift type stored in HDF5 as one of `HDF5ScalarType`.
public protocol HDF5Element { static var hdf5Type: HDF5ScalarType { get } }
extension Float: HDF5Element { public static var hdf5Type: HDF5ScalarType { .float32 } }
extension Int32: HDF5Element { public static var hdf5Type: HDF5ScalarType { .int32 } }
extension UInt8: HDF5Element { public static var hdf5Type: HDF5ScalarType { .uint8 } }
extension Int64: HDF5Element { public static var hdf5Type: HDF5ScalarType { .int64 } }

/// A human name for a stored type: "float32", "uint8", "int16", "string", "compound"...
private func describeType(_ t: hid_t) -> String {
    let size = H5Tget_size(t)
    switch H5Tget_class(t) {
    case H5T_INTEGER: return (H5Tget_sign(t) == H5T_SGN_NONE ? "uint" : "int") + "\(size * 8)"
    case H5T_FLOAT: return "float\(size * 8)"
    case H5T_STRING: return H5Tis_variable_str(t) > 0 ? "variable-length string" : "string[\(size)]"
    case H5T_COMPOUND: return "compound"
    case H5T_ENUM: return "enum"
    case H5T_ARRAY: return "array"
    case H5T_VLEN: return "vlen"
    case H5T_OPAQUE: return "opaque"
    case H5T_REFERENCE: return "reference"
    default: return "unknown"
    }
}

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

// MARK: - Groups

/// A group (or the root group) in an open file.
public final class HDF5Group {
    public let file: HDF5File
    /// Absolute path of the group inside the file.
    public let name: String
    private let handle: H5Handle?

    init(file: HDF5File, handle: H5Handle?, name: String) {
        self.file = file
        self.handle = handle
        self.name = name
    }

    var id: hid_t { handle?.id ?? file.handle.id }
    var path: String { file.path }

    func childPath(_ child: String) -> String { name == "/" ? "/" + child : name + "/" + child }

    /// Whether a direct child link `child` exists (no slashes: names like `router.weight` are literal).
    public func contains(_ child: String) -> Bool {
        withHDF5 {
            let r = H5Lexists(id, child, dehvf_H5P_DEFAULT())
            if r < 0 { _ = takeErrorStack() }
            return r > 0
        }
    }

    public func openGroup(_ child: String) throws -> HDF5Group {
        try withHDF5 {
            guard contains(child) else {
                throw ShardError(.missingDataset, "missing group", path: path, object: childPath(child))
            }
            let gid = try checkID(H5Gopen2(id, child, dehvf_H5P_DEFAULT()), "opening group", path: path,
                                  object: childPath(child))
            return HDF5Group(file: file, handle: H5Handle(gid, .group), name: childPath(child))
        }
    }

    public func createGroup(_ child: String) throws -> HDF5Group {
        try withHDF5 {
            let gcpl = H5Handle(try checkID(H5Pcreate(dehvf_H5P_GROUP_CREATE()), "H5Pcreate", path: path,
                                            object: nil), .plist)
            try check(H5Pset_link_creation_order(gcpl.id, dehvf_H5P_CRT_ORDER_TRACKED_INDEXED()),
                      "setting creation order", path: path, object: childPath(child))
            let gid = try checkID(H5Gcreate2(id, child, dehvf_H5P_DEFAULT(), gcpl.id, dehvf_H5P_DEFAULT()),
                                  "creating group", path: path, object: childPath(child), code: .io)
            return HDF5Group(file: file, handle: H5Handle(gid, .group), name: childPath(child))
        }
    }

    /// Child link names, in creation order when the group tracks it (files this project writes), else
    /// in name order (h5py's default).
    public func childNames() throws -> [String] {
        try withHDF5 {
            var info = H5G_info_t()
            try check(H5Gget_info(id, &info), "listing group", path: path, object: name)
            var index = H5_INDEX_NAME
            let gcplID = H5Gget_create_plist(id)
            if gcplID >= 0 {
                let gcpl = H5Handle(gcplID, .plist)
                var flags: UInt32 = 0
                if H5Pget_link_creation_order(gcpl.id, &flags) >= 0,
                   flags & dehvf_H5P_CRT_ORDER_TRACKED_INDEXED() == dehvf_H5P_CRT_ORDER_TRACKED_INDEXED() {
                    index = H5_INDEX_CRT_ORDER
                }
            } else { _ = takeErrorStack() }
            var names: [String] = []
            for i in 0..<info.nlinks {
                let n = H5Lget_name_by_idx(id, ".", index, H5_ITER_INC, i, nil, 0, dehvf_H5P_DEFAULT())
                if n < 0 { throw failure("reading link name \(i)", path: path, object: name, code: .corrupt) }
                var buf = [CChar](repeating: 0, count: Int(n) + 1)
                let m = H5Lget_name_by_idx(id, ".", index, H5_ITER_INC, i, &buf, buf.count, dehvf_H5P_DEFAULT())
                if m < 0 { throw failure("reading link name \(i)", path: path, object: name, code: .corrupt) }
                names.append(String(cString: buf))
            }
            return names
        }
    }

    /// Opens dataset `child`; a missing one is `.missingDataset` naming it.
    public func openDataset(_ child: String) throws -> HDF5Dataset {
        try withHDF5 {
            guard contains(child) else {
                throw ShardError(.missingDataset, "missing dataset", path: path, object: childPath(child))
            }
            let dapl = H5Handle(try checkID(H5Pcreate(dehvf_H5P_DATASET_ACCESS()), "H5Pcreate", path: path,
                                            object: nil), .plist)
            // A chunk cache large enough that a batch touching the same chunk in several runs decodes it once.
            try check(H5Pset_chunk_cache(dapl.id, 1021, 64 << 20, 0.75), "setting chunk cache", path: path,
                      object: nil)
            let did = try checkID(H5Dopen2(id, child, dapl.id), "opening dataset", path: path,
                                  object: childPath(child), code: .corrupt)
            return try HDF5Dataset(group: self, handle: H5Handle(did, .dataset), name: childPath(child))
        }
    }

    /// Creates a dataset of `shape`. `chunk` (same rank) turns on chunking; `fletcher32` adds a
    /// checksum per chunk that HDF5 verifies on every read (requires chunking; a default chunk is used).
    public func createDataset(_ child: String, type: HDF5ScalarType, shape: [Int], chunk: [Int]? = nil,
                              fletcher32: Bool = false) throws -> HDF5Dataset {
        try withHDF5 {
            let object = childPath(child)
            let dims = shape.map { hsize_t($0) }
            // Rank 0 is a scalar dataspace (h5py's shape ()).
            let space = H5Handle(try checkID(dims.isEmpty ? H5Screate(H5S_SCALAR)
                                                          : H5Screate_simple(Int32(dims.count), dims, nil),
                                             "creating dataspace", path: path, object: object), .dataspace)
            let dcpl = H5Handle(try checkID(H5Pcreate(dehvf_H5P_DATASET_CREATE()), "H5Pcreate", path: path,
                                            object: object), .plist)
            var chunkDims = chunk
            if fletcher32 && chunkDims == nil { chunkDims = shape }
            // A zero-size dimension cannot be chunked by zero; an empty dataset stays contiguous.
            if let c = chunkDims, !shape.isEmpty, !shape.contains(0) {
                precondition(c.count == shape.count, "chunk rank \(c.count) for shape \(shape)")
                let cd = zip(c, shape).map { hsize_t(max(1, min($0, $1))) }
                try check(H5Pset_chunk(dcpl.id, Int32(cd.count), cd), "setting chunking", path: path, object: object)
                if fletcher32 {
                    try check(H5Pset_fletcher32(dcpl.id), "setting Fletcher-32", path: path, object: object)
                }
            }
            let did = try checkID(H5Dcreate2(id, child, type.nativeType, space.id, dehvf_H5P_DEFAULT(), dcpl.id,
                                             dehvf_H5P_DEFAULT()), "creating dataset", path: path, object: object,
                                  code: .io)
            return try HDF5Dataset(group: self, handle: H5Handle(did, .dataset), name: object)
        }
    }

    /// Creates a dataset and writes `values` (row-major, count = product of shape) into it.
    @discardableResult
    public func write<T: HDF5Element>(_ child: String, _ values: UnsafeBufferPointer<T>, shape: [Int],
                                      chunk: [Int]? = nil, fletcher32: Bool = false) throws -> HDF5Dataset {
        let ds = try createDataset(child, type: T.hdf5Type, shape: shape, chunk: chunk, fletcher32: fletcher32)
        try ds.writeAll(values)
        return ds
    }

    @discardableResult
    public func write<T: HDF5Element>(_ child: String, _ values: [T], shape: [Int], chunk: [Int]? = nil,
                                      fletcher32: Bool = false) throws -> HDF5Dataset {
        try values.withUnsafeBufferPointer {
            try write(child, $0, shape: shape, chunk: chunk, fletcher32: fletcher32)
        }
    }

    /// A dataset of variable-length UTF-8 strings, one per row, as h5py writes `h5py.string_dtype()`.
    public func writeStrings(_ child: String, _ values: [String]) throws {
        try withHDF5 {
            let object = childPath(child)
            let type = try makeUTF8VariableType(path: path, object: object)
            let dims = [hsize_t(values.count)]
            let space = H5Handle(try checkID(H5Screate_simple(1, dims, nil), "H5Screate_simple", path: path,
                                             object: object), .dataspace)
            let did = try checkID(H5Dcreate2(id, child, type.id, space.id, dehvf_H5P_DEFAULT(), dehvf_H5P_DEFAULT(),
                                             dehvf_H5P_DEFAULT()), "creating dataset", path: path, object: object,
                                  code: .io)
            let ds = H5Handle(did, .dataset)
            let cStrings = values.map { strdup($0) }
            defer { cStrings.forEach { free($0) } }
            var pointers: [UnsafePointer<CChar>?] = cStrings.map { UnsafePointer($0) }
            try check(H5Dwrite(ds.id, type.id, dehvf_H5S_ALL(), dehvf_H5S_ALL(), dehvf_H5P_DEFAULT(), &pointers),
                      "writing strings", path: path, object: object, code: .io)
        }
    }
}

private func makeUTF8VariableType(path: String, object: String) throws -> H5Handle {
    let t = H5Handle(try checkID(H5Tcopy(dehvf_H5T_C_S1()), "H5Tcopy", path: path, object: object), .datatype)
    try check(H5Tset_size(t.id, dehvf_H5T_VARIABLE()), "H5Tset_size", path: path, object: object)
    try check(H5Tset_cset(t.id, H5T_CSET_UTF8), "H5Tset_cset", path: path, object: object)
    try check(H5Tset_strpad(t.id, H5T_STR_NULLTERM), "H5Tset_strpad", path: path, object: object)
    return t
}

// MARK: - Datasets

/// An open dataset: its shape and stored type are read once at open.
public final class HDF5Dataset {
    public let group: HDF5Group
    /// Absolute path inside the file.
    public let name: String
    public let shape: [Int]
    /// The stored element type as a readable name ("float32", "int16", "variable-length string"...).
    public let typeName: String
    let handle: H5Handle
    private let storedType: H5Handle

    init(group: HDF5Group, handle: H5Handle, name: String) throws {
        self.group = group
        self.handle = handle
        self.name = name
        let path = group.path
        let (shape, type, typeName): ([Int], H5Handle, String) = try withHDF5 {
            let space = H5Handle(try checkID(H5Dget_space(handle.id), "reading dataspace", path: path, object: name,
                                             code: .corrupt), .dataspace)
            let rank = H5Sget_simple_extent_ndims(space.id)
            if rank < 0 { throw failure("reading rank", path: path, object: name, code: .corrupt) }
            var dims = [hsize_t](repeating: 0, count: Int(rank))
            if rank > 0 {
                try check(H5Sget_simple_extent_dims(space.id, &dims, nil), "reading dims", path: path, object: name,
                          code: .corrupt)
            }
            let t = H5Handle(try checkID(H5Dget_type(handle.id), "reading type", path: path, object: name,
                                         code: .corrupt), .datatype)
            return (dims.map { Int($0) }, t, describeType(t.id))
        }
        self.shape = shape
        self.storedType = type
        self.typeName = typeName
    }

    var path: String { group.path }
    public var count: Int { shape.reduce(1, *) }

    /// Whether the stored type is exactly `type` (class, size and signedness).
    public func isStored(as type: HDF5ScalarType) -> Bool { typeName == type.rawValue }

    /// Throws `.badType` unless stored as `type`.
    public func require(_ type: HDF5ScalarType) throws {
        if !isStored(as: type) {
            throw ShardError(.badType, "wrong element type", path: path, object: name, expected: type.rawValue,
                             found: typeName)
        }
    }

    /// Throws `.badShape` unless the shape matches; nil entries in `expected` match any size.
    public func require(shape expected: [Int?], meaning: String? = nil) throws {
        let ok = expected.count == shape.count && zip(expected, shape).allSatisfy { $0 == nil || $0 == $1 }
        if !ok {
            let e = "[" + expected.map { $0.map(String.init) ?? "*" }.joined(separator: ", ") + "]"
                + (meaning.map { " (\($0))" } ?? "")
            throw ShardError(.badShape, "wrong shape", path: path, object: name, expected: e,
                             found: "\(shape)")
        }
    }

    private func checkElement<T: HDF5Element>(_: T.Type) throws { try require(T.hdf5Type) }

    /// Reads the whole dataset.
    public func readAll<T: HDF5Element>(as _: T.Type = T.self) throws -> [T] {
        try checkElement(T.self)
        return try withHDF5 {
            try [T](unsafeUninitializedCapacity: max(count, 1)) { buf, n in
                n = 0
                if count > 0 {
                    try check(H5Dread(handle.id, T.hdf5Type.nativeType, dehvf_H5S_ALL(), dehvf_H5S_ALL(),
                                      dehvf_H5P_DEFAULT(), buf.baseAddress), "reading", path: path, object: name)
                }
                n = count
            }
        }
    }

    /// Reads the whole dataset into `into` (count must equal the dataset's).
    public func readAll<T: HDF5Element>(into: UnsafeMutableBufferPointer<T>) throws {
        try checkElement(T.self)
        precondition(into.count == count, "buffer of \(into.count) for \(count) elements")
        if count == 0 { return }
        try withHDF5 {
            try check(H5Dread(handle.id, T.hdf5Type.nativeType, dehvf_H5S_ALL(), dehvf_H5S_ALL(),
                              dehvf_H5P_DEFAULT(), into.baseAddress), "reading", path: path, object: name)
        }
    }

    /// Reads the rows `rows` (indices along dimension 0, strictly increasing) in that order. Runs of
    /// consecutive rows become one hyperslab block each, and all blocks are read with one H5Dread, so
    /// HDF5 visits each chunk once.
    public func readRows<T: HDF5Element>(sorted rows: [Int], as _: T.Type = T.self) throws -> [T] {
        try checkElement(T.self)
        precondition(!shape.isEmpty, "readRows on a scalar dataset")
        let rowSize = shape.dropFirst().reduce(1, *)
        for (i, r) in rows.enumerated() {
            if r < 0 || r >= shape[0] {
                throw ShardError(.badValue, "row index out of range", path: path, object: name,
                                 expected: "0..<\(shape[0])", found: "\(r)")
            }
            precondition(i == 0 || rows[i - 1] < r, "readRows needs strictly increasing rows")
        }
        let total = rows.count * rowSize
        if total == 0 { return [] }
        // One H5Dread per run of consecutive rows, each a regular hyperslab: a single read of the OR of
        // all runs makes HDF5 walk an irregular span tree element row by element row, which measured
        // 500x slower on the images column (bench io).
        return try withHDF5 {
            let fileSpace = H5Handle(try checkID(H5Dget_space(handle.id), "reading dataspace", path: path,
                                                 object: name), .dataspace)
            return try [T](unsafeUninitializedCapacity: total) { buf, n in
                n = 0
                var done = 0
                for run in coalesce(rows) {
                    var start = [hsize_t](repeating: 0, count: shape.count)
                    var count = shape.map { hsize_t($0) }
                    start[0] = hsize_t(run.lowerBound)
                    count[0] = hsize_t(run.count)
                    try check(H5Sselect_hyperslab(fileSpace.id, H5S_SELECT_SET, start, nil, count, nil),
                              "selecting rows", path: path, object: name)
                    let memSpace = H5Handle(try checkID(H5Screate_simple(Int32(count.count), count, nil),
                                                        "H5Screate_simple", path: path, object: name), .dataspace)
                    try check(H5Dread(handle.id, T.hdf5Type.nativeType, memSpace.id, fileSpace.id, dehvf_H5P_DEFAULT(),
                                      buf.baseAddress! + done * rowSize), "reading rows", path: path, object: name)
                    done += run.count
                }
                n = total
            }
        }
    }

    /// Reads single elements at `coordinates` (each of the dataset's rank), in the given order.
    public func readPoints<T: HDF5Element>(_ coordinates: [[Int]], as _: T.Type = T.self) throws -> [T] {
        try checkElement(T.self)
        if coordinates.isEmpty { return [] }
        for c in coordinates where c.count != shape.count || zip(c, shape).contains(where: { $0 < 0 || $0 >= $1 }) {
            throw ShardError(.badValue, "point outside the dataset", path: path, object: name,
                             expected: "an index within \(shape)", found: "\(c)")
        }
        return try withHDF5 {
            let fileSpace = H5Handle(try checkID(H5Dget_space(handle.id), "reading dataspace", path: path,
                                                 object: name), .dataspace)
            let flat = coordinates.flatMap { $0.map { hsize_t($0) } }
            try check(H5Sselect_elements(fileSpace.id, H5S_SELECT_SET, coordinates.count, flat), "selecting points",
                      path: path, object: name)
            let memSpace = H5Handle(try checkID(H5Screate_simple(1, [hsize_t(coordinates.count)], nil),
                                                "H5Screate_simple", path: path, object: name), .dataspace)
            return try [T](unsafeUninitializedCapacity: coordinates.count) { buf, n in
                n = 0
                try check(H5Dread(handle.id, T.hdf5Type.nativeType, memSpace.id, fileSpace.id, dehvf_H5P_DEFAULT(),
                                  buf.baseAddress), "reading points", path: path, object: name)
                n = coordinates.count
            }
        }
    }

    /// Writes the whole dataset.
    public func writeAll<T: HDF5Element>(_ values: UnsafeBufferPointer<T>) throws {
        precondition(values.count == count, "\(values.count) values for \(name) of shape \(shape)")
        if count == 0 { return }
        try withHDF5 {
            try check(H5Dwrite(handle.id, T.hdf5Type.nativeType, dehvf_H5S_ALL(), dehvf_H5S_ALL(), dehvf_H5P_DEFAULT(),
                               values.baseAddress), "writing", path: path, object: name, code: .io)
        }
    }

    /// Writes rows start..<start+rowCount from `values` (rowCount * row size elements).
    public func writeRows<T: HDF5Element>(start: Int, _ values: UnsafeBufferPointer<T>) throws {
        let rowSize = shape.dropFirst().reduce(1, *)
        precondition(rowSize > 0 && values.count % rowSize == 0, "partial row")
        let rowCount = values.count / rowSize
        precondition(start >= 0 && start + rowCount <= shape[0], "rows \(start)..<\(start + rowCount) outside \(shape)")
        if rowCount == 0 { return }
        try withHDF5 {
            let fileSpace = H5Handle(try checkID(H5Dget_space(handle.id), "reading dataspace", path: path,
                                                 object: name), .dataspace)
            var s = [hsize_t](repeating: 0, count: shape.count)
            var c = shape.map { hsize_t($0) }
            s[0] = hsize_t(start)
            c[0] = hsize_t(rowCount)
            try check(H5Sselect_hyperslab(fileSpace.id, H5S_SELECT_SET, s, nil, c, nil), "selecting rows",
                      path: path, object: name)
            let memSpace = H5Handle(try checkID(H5Screate_simple(Int32(c.count), c, nil), "H5Screate_simple",
                                                path: path, object: name), .dataspace)
            try check(H5Dwrite(handle.id, T.hdf5Type.nativeType, memSpace.id, fileSpace.id, dehvf_H5P_DEFAULT(),
                               values.baseAddress), "writing rows", path: path, object: name, code: .io)
        }
    }

    /// Reads a 1-D dataset of strings, fixed or variable length (as h5py writes either).
    public func readStrings() throws -> [String] {
        try withHDF5 {
            guard H5Tget_class(storedType.id) == H5T_STRING else {
                throw ShardError(.badType, "wrong element type", path: path, object: name, expected: "string",
                                 found: typeName)
            }
            let n = count
            if n == 0 { return [] }
            if H5Tis_variable_str(storedType.id) > 0 {
                try group.file.verifyGlobalHeaps()
                let memType = H5Handle(try checkID(H5Tcopy(storedType.id), "H5Tcopy", path: path, object: name),
                                       .datatype)
                var ptrs = [UnsafeMutablePointer<CChar>?](repeating: nil, count: n)
                try check(H5Dread(handle.id, memType.id, dehvf_H5S_ALL(), dehvf_H5S_ALL(), dehvf_H5P_DEFAULT(),
                                  &ptrs), "reading strings", path: path, object: name)
                let out = ptrs.map { $0.map { String(cString: $0) } ?? "" }
                let space = H5Handle(H5Dget_space(handle.id), .dataspace)
                _ = H5Dvlen_reclaim(memType.id, space.id, dehvf_H5P_DEFAULT(), &ptrs)
                return out
            }
            let size = H5Tget_size(storedType.id)
            var bytes = [UInt8](repeating: 0, count: n * size)
            try check(H5Dread(handle.id, storedType.id, dehvf_H5S_ALL(), dehvf_H5S_ALL(), dehvf_H5P_DEFAULT(),
                              &bytes), "reading strings", path: path, object: name)
            return (0..<n).map { decodeFixed(bytes[($0 * size)..<(($0 + 1) * size)]) }
        }
    }
}

private func decodeFixed(_ bytes: ArraySlice<UInt8>) -> String {
    let cut = bytes.firstIndex(of: 0) ?? bytes.endIndex
    var s = String(decoding: bytes[bytes.startIndex..<cut], as: UTF8.self)
    while s.hasSuffix(" ") { s.removeLast() }  // H5T_STR_SPACEPAD
    return s
}

/// Splits strictly increasing indices into maximal runs of consecutive values.
func coalesce(_ sorted: [Int]) -> [Range<Int>] {
    var runs: [Range<Int>] = []
    var i = 0
    while i < sorted.count {
        var j = i
        while j + 1 < sorted.count && sorted[j + 1] == sorted[j] + 1 { j += 1 }
        runs.append(sorted[i]..<(sorted[j] + 1))
        i = j + 1
    }
    return runs
}

// MARK: - Attributes

/// Attributes on a group (including the root) or a dataset.
public protocol HDF5AttributeHolder: AnyObject {
    var attributeFile: HDF5File { get }
    var attributeOwnerID: Int64 { get }
    var attributeFilePath: String { get }
    var attributeObjectName: String { get }
}

extension HDF5Group: HDF5AttributeHolder {
    public var attributeFile: HDF5File { file }
    public var attributeOwnerID: Int64 { id }
    public var attributeFilePath: String { path }
    public var attributeObjectName: String { name }
}

extension HDF5Dataset: HDF5AttributeHolder {
    public var attributeFile: HDF5File { group.file }
    public var attributeOwnerID: Int64 { handle.id }
    public var attributeFilePath: String { path }
    public var attributeObjectName: String { name }
}

extension HDF5AttributeHolder {
    private func label(_ attr: String) -> String {
        (attributeObjectName == "/" ? "" : attributeObjectName) + "@" + attr
    }

    public func hasAttribute(_ attr: String) -> Bool {
        withHDF5 {
            let r = H5Aexists(attributeOwnerID, attr)
            if r < 0 { _ = takeErrorStack() }
            return r > 0
        }
    }

    /// Opens `attr` and hands its id, stored type and element count to `body`.
    private func withAttribute<R>(_ attr: String, _ body: (hid_t, hid_t, Int) throws -> R) throws -> R {
        try withHDF5 {
            let object = label(attr)
            guard hasAttribute(attr) else {
                throw ShardError(.missingAttribute, "missing attribute", path: attributeFilePath, object: object)
            }
            let a = H5Handle(try checkID(H5Aopen(attributeOwnerID, attr, dehvf_H5P_DEFAULT()), "opening attribute",
                                         path: attributeFilePath, object: object, code: .corrupt), .attribute)
            let t = H5Handle(try checkID(H5Aget_type(a.id), "reading attribute type", path: attributeFilePath,
                                         object: object, code: .corrupt), .datatype)
            let s = H5Handle(try checkID(H5Aget_space(a.id), "reading attribute space", path: attributeFilePath,
                                         object: object, code: .corrupt), .dataspace)
            let n = H5Sget_simple_extent_npoints(s.id)
            if n < 0 { throw failure("reading attribute size", path: attributeFilePath, object: object, code: .corrupt) }
            return try body(a.id, t.id, Int(n))
        }
    }

    /// A scalar integer attribute (any stored integer width), as Int64.
    public func readInt(_ attr: String) throws -> Int64 {
        try withAttribute(attr) { a, t, n in
            guard H5Tget_class(t) == H5T_INTEGER, n == 1 else {
                throw ShardError(.badAttribute, "wrong attribute type", path: attributeFilePath, object: label(attr),
                                 expected: "integer scalar", found: "\(describeType(t)) x\(n)")
            }
            var v: Int64 = 0
            try check(H5Aread(a, dehvf_H5T_NATIVE_INT64(), &v), "reading attribute", path: attributeFilePath,
                      object: label(attr), code: .corrupt)
            return v
        }
    }

    /// A float32 array attribute.
    public func readFloats(_ attr: String) throws -> [Float] {
        try withAttribute(attr) { a, t, n in
            guard describeType(t) == "float32" else {
                throw ShardError(.badAttribute, "wrong attribute type", path: attributeFilePath, object: label(attr),
                                 expected: "float32", found: describeType(t))
            }
            var v = [Float](repeating: 0, count: n)
            if n > 0 {
                try check(H5Aread(a, dehvf_H5T_NATIVE_FLOAT(), &v), "reading attribute", path: attributeFilePath,
                          object: label(attr), code: .corrupt)
            }
            return v
        }
    }

    /// A scalar string attribute, fixed or variable length, ASCII or UTF-8.
    public func readString(_ attr: String) throws -> String {
        try withAttribute(attr) { a, t, n in
            guard H5Tget_class(t) == H5T_STRING, n == 1 else {
                throw ShardError(.badAttribute, "wrong attribute type", path: attributeFilePath, object: label(attr),
                                 expected: "string scalar", found: "\(describeType(t)) x\(n)")
            }
            if H5Tis_variable_str(t) > 0 {
                try attributeFile.verifyGlobalHeaps()
                var p: UnsafeMutablePointer<CChar>? = nil
                try check(H5Aread(a, t, &p), "reading attribute", path: attributeFilePath, object: label(attr),
                          code: .corrupt)
                defer { if let p { H5free_memory(p) } }
                return p.map { String(cString: $0) } ?? ""
            }
            let size = H5Tget_size(t)
            var bytes = [UInt8](repeating: 0, count: size)
            try check(H5Aread(a, t, &bytes), "reading attribute", path: attributeFilePath, object: label(attr),
                      code: .corrupt)
            return decodeFixed(bytes[...])
        }
    }

    private func createAttribute(_ attr: String, type: hid_t, dims: [Int]?, write: (hid_t) -> herr_t) throws {
        try withHDF5 {
            let object = label(attr)
            if hasAttribute(attr) {
                try check(H5Adelete(attributeOwnerID, attr), "replacing attribute", path: attributeFilePath,
                          object: object, code: .io)
            }
            let spaceID: hid_t
            if let dims {
                let d = dims.map { hsize_t($0) }
                spaceID = H5Screate_simple(Int32(d.count), d, nil)
            } else {
                spaceID = H5Screate(H5S_SCALAR)
            }
            let space = H5Handle(try checkID(spaceID, "creating attribute space", path: attributeFilePath,
                                             object: object), .dataspace)
            let a = H5Handle(try checkID(H5Acreate2(attributeOwnerID, attr, type, space.id, dehvf_H5P_DEFAULT(),
                                                    dehvf_H5P_DEFAULT()), "creating attribute",
                                         path: attributeFilePath, object: object, code: .io), .attribute)
            try check(write(a.id), "writing attribute", path: attributeFilePath, object: object, code: .io)
        }
    }

    /// A scalar int64 attribute (as h5py writes a Python int).
    public func setAttribute(_ attr: String, int value: Int64) throws {
        var v = value
        try createAttribute(attr, type: dehvf_H5T_NATIVE_INT64(), dims: nil) { H5Awrite($0, dehvf_H5T_NATIVE_INT64(), &v) }
    }

    /// A float32 array attribute.
    public func setAttribute(_ attr: String, floats value: [Float]) throws {
        var v = value
        try createAttribute(attr, type: dehvf_H5T_NATIVE_FLOAT(), dims: [value.count]) {
            H5Awrite($0, dehvf_H5T_NATIVE_FLOAT(), &v)
        }
    }

    /// A variable-length UTF-8 string attribute on a scalar dataspace, exactly as h5py writes a `str`.
    public func setAttribute(_ attr: String, string value: String) throws {
        let type = try withHDF5 { try makeUTF8VariableType(path: attributeFilePath, object: label(attr)) }
        try value.withCString { c in
            var p: UnsafePointer<CChar>? = c
            try createAttribute(attr, type: type.id, dims: nil) { H5Awrite($0, type.id, &p) }
        }
    }
}

// MARK: - Global heap check

/// Variable-length strings live in "global heap collections" (GCOL), the one piece of HDF5 metadata
/// without a checksum. HDF5 1.10.8 trusts the object sizes stored there and copies that many bytes, so a
/// single damaged size field crashes the process (found by this project's byte-flip test). Before the
/// first variable-length read from a file, every collection in it is walked and each object must fit
/// inside its collection; a damaged one is a `.corrupt` error instead of a crash.
///
/// The file is memory-mapped and searched for the signature with memmem (memory speed). A candidate
/// whose version or reserved bytes are wrong is not a collection (HDF5 itself rejects those cleanly).
enum GlobalHeapCheck {
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
        var from = 0
        while from + 16 <= size {
            // memchr for 'G' (libc speed), then the other three signature bytes.
            guard let hit = memchr(bytes + from, 0x47, size - from) else { break }
            let start: Int = UnsafeRawPointer(bytes).distance(to: UnsafeRawPointer(hit))
            from = start + 1
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
