import Foundation
import Model

/// A training checkpoint (DESIGN §5): parameters, AdamW moments and loss history after `step` steps.
///
/// On disk: `step-NNNNNNNN.h5` files in a directory, beside a `latest` text file naming the newest.
/// Both are replaced durably (temporary name, fsync, rename, fsync of the directory), and `latest`
/// moves only after the checkpoint it names is safe, so a crash at any moment leaves `latest` naming a
/// complete file (or absent before the first checkpoint).
public struct Checkpoint: @unchecked Sendable {
    public static let format = "dehvf-checkpoint"
    public static let version: Int64 = 1
    public static let latestName = "latest"
    /// Names the checkpoint with the best held-out score (`checkpoint.keep_best`); pruning spares it.
    public static let bestName = "best"

    /// Optimizer steps completed.
    public var step: Int
    public var epoch: Int
    public var seed: UInt64
    /// The job config as JSON.
    public var config: String
    /// Fingerprint of the frozen weights (sizes and SHA-256 of the safetensors files).
    public var backbone: String
    public var params: TensorSet
    public var expAvg: TensorSet
    public var expAvgSq: TensorSet
    /// One loss per completed step (count == step).
    public var lossHistory: [Float]
    /// The file this was read from, if it was.
    public var source: String?

    public init(step: Int, epoch: Int, seed: UInt64, config: String, backbone: String, params: TensorSet,
                expAvg: TensorSet, expAvgSq: TensorSet, lossHistory: [Float]) {
        self.step = step
        self.epoch = epoch
        self.seed = seed
        self.config = config
        self.backbone = backbone
        self.params = params
        self.expAvg = expAvg
        self.expAvgSq = expAvgSq
        self.lossHistory = lossHistory
    }

    /// `step-NNNNNNNN.h5`.
    public static func fileName(step: Int) -> String { String(format: "step-%08d.h5", step) }

    /// The step of a checkpoint file name, or nil if `name` is not one.
    public static func step(ofFileName name: String) -> Int? {
        guard name.hasPrefix("step-"), name.hasSuffix(".h5") else { return nil }
        let digits = name.dropFirst(5).dropLast(3)
        guard digits.count >= 8, digits.allSatisfy(\.isASCII), digits.allSatisfy(\.isNumber) else { return nil }
        return Int(digits)
    }

    // MARK: Writing

    /// Writes this checkpoint into `dir` (created if needed), moves `latest` to it, then deletes all but
    /// the newest `keep` checkpoint files (and temporaries left by a crashed writer). Returns the path.
    @discardableResult
    public func write(to dir: String, keep: Int) throws -> String {
        guard keep >= 1 else {
            throw ShardError(.badValue, "checkpoint.keep must be at least 1", path: dir, expected: ">= 1",
                             found: "\(keep)")
        }
        try checkConsistent(path: dir)
        do {
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        } catch {
            throw ShardError(.io, "cannot create the checkpoint directory", path: dir, cause: error)
        }
        let name = Self.fileName(step: step)
        let path = (dir as NSString).appendingPathComponent(name)
        try DurableFile.write(path) { tmp in try writeFile(tmp) }
        try DurableFile.write((dir as NSString).appendingPathComponent(Self.latestName), text: name + "\n")
        try Self.prune(dir: dir, keep: keep, protecting: name)
        return path
    }

    /// Writes the checkpoint file at `path`; on any error nothing is left there (`HDF5File.create(_:_:)`).
    private func writeFile(_ path: String) throws {
        try HDF5File.create(path) { file in
            let root = file.root
            try root.setAttribute("format", string: Self.format)
            try root.setAttribute("version", int: Self.version)
            try root.setAttribute("step", int: Int64(step))
            try root.setAttribute("epoch", int: Int64(epoch))
            try root.setAttribute("seed", int: Int64(bitPattern: seed))
            try root.setAttribute("config", string: config)
            try root.setAttribute("backbone", string: backbone)
            try TensorFile.write(params, into: try root.createGroup("params"))
            let optimizer = try root.createGroup("optimizer")
            try TensorFile.write(expAvg, into: try optimizer.createGroup("exp_avg"))
            try TensorFile.write(expAvgSq, into: try optimizer.createGroup("exp_avg_sq"))
            let history = try root.createGroup("history")
            try history.write("loss", lossHistory, shape: [lossHistory.count],
                              chunk: lossHistory.isEmpty ? nil : [lossHistory.count], fletcher32: !lossHistory.isEmpty)
        }
    }

