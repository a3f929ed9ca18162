// Part of the HDF5 wrapper, the only code in the project that touches CHDF5 (see HDF5Library.swift).
import CHDF5
import Foundation

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
