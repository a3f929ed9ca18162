import Foundation
import Model
import Shard

/// The data path against the file system's own speed: random micro-batch reads from an HDF5 dataset
/// (DatasetFile.readBatch) vs reading the same file's bytes with pread, and checkpoint write/read
/// (Checkpoint.write / Checkpoint.read, LLaMA-7B-scale fuser with AdamW moments) vs a raw write+fsync and
/// read of the same byte count. The files are fresh, so reads mostly come from the page cache (as
/// they would in a training run after the first epoch); the write side includes fsync.
enum IOBench {
    static func run(_ o: BenchOptions, scratch: String, into report: Report) throws {
        let dir = (scratch as NSString).appendingPathComponent("dehvf-bench-io-\(getpid())")
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }

        let shape = BenchShape.paper
        let n = 1024, t = shape.textTokens, side = shape.imageSize
        report.section("io: dataset of \(n) samples (\(side)x\(side) images, \(t) tokens), micro-batch \(shape.batch)")
        var contents = DatasetContents(task: .multipleChoice, count: n, tokens: t, imageHeight: side, imageWidth: side)
        var rng = BenchRNG(21)
        for i in 0..<contents.images.count { contents.images[i] = UInt8(truncatingIfNeeded: rng.next()) }
        for i in 0..<n {
            contents.hasImage[i] = 1
            contents.lengths[i] = Int32(t)
            contents.numChoices![i] = 4
            contents.answerPosition![i] = Int32(t - 17)
            for j in 0..<t { contents.inputIDs[i * t + j] = Int32(rng.below(4096)) }
            for j in (t - 16)..<t { contents.labels[i * t + j] = contents.inputIDs[i * t + j] }
        }
        contents.choiceTokenIDs = [10, 11, 12, 13]
        let path = (dir as NSString).appendingPathComponent("data.h5")
        try DatasetWriter.write(contents, to: path)
        let file = try DatasetFile(path: path)
        let sampleBytes = Double(3 * side * side + 2 * 4 * t + 4 * 5)
        var pick = BenchRNG(22)
        let batches = 16
        let read = try timeRuns(runs: o.runs, warmup: o.warmup) {
            for _ in 0..<batches { _ = try file.readBatch(indices: (0..<shape.batch).map { _ in pick.below(n) }) }
        }
        let samples = Double(batches * shape.batch)
        let fileBytes = (try FileManager.default.attributesOfItem(atPath: path)[.size] as? NSNumber)?.doubleValue ?? 0
        let raw = try timeRuns(runs: o.runs, warmup: o.warmup) { try readAll(path) }
        report.add("io", config: "dataset", mode: "hdf5", name: "readBatch, random indices", unit: "samples/s", read.rate(samples))
        report.add("io", config: "dataset", mode: "hdf5", name: "readBatch payload rate", unit: "MB/s", read.rate(samples * sampleBytes / 1e6))
        report.add("io", config: "dataset", mode: "raw", name: "pread whole file, 1 MiB blocks", unit: "MB/s", raw.rate(fileBytes / 1e6))
        report.add("io", config: "dataset", mode: "raw", name: "same bytes as samples", unit: "samples/s", raw.rate(fileBytes / sampleBytes))
        report.add("io", config: "dataset", mode: "hdf5/raw", name: "readBatch / raw", unit: "ratio",
                   read.rate(samples * sampleBytes).over(raw.rate(fileBytes)))
        // Where readBatch's time goes: the images column alone, read as readBatch does (one H5Dread of
        // OR-ed row hyperslabs) and as one H5Dread per row; and pread of the same number of image-sized
        // blocks at random offsets (the raw floor for random access).
        let images = try HDF5File.open(path).root.openDataset("images")
        let picks = (0..<batches).map { _ in Array(Set((0..<shape.batch).map { _ in pick.below(n) })).sorted() }
        let imageBytes = 3 * side * side
        let rowsMB = Double(picks.reduce(0) { $0 + $1.count } * imageBytes) / 1e6
        let orRead = try timeRuns(runs: o.runs, warmup: o.warmup) {
            for p in picks { _ = try images.readRows(sorted: p, as: UInt8.self) }
        }
        let perRow = try timeRuns(runs: o.runs, warmup: o.warmup) {
            for p in picks { for r in p { _ = try images.readRows(sorted: [r], as: UInt8.self) } }
        }
        let randomPread = try timeRuns(runs: o.runs, warmup: o.warmup) {
            try preadBlocks(path, count: picks.reduce(0) { $0 + $1.count }, size: imageBytes, fileBytes: Int(fileBytes), rng: &pick)
        }
        report.add("io", config: "dataset", mode: "hdf5", name: "images, one H5Dread of OR-ed rows", unit: "MB/s", orRead.rate(rowsMB))
        report.add("io", config: "dataset", mode: "hdf5", name: "images, one H5Dread per row", unit: "MB/s", perRow.rate(rowsMB))
        report.add("io", config: "dataset", mode: "raw", name: "pread image-sized blocks, random", unit: "MB/s", randomPread.rate(rowsMB))

