import Foundation
import Model
import TestSupport
import Testing

/// Reading files written by Python's `safetensors` (Scripts/make_safetensors_fixtures.py) and by our
/// writer; strictness of `take` and `finish`.
@Suite("safetensors reader")
struct SafetensorsReaderTests {
    let mixed = Fixtures.safetensors.appendingPathComponent("mixed.safetensors")

    @Test("F32 from a Python-written file is borrowed from the map, zero-copy")
    func f32ZeroCopy() throws {
        let file = try SafetensorsFile(url: mixed)
        let a = try file.take("weight.f32", shape: [2, 3])
        let b = try file.take("weight.f32", shape: [2, 3])
        #expect(a.array == [-1, -0.5, 0, 0.5, 1, 1.5])
        #expect(a.data == b.data, "two takes of an F32 tensor should view the same mapped bytes")
        #expect(try file.take("scalar", shape: []).array == [7.25])
        #expect(try file.take("empty", shape: [0, 4]).count == 0)
        #expect(file.metadata == ["format": "pt", "note": "fixture"])
    }

    @Test("writing into a mapped tensor changes this process's copy only: no fault, the file is untouched")
    func copyOnWrite() throws {
        let before = try Data(contentsOf: mixed)
        let file = try SafetensorsFile(url: mixed)
        let a = try file.take("weight.f32", shape: [2, 3])
        a.data[0] = 42
        #expect(try file.take("weight.f32", shape: [2, 3]).array.first == 42, "the same map sees its own write")
        #expect(try SafetensorsFile(url: mixed).take("weight.f32", shape: [2, 3]).array.first == -1,
                "a new map of the file reads the original")
        #expect(try Data(contentsOf: mixed) == before)
    }

    @Test("F16 and BF16 convert exactly: bit-identical to the F32 twins torch wrote")
    func halfExact() throws {
        let file = try SafetensorsFile(url: mixed)
        #expect(file.info("half")?.dtype == .f16 && file.info("bf")?.dtype == .bf16)
        for (name, shape) in [("half", [16, 16]), ("bf", [4, 25])] {
            let converted = try file.take(name, shape: shape)
            let reference = try file.take(name + ".f32", shape: shape)
            #expect(converted.data != reference.data)
            #expect(converted.array.map(\.bitPattern) == reference.array.map(\.bitPattern), "\(name)")
        }
        let half = try file.take("half", shape: [16, 16]).array
        #expect(half.contains(.infinity) && half.contains(-.infinity))
        #expect(half.contains { $0 != 0 && abs($0) < 6.1e-5 }, "the fixture has F16 subnormals")
    }

    @Test("a tensor of an integer dtype fails when taken and can be ignored by finish")
    func integerDType() throws {
        let file = try SafetensorsFile(url: mixed)
        let error = modelError { _ = try file.take("ids", shape: [3]) }
        #expect(error?.code == .badDType)
        #expect(error?.message.contains("'ids'") == true && error?.message.contains("I64") == true)
        for name in file.names where name != "ids" {
            _ = try file.take(name, shape: file.info(name)!.shape)
        }
        let unused = modelError { try file.finish(ignoringPrefixes: []) }
        #expect(unused?.code == .unexpectedTensor)
        #expect(unused?.message.contains("ids") == true)
        try file.finish(ignoringPrefixes: ["ids"])
    }

    @Test("take names the tensor and both shapes; finish lists every tensor never taken")
    func strictness() throws {
        let file = try SafetensorsFile(url: mixed)
        let missing = modelError { _ = try file.take("nope.weight", shape: [1]) }
        #expect(missing?.code == .missingTensor)
        #expect(missing?.message.contains("'nope.weight'") == true)
        #expect(missing?.path == mixed.path)
        let misshapen = modelError { _ = try file.take("weight.f32", shape: [3, 2]) }
        #expect(misshapen?.code == .badShape)
        #expect(misshapen?.message.contains("'weight.f32' has shape [2, 3], expected [3, 2]") == true)
        _ = try file.take("weight.f32", shape: [2, 3])
        let unused = modelError { try file.finish(ignoringPrefixes: ["ids"]) }
        #expect(unused?.message.contains("6 tensor(s)") == true)
        for name in ["half", "half.f32", "bf", "bf.f32", "empty", "scalar"] {
            #expect(unused?.message.contains(name) == true)
        }
        #expect(unused?.message.contains("weight.f32") == false)
    }

    @Test("a sharded set written as transformers does reads as one source")
    func sharded() throws {
        let archive = try SafetensorsArchive(directory: Fixtures.safetensors.appendingPathComponent("sharded"))
        let expected = try SafetensorsFile(url: Fixtures.safetensors.appendingPathComponent("sharded-expected.safetensors"))
        #expect(archive.files.count == 2)
        #expect(archive.names == expected.names)
        #expect(archive.info("layer.1.weight")?.dtype == .f16 && archive.info("layer.1.bias")?.dtype == .bf16)
        _ = try archive.take("layer.0.weight", shape: [3, 4])
        let unused = modelError { try archive.finish(ignoringPrefixes: []) }
        #expect(unused?.message.contains("3 tensor(s)") == true)
        for name in expected.names {
            let shape = expected.info(name)!.shape
            #expect(try archive.take(name, shape: shape).array == expected.take(name, shape: shape).array, "\(name)")
        }
        try archive.finish(ignoringPrefixes: [])
        #expect(modelError { _ = try archive.take("layer.2.weight", shape: [1]) }?.code == .missingTensor)
    }

    /// Copies the sharded fixture into a temporary directory with `index` as its index.
    func shardedCopy(index: String) throws -> TemporaryDirectory {
        let dir = try TemporaryDirectory()
        let source = Fixtures.safetensors.appendingPathComponent("sharded")
        for name in ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"] {
            try FileManager.default.copyItem(at: source.appendingPathComponent(name), to: dir.fileURL(name))
        }
        try dir.write("model.safetensors.index.json", index)
        return dir
    }

    @Test("an index that lies: wrong shard, missing shard, path outside the directory, not JSON")
    func lyingIndex() throws {
        let one = "model-00001-of-00002.safetensors", two = "model-00002-of-00002.safetensors"
        let cases: [(String, ModelError.Code, String)] = [
            (#"{"weight_map": {"layer.0.weight": "\#(two)", "layer.1.weight": "\#(two)"}}"#, .badHeader, "'layer.0.weight'"),
            (#"{"weight_map": {"layer.0.weight": "model-00003-of-00003.safetensors"}}"#, .fileNotFound, "model-00003"),
            (#"{"weight_map": {"layer.0.weight": "../\#(one)"}}"#, .badHeader, "not a file name"),
            (#"{"weight_map": {}}"#, .badHeader, "empty"),
            (#"{"weight_map": ["#, .badHeader, "weight_map"),
        ]
        for (index, code, phrase) in cases {
            let dir = try shardedCopy(index: index)
            defer { dir.cleanup() }
            let error = modelError { _ = try SafetensorsArchive(directory: dir.url) }
            #expect(error?.code == code, "\(index)")
            #expect(error?.description.contains(phrase) == true, "\(error?.description ?? "no error") for \(index)")
        }
    }

    @Test("a tensor stored in two shards is an error")
    func duplicateAcrossShards() throws {
        let dir = try TemporaryDirectory()
        defer { dir.cleanup() }
        let t = Tensor(shape: [2], values: [1, 2])
        try SafetensorsWriter.write(TensorSet([("w", t)]), to: dir.fileURL("a.safetensors"))
        try SafetensorsWriter.write(TensorSet([("w", t), ("v", t)]), to: dir.fileURL("b.safetensors"))
        try dir.write("model.safetensors.index.json", #"{"weight_map": {"w": "a.safetensors", "v": "b.safetensors"}}"#)
        let error = modelError { _ = try SafetensorsArchive(directory: dir.url) }
        #expect(error?.message.contains("'w' is in both a.safetensors and b.safetensors") == true)
    }

    @Test("a directory without weights, and one that does not exist")
    func noWeights() throws {
        let dir = try TemporaryDirectory()
        defer { dir.cleanup() }
        #expect(modelError { _ = try SafetensorsArchive(directory: dir.url) }?.code == .fileNotFound)
        let gone = dir.fileURL("absent")
        let error = modelError { _ = try SafetensorsArchive(directory: gone) }
        #expect(error?.code == .fileNotFound && error?.path == gone.path)
    }

    @Test("the writer round-trips F32 exactly and F16/BF16 to the nearest representable value",
          arguments: [SafetensorsWriter.StoredType.f32, .f16, .bf16])
    func writerRoundTrip(stored: SafetensorsWriter.StoredType) throws {
        let dir = try TemporaryDirectory()
        defer { dir.cleanup() }
        let values: [Float] = [0, -0.0, 1, -1.5, 3.14159, 1e-3, 123.456, 6e-6, -70000]
        let a = Tensor(shape: [3, 3], values: values)
        let b = Tensor(shape: [2], values: [0.25, 8])
        let url = dir.fileURL("w.safetensors")
        try SafetensorsWriter.write(TensorSet([("layer.a", a), ("layer.b", b)]), as: stored, metadata: ["format": "pt"], to: url)
        let bytes = try Data(contentsOf: url)
        let headerLength = bytes.prefix(8).withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) }
        #expect(headerLength % 8 == 0, "the header is padded to 8 bytes like Python's, so F32 data is aligned")
        let file = try SafetensorsFile(url: url)
        #expect(file.metadata == ["format": "pt"])
        #expect(file.info("layer.a")?.dtype.description == stored.rawValue)
        let read = try file.take("layer.a", shape: [3, 3]).array
        let expected: [Float] = switch stored {
        case .f32: values
        case .f16: values.map { HalfConversion.float(fromHalf: HalfConversion.half(from: $0)) }
        case .bf16: values.map { HalfConversion.float(fromBFloat16: HalfConversion.bfloat16(from: $0)) }
        }
        #expect(read.map(\.bitPattern) == expected.map(\.bitPattern))
        #expect(try file.take("layer.b", shape: [2]).array == [0.25, 8])
        if stored == .f16 { #expect(read[8] == -.infinity, "-70000 is past the F16 range") }
        try file.finish(ignoringPrefixes: [])
    }

    @Test("the writer refuses duplicate and reserved names")
    func writerNames() {
        let t = Tensor(shape: [1], values: [1])
        #expect(modelError { _ = try SafetensorsWriter.encode(TensorSet([("a", t), ("a", t)])) }?.code == .badInput)
        #expect(modelError { _ = try SafetensorsWriter.encode(TensorSet([("__metadata__", t)])) }?.code == .badInput)
    }
}
