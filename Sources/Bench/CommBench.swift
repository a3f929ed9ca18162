import Cluster
import Foundation
import Model
import Shard
import Training

/// What a step costs in communication, two ways.
///
/// In process (`--projected-workers` N, default 4, one micro-batch each per step): the coordinator sends
/// the parameters to every worker (`params`) and receives one `result` (summed gradients) from each.
/// Measured: message bytes, WireCodec encode and decode time, ExactSum.combine of N results and AdamW;
/// for the bench shape and projected to LLaMA-7B + ViT-L/14 (the fuser's real parameter count).
///
/// Local workers (`--workers 1,2,3`): real multi-process training on the bench config. The bench writes
/// the bench backbones (`vision/`, `language/`), a 64-sample caption-task HDF5 dataset of the bench
/// shape and a job file into a temporary directory (kept with `--keep`), then runs the `coordinator`
/// built next to this binary with `train` and `cluster.launcher: local` once per worker count: global
/// batch 32 in micro-batches of 8, `--steps` steps, `compute.threads: 1` per worker (so two workers use
/// the machine's two cores; `--threads` does not apply to these runs). From the run's `train.jsonl` it
/// drops the first 2 steps (every image's ViT features are computed on first sight) and reports, over
/// the remaining steps, step time, compute per worker, exchange (messages, scheduling, waiting on the
/// slowest worker), exact sum + AdamW, and (exchange + exact sum + AdamW) / step: the issue's target is
/// at most 5% with 2 workers. Compute per worker is the step's micro-batch time spread evenly over the
/// workers, so when they do not divide the micro-batches (3 workers, 4 micro-batches) the idle workers
/// of the last round count as exchange, as do more processes than cores. Bytes per step on the wire are
/// what the coordinator sends and receives: one `params` message per busy worker, one `work` and one
/// `result` per micro-batch (heartbeats left out), for the bench config and the LLaMA-7B + ViT-L/14
/// fuser. Once past the warm-up steps, each worker's RSS and PSS (whole, and of its mapped safetensors)
/// are read from /proc/PID/smaps: the backbone's pages are shared between the workers of a node.
/// `--runs` and `--warmup` do not apply to these runs: each worker count is launched once and its figures
/// are spread over its steps.
enum CommBench {
    static func run(_ o: BenchOptions, workers: Int, local: LocalRuns?, into report: Report) throws {
        // Fail before measuring anything if the local runs cannot start.
        if local != nil { for name in ["coordinator", "worker"] { _ = try LocalCommBench.product(name) } }
        try inProcess(o, workers: workers, into: report)
        if let local { try LocalCommBench(local).run(into: report) }
    }

