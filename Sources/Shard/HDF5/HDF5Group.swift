// Part of the HDF5 wrapper, the only code in the project that touches CHDF5 (see HDF5Library.swift).
import CHDF5
import Foundation

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
            // The chunk cache holds two of the dataset's chunks, so that a batch whose sorted runs touch a
            // chunk several times (`HDF5Dataset.readRows`) decodes it once, and no more: the cache is per
            // open dataset and never shrinks, and at a fixed 64 MiB a process kept every image chunk it ever
            // read (48 MB of the demo's 49 MB), though each image is read once and its features kept instead.
            let probe = H5Handle(try checkID(H5Dopen2(id, child, dehvf_H5P_DEFAULT()), "opening dataset", path: path,
                                             object: childPath(child), code: .corrupt), .dataset)
            let chunk = try Self.chunkBytes(probe.id, path: path, object: childPath(child))
            let cacheBytes = chunk > Self.chunkCacheLimit / 2 ? Self.chunkCacheLimit : 2 * chunk
            let dapl = H5Handle(try checkID(H5Pcreate(dehvf_H5P_DATASET_ACCESS()), "H5Pcreate", path: path,
                                            object: nil), .plist)
            try check(H5Pset_chunk_cache(dapl.id, 521, cacheBytes, 0.75), "setting chunk cache", path: path, object: nil)
            let did = try checkID(H5Dopen2(id, child, dapl.id), "opening dataset", path: path,
                                  object: childPath(child), code: .corrupt)
            return try HDF5Dataset(group: self, handle: H5Handle(did, .dataset), name: childPath(child))
        }
    }

    /// The most an open dataset's chunk cache holds: one chunk when chunks are larger than half of it, and
    /// none (every read goes to the file) when they are larger than all of it.
    static let chunkCacheLimit = 64 << 20

    /// Bytes of one chunk of dataset `did` as stored (0 when it is not chunked), saturating: the dimensions
    /// come from the file.
    private static func chunkBytes(_ did: hid_t, path: String, object: String) throws -> Int {
        let dcpl = H5Handle(try checkID(H5Dget_create_plist(did), "reading the dataset's creation properties", path: path,
                                        object: object, code: .corrupt), .plist)
        guard H5Pget_layout(dcpl.id) == H5D_CHUNKED else { return 0 }
        var dims = [hsize_t](repeating: 0, count: 32)   // H5S_MAX_RANK
        let rank = H5Pget_chunk(dcpl.id, Int32(dims.count), &dims)
        guard rank > 0 else { throw failure("reading the chunk dimensions", path: path, object: object, code: .corrupt) }
        let type = H5Handle(try checkID(H5Dget_type(did), "reading type", path: path, object: object, code: .corrupt), .datatype)
        let element = H5Tget_size(type.id)
        guard element > 0 else { throw failure("reading the element size", path: path, object: object, code: .corrupt) }
        return saturatingProduct(dims.prefix(Int(rank)).map { Int(clamping: $0) } + [Int(clamping: element)])
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

func makeUTF8VariableType(path: String, object: String) throws -> H5Handle {
    let t = H5Handle(try checkID(H5Tcopy(dehvf_H5T_C_S1()), "H5Tcopy", path: path, object: object), .datatype)
    try check(H5Tset_size(t.id, dehvf_H5T_VARIABLE()), "H5Tset_size", path: path, object: object)
    try check(H5Tset_cset(t.id, H5T_CSET_UTF8), "H5Tset_cset", path: path, object: object)
    try check(H5Tset_strpad(t.id, H5T_STR_NULLTERM), "H5Tset_strpad", path: path, object: object)
    return t
}