        // Checkpoint: the fuser of a LLaMA-7B + ViT-L/14 job with its two AdamW moments.
        let config = try LargeShape.fuser()
        let params = config.benchParameters()
        let checkpoint = Checkpoint(step: 100, epoch: 1, seed: 0, config: "{}", backbone: "bench",
                                    params: params, expAvg: params.copy(), expAvgSq: params.copy(),
                                    lossHistory: [Float](repeating: 1, count: 100))
        let ckDir = (dir as NSString).appendingPathComponent("checkpoints")
        try FileManager.default.createDirectory(atPath: ckDir, withIntermediateDirectories: true)
        var written = ""
        let write = try timeRuns(runs: o.runs, warmup: o.warmup) { written = try checkpoint.write(to: ckDir, keep: 1) }
        let ckBytes = (try FileManager.default.attributesOfItem(atPath: written)[.size] as? NSNumber)?.doubleValue ?? 0
        let readCk = try timeRuns(runs: o.runs, warmup: o.warmup) { _ = try Checkpoint.read(path: written) }
        let rawPath = (dir as NSString).appendingPathComponent("raw.bin")
        let buffer = [UInt8](repeating: 7, count: Int(ckBytes))
        let rawWrite = try timeRuns(runs: o.runs, warmup: o.warmup) { try writeSync(rawPath, buffer) }
        let rawRead = try timeRuns(runs: o.runs, warmup: o.warmup) { try readAll(rawPath) }
        report.section("io: checkpoint of \(config.parameterCount) parameters x 3 (\(LargeShape.name) fuser), \(Int(ckBytes)) bytes")
        report.add("io", config: "checkpoint", mode: "hdf5", name: "write (temp, fsync, rename)", unit: "MB/s", write.rate(ckBytes / 1e6))
        report.add("io", config: "checkpoint", mode: "raw", name: "write + fsync", unit: "MB/s", rawWrite.rate(ckBytes / 1e6))
        report.add("io", config: "checkpoint", mode: "hdf5/raw", name: "write ratio", unit: "ratio", rawWrite.over(write))
        report.add("io", config: "checkpoint", mode: "hdf5", name: "read", unit: "MB/s", readCk.rate(ckBytes / 1e6))
        report.add("io", config: "checkpoint", mode: "raw", name: "read", unit: "MB/s", rawRead.rate(ckBytes / 1e6))
        report.add("io", config: "checkpoint", mode: "hdf5/raw", name: "read ratio", unit: "ratio", rawRead.over(readCk))
    }

    static func readAll(_ path: String) throws {
        let fd = open(path, O_RDONLY)
        guard fd >= 0 else { throw CocoaError(.fileReadNoPermission) }
        defer { close(fd) }
        let block = 1 << 20
        let buf = UnsafeMutableRawPointer.allocate(byteCount: block, alignment: 64)
        defer { buf.deallocate() }
        var offset: off_t = 0
        while true {
            let got = pread(fd, buf, block, offset)
            if got <= 0 { break }
            offset += off_t(got)
        }
    }

    static func preadBlocks(_ path: String, count: Int, size: Int, fileBytes: Int, rng: inout BenchRNG) throws {
        let fd = open(path, O_RDONLY)
        guard fd >= 0 else { throw CocoaError(.fileReadNoPermission) }
        defer { close(fd) }
        let buf = UnsafeMutableRawPointer.allocate(byteCount: size, alignment: 64)
        defer { buf.deallocate() }
        for _ in 0..<count { _ = pread(fd, buf, size, off_t(rng.below(max(1, fileBytes - size)))) }
    }

    static func writeSync(_ path: String, _ bytes: [UInt8]) throws {
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        guard fd >= 0 else { throw CocoaError(.fileWriteNoPermission) }
        defer { close(fd) }
        var done = 0
        try bytes.withUnsafeBytes { p in
            while done < p.count {
                let w = write(fd, p.baseAddress! + done, p.count - done)
                guard w > 0 else { throw CocoaError(.fileWriteUnknown) }
                done += w
            }
        }
        fsync(fd)
    }
}
