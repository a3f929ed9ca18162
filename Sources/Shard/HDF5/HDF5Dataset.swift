// Part of the HDF5 wrapper, the only code in the project that touches CHDF5 (see HDF5Library.swift).
import CHDF5
import Foundation

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
            // A hostile file can declare any 64-bit size: one past Int.max is an error, not a trap.
            var ints: [Int] = []
            for d in dims {
                guard let i = Int(exactly: d) else {
                    throw ShardError(.badShape, "a dimension is too large", path: path, object: name,
                                     expected: "dimensions below 2^63", found: "\(dims)")
                }
                ints.append(i)
            }
            return (ints, t, describeType(t.id))
        }
        self.shape = shape
        self.storedType = type
        self.typeName = typeName
    }

    var path: String { group.path }
    /// The number of elements, saturating at `Int.max` (the declared dimensions of a hostile file can
    /// multiply past it).
    public var count: Int { saturatingProduct(shape) }

    /// Bytes needed to hold the whole dataset as `elementSize`-byte elements, saturating at `Int.max`.
    public func byteCount(elementSize: Int) -> Int { saturatingProduct(shape + [elementSize]) }

    /// Throws `.badShape` unless reading the whole dataset into memory needs at most `budget` bytes
    /// (`HDF5File.readBudget`): checked before allocating, so a file declaring more data than it can hold
    /// is an error instead of a failed allocation.
    public func requireReadable(elementSize: Int, within budget: HDF5File.ReadBudget) throws {
        let bytes = byteCount(elementSize: elementSize)
        if bytes > budget.bytes {
            throw ShardError(.badShape, "declares more data than the file can hold", path: path, object: name,
                             expected: "at most \(budget.bytes) bytes (\(budget.rule))",
                             found: "\(bytes == .max ? "more than 2^63" : "\(bytes)") bytes for \(typeName) \(shape)")
        }
    }

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

func decodeFixed(_ bytes: ArraySlice<UInt8>) -> String {
    let cut = bytes.firstIndex(of: 0) ?? bytes.endIndex
    var s = String(decoding: bytes[bytes.startIndex..<cut], as: UTF8.self)
    while s.hasSuffix(" ") { s.removeLast() }  // H5T_STR_SPACEPAD
    return s
}

/// The product of `factors`, saturating at `Int.max` (0 if any factor is 0).
func saturatingProduct(_ factors: [Int]) -> Int {
    if factors.contains(0) { return 0 }
    var p = 1
    for f in factors {
        let (r, overflow) = p.multipliedReportingOverflow(by: f)
        if overflow { return .max }
        p = r
    }
    return p
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