    static func inProcess(_ o: BenchOptions, workers: Int, into report: Report) throws {
        let bench = try BenchShape.bench.fuser(.dehvf)
        for (name, config) in [(BenchShape.bench.name, bench), (LargeShape.name, try LargeShape.fuser())] {
            report.section("comm: \(name), dehvf, \(workers) workers, \(config.parameterCount) trainable parameters")
            let params = config.benchParameters()
            let broadcast = Envelope(jobID: 1, step: 7, .params(params))
            var rng = BenchRNG(11)
            let results = (0..<workers).map { w in
                Envelope(jobID: 1, step: 7, .result(WorkResult(microBatch: UInt32(w), gradients: MicroBatchGradients(
                    lossSum: 12.5 + Double(w), labelCount: 128,
                    grads: TensorSet(params.map { NamedTensor($0.name, rng.tensor($0.tensor.shape, scale: 1e-3)) })))))
            }
            let paramBytes = WireCodec.encode(broadcast).reduce(0) { $0 + $1.byteCount }
            let resultBytes = WireCodec.encode(results[0]).reduce(0) { $0 + $1.byteCount }
            let perStep = Double(workers * (paramBytes + resultBytes))
            report.add("comm", config: name, mode: "dehvf", name: "params message", unit: "bytes", Samples([Double(paramBytes)]))
            report.add("comm", config: name, mode: "dehvf", name: "result message", unit: "bytes", Samples([Double(resultBytes)]))
            report.add("comm", config: name, mode: "dehvf", name: "bytes per step, \(workers) workers", unit: "MB", Samples([perStep / 1e6]))
            for gbit in [1.0, 10.0] {
                report.add("comm", config: name, mode: "dehvf", name: "wire time at \(Int(gbit)) Gbit/s (coordinator link)",
                           unit: "ms", Samples([perStep * 8 / (gbit * 1e9) * 1e3]))
            }

            let encode = timeRuns(runs: o.runs, warmup: o.warmup) {
                for r in results { _ = WireCodec.encode(r) }
                _ = WireCodec.encode(broadcast)
            }
            // The receiver holds each frame as bytes (a ZeroMQ message), so decoding starts from byte arrays.
            let received = results.map { WireCodec.encode($0).map(\.bytes) }
            let receivedParams = WireCodec.encode(broadcast).map(\.bytes)
            let decode = try timeRuns(runs: o.runs, warmup: o.warmup) {
                for r in received { _ = try WireCodec.decode(r) }
                _ = try WireCodec.decode(receivedParams)
            }
            let records = results.compactMap { e -> MicroBatchGradients? in
                guard case .result(let r) = e.message else { return nil }
                return r.gradients
            }
            let combine = try timeRuns(runs: o.runs, warmup: o.warmup) { _ = try ExactSum.combine(records) }
            let state = TrainState(params: config.benchParameters())
            var optim = JobConfig.Optim()
            optim.steps = 1_000_000
            let combined = try ExactSum.combine(records)
            let adam = try timeRuns(runs: o.runs, warmup: o.warmup) {
                try state.apply(combined, optim: optim, totalSteps: 1_000_000)
            }
            let mb = perStep / 1e6
            report.add("comm", config: name, mode: "dehvf", name: "encode, all messages of a step", unit: "ms", encode.map { $0 * 1e3 })
            report.add("comm", config: name, mode: "dehvf", name: "decode, all messages of a step", unit: "ms", decode.map { $0 * 1e3 })
            report.add("comm", config: name, mode: "dehvf", name: "decode rate", unit: "MB/s", decode.rate(mb))
            report.add("comm", config: name, mode: "dehvf", name: "ExactSum.combine of \(workers)", unit: "ms", combine.map { $0 * 1e3 })
            report.add("comm", config: name, mode: "dehvf", name: "AdamW apply", unit: "ms", adam.map { $0 * 1e3 })
        }
    }

    /// Encoded sizes of the three messages a training step puts on the wire for `config`.
    static func messageBytes(_ config: FuserConfig, microBatch: Int) -> (params: Int, work: Int, result: Int) {
        let params = config.benchParameters()
        func bytes(_ m: Message) -> Int { WireCodec.encode(Envelope(jobID: 1, step: 7, m)).reduce(0) { $0 + $1.byteCount } }
        let work = Work(epoch: 3, microBatch: 2, samples: (0..<Int64(microBatch)).map { $0 * 997 }, dropout: true)
        let result = WorkResult(microBatch: 2, gradients: MicroBatchGradients(lossSum: 12.5, labelCount: 128, grads: params),
                                computeSeconds: 1.5)
        return (bytes(.params(params)), bytes(.work(work)), bytes(.result(result)))
    }
}

/// The multi-process part of `bench comm`: which worker counts, how many steps, keep the files or not.
struct LocalRuns {
    var workers: [Int] = [1, 2, 3]
    var steps = 6
    var keep = false
    /// Leading steps left out of the figures: ViT features are computed on first sight of each image.
    static let warmupSteps = 2
}

/// Real `coordinator train` runs with local workers on the bench config, timed from `train.jsonl`.
struct LocalCommBench {
    let options: LocalRuns
    let shape = BenchShape.bench
    let samples = 64
    let globalBatch = 32

    init(_ options: LocalRuns) { self.options = options }

    struct Failure: Error, CustomStringConvertible {
        var description: String
        init(_ d: String) { description = d }
    }

