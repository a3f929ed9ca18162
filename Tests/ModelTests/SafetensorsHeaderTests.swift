import Foundation
import Model
import TestSupport
import Testing

/// Every way a header can lie, produced by writing such a file: each must give a typed `.badHeader`
/// error naming the file, never a crash or an out-of-bounds read.
@Suite("safetensors header validation")
struct SafetensorsHeaderTests {
    /// Writes `data` as a file, opens it, and returns the error (nil if it opened).
    func openError(_ data: Data) throws -> (ModelError?, String) {
        let dir = try TemporaryDirectory()
        defer { dir.cleanup() }
        let url = dir.fileURL("lying.safetensors")
        try dir.write("lying.safetensors", data)
        return (modelError { _ = try SafetensorsFile(url: url) }, url.path)
    }

    func expectBadHeader(_ data: Data, mentions phrases: [String],
                         sourceLocation: SourceLocation = #_sourceLocation) throws {
        let (error, path) = try openError(data)
        #expect(error?.code == .badHeader, sourceLocation: sourceLocation)
        #expect(error?.path == path, sourceLocation: sourceLocation)
        for phrase in phrases {
            #expect(error?.message.contains(phrase) == true, "\(error?.message ?? "no error") lacks '\(phrase)'",
                    sourceLocation: sourceLocation)
        }
    }

    @Test("an empty file and one shorter than the length field")
    func tooShort() throws {
        try expectBadHeader(Data(), mentions: ["0 bytes"])
        try expectBadHeader(Data([1, 0, 0]), mentions: ["3 bytes"])
    }

    @Test("a header length larger than the file")
    func lengthPastEnd() throws {
        try expectBadHeader(rawSafetensors(header: "{}", declaredLength: 4096), mentions: ["4096", "only 2"])
    }

    @Test("an absurd header length, over 100 MB, even as a huge 64-bit value")
    func absurdLength() throws {
        try expectBadHeader(rawSafetensors(header: "{}", declaredLength: 200_000_000), mentions: ["200000000", "limit"])
        try expectBadHeader(rawSafetensors(header: "{}", declaredLength: UInt64.max), mentions: ["limit"])
    }

    @Test("invalid JSON, a JSON array, and entries of the wrong form")
    func invalidJSON() throws {
        try expectBadHeader(rawSafetensors(header: "{\"a\": {\"dtype\": \"F32\""), mentions: ["JSON"])
        try expectBadHeader(rawSafetensors(header: "[1, 2]"), mentions: ["JSON"])
        try expectBadHeader(rawSafetensors(header: "\u{FF}\u{FE}garbage"), mentions: ["JSON"])
        try expectBadHeader(rawSafetensors(header: #"{"a": {"shape": [1], "data_offsets": [0, 4]}}"#), mentions: ["dtype"])
        try expectBadHeader(rawSafetensors(header: #"{"a": {"dtype": "F32", "shape": [1.5], "data_offsets": [0, 4]}}"#, data: [0, 0, 0, 0]),
                            mentions: ["JSON"])
        try expectBadHeader(rawSafetensors(header: #"{"a": {"dtype": "F32", "shape": [1], "data_offsets": [0]}}"#, data: [0, 0, 0, 0]),
                            mentions: ["'a'", "data_offsets"])
        try expectBadHeader(rawSafetensors(header: #"{"a": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}}"#, data: [0, 0, 0, 0]),
                            mentions: ["'a'", "negative"])
        try expectBadHeader(rawSafetensors(header: #"{"__metadata__": {"k": 3}}"#), mentions: ["JSON"])
        // Deep nesting must be refused by the parser, not overflow the stack.
        try expectBadHeader(rawSafetensors(header: String(repeating: "[", count: 200_000)), mentions: ["JSON"])
        try expectBadHeader(rawSafetensors(header: "{\"a\": " + String(repeating: "{\"b\": ", count: 100_000)), mentions: ["JSON"])
    }

    @Test("offsets past the data section, as in a truncated file")
    func offsetsOutOfBounds() throws {
        try expectBadHeader(rawSafetensors(header: #"{"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}"#,
                                           data: [UInt8](repeating: 0, count: 12)),
                            mentions: ["'w'", "16", "12 bytes"])
        // A real file cut short by one byte.
        var data = try SafetensorsWriter.encode(TensorSet([("w", Tensor(shape: [2, 2], values: [1, 2, 3, 4]))]))
        data.removeLast()
        try expectBadHeader(data, mentions: ["'w'", "truncated"])
    }

    @Test("begin greater than end, and negative offsets")
    func beginAfterEnd() throws {
        try expectBadHeader(rawSafetensors(header: #"{"w": {"dtype": "F32", "shape": [0], "data_offsets": [8, 4]}}"#,
                                           data: [UInt8](repeating: 0, count: 8)),
                            mentions: ["'w'", "[8, 4]"])
        try expectBadHeader(rawSafetensors(header: #"{"w": {"dtype": "F32", "shape": [1], "data_offsets": [-4, 0]}}"#,
                                           data: [UInt8](repeating: 0, count: 8)),
                            mentions: ["'w'"])
    }

    @Test("a byte size that disagrees with shape x dtype size, and a shape whose size overflows")
    func byteSizeMismatch() throws {
        try expectBadHeader(rawSafetensors(header: #"{"w": {"dtype": "F16", "shape": [2, 3], "data_offsets": [0, 8]}}"#,
                                           data: [UInt8](repeating: 0, count: 8)),
                            mentions: ["'w'", "F16", "[2, 3]", "12 bytes", "span 8"])
        try expectBadHeader(rawSafetensors(header: #"{"w": {"dtype": "F32", "shape": [4611686018427387904, 4], "data_offsets": [0, 8]}}"#,
                                           data: [UInt8](repeating: 0, count: 8)),
                            mentions: ["'w'"])
    }

    @Test("two tensors whose byte ranges overlap")
    func overlap() throws {
        let header = #"{"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}, "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}"#
        try expectBadHeader(rawSafetensors(header: header, data: [UInt8](repeating: 0, count: 12)),
                            mentions: ["'a'", "'b'", "overlap"])
        // Empty tensors take no bytes, so sharing an offset with them is fine.
        let fine = #"{"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}, "e": {"dtype": "F32", "shape": [0], "data_offsets": [4, 4]}}"#
        #expect(try openError(rawSafetensors(header: fine, data: [UInt8](repeating: 0, count: 8))).0 == nil)
    }

    @Test("an unknown dtype string opens, and fails only when that tensor is taken")
    func unknownDType() throws {
        let dir = try TemporaryDirectory()
        defer { dir.cleanup() }
        let header = #"{"q": {"dtype": "Q4_K", "shape": [8], "data_offsets": [0, 5]}, "w": {"dtype": "F32", "shape": [1], "data_offsets": [5, 9]}}"#
        try dir.write("q.safetensors", rawSafetensors(header: header, data: [0, 0, 0, 0, 0, 0, 0, 0x80, 0x3f]))
        let file = try SafetensorsFile(url: dir.fileURL("q.safetensors"))
        #expect(file.info("q")?.dtype == .unknown("Q4_K"))
        // "w" sits 5 bytes into the data section, so it may be unaligned: then it is copied, not borrowed.
        #expect(try file.take("w", shape: [1]).array == [1])
        let error = modelError { _ = try file.take("q", shape: [8]) }
        #expect(error?.code == .badDType)
        #expect(error?.message.contains("'q'") == true && error?.message.contains("Q4_K") == true)
        #expect(error?.path == dir.fileURL("q.safetensors").path)
    }

    @Test("__metadata__ is read, not taken for a tensor")
    func metadata() throws {
        let dir = try TemporaryDirectory()
        defer { dir.cleanup() }
        let header = #"{"__metadata__": {"format": "pt"}, "w": {"dtype": "F32", "shape": [], "data_offsets": [0, 4]}}"#
        try dir.write("m.safetensors", rawSafetensors(header: header, data: [0, 0, 0x80, 0x3f]))
        let file = try SafetensorsFile(url: dir.fileURL("m.safetensors"))
        #expect(file.metadata == ["format": "pt"])
        #expect(file.names == ["w"])
        #expect(try file.take("w", shape: []).array == [1])
        try file.finish(ignoringPrefixes: [])
    }
}