    /// Parameters and both moments name the same tensors with the same shapes; the loss history has
    /// one entry per step.
    private func checkConsistent(path: String) throws {
        func sig(_ l: TensorSet) -> [String] { l.map(\.description) }
        for (label, list) in [("optimizer/exp_avg", expAvg), ("optimizer/exp_avg_sq", expAvgSq)]
        where sig(list) != sig(params) {
            throw ShardError(.badShape, "optimizer state does not match the parameters", path: path, object: label,
                             expected: sig(params).joined(separator: " "), found: sig(list).joined(separator: " "))
        }
        if lossHistory.count != step {
            throw ShardError(.badShape, "history/loss must hold one loss per step", path: path,
                             object: "/history/loss", expected: "[\(step)]", found: "[\(lossHistory.count)]")
        }
    }

    /// Deletes checkpoint files beyond the newest `keep` (by step) and stale temporaries; never `protecting`
    /// nor the one `best` names.
    /// Only what `CheckpointDirectory` counts as a checkpoint file is counted or deleted: a directory, a
    /// symbolic link or another file named like one is left alone.
    static func prune(dir: String, keep: Int, protecting: String) throws {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []
        let steps = names.compactMap { n in step(ofFileName: n).map { (n, $0) } }
            .filter { $0.0 == protecting || CheckpointDirectory.isCheckpointFile((dir as NSString).appendingPathComponent($0.0)) }
            .sorted { $0.1 > $1.1 }
        var keepSet: Set<String> = [protecting]
        for (n, _) in steps where keepSet.count < keep { keepSet.insert(n) }
        // The best checkpoint stays, however old, until `best` names another.
        if let best = try? pointer(bestName, in: dir) { keepSet.insert(best) }
        for (n, _) in steps where !keepSet.contains(n) { unlink((dir as NSString).appendingPathComponent(n)) }
        // Temporaries of a writer that died: `.step-NNNNNNNN.h5.tmp-PID` and `.latest.tmp-PID`, other pids.
        let mine = "-\(getpid())"
        for n in names where DurableFile.isTemporary(n) && !n.hasSuffix(mine) {
            guard let cut = n.range(of: ".tmp-", options: .backwards) else { continue }
            let target = String(n[n.index(after: n.startIndex)..<cut.lowerBound])
            guard step(ofFileName: target) != nil || target == latestName || target == bestName,
                  n[cut.upperBound...].allSatisfy({ $0.isASCII && $0.isNumber }) else { continue }
            var st = stat()
            let path = (dir as NSString).appendingPathComponent(n)
            if lstat(path, &st) == 0 && st.st_mode & S_IFMT == S_IFREG { unlink(path) }
        }
    }

    // MARK: Reading

    /// The trainable parameters a job expects, by name and shape (`FuserConfig.parameterShapes`).
    public typealias Expectation = [(name: String, shape: [Int])]

    /// The checkpoint `latest` names in `dir`, or nil when there is no `latest` yet. `expecting`: see
    /// `read(path:expecting:)`.
    public static func readLatest(dir: String, expecting: Expectation? = nil) throws -> Checkpoint? {
        guard let name = try pointer(latestName, in: dir) else { return nil }
        return try read(path: (dir as NSString).appendingPathComponent(name), expecting: expecting)
    }

    /// The checkpoint file name a pointer file (`latest`, `best`) in `dir` holds, or nil when there is no
    /// such file.
    public static func pointer(_ pointerName: String, in dir: String) throws -> String? {
        let pointer = (dir as NSString).appendingPathComponent(pointerName)
        guard FileManager.default.fileExists(atPath: pointer) else { return nil }
        // It holds one file name: read at most 4 KiB of it, whatever its size.
        guard let handle = FileHandle(forReadingAtPath: pointer),
              let data = try? handle.read(upToCount: 4096),
              let text = String(data: data, encoding: .utf8) else {
            throw ShardError(.io, "cannot read the \(pointerName) pointer", path: pointer)
        }
        try? handle.close()
        let name = text.trimmingCharacters(in: .whitespacesAndNewlines)
        guard step(ofFileName: name) != nil else {
            throw ShardError(.corrupt, "\(pointerName) does not name a checkpoint file", path: pointer,
                             expected: "step-NNNNNNNN.h5", found: "\"\(name.prefix(100))\"")
        }
        return name
    }

    /// Points `best` in `dir` at the checkpoint file `name` (written durably), then prunes as
    /// `write(to:keep:)` does, so a checkpoint that stopped being the best goes once it is beyond `keep`.
    public static func markBest(_ name: String, in dir: String, keep: Int) throws {
        guard step(ofFileName: name) != nil else {
            throw ShardError(.badValue, "best must name a checkpoint file", path: dir, expected: "step-NNNNNNNN.h5", found: name)
        }
        try DurableFile.write((dir as NSString).appendingPathComponent(bestName), text: name + "\n")
        try prune(dir: dir, keep: keep, protecting: name)
    }