    func run(into report: Report) throws {
        let coordinator = try Self.product("coordinator")
        _ = try Self.product("worker")
        let fm = FileManager.default
        let dir = fm.temporaryDirectory.appendingPathComponent("dehvf-bench-comm-\(getpid())-\(UUID().uuidString.prefix(8))")
        try fm.createDirectory(at: dir, withIntermediateDirectories: true)
        defer {
            if options.keep { print("   kept \(dir.path)") } else { try? fm.removeItem(at: dir) }
        }
        try writeData(in: dir)
        let fuser = try shape.fuser(.dehvf)
        let microBatches = globalBatch / shape.batch
        report.section("comm: bench, dehvf, local workers (coordinator + N worker processes, compute.threads 1 each), "
            + "\(options.steps) steps of \(globalBatch) (\(microBatches) micro-batches of \(shape.batch)), first "
            + "\(LocalRuns.warmupSteps) dropped")

        for n in options.workers {
            let runDir = dir.appendingPathComponent("run-\(n)")
            let job = try writeJob(in: dir, workers: n, runDir: runDir)
            print("   running coordinator train with \(n) local worker\(n == 1 ? "" : "s") (\(options.steps) steps) ...")
            fflush(stdout)
            let log = dir.appendingPathComponent("coordinator-\(n).log")
            var memory: [WorkerMemory] = []
            try Self.launch(coordinator, ["train", "--config", job.path], log: log,
                            timeout: 300 + 120 * Double(options.steps)) { pid in
                // Once past the warm-up steps, every worker has touched the whole backbone: sample them.
                guard memory.isEmpty, Self.loggedSteps(runDir) > LocalRuns.warmupSteps else { return }
                memory = WorkerMemory.children(of: pid)
            }
            let steps = try Self.steps(runDir.appendingPathComponent("train.jsonl"), log: log)
            guard steps.count == options.steps else {
                throw Failure("the \(n)-worker run logged \(steps.count) of \(options.steps) steps\n" + Self.tail(log))
            }
            let timed = Array(steps.dropFirst(LocalRuns.warmupSteps))
            if let w = timed.first(where: { $0.workers != n }) {
                report.note("warning: step \(w.index) ran with \(w.workers) live workers, not \(n)")
            }
            // The coordinator backs up a micro-batch that runs much longer than the last step on an idle
            // worker: computed twice, with its messages sent twice.
            let backups = Self.backups(log, steps: Set(timed.map(\.index)))
            if backups > 0 {
                report.note("warning: \(backups) micro-batch\(backups == 1 ? " was" : "es were") backed up (computed twice) in the "
                    + "reported steps; bytes per step below leave backups out")
            }
            func figure(_ name: String, _ unit: String, _ value: (Step) -> Double) {
                report.add("comm", config: shape.name, mode: "dehvf", name: "local workers \(n): \(name)", unit: unit,
                           Samples(timed.map(value)))
            }
            figure("step time", "ms") { $0.step * 1e3 }
            figure("compute per worker", "ms") { $0.compute * 1e3 }
            figure("exchange", "ms") { $0.exchange * 1e3 }
            figure("exact sum + AdamW", "ms") { $0.combine * 1e3 }
            figure("(exchange+combine)/step", "ratio") { ($0.exchange + $0.combine) / $0.step }
            // Shared backbone memory: the safetensors are mapped, so workers on one node share their pages
            // and PSS (each shared page split between its users) falls as RSS stays.
            if memory.isEmpty {
                report.note("warning: could not read the workers' /proc/PID/smaps; no memory figures for \(n)")
            } else {
                func perWorker(_ name: String, _ value: (WorkerMemory) -> Double) {
                    report.add("comm", config: shape.name, mode: "dehvf", name: "local workers \(n): \(name)", unit: "MB",
                               Samples(memory.map(value)))
                }
                perWorker("worker RSS") { $0.rss }
                perWorker("worker PSS") { $0.pss }
                perWorker("backbone mapping RSS per worker") { $0.backboneRSS }
                perWorker("backbone mapping PSS per worker") { $0.backbonePSS }
            }
        }

        // Bytes per step: params to each busy worker, then work out and a result back per micro-batch.
        for (name, config) in [(shape.name, fuser), (LargeShape.name, try LargeShape.fuser())] {
            let m = CommBench.messageBytes(config, microBatch: shape.batch)
            for n in options.workers {
                let bytes = min(n, microBatches) * m.params + microBatches * (m.work + m.result)
                report.add("comm", config: name, mode: "dehvf", name: "local workers \(n): bytes per step", unit: "MB",
                           Samples([Double(bytes) / 1e6]))
            }
        }
    }

