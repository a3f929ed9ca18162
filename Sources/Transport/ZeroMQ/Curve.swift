import CZeroMQ
import Cluster
import Foundation
import Model

/// A CURVE key pair as 40-character Z85 strings.
///
/// Files: a public key is `NAME.key` (mode 0644), its secret `NAME.key_secret` (mode 0600), each holding the Z85
/// key on its own line after `#` comment lines. The public key can always be derived from the secret,
/// so a process only needs its `.key_secret` file.
public struct CurveKeyPair: Sendable, Equatable {
    public let publicKey: String
    public let secretKey: String

    /// A fresh key pair from libzmq (libsodium's randomness).
    public static func generate() throws -> CurveKeyPair {
        var pub = [CChar](repeating: 0, count: 41)
        var sec = [CChar](repeating: 0, count: 41)
        guard zmq_curve_keypair(&pub, &sec) == 0 else {
            throw ZMQError("zmq_curve_keypair (is libzmq built with CURVE/libsodium?)")
        }
        return CurveKeyPair(publicKey: String(cString: pub), secretKey: String(cString: sec))
    }

    init(publicKey: String, secretKey: String) {
        self.publicKey = publicKey
        self.secretKey = secretKey
    }

    /// The pair for a Z85 secret key (its public key derived with `zmq_curve_public`).
    public init(secretKey: String) throws {
        guard secretKey.utf8.count == 40, Curve.decodeZ85(secretKey) != nil else {
            throw CurveError.badKey("secret key is not 40 Z85 characters")
        }
        var pub = [CChar](repeating: 0, count: 41)
        guard zmq_curve_public(&pub, secretKey) == 0 else { throw ZMQError("zmq_curve_public") }
        self.init(publicKey: String(cString: pub), secretKey: secretKey)
    }

    /// Reads a `.key_secret` file; one its group or others could read is refused (``CurveError/Code/unsafePermissions``).
    public init(secretKeyFile path: String) throws {
        try self.init(secretKey: Curve.readKey(file: path, secret: true))
    }

    /// Writes `directory/name.key` (public, mode 0644) and `directory/name.key_secret` (secret, mode 0600),
    /// making `directory` with mode 0700 if it is missing. Neither file may exist yet (see ``KeyFiles``).
    @discardableResult
    public func write(directory: String, name: String) throws -> (publicFile: String, secretFile: String) {
        try KeyFiles.makePrivateDirectory(directory)
        let pubPath = (directory as NSString).appendingPathComponent("\(name).key")
        let secPath = (directory as NSString).appendingPathComponent("\(name).key_secret")
        try writePublic(to: pubPath, name: name)
        try writeSecret(to: secPath, name: name)
        return (pubPath, secPath)
    }

    func writePublic(to path: String, name: String) throws {
        try KeyFiles.create(path, text: "# DEHVF CURVE public key of \(name)\n\(publicKey)\n", mode: 0o644)
    }

    func writeSecret(to path: String, name: String) throws {
        try KeyFiles.create(path, text: "# DEHVF CURVE secret key of \(name): keep private\n\(secretKey)\n", mode: 0o600)
    }
}

/// A CURVE key or key file that cannot be used: malformed, missing, unreadable, already there, or not
/// private. The message names the file or directory and says what to do.
public struct CurveError: Error, Sendable, CustomStringConvertible {
    public enum Code: Sendable {
        /// Not a Z85 key, or a file that holds none.
        case badKey
        /// A file or directory that cannot be read.
        case unreadable
        /// A key file or directory that cannot be created or removed.
        case unwritable
        /// Key files already where new ones were to be written (`coordinator keys --force` replaces them).
        case exists
        /// A secret key file, or a key directory, that its group or others can get at.
        case unsafePermissions
        /// An allowed-workers directory with no `*.key` file: no worker could ever join.
        case noAllowedKeys
    }
    public var code: Code
    public var message: String
    /// The file or directory the error is about.
    public var path: String?
    /// The file system's error, for an unreadable or unwritable file.
    public var cause: (any Error)?

    public init(code: Code, message: String, path: String? = nil, cause: (any Error)? = nil) {
        self.code = code
        self.message = message
        self.path = path
        self.cause = cause
    }

    public static func badKey(_ message: String) -> CurveError { CurveError(code: .badKey, message: message) }
    public static func unreadable(_ path: String, cause: any Error) -> CurveError {
        CurveError(code: .unreadable, message: "cannot read key file \(path); generate keys with `coordinator keys --out DIR`",
                   path: path, cause: cause)
    }

    public var description: String {
        switch code {
        case .badKey: "bad CURVE key: \(message)"
        case .unreadable: message + (cause.map { " (\(ErrorCause.describe($0)))" } ?? "")
        default: message
        }
    }
}

