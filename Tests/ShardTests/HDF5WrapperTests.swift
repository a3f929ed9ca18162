import Foundation
import Model
import Shard
import TestSupport
import Testing

@Suite("HDF5 wrapper", .serialized)
struct HDF5WrapperTests {
    @Test("hyperslab row reads (coalesced runs), point reads, row writes, scalars and attributes")
    func selections() throws {
        let dir = try TemporaryDirectory("shard")
        defer { dir.cleanup() }
        let f = try HDF5File.create(dir.file("w.h5"))
        let values = (0..<(20 * 3)).map { Int64($0 * 10) }
        try f.root.write("m", values, shape: [20, 3], chunk: [4, 3], fletcher32: true)
        let d = try f.root.createDataset("r", type: .int32, shape: [6, 2], chunk: [2, 2])
        try [Int32(7), 8, 9, 10].withUnsafeBufferPointer { try d.writeRows(start: 3, $0) }
        try f.root.write("s", [Float(1.5)], shape: [])
        try f.root.setAttribute("n", int: -3)
        try f.root.setAttribute("v", floats: [1, 2])
        try f.root.setAttribute("u", string: "héllo")
        try f.close()

        let g = try HDF5File.open(dir.file("w.h5"))
        let m = try g.root.openDataset("m")
        #expect(m.shape == [20, 3] && m.typeName == "int64")
        let rows = [0, 1, 2, 5, 9, 10, 19]  // runs 0..<3, 5, 9..<11, 19
        let got = try m.readRows(sorted: rows, as: Int64.self)
        #expect(got == rows.flatMap { r in (0..<3).map { Int64((r * 3 + $0) * 10) } })
        #expect(try m.readPoints([[19, 2], [0, 0], [7, 1]], as: Int64.self) == [590, 0, 220])
        expectShardError(.badType, mentioning: ["/m", "float32", "int64"]) { _ = try m.readAll(as: Float.self) }
        expectShardError(.badValue, mentioning: ["/m", "[20, 0]"]) { _ = try m.readPoints([[20, 0]], as: Int64.self) }
        #expect(try g.root.openDataset("r").readAll(as: Int32.self) == [0, 0, 0, 0, 0, 0, 7, 8, 9, 10, 0, 0])
        let s = try g.root.openDataset("s")
        #expect(s.shape == [])
        #expect(try s.readAll(as: Float.self) == [1.5])
        #expect(try g.root.readInt("n") == -3 && g.root.readFloats("v") == [1, 2] && g.root.readString("u") == "héllo")
        expectShardError(.badAttribute, mentioning: ["@u", "integer scalar"]) { _ = try g.root.readInt("u") }
        expectShardError(.missingAttribute, mentioning: ["@nope"]) { _ = try g.root.readString("nope") }
        expectShardError(.missingDataset, mentioning: ["/nope"]) { _ = try g.root.openDataset("nope") }
        #expect(try g.root.childNames() == ["m", "r", "s"])
    }

    @Test("batches read from many threads at once match a single-threaded read (the global lock)")
    func concurrentReads() async throws {
        let dir = try TemporaryDirectory("shard")
        defer { dir.cleanup() }
        let c = makeContents(n: 64, h: 6, w: 6)
        try DatasetWriter.write(c, to: dir.file("d.h5"))
        let f = try DatasetFile(path: dir.file("d.h5"))
        let batches = (0..<32).map { k in (0..<4).map { (k * 7 + $0 * 13) % 64 } }
        let expected = try batches.map { try f.readBatch(indices: $0).inputIDs }
        let got = try await withThrowingTaskGroup(of: (Int, [Int32]).self) { group in
            for (k, b) in batches.enumerated() {
                group.addTask { (k, try f.readBatch(indices: b).inputIDs) }
            }
            var out = [[Int32]](repeating: [], count: batches.count)
            for try await (k, ids) in group { out[k] = ids }
            return out
        }
        #expect(got == expected)
    }

    @Test("automatic chunking keeps chunks near 64 KiB: one 224 px image, 32 rows of 512 tokens")
    func chunking() {
        #expect(DatasetWriter.automaticChunkRows(rowBytes: 3 * 224 * 224) == 1)
        #expect(DatasetWriter.automaticChunkRows(rowBytes: 4 * 512) == 32)
        #expect(DatasetWriter.automaticChunkRows(rowBytes: 1) == 1024)
    }

    @Test("reading every row of a 37 MB column in random batches keeps two chunks cached, not the column")
    func chunkCacheIsBounded() throws {
        // A worker reads each image once (its features are kept instead), so a chunk cache that keeps every
        // chunk it decoded held a copy of the images column: 48 MB of the demo's 49, which `coordinator plan`
        // said nothing of.
        let dir = try TemporaryDirectory("shard-chunk-cache")
        defer { dir.cleanup() }
        let rows = 3000, rowBytes = 3 * 64 * 64
        let f = try HDF5File.create(dir.file("images.h5"))
        try f.root.write("images", [UInt8](repeating: 7, count: rows * rowBytes), shape: [rows, 3, 64, 64], chunk: [8, 3, 64, 64],
                        fletcher32: true)   // as DatasetWriter writes the images
        try f.close()
        let images = try HDF5File.open(dir.file("images.h5")).root.openDataset("images")
        func resident() -> Int {
            let status = (try? String(contentsOfFile: "/proc/self/status", encoding: .utf8)) ?? ""
            let line = status.split(separator: "\n").first { $0.hasPrefix("VmRSS:") } ?? ""
            return (line.split(separator: " ").dropFirst().first.flatMap { Int($0) } ?? 0) * 1024
        }
        var order = Array(0..<rows)
        var rng = SystemRandomNumberGenerator()
        order.shuffle(using: &rng)
        _ = try images.readRows(sorted: Array(order[0..<8]).sorted(), as: UInt8.self)
        let before = resident()
        var sum = 0
        for first in stride(from: 8, to: rows, by: 8) {
            sum += try images.readRows(sorted: Array(order[first..<(first + 8)]).sorted(), as: UInt8.self).count
        }
        let grown = resident() - before
        #expect(sum == (rows - 8) * rowBytes)
        #expect(grown < 8 << 20, "resident memory grew by \(grown / 1_000_000) MB reading a \(rows * rowBytes / 1_000_000) MB column")
    }
}