    // MARK: data and job

    /// The bench backbones as Hugging Face directories and a caption-task training set of the bench shape:
    /// random pixels, random token ids, loss on the last `labelTokens` tokens (as `Workload` builds a batch).
    func writeData(in dir: URL) throws {
        let fm = FileManager.default
        for (name, made) in [("vision", RandomBackbone.clipVision(shape.vision, seed: 1)),
                             ("language", RandomBackbone.llama(shape.language, seed: 2, weightScale: 1))] {
            let d = dir.appendingPathComponent(name)
            try fm.createDirectory(at: d, withIntermediateDirectories: true)
            try made.config.write(to: d.appendingPathComponent("config.json"), atomically: true, encoding: .utf8)
            try SafetensorsWriter.write(made.tensors, to: d.appendingPathComponent("model.safetensors"))
        }
        let t = shape.textTokens, size = shape.imageSize, pixels = 3 * size * size
        var c = DatasetContents(task: .caption, count: samples, tokens: t, imageHeight: size, imageWidth: size)
        var rng = BenchRNG(3)
        for i in 0..<samples {
            for p in 0..<pixels { c.images[i * pixels + p] = UInt8(truncatingIfNeeded: rng.next() >> 56) }
            c.hasImage[i] = 1
            c.lengths[i] = Int32(t)
            for j in 0..<t {
                let id = Int32(rng.below(shape.language.vocabSize))
                c.inputIDs[i * t + j] = id
                if j >= t - shape.labelTokens { c.labels[i * t + j] = id }
            }
        }
        try DatasetWriter.write(c, to: dir.appendingPathComponent("train.h5").path)
    }

    /// A job training the data above with `workers` local workers on a free loopback port.
    func writeJob(in dir: URL, workers: Int, runDir: URL) throws -> URL {
        // The fuser settings of BenchShape.fuser (visual_tokens 0 = every patch, as it is built there;
        // FuserConfig holds the resolved count).
        let f = try shape.fuser(.dehvf)
        let port = try Self.freePort()
        let text = """
            # Written by `bench comm`: the bench config trained with \(workers) local workers.
            model:
              vision: \(dir.appendingPathComponent("vision").path)
              language: \(dir.appendingPathComponent("language").path)
              fusion: \(f.fusion.rawValue)
              projector_rank: \(f.projectorRank)
              visual_tokens: 0
              feature_scale: \(f.featureScale)
              injection_scale: \(f.injectionScale)
              dropout: \(f.dropout)
            data:
              train: \(dir.appendingPathComponent("train.h5").path)
              global_batch: \(globalBatch)
              micro_batch: \(shape.batch)
              seed: 0
            optim:
              lr: 1.0e-3
              warmup_steps: 2
              steps: \(options.steps)
            compute:
              threads: 1
            checkpoint:
              dir: \(runDir.path)
              every: \(options.steps + 1000)
              keep: 1
            cluster:
              launcher: local
              workers: \(workers)
              bind: tcp://127.0.0.1:\(port)
              heartbeat_ms: 500
              timeout_ms: 5000

            """
        let url = dir.appendingPathComponent("job-\(workers).yaml")
        try text.write(to: url, atomically: true, encoding: .utf8)
        return url
    }

    // MARK: processes

    /// A product built next to this `bench` binary.
    static func product(_ name: String) throws -> String {
        let me = Bundle.main.executableURL ?? URL(fileURLWithPath: CommandLine.arguments[0])
        let path = me.resolvingSymlinksInPath().deletingLastPathComponent().appendingPathComponent(name).path
        guard FileManager.default.isExecutableFile(atPath: path) else {
            throw Failure("bench comm runs the \(name) executable next to bench (\(path)), which is not built; "
                + "build all products first with `swift build -c release`")
        }
        return path
    }