    /// A checkpoint named the ways a user names one: a file, a checkpoint directory (its `latest`), or
    /// a `latest` or `best` file. `expecting`: see `read(path:expecting:)`.
    public static func read(fileOrDirectory path: String, expecting: Expectation? = nil) throws -> Checkpoint {
        var isDirectory: ObjCBool = false
        let exists = FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory)
        let last = (path as NSString).lastPathComponent
        let (dir, pointerName): (String, String)
        if exists && isDirectory.boolValue {
            (dir, pointerName) = (path, latestName)
        } else if last == latestName || last == bestName {
            (dir, pointerName) = ((path as NSString).deletingLastPathComponent, last)
        } else {
            return try read(path: path, expecting: expecting)
        }
        let directory = dir.isEmpty ? "." : dir
        guard let name = try pointer(pointerName, in: directory) else {
            throw ShardError(.cannotOpen, "no checkpoint here yet (no '\(pointerName)' file)", path: path,
                             expected: "a checkpoint file, a directory with a 'latest' file, or a 'best' file")
        }
        return try read(path: (directory as NSString).appendingPathComponent(name), expecting: expecting)
    }

    /// The longest loss history a checkpoint may declare (one float32 per step).
    public static let maxSteps = Int(Int32.max)

    /// Reads and verifies a checkpoint file: attributes present and typed, moments shaped like the
    /// parameters and one loss per step (from the metadata, before any tensor is read), every tensor's
    /// checksum.
    ///
    /// Nothing is allocated for a tensor before its shape is checked. With `expecting` (the job's
    /// parameter shapes), each of `params`, `optimizer/exp_avg` and `optimizer/exp_avg_sq` must hold
    /// exactly those names with exactly those shapes, else `.incompatibleCheckpoint` lists every
    /// difference. Without it (`checkpoint show`), the tensors together may need at most the file's read
    /// budget (16 x its size + 1 MiB). The loss history is at most `maxSteps` long and within that budget.
    public static func read(path: String, expecting: Expectation? = nil) throws -> Checkpoint {
        let file = try HDF5File.open(path)
        let root = file.root
        let format = try root.readString("format")
        guard format == Self.format else {
            throw ShardError(.badAttribute, "not a DEHVF checkpoint", path: path, object: "@format",
                             expected: "\"\(Self.format)\"", found: "\"\(format)\"")
        }
        let version = try root.readInt("version")
        guard version == Self.version else {
            throw ShardError(.badAttribute, "unsupported checkpoint version", path: path, object: "@version",
                             expected: "\(Self.version)", found: "\(version)")
        }
        func count(_ name: String) throws -> Int {
            let v = try root.readInt(name)
            guard v >= 0, v <= maxSteps else {
                throw ShardError(.badAttribute, "\(name) out of range", path: path, object: "@\(name)",
                                 expected: "0...\(maxSteps)", found: "\(v)")
            }
            return Int(v)
        }
        let step = try count("step"), epoch = try count("epoch")
        let seed = UInt64(bitPattern: try root.readInt("seed"))
        let config = try root.readString("config"), backbone = try root.readString("backbone")

        // Every tensor's name, type and shape, checked before anything is read.
        let optimizer = try root.openGroup("optimizer")
        let groups: [(label: String, tensors: [(name: String, dataset: HDF5Dataset)])] = [
            ("params", try TensorFile.open(group: try root.openGroup("params"))),
            ("optimizer/exp_avg", try TensorFile.open(group: try optimizer.openGroup("exp_avg"))),
            ("optimizer/exp_avg_sq", try TensorFile.open(group: try optimizer.openGroup("exp_avg_sq"))),
        ]
        let budget = try file.readBudget()
        if let expecting {
            try requireExpected(groups, expecting, path: path)
        } else {
            try TensorFile.requireReadable(groups.flatMap(\.tensors), within: budget)
        }
        func signature(_ tensors: [(name: String, dataset: HDF5Dataset)]) -> [String] {
            tensors.map { "\($0.name)\($0.dataset.shape)" }
        }
        for (label, tensors) in groups.dropFirst() where signature(tensors) != signature(groups[0].tensors) {
            throw ShardError(.badShape, "optimizer state does not match the parameters", path: path, object: label,
                             expected: signature(groups[0].tensors).joined(separator: " "),
                             found: signature(tensors).joined(separator: " "))
        }
        let loss = try root.openGroup("history").openDataset("loss")
        try loss.require(.float32)
        try loss.require(shape: [nil], meaning: "one loss per step")
        if loss.shape[0] > maxSteps {
            throw ShardError(.badShape, "history/loss is too long", path: path, object: loss.name,
                             expected: "at most \(maxSteps) losses", found: "\(loss.shape)")
        }
        try loss.requireReadable(elementSize: 4, within: budget)
        try loss.require(shape: [step], meaning: "one loss per step")

        var c = Checkpoint(
            step: step, epoch: epoch, seed: seed, config: config, backbone: backbone,
            params: try TensorFile.read(groups[0].tensors), expAvg: try TensorFile.read(groups[1].tensors),
            expAvgSq: try TensorFile.read(groups[2].tensors), lossHistory: [])
        do {
            c.lossHistory = try loss.readAll(as: Float.self)
        } catch var e as ShardError {
            e.message = "history/loss is corrupt: " + e.message
            throw e
        }
        try c.checkConsistent(path: path)
        c.source = path
        return c
    }

    /// Throws `.incompatibleCheckpoint` listing every tensor of every group that is missing, unexpected or
    /// misshapen against `expected`. Moments that differ exactly as the parameters do are said so once.
    private static func requireExpected(_ groups: [(label: String, tensors: [(name: String, dataset: HDF5Dataset)])],
                                        _ expected: Expectation, path: String) throws {
        let wanted = Dictionary(expected.map { ($0.name, $0.shape) }, uniquingKeysWith: { a, _ in a })
        func differences(_ label: String, _ tensors: [(name: String, dataset: HDF5Dataset)]) -> [String] {
            var out: [String] = []
            let have = Dictionary(tensors.map { ($0.name, $0.dataset.shape) }, uniquingKeysWith: { a, _ in a })
            for (name, shape) in expected {
                guard let found = have[name] else { out.append("\(label)/\(name) \(shape) missing"); continue }
                if found != shape { out.append("\(label)/\(name) has shape \(found), job expects \(shape)") }
            }
            for (name, ds) in tensors where wanted[name] == nil {
                out.append("unexpected tensor \(label)/\(name) \(ds.shape)")
            }
            return out
        }
        let params = differences(groups[0].label, groups[0].tensors)
        // The moments' differences with their group renamed "params": equal when they differ as the parameters do.
        let moments = groups.dropFirst().map { g in (g.label, differences(g.label, g.tensors),
                                                    differences(groups[0].label, g.tensors)) }
        var problems = params
        if !params.isEmpty && moments.allSatisfy({ $0.2 == params }) {
            problems.append("optimizer/exp_avg and optimizer/exp_avg_sq differ the same way")
        } else {
            problems += moments.flatMap(\.1)
        }
        if !problems.isEmpty {
            // A hostile file may hold any number of tensors: the message lists the first 32 differences.
            let listed = problems.prefix(32).joined(separator: "; ")
                + (problems.count > 32 ? "; and \(problems.count - 32) more" : "")
            throw ShardError(.incompatibleCheckpoint, "checkpoint does not belong to this job: " + listed
                             + ". Resume with the same model and fusion settings, or start a new checkpoint.dir",
                             path: path)
        }
    }

    // MARK: Compatibility

    /// Throws `.incompatibleCheckpoint` listing every difference between this checkpoint and the job:
    /// backbone fingerprint, missing, unexpected and misshapen parameters.
    public func validate(backbone expectedBackbone: String, parameters: [(String, [Int])]) throws {
        var problems: [String] = []
        if backbone != expectedBackbone {
            problems.append("backbone fingerprint differs (checkpoint \(backbone), job \(expectedBackbone))")
        }
        let mine = Dictionary(params.map { ($0.name, $0.tensor.shape) }, uniquingKeysWith: { a, _ in a })
        let wanted = Dictionary(parameters, uniquingKeysWith: { a, _ in a })
        for (name, shape) in parameters {
            guard let have = mine[name] else { problems.append("parameter \(name) \(shape) missing"); continue }
            if have != shape { problems.append("parameter \(name) has shape \(have), job expects \(shape)") }
        }
        for (name, shape) in params.shapes where wanted[name] == nil {
            problems.append("unexpected parameter \(name) \(shape)")
        }
        if !problems.isEmpty {
            throw ShardError(.incompatibleCheckpoint, "checkpoint does not belong to this job: "
                             + problems.joined(separator: "; ")
                             + ". Resume with the same model and fusion settings, or start a new checkpoint.dir",
                             path: source)
        }
    }
}
