import Foundation
#if canImport(Glibc)
import Glibc
private let sysRead = Glibc.read, sysWrite = Glibc.write
#elseif canImport(Darwin)
import Darwin
private let sysRead = Darwin.read, sysWrite = Darwin.write
#endif

/// The POSIX calls behind CURVE key files, so that a secret is never readable by anyone else, not even
/// for a moment: directories are made 0700, a file is created with its final mode by `open(2)` itself
/// (`O_CREAT|O_EXCL|O_NOFOLLOW`, so neither an existing file nor a planted symbolic link is written
/// through) and written and fsynced through that descriptor; nothing is renamed or chmod-ed afterwards.
enum KeyFiles {
    /// A key file is a comment line and 40 characters; anything much larger is not one.
    static let maxBytes = 4096

    private static let typeMask = 0o170000, directoryType = 0o040000, regularType = 0o100000
    /// Permission bits that let the group or others in (read, write or search).
    static let othersMask = 0o077

    /// Makes `path` a directory only its owner can enter (mode 0700, its missing parents with the
    /// default mode), or checks that the directory already there is one.
    ///
    /// An existing directory that the group or others can enter is refused rather than tightened: it
    /// may be shared on purpose (changing its mode behind the user's back could break other users), and
    /// anyone who could write there may already have planted files in it, so the user should look first.
    static func makePrivateDirectory(_ path: String) throws {
        if mkdir(path, 0o700) == 0 { return }
        var err = errno
        if err == ENOENT {
            let parent = (path as NSString).deletingLastPathComponent
            do { try FileManager.default.createDirectory(atPath: parent, withIntermediateDirectories: true) } catch {
                throw CurveError(code: .unwritable, message: "cannot create the directory \(parent) for the keys in \(path)",
                                 path: parent, cause: error)
            }
            if mkdir(path, 0o700) == 0 { return }
            err = errno
        }
        guard err == EEXIST else {
            throw CurveError(code: .unwritable, message: "cannot create the key directory \(path): \(errnoText(err))",
                             path: path, cause: posixError(err))
        }
        var st = stat()
        guard stat(path, &st) == 0 else {
            throw CurveError(code: .unwritable, message: "cannot inspect the key directory \(path): \(errnoText(errno))",
                             path: path, cause: posixError(errno))
        }
        guard Int(st.st_mode) & typeMask == directoryType else {
            throw CurveError(code: .unwritable, message: "\(path) exists and is not a directory; choose another place for the keys",
                             path: path)
        }
        let mode = Int(st.st_mode) & 0o7777
        guard mode & othersMask == 0 else {
            throw CurveError(code: .unsafePermissions, message:
                "the key directory \(path) is mode \(octal(mode)): its group or others can enter it, and secret keys must be "
                + "private. Check what is in it, then `chmod 700 \(path)`, or write the keys to a new directory",
                path: path)
        }
    }

    /// Creates `path` with `mode` (before the umask) and writes `text` to it through the same descriptor,
    /// then fsyncs it. An existing file or symbolic link at `path` is an error and is left as it was.
    static func create(_ path: String, text: String, mode: Int) throws {
        let fd = open(path, O_CREAT | O_EXCL | O_NOFOLLOW | O_WRONLY | O_CLOEXEC, mode_t(mode))
        guard fd >= 0 else {
            let err = errno
            let what = err == EEXIST || err == ELOOP
                ? "it already exists (a file or a symbolic link); nothing was written through it"
                : errnoText(err)
            throw CurveError(code: err == EEXIST || err == ELOOP ? .exists : .unwritable,
                             message: "cannot create the key file \(path): \(what)", path: path, cause: posixError(err))
        }
        var done = false
        defer {
            close(fd)
            // O_EXCL made this file, so on failure it is ours to remove: no half-written key stays behind.
            if !done { unlink(path) }
        }
        let bytes = Array(text.utf8)
        var at = 0
        while at < bytes.count {
            let n = bytes.withUnsafeBytes { sysWrite(fd, $0.baseAddress! + at, $0.count - at) }
            if n < 0 {
                if errno == EINTR { continue }
                throw CurveError(code: .unwritable, message: "cannot write the key file \(path): \(errnoText(errno))",
                                 path: path, cause: posixError(errno))
            }
            at += n
        }
        guard fsync(fd) == 0 else {
            throw CurveError(code: .unwritable, message: "cannot write the key file \(path) to disk (fsync): \(errnoText(errno))",
                             path: path, cause: posixError(errno))
        }
        done = true
    }

    /// The text of a key file. With `secret`, a file its group or others could read is refused, as ssh
    /// refuses such a private key: the key must be assumed leaked, and a warning in a batch job's log is
    /// easily missed. The mode is checked on the opened descriptor, so it is the file that was read.
    static func read(_ path: String, secret: Bool) throws -> String {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw CurveError.unreadable(path, cause: posixError(errno)) }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw CurveError.unreadable(path, cause: posixError(errno)) }
        guard Int(st.st_mode) & typeMask == regularType else {
            throw CurveError(code: .badKey, message: "\(path) is not a regular file", path: path)
        }
        let mode = Int(st.st_mode) & 0o7777
        if secret && mode & othersMask != 0 {
            throw CurveError(code: .unsafePermissions, message:
                "the secret key file \(path) is mode \(octal(mode)): its group or others can read it, so it is refused "
                + "(as ssh refuses such a key). If nobody else can have read it, `chmod 600 \(path)`; otherwise make new "
                + "keys with `coordinator keys --out DIR --force`",
                path: path)
        }
        guard st.st_size <= maxBytes else {
            throw CurveError(code: .badKey, message: "\(path) has \(st.st_size) bytes, too many for a key file", path: path)
        }
        var bytes = [UInt8](repeating: 0, count: maxBytes + 1)
        var count = 0
        while count < bytes.count {
            let n = bytes.withUnsafeMutableBytes { sysRead(fd, $0.baseAddress! + count, $0.count - count) }
            if n < 0 {
                if errno == EINTR { continue }
                throw CurveError.unreadable(path, cause: posixError(errno))
            }
            if n == 0 { break }
            count += n
        }
        return String(decoding: bytes[..<count], as: UTF8.self)
    }

    /// Removes the directory entry at `path` (a symbolic link itself, never its target).
    static func remove(_ path: String) throws {
        guard unlink(path) == 0 || errno == ENOENT else {
            throw CurveError(code: .unwritable, message: "cannot remove the old key file \(path): \(errnoText(errno))",
                             path: path, cause: posixError(errno))
        }
    }

    static func octal(_ mode: Int) -> String {
        let s = String(mode, radix: 8)
        return String(repeating: "0", count: max(0, 4 - s.count)) + s
    }

    static func errnoText(_ err: Int32) -> String { String(cString: strerror(err)) }
}

private func posixError(_ err: Int32) -> POSIXError { POSIXError(POSIXErrorCode(rawValue: err) ?? .EIO) }
