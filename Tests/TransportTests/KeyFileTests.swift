import Foundation
import TestSupport
import Testing
import Transport

/// CURVE key files on disk: who can read them, what happens to keys already there, and what a planted
/// symbolic link or a loose directory does. Each case makes the situation for real in a scratch directory.
@Suite("CURVE key files")
struct KeyFileTests {
    /// Permission bits of `path` itself (lstat: a symbolic link is not followed).
    func mode(_ path: String) throws -> Int {
        var st = stat()
        guard lstat(path, &st) == 0 else { throw POSIXError(POSIXErrorCode(rawValue: errno) ?? .EIO) }
        return Int(st.st_mode) & 0o7777
    }

    func isSymlink(_ path: String) -> Bool {
        (try? FileManager.default.attributesOfItem(atPath: path)[.type] as? FileAttributeType) == .typeSymbolicLink
    }

    /// Every file under `dir` (relative path) with its bytes.
    func snapshot(_ dir: String) throws -> [String: Data] {
        var files: [String: Data] = [:]
        for name in try FileManager.default.subpathsOfDirectory(atPath: dir) {
            let path = dir + "/" + name
            var isDir: ObjCBool = false
            if FileManager.default.fileExists(atPath: path, isDirectory: &isDir), !isDir.boolValue {
                files[name] = try Data(contentsOf: URL(fileURLWithPath: path))
            }
        }
        return files
    }

    func curveError(_ body: () throws -> Void) -> CurveError? {
        do { try body() } catch let e as CurveError { return e } catch { Issue.record("not a CurveError: \(error)") }
        return nil
    }