    /// A TCP port on 127.0.0.1 that nothing listens on right now (bound to port 0, then released).
    static func freePort() throws -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw Failure("socket() failed: errno \(errno)") }
        defer { close(fd) }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = 0
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        let ok = withUnsafeMutablePointer(to: &addr) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) { s in
                bind(fd, s, len) == 0 && getsockname(fd, s, &len) == 0
            }
        }
        guard ok else { throw Failure("cannot bind a loopback port: errno \(errno)") }
        return Int(UInt16(bigEndian: addr.sin_port))
    }

    /// Runs `executable` with its stdout and stderr in `log`; throws with the log's tail if it fails or
    /// outlives `timeout` seconds (then it is stopped with SIGTERM, which also stops its local workers).
    /// `environment` adds to (or overrides) this process's environment for it.
    static func launch(_ executable: String, _ args: [String], log: URL, timeout: Double, environment: [String: String] = [:],
                       whileRunning: (pid_t) -> Void = { _ in }) throws {
        _ = FileManager.default.createFile(atPath: log.path, contents: nil)
        let handle = try FileHandle(forWritingTo: log)
        defer { try? handle.close() }
        let p = Process()
        p.executableURL = URL(fileURLWithPath: executable)
        p.arguments = args
        if !environment.isEmpty {
            p.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
        }
        p.standardOutput = handle
        p.standardError = handle
        try p.run()
        let deadline = Date().addingTimeInterval(timeout)
        while p.isRunning && Date() < deadline {
            whileRunning(p.processIdentifier)
            usleep(50_000)
        }
        if p.isRunning {
            p.terminate()
            let grace = Date().addingTimeInterval(10)
            while p.isRunning && Date() < grace { usleep(50_000) }
            if p.isRunning { kill(p.processIdentifier, SIGKILL) }
            p.waitUntilExit()
            throw Failure("\(URL(fileURLWithPath: executable).lastPathComponent) \(args.joined(separator: " ")) did not finish "
                + "in \(Int(timeout)) s and was stopped\n" + tail(log))
        }
        p.waitUntilExit()
        guard p.terminationReason == .exit && p.terminationStatus == 0 else {
            throw Failure("\(URL(fileURLWithPath: executable).lastPathComponent) \(args.joined(separator: " ")) failed "
                + "(\(p.terminationReason == .exit ? "exit status" : "signal") \(p.terminationStatus))\n" + tail(log))
        }
    }

    /// Steps logged so far in a run directory's train.jsonl.
    static func loggedSteps(_ runDir: URL) -> Int {
        guard let text = try? String(contentsOf: runDir.appendingPathComponent("train.jsonl"), encoding: .utf8) else { return 0 }
        return text.split(separator: "\n").filter { $0.contains("\"step_s\"") }.count
    }

    /// The last lines of a log, for error messages.
    static func tail(_ log: URL, lines: Int = 30) -> String {
        let text = (try? String(contentsOf: log, encoding: .utf8)) ?? ""
        return "last lines of \(log.path):\n" + text.split(separator: "\n", omittingEmptySubsequences: false).suffix(lines)
            .joined(separator: "\n")
    }

    /// How many micro-batches of `steps` the coordinator's log says it backed up on a second worker.
    static func backups(_ log: URL, steps: Set<Int>) -> Int {
        let text = (try? String(contentsOf: log, encoding: .utf8)) ?? ""
        return text.split(separator: "\n").filter { line in
            steps.contains { line.contains("step \($0): backing up") }
        }.count
    }

    // MARK: train.jsonl

    struct Step {
        var index: Int
        var step, compute, exchange, combine: Double
        var workers: Int
        /// The step's loss (nil for a skipped step, whose loss is not finite).
        var loss: Double? = nil
    }

    /// The per-step lines of a run's `train.jsonl`, in step order.
    static func steps(_ path: URL, log: URL) throws -> [Step] {
        guard let text = try? String(contentsOf: path, encoding: .utf8) else {
            throw Failure("no \(path.path) after the run\n" + tail(log))
        }
        var out: [Step] = []
        for line in text.split(separator: "\n") {
            guard let object = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any],
                  object["eval"] == nil, let index = (object["step"] as? NSNumber)?.intValue else { continue }
            func number(_ key: String) throws -> Double {
                guard let v = (object[key] as? NSNumber)?.doubleValue else { throw Failure("\(path.path): step \(index) has no \(key)") }
                return v
            }
            out.append(Step(index: index, step: try number("step_s"), compute: try number("compute_s"),
                            exchange: try number("exchange_s"), combine: try number("combine_s"),
                            workers: (object["workers"] as? NSNumber)?.intValue ?? 0,
                            loss: (object["loss"] as? NSNumber)?.doubleValue))
        }
        return out.sorted { $0.index < $1.index }
    }
}

