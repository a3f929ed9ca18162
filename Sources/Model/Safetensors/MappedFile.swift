import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A whole file memory-mapped copy-on-write (`MAP_PRIVATE`, readable and writable), unmapped in `deinit`.
///
/// Several processes mapping the same file share its page-cache pages, which is why the frozen backbone
/// is mapped rather than read. A page that is never written stays shared; writing to one (a tensor
/// borrowed from the map, modified in place) gives this process a private copy of that page and never
/// changes the file. An empty file maps to an empty buffer without calling `mmap`.
/// - warning: truncating the file while it is mapped makes reads past the new end fault (SIGBUS):
///   replace model files by writing new ones, never in place.
public final class MappedFile: @unchecked Sendable {
    public let url: URL
    /// The mapped bytes; valid for the lifetime of this object.
    public let bytes: UnsafeRawBufferPointer
    /// The file's identity when it was mapped (the bytes are this inode's).
    public let identity: FileIdentity

    public init(url: URL) throws {
        self.url = url
        let path = url.path
        let fd = open(path, O_RDONLY)
        guard fd >= 0 else {
            let reason = String(cString: strerror(errno))
            throw ModelError(errno == ENOENT ? .fileNotFound : .badHeader,
                             "cannot open for reading: \(reason)", path: path)
        }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else {
            throw ModelError(.badHeader, "cannot stat: \(String(cString: strerror(errno)))", path: path)
        }
        guard (st.st_mode & S_IFMT) == S_IFREG else {
            throw ModelError(.badHeader, "not a regular file", path: path)
        }
        identity = FileIdentity(st)
        let size = Int(st.st_size)
        if size == 0 {
            bytes = UnsafeRawBufferPointer(start: nil, count: 0)
            return
        }
        guard let base = mmap(nil, size, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0), base != MAP_FAILED else {
            throw ModelError(.badHeader, "cannot memory-map \(size) bytes: \(String(cString: strerror(errno)))",
                             path: path)
        }
        bytes = UnsafeRawBufferPointer(start: base, count: size)
    }

    deinit {
        if let base = bytes.baseAddress { munmap(UnsafeMutableRawPointer(mutating: base), bytes.count) }
    }

    public var count: Int { bytes.count }
}
