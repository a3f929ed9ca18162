import Foundation

/// Crash-safe file replacement: write under a temporary name in the same directory, fsync it, rename
/// it over the target, fsync the directory. A reader sees the old file or the complete new one, never
/// a torn one, whatever moment the process or machine dies.
public enum DurableFile {
    /// The temporary name used for `path`: hidden, in the same directory (so rename is atomic), unique
    /// per process.
    public static func temporaryPath(for path: String) -> String {
        let url = URL(fileURLWithPath: path)
        return url.deletingLastPathComponent().appendingPathComponent(
            ".\(url.lastPathComponent).tmp-\(getpid())").path
    }

    /// Whether `name` is a temporary left by `temporaryPath` (possibly by a process that died).
    public static func isTemporary(_ name: String) -> Bool { name.hasPrefix(".") && name.contains(".tmp-") }

    /// Calls `produce` with a temporary path to fill completely (and close), then makes it durable at `path`.
    public static func write(_ path: String, produce: (String) throws -> Void) throws {
        let tmp = temporaryPath(for: path)
        do {
            try produce(tmp)
            try fsync(path: tmp, directory: false)
            if rename(tmp, path) != 0 { throw posixError("renaming \(tmp) to", path) }
            try fsync(path: URL(fileURLWithPath: path).deletingLastPathComponent().path, directory: true)
        } catch {
            unlink(tmp)
            throw error
        }
    }

    /// Writes `text` durably to `path`.
    public static func write(_ path: String, text: String) throws {
        try write(path) { tmp in
            let fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
            if fd < 0 { throw posixError("creating", tmp) }
            defer { close(fd) }
            let bytes = Array(text.utf8)
            var done = 0
            while done < bytes.count {
                let n = bytes[done...].withUnsafeBytes { Foundation.write(fd, $0.baseAddress, $0.count) }
                if n < 0 {
                    if errno == EINTR { continue }
                    throw posixError("writing", tmp)
                }
                done += n
            }
        }
    }

    /// fsync on a file or a directory (a directory fsync makes a rename in it durable).
    public static func fsync(path: String, directory: Bool) throws {
        let fd = open(path, directory ? (O_RDONLY | O_DIRECTORY) : O_RDONLY)
        if fd < 0 { throw posixError("opening for fsync", path) }
        defer { close(fd) }
        if Foundation.fsync(fd) != 0 { throw posixError("fsync of", path) }
    }

    private static func posixError(_ what: String, _ path: String) -> ShardError {
        let code = errno
        return ShardError(.io, "\(what) failed: \(String(cString: strerror(code))); check the disk and the directory's permissions",
                          path: path, cause: POSIXError(POSIXErrorCode(rawValue: code) ?? .EIO))
    }
}