/// A worker process's memory from /proc/PID/smaps, in MB: the whole process, and the backbone's
/// memory-mapped safetensors files.
struct WorkerMemory {
    var rss = 0.0, pss = 0.0, backboneRSS = 0.0, backbonePSS = 0.0

    /// The memory of every direct child of `parent` (the local launcher's workers). Empty off Linux.
    static func children(of parent: pid_t) -> [WorkerMemory] { childPIDs(of: parent).compactMap(read) }

    /// The direct children of `parent`, in PID order. Empty off Linux.
    static func childPIDs(of parent: pid_t) -> [pid_t] {
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
        return entries.compactMap { Int32($0) }.filter { parentPID(of: $0) == parent }.sorted()
    }

    /// Field 4 of /proc/PID/stat (after the parenthesised command name, which may hold spaces).
    static func parentPID(of pid: pid_t) -> pid_t? {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
              let close = stat.lastIndex(of: ")") else { return nil }
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        return fields.count > 1 ? Int32(fields[1]) : nil
    }

    /// RSS and PSS of the whole process from /proc/PID/smaps_rollup: the kernel sums the mappings, so
    /// this is cheap enough to sample a large process often (the backbone fields stay zero).
    static func rollup(_ pid: pid_t) -> WorkerMemory? {
        guard let handle = FileHandle(forReadingAtPath: "/proc/\(pid)/smaps_rollup"),
              let data = try? handle.readToEnd(), let text = String(data: data, encoding: .utf8) else { return nil }
        try? handle.close()
        var m = WorkerMemory()
        for line in text.split(separator: "\n") {
            let parts = line.split(separator: " ", omittingEmptySubsequences: true)
            guard parts.count >= 2, let kb = Double(parts[1]) else { continue }
            if parts[0] == "Rss:" { m.rss = kb / 1024 } else if parts[0] == "Pss:" { m.pss = kb / 1024 }
        }
        return m
    }

    static func read(_ pid: pid_t) -> WorkerMemory? {
        // /proc files report size 0: read to the end through a handle, not by the size.
        guard let handle = FileHandle(forReadingAtPath: "/proc/\(pid)/smaps"),
              let data = try? handle.readToEnd(), let text = String(data: data, encoding: .utf8) else { return nil }
        try? handle.close()
        var m = WorkerMemory(), inBackbone = false
        for line in text.split(separator: "\n") {
            let parts = line.split(separator: " ", omittingEmptySubsequences: true)
            guard let key = parts.first else { continue }
            if key.hasSuffix(":") {
                guard parts.count >= 2, let kb = Double(parts[1]) else { continue }
                let mb = kb / 1024
                switch key {
                case "Rss:": m.rss += mb; if inBackbone { m.backboneRSS += mb }
                case "Pss:": m.pss += mb; if inBackbone { m.backbonePSS += mb }
                default: break
                }
            } else {
                // A mapping header: address range, permissions, offset, device, inode, then the path.
                inBackbone = parts.count >= 6 && parts[5].hasSuffix(".safetensors")
            }
        }
        return m
    }
}
