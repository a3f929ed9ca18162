import Crypto
import Foundation
import Model
import TestSupport
import Testing

@Suite("backbone fingerprint")
struct BackboneFingerprintTests {
    @Test("chunked SHA-256 equals the one-shot digest, including across the 16 MiB chunk boundary")
    func chunkedHash() {
        #expect(Array("abc".utf8).withUnsafeBytes { BackboneFingerprint.sha256Hex($0) }
                == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        var rng = SplitMix64(seed: 3)
        let bytes = (0..<(40 << 20) + 13).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
        let oneShot = SHA256.hash(data: bytes).map { String(format: "%02x", $0) }.joined()
        #expect(bytes.withUnsafeBytes { BackboneFingerprint.sha256Hex($0) } == oneShot)
    }

    @Test("one file: name, size and digest; a changed byte changes it; shards are listed in order")
    func directories() throws {
        let dir = try TemporaryDirectory()
        defer { dir.cleanup() }
        try SafetensorsWriter.write(TensorSet([("w", Tensor(shape: [4], values: [1, 2, 3, 4]))]), to: dir.fileURL("model.safetensors"))
        try dir.write("config.json", "{}")
        let data = try Data(contentsOf: dir.fileURL("model.safetensors"))
        let digest = SHA256.hash(data: data).map { String(format: "%02x", $0) }.joined()
        let first = try BackboneFingerprint.of(directory: dir.url)
        #expect(first == "model.safetensors:\(data.count):\(digest)")
        #expect(try BackboneFingerprint.of(directory: dir.url) == first, "stable")

        var changed = data
        changed[changed.count - 1] ^= 1
        try dir.write("model.safetensors", changed)
        #expect(try BackboneFingerprint.of(directory: dir.url) != first)

        let sharded = Fixtures.safetensors.appendingPathComponent("sharded")
        let parts = try BackboneFingerprint.of(directory: sharded).split(separator: ",")
        #expect(parts.count == 2)
        #expect(parts[0].hasPrefix("model-00001-of-00002.safetensors:") && parts[1].hasPrefix("model-00002-of-00002.safetensors:"))
        let pair = try BackboneFingerprint.of(vision: dir.url, language: sharded)
        #expect(pair.hasPrefix("vision=model.safetensors:") && pair.contains(";language=model-00001-of-00002"))
    }
}
