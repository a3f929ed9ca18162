// Part of the HDF5 wrapper, the only code in the project that touches CHDF5 (see HDF5Library.swift).
import CHDF5
import Foundation

// MARK: - Element types

/// The element types the project stores.
public enum HDF5ScalarType: String, Sendable {
    case float32, int32, uint8, int64

    /// Bytes per element.
    public var byteSize: Int {
        switch self {
        case .uint8: return 1
        case .int32, .float32: return 4
        case .int64: return 8
        }
    }

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
func describeType(_ t: hid_t) -> String {
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
