import Foundation
import Model

/// An error from the data and checkpoint layer: which file and dataset, what was expected, what was
/// found, HDF5's own explanation when it had one, and what to do next.
public struct ShardError: Error, CustomStringConvertible, Sendable, Equatable {
    public enum Code: String, Sendable {
        /// The file does not exist or cannot be opened (permissions, not HDF5, truncated superblock).
        case cannotOpen
        /// A root attribute is missing.
        case missingAttribute
        /// An attribute has the wrong type, shape or value.
        case badAttribute
        /// A required dataset is missing.
        case missingDataset
        /// A dataset has the wrong element type.
        case badType
        /// A dataset has the wrong rank or dimensions.
        case badShape
        /// Values inside the data are out of range (for example a length larger than T).
        case badValue
        /// The stored bytes fail their checksum or cannot be decoded: the file is damaged.
        case corrupt
        /// A read, write, flush, fsync or rename failed.
        case io
        /// Sampler settings that cannot work (micro-batch does not divide the global batch...).
        case badSampler
        /// A checkpoint that does not belong to this job (backbone or parameters differ).
        case incompatibleCheckpoint
        /// Any other failing HDF5 call.
        case hdf5
    }

    public var code: Code
    public var message: String
    /// The file concerned.
    public var path: String?
    /// The dataset or attribute inside the file, as a path (`/params/router.weight`, `@version`).
    public var object: String?
    public var expected: String?
    public var found: String?
    /// HDF5's error stack at the failing call, innermost last; nil when HDF5 was not involved.
    public var hdf5Stack: String?
    /// The error underneath (the file system's), if any.
    public var cause: (any Error)?

    public init(_ code: Code, _ message: String, path: String? = nil, object: String? = nil,
                expected: String? = nil, found: String? = nil, hdf5Stack: String? = nil, cause: (any Error)? = nil) {
        self.code = code
        self.message = message
        self.path = path
        self.object = object
        self.expected = expected
        self.found = found
        self.hdf5Stack = hdf5Stack
        self.cause = cause
    }

    /// Equal when everything but the cause is.
    public static func == (a: ShardError, b: ShardError) -> Bool {
        a.code == b.code && a.message == b.message && a.path == b.path && a.object == b.object
            && a.expected == b.expected && a.found == b.found && a.hdf5Stack == b.hdf5Stack
    }

    public var description: String {
        var s = ""
        if let path { s += path }
        if let object { s += (s.isEmpty ? "" : " ") + object }
        s += (s.isEmpty ? "" : ": ") + message
        if let expected { s += "; expected \(expected)" }
        if let found { s += ", found \(found)" }
        if let hdf5Stack, !hdf5Stack.isEmpty { s += " (HDF5: \(hdf5Stack))" }
        if let cause { s += " (\(ErrorCause.describe(cause)))" }
        return s
    }
}