public enum Curve {
    /// Writes the key files for a job: `out/coordinator.key`, `out/coordinator.key_secret`, and per worker
    /// `out/workers/worker-N.key` (the allowed-workers directory) and `out/worker-N.key_secret`.
    /// This is what `coordinator keys --out DIR` does.
    ///
    /// `out` and `out/workers` are made with mode 0700 (an existing one that is not private is refused),
    /// each secret is created 0600 and each public key 0644 (see ``KeyFiles``). Key files already there
    /// (`*.key` and `*.key_secret` in `out`, `*.key` in `out/workers`) are an error that names them and
    /// are left as they were, unless `force`, which removes them all first: a worker key left over from an
    /// earlier set would otherwise stay admitted. `replaced` lists what `force` removed.
    @discardableResult
    public static func generateJobKeys(out: String, workers: Int, force: Bool = false) throws
        -> (coordinator: CurveKeyPair, workers: [CurveKeyPair], replaced: [String])
    {
        let workersDir = (out as NSString).appendingPathComponent("workers")
        try KeyFiles.makePrivateDirectory(out)
        let existing = existingKeyFiles(out: out)
        if !existing.isEmpty {
            guard force else {
                let shown = existing.prefix(10).joined(separator: ", ")
                    + (existing.count > 10 ? " and \(existing.count - 10) more" : "")
                throw CurveError(code: .exists, message:
                    "\(out) already holds key files (\(shown)); they were left as they were. Use them as they are, "
                    + "or replace them with `coordinator keys --out \(out) --force` (workers holding the old keys can no longer join)",
                    path: out)
            }
            for name in existing { try KeyFiles.remove((out as NSString).appendingPathComponent(name)) }
        }
        try KeyFiles.makePrivateDirectory(workersDir)
        let coordinator = try CurveKeyPair.generate()
        try coordinator.write(directory: out, name: "coordinator")
        var pairs: [CurveKeyPair] = []
        for i in 1...max(workers, 1) {
            let pair = try CurveKeyPair.generate()
            let name = "worker-\(i)"
            try pair.writeSecret(to: (out as NSString).appendingPathComponent("\(name).key_secret"), name: name)
            try pair.writePublic(to: (workersDir as NSString).appendingPathComponent("\(name).key"), name: name)
            pairs.append(pair)
        }
        return (coordinator, pairs, force ? existing : [])
    }

    /// The key files ``generateJobKeys(out:workers:force:)`` would clash with, relative to `out`, sorted.
    static func existingKeyFiles(out: String) -> [String] {
        let fm = FileManager.default
        let top = ((try? fm.contentsOfDirectory(atPath: out)) ?? []).filter { $0.hasSuffix(".key") || $0.hasSuffix(".key_secret") }
        let listed = ((try? fm.contentsOfDirectory(atPath: (out as NSString).appendingPathComponent("workers"))) ?? [])
            .filter { $0.hasSuffix(".key") }.map { "workers/\($0)" }
        return (top + listed).sorted()
    }

    /// The Z85 key in a key file (the first line that is not empty or a `#` comment). With `secret`, a
    /// file its group or others could read is refused.
    public static func readKey(file path: String, secret: Bool = false) throws -> String {
        let text = try KeyFiles.read(path, secret: secret)
        for line in text.split(whereSeparator: \.isNewline) {
            let t = line.trimmingCharacters(in: .whitespaces)
            if t.isEmpty || t.hasPrefix("#") { continue }
            guard t.utf8.count == 40, decodeZ85(t) != nil else {
                throw CurveError.badKey("\(path): expected 40 Z85 characters, found `\(t.prefix(60))`")
            }
            return t
        }
        throw CurveError.badKey("\(path): no key in the file")
    }

    /// Every public key in a directory of `*.key` files, mapped to its file name (for logs). A directory
    /// with none is an error: with CURVE on it would admit no worker, and the job would wait forever.
    public static func allowedKeys(directory: String) throws -> [String: String] {
        let names: [String]
        do { names = try FileManager.default.contentsOfDirectory(atPath: directory) } catch {
            throw CurveError(code: .unreadable, message: "cannot read the allowed-workers directory \(directory) "
                + "(security.allowed_workers); make keys with `coordinator keys --out DIR --workers N` and point "
                + "security.allowed_workers at DIR/workers", path: directory, cause: error)
        }
        var keys: [String: String] = [:]
        for n in names.sorted() where n.hasSuffix(".key") {
            keys[try readKey(file: (directory as NSString).appendingPathComponent(n))] = n
        }
        guard !keys.isEmpty else {
            // `coordinator keys --out DIR` lists the workers in DIR/workers.
            let made = (directory as NSString).lastPathComponent == "workers"
                ? "`coordinator keys --out \((directory as NSString).deletingLastPathComponent) --workers N` (it writes "
                    + "the workers' public keys there; add --force to replace keys already in it)"
                : "`coordinator keys --out DIR --workers N` and point security.allowed_workers at DIR/workers"
            throw CurveError(code: .noAllowedKeys, message: "no worker public key (*.key) in \(directory) "
                + "(security.allowed_workers), so no worker could join: refusing to start. Make keys with \(made)",
                path: directory)
        }
        return keys
    }

    /// 32 raw bytes from a 40-character Z85 key, or nil.
    public static func decodeZ85(_ key: String) -> [UInt8]? {
        guard key.utf8.count == 40 else { return nil }
        var out = [UInt8](repeating: 0, count: 32)
        guard zmq_z85_decode(&out, key) != nil else { return nil }
        return out
    }

    /// The Z85 text of 32 raw key bytes.
    public static func encodeZ85(_ raw: [UInt8]) -> String? {
        guard raw.count == 32 else { return nil }
        var out = [CChar](repeating: 0, count: 41)
        guard zmq_z85_encode(&out, raw, 32) != nil else { return nil }
        return String(cString: out)
    }
}