    @Test("generateJobKeys makes OUT and OUT/workers 0700, secrets 0600, public keys at most 0644, and nothing else")
    func modes() throws {
        let tmp = try TemporaryDirectory("keys")
        defer { tmp.cleanup() }
        let out = tmp.file("a/b/keys")   // missing parents are made too
        let made = try Curve.generateJobKeys(out: out, workers: 2)
        #expect(try mode(out) == 0o700)
        #expect(try mode(out + "/workers") == 0o700)
        for secret in ["coordinator.key_secret", "worker-1.key_secret", "worker-2.key_secret"] {
            #expect(try mode(out + "/" + secret) == 0o600, "\(secret)")
        }
        // Public keys are 0644 before the umask; whatever the umask, never writable by others nor executable.
        for pub in ["coordinator.key", "workers/worker-1.key", "workers/worker-2.key"] {
            let m = try mode(out + "/" + pub)
            #expect(m & ~0o644 == 0 && m & 0o600 == 0o600, "\(pub): \(String(m, radix: 8))")
        }
        // No temporary or leftover file: each key file was written in place through its own descriptor.
        #expect(Set(try snapshot(out).keys) == ["coordinator.key", "coordinator.key_secret", "worker-1.key_secret",
                                                 "worker-2.key_secret", "workers/worker-1.key", "workers/worker-2.key"])
        #expect(try CurveKeyPair(secretKeyFile: out + "/worker-2.key_secret") == made.workers[1])
        #expect(try Curve.readKey(file: out + "/workers/worker-2.key") == made.workers[1].publicKey)
        #expect(made.replaced.isEmpty)
    }

    @Test("keys already in OUT: an error naming them that leaves them byte-identical; --force replaces every one")
    func existingKeys() throws {
        let tmp = try TemporaryDirectory("keys")
        defer { tmp.cleanup() }
        let out = tmp.file("keys")
        let first = try Curve.generateJobKeys(out: out, workers: 2)
        let before = try snapshot(out)

        let refused = curveError { try Curve.generateJobKeys(out: out, workers: 1) }
        #expect(refused?.code == .exists)
        for name in ["coordinator.key_secret", "worker-2.key_secret", "workers/worker-1.key"] {
            #expect(refused?.message.contains(name) == true, "\(refused?.message ?? "")")
        }
        #expect(refused?.message.contains("--force") == true)
        #expect(try snapshot(out) == before)

        // With fewer workers than before: the old worker-2 must not stay admitted.
        let second = try Curve.generateJobKeys(out: out, workers: 1, force: true)
        #expect(Set(second.replaced) == Set(before.keys))
        let after = try snapshot(out)
        #expect(Set(after.keys) == ["coordinator.key", "coordinator.key_secret", "worker-1.key_secret", "workers/worker-1.key"])
        for (name, bytes) in after { #expect(before[name] != bytes, "\(name) was not replaced") }
        #expect(try CurveKeyPair(secretKeyFile: out + "/coordinator.key_secret") == second.coordinator)
        #expect(second.coordinator != first.coordinator)
        #expect(try Curve.allowedKeys(directory: out + "/workers") == [second.workers[0].publicKey: "worker-1.key"])
        #expect(try mode(out + "/coordinator.key_secret") == 0o600)
    }

    @Test("a symbolic link planted at a key file's path is not written through, whether its target exists or not")
    func plantedSymlink() throws {
        let tmp = try TemporaryDirectory("keys")
        defer { tmp.cleanup() }
        let dir = tmp.file("keys")
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: false,
                                                attributes: [.posixPermissions: 0o700])
        let target = tmp.file("victim")
        try tmp.write("victim", "not a key\n")
        try FileManager.default.setAttributes([.posixPermissions: 0o644], ofItemAtPath: target)
        let pair = try CurveKeyPair.generate()

        // An existing target: nothing is written to it, its mode is unchanged, the link stays a link.
        try FileManager.default.createSymbolicLink(atPath: dir + "/a.key_secret", withDestinationPath: target)
        let e = curveError { try pair.write(directory: dir, name: "a") }
        #expect(e?.code == .exists && e?.path == dir + "/a.key_secret", "\(String(describing: e))")
        #expect(try String(contentsOfFile: target, encoding: .utf8) == "not a key\n")
        #expect(try mode(target) == 0o644)
        #expect(isSymlink(dir + "/a.key_secret"))

        // A dangling link: following it would create the target, with the secret in it.
        let absent = tmp.file("would-be-created")
        try FileManager.default.createSymbolicLink(atPath: dir + "/b.key_secret", withDestinationPath: absent)
        #expect(curveError { try pair.write(directory: dir, name: "b") }?.code == .exists)
        #expect(!FileManager.default.fileExists(atPath: absent))

        // generateJobKeys names the link like any key file; --force removes the link, never its target.
        let out = tmp.file("job")
        try Curve.generateJobKeys(out: out, workers: 1)
        try FileManager.default.removeItem(atPath: out + "/worker-1.key_secret")
        try FileManager.default.createSymbolicLink(atPath: out + "/worker-1.key_secret", withDestinationPath: target)
        #expect(curveError { try Curve.generateJobKeys(out: out, workers: 1) }?.message.contains("worker-1.key_secret") == true)
        let forced = try Curve.generateJobKeys(out: out, workers: 1, force: true)
        #expect(!isSymlink(out + "/worker-1.key_secret"))
        #expect(try mode(out + "/worker-1.key_secret") == 0o600)
        #expect(try CurveKeyPair(secretKeyFile: out + "/worker-1.key_secret") == forced.workers[0])
        #expect(try String(contentsOfFile: target, encoding: .utf8) == "not a key\n")
    }

    @Test("an existing OUT that the group or others can enter is refused and left as it was")
    func looseDirectory() throws {
        let tmp = try TemporaryDirectory("keys")
        defer { tmp.cleanup() }
        for loose in [0o755, 0o750, 0o701] {
            let out = tmp.file("loose-\(String(loose, radix: 8))")
            try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: false)
            try FileManager.default.setAttributes([.posixPermissions: loose], ofItemAtPath: out)
            let e = curveError { try Curve.generateJobKeys(out: out, workers: 1) }
            #expect(e?.code == .unsafePermissions && e?.message.contains("chmod 700 \(out)") == true, "\(String(describing: e))")
            #expect(try mode(out) == loose)
            #expect(try FileManager.default.contentsOfDirectory(atPath: out).isEmpty)
        }
        // A file where the directory should be.
        try tmp.write("file", "x")
        #expect(curveError { try Curve.generateJobKeys(out: tmp.file("file"), workers: 1) }?.code == .unwritable)
    }

    @Test("a secret key file its group or others can read is refused and says how to fix it; a public key file is not")
    func looseSecret() throws {
        let tmp = try TemporaryDirectory("keys")
        defer { tmp.cleanup() }
        let out = tmp.file("keys")
        let made = try Curve.generateJobKeys(out: out, workers: 1)
        let secret = out + "/worker-1.key_secret"
        for loose in [0o644, 0o640, 0o604, 0o660] {
            try FileManager.default.setAttributes([.posixPermissions: loose], ofItemAtPath: secret)
            let e = curveError { _ = try CurveKeyPair(secretKeyFile: secret) }
            #expect(e?.code == .unsafePermissions, "mode \(String(loose, radix: 8))")
            #expect(e?.message.contains("chmod 600 \(secret)") == true && e?.message.contains(String(loose, radix: 8)) == true,
                    "\(e?.message ?? "")")
        }
        try FileManager.default.setAttributes([.posixPermissions: 0o400], ofItemAtPath: secret)
        #expect(try CurveKeyPair(secretKeyFile: secret) == made.workers[0])
        // The coordinator's public key is meant to be handed out.
        try FileManager.default.setAttributes([.posixPermissions: 0o644], ofItemAtPath: out + "/coordinator.key")
        #expect(try Curve.readKey(file: out + "/coordinator.key") == made.coordinator.publicKey)
    }

    @Test("an allowed-workers directory without a *.key file is an error naming it and how to make keys")
    func emptyAllowList() throws {
        let tmp = try TemporaryDirectory("keys")
        defer { tmp.cleanup() }
        let out = tmp.file("keys")
        try Curve.generateJobKeys(out: out, workers: 1)
        let workers = out + "/workers"
        try FileManager.default.removeItem(atPath: workers + "/worker-1.key")
        // Not public keys: a secret put there by mistake, a note.
        try FileManager.default.copyItem(atPath: out + "/worker-1.key_secret", toPath: workers + "/worker-1.key_secret")
        try tmp.write("keys/workers/README", "worker keys go here\n")

        let e = curveError { _ = try Curve.allowedKeys(directory: workers) }
        #expect(e?.code == .noAllowedKeys && e?.path == workers)
        #expect(e?.message.contains(workers) == true && e?.message.contains("coordinator keys --out \(out)") == true,
                "\(e?.message ?? "")")
        let ctx = try ZMQContext()
        #expect(curveError { _ = try ZAPHandler(context: ctx, allowedDirectory: workers) { _ in } }?.code == .noAllowedKeys)

        // A missing directory says which one, too.
        let missing = curveError { _ = try Curve.allowedKeys(directory: tmp.file("nowhere")) }
        #expect(missing?.code == .unreadable && missing?.message.contains(tmp.file("nowhere")) == true)
    }
}
