import CZeroMQ
import Cluster
import Foundation

/// A CURVE key pair as 40-character Z85 strings.
///
/// Files: a public key is `NAME.key`, its secret `NAME.key_secret` (mode 0600), each holding the Z85
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

    /// Reads a `.key_secret` file.
    public init(secretKeyFile path: String) throws {
        try self.init(secretKey: Curve.readKey(file: path))
    }

    /// Writes `directory/name.key` (public) and `directory/name.key_secret` (secret, mode 0600).
    @discardableResult
    public func write(directory: String, name: String) throws -> (publicFile: String, secretFile: String) {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let pubPath = (directory as NSString).appendingPathComponent("\(name).key")
        let secPath = (directory as NSString).appendingPathComponent("\(name).key_secret")
        try Curve.writeKey(publicKey, comment: "DEHVF CURVE public key of \(name)", to: pubPath, mode: 0o644)
        try Curve.writeKey(secretKey, comment: "DEHVF CURVE secret key of \(name): keep private", to: secPath, mode: 0o600)
        return (pubPath, secPath)
    }
}

/// A CURVE key that cannot be used: malformed, missing or unreadable, naming the file and what to do.
public struct CurveError: Error, Sendable, CustomStringConvertible {
    public enum Code: Sendable { case badKey, unreadable }
    public var code: Code
    public var message: String
    /// The file system's error, for an unreadable file.
    public var cause: (any Error)?

    public static func badKey(_ message: String) -> CurveError { CurveError(code: .badKey, message: message) }
    public static func unreadable(_ path: String, cause: any Error) -> CurveError {
        CurveError(code: .unreadable, message: "cannot read key file \(path); generate keys with `coordinator keys --out DIR`",
                   cause: cause)
    }

    public var description: String {
        switch code {
        case .badKey: "bad CURVE key: \(message)"
        case .unreadable: message + (cause.map { " (\(($0 as NSError).localizedDescription))" } ?? "")
        }
    }
}

public enum Curve {
    /// Writes the key files for a job: `out/coordinator.key`, `out/coordinator.key_secret`, and per worker
    /// `out/workers/worker-N.key` (the allowed-workers directory) and `out/worker-N.key_secret`.
    /// This is what `coordinator keys --out DIR` does.
    @discardableResult
    public static func generateJobKeys(out: String, workers: Int) throws -> (coordinator: CurveKeyPair, workers: [CurveKeyPair]) {
        let coordinator = try CurveKeyPair.generate()
        try coordinator.write(directory: out, name: "coordinator")
        let workersDir = (out as NSString).appendingPathComponent("workers")
        var pairs: [CurveKeyPair] = []
        for i in 1...max(workers, 1) {
            let pair = try CurveKeyPair.generate()
            let (pubFile, _) = try pair.write(directory: out, name: "worker-\(i)")
            try FileManager.default.createDirectory(atPath: workersDir, withIntermediateDirectories: true)
            let dest = (workersDir as NSString).appendingPathComponent("worker-\(i).key")
            try? FileManager.default.removeItem(atPath: dest)
            try FileManager.default.moveItem(atPath: pubFile, toPath: dest)
            pairs.append(pair)
        }
        return (coordinator, pairs)
    }

    /// The Z85 key in a key file (the first line that is not empty or a `#` comment).
    public static func readKey(file path: String) throws -> String {
        let text: String
        do { text = try String(contentsOfFile: path, encoding: .utf8) } catch {
            throw CurveError.unreadable(path, cause: error)
        }
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

    /// Every public key in a directory of `*.key` files, mapped to its file name (for logs).
    public static func allowedKeys(directory: String) throws -> [String: String] {
        let names: [String]
        do { names = try FileManager.default.contentsOfDirectory(atPath: directory) } catch {
            throw CurveError.unreadable(directory, cause: error)
        }
        var keys: [String: String] = [:]
        for n in names.sorted() where n.hasSuffix(".key") {
            keys[try readKey(file: (directory as NSString).appendingPathComponent(n))] = n
        }
        return keys
    }

    static func writeKey(_ key: String, comment: String, to path: String, mode: Int) throws {
        let text = "# \(comment)\n\(key)\n"
        _ = FileManager.default.createFile(atPath: path, contents: nil, attributes: [.posixPermissions: mode])
        try text.write(toFile: path, atomically: false, encoding: .utf8)
        try FileManager.default.setAttributes([.posixPermissions: mode], ofItemAtPath: path)
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
