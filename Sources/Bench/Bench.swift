// bench: measured speed of each part against this machine's own ceiling.
//
//   swift run -c release bench <suite> [--threads N] [--runs R] [--json FILE]
//
// Suites: gemm, step, infer, generate, length, io, comm, scale, all (scale is left out of all: it writes 4 GB and
// trains a 1B model). Each figure is the median of `--runs` timed runs after
// `--warmup` untimed ones, reported with its min and max (`comm`'s local-worker figures are medians
// over the steps of one real training run each instead). The machine is shared, so every suite that
// reports a fraction of the sgemm ceiling measures that ceiling in the same run, next to the figure.
import ArgumentParser
import Foundation
import Model

@main
struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench",
        abstract: "Measured speed of the numeric core, the data path and the wire against this machine's ceilings.",
        subcommands: [GemmSuite.self, StepSuite.self, InferSuite.self, GenerateSuite.self, LengthSuite.self, IOSuite.self,
                      CommSuite.self, ScaleSuite.self, AllSuites.self])
}

/// Flags every suite shares.
struct BenchOptions: ParsableArguments {
    @Option(help: "Compute threads (the job's compute.threads); the gemm ceiling runs OpenBLAS on as many.")
    var threads = 2
    @Option(help: "Timed runs per figure (the median is reported).")
    var runs = 5
    @Option(help: "Untimed warm-up runs before each figure.")
    var warmup = 1
    @Option(help: "Also write the figures as a JSON array to this file.")
    var json: String?
    @Option(help: "Configs to run (comma-separated): bench, paper-shape.")
    var configs = "bench,paper-shape"
    @Option(parsing: .upToNextOption, help: "Fusion modes for step and infer, e.g. --modes dehvf concat; ratios need dehvf and concat.")
    var modes: [FusionMode] = FusionMode.allCases

    func validate() throws {
        guard threads >= 1 else { throw ValidationError("--threads must be at least 1") }
        guard runs >= 1 else { throw ValidationError("--runs must be at least 1") }
        guard warmup >= 0 else { throw ValidationError("--warmup must not be negative") }
        for name in configList where BenchShape.named(name) == nil {
            throw ValidationError("unknown config '\(name)': use bench or paper-shape")
        }
    }

    var configList: [String] { configs.split(separator: ",").map { String($0) } }
    var shapes: [BenchShape] { configList.compactMap(BenchShape.named) }

    /// Sets the thread count, runs `body`, then writes the JSON file if one was asked for.
    func session(_ body: (Report) throws -> Void) throws {
        BLAS.setThreads(threads)
        print("compute threads: \(BLAS.threads); \(runs) timed runs after \(warmup) warm-up; median [min, max]")
        let report = Report(path: json)
        try body(report)
        try report.save()
    }
}

struct GemmSuite: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "gemm", abstract: "OpenBLAS sgemm GFLOP/s: the ceiling.")
    @OptionGroup var options: BenchOptions
    func run() throws { try options.session { try GemmBench.run(options, into: $0) } }
}

struct StepSuite: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "step",
        abstract: "A full training step (forward, backward, exact sum, AdamW) in dehvf, memvp and concat.")
    @OptionGroup var options: BenchOptions
    func run() throws { try options.session { try StepBench.run(options, into: $0) } }
}

struct InferSuite: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "infer",
        abstract: "Forward-only multiple-choice scoring in dehvf, memvp and concat.")
    @OptionGroup var options: BenchOptions
    func run() throws { try options.session { try InferBench.run(options, into: $0) } }
}

struct GenerateSuite: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "generate",
        abstract: "Greedy generation with the key/value cache against re-running the prefix, in dehvf, memvp and concat.")
    @OptionGroup var options: BenchOptions
    @Option(help: "Prompt tokens per row.")
    var promptTokens = 32
    @Option(help: "New tokens per row (no EOS: every row generates them all).")
    var newTokens = 20

    func validate() throws {
        guard promptTokens >= 1 else { throw ValidationError("--prompt-tokens must be at least 1") }
        guard newTokens >= 1 else { throw ValidationError("--new-tokens must be at least 1") }
        for shape in options.shapes where promptTokens > shape.textTokens {
            throw ValidationError("--prompt-tokens \(promptTokens) is longer than config \(shape.name)'s rows of \(shape.textTokens)")
        }
    }

    func run() throws {
        try options.session { try GenerateBench.run(options, promptTokens: promptTokens, newTokens: newTokens, into: $0) }
    }
}

struct LengthSuite: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "length",
        abstract: "Training on rows of varied length: padded to the longest, length-aware micro-batches, and grouped by length.",
        discussion: "Each round times a quarter of the epoch's micro-batches (about 3 minutes on one SkylakeX core); "
            + "--runs 4 times all of them once, and the 'all rounds' speed-ups are then the epoch's. --warmup N trains "
            + "N micro-batches of each kind untimed first.")
    @OptionGroup var options: BenchOptions
    func run() throws { try options.session { try LengthBench.run(options, into: $0) } }
}

struct IOSuite: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "io",
        abstract: "HDF5 micro-batch reads and checkpoint write/read against raw file speed.")
    @OptionGroup var options: BenchOptions
    @Option(help: "Directory for the scratch files (removed afterwards).")
    var scratch = NSTemporaryDirectory()
    func run() throws { try options.session { try IOBench.run(options, scratch: scratch, into: $0) } }
}

struct CommSuite: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "comm",
        abstract: "Communication and combination against computation with 1, 2, 3 local worker processes; bytes per step, "
            + "codec and exact-sum time, projected to LLaMA-7B + ViT-L/14.",
        discussion: "The local-worker runs train the bench config with the coordinator and worker executables built next "
            + "to bench (swift build -c release), compute.threads 1 per worker; --threads, --runs and --warmup apply to "
            + "the in-process figures only. Each local run takes tens of seconds.")
    @OptionGroup var options: BenchOptions
    @Option(help: "Local worker counts to train with (comma-separated); 'none' skips the multi-process runs.")
    var workers = "1,2,3"
    @Option(help: "Training steps per local run; the first \(LocalRuns.warmupSteps) are warm-up and not reported.")
    var steps = 6
    @Flag(help: "Keep the temporary directory of the local runs (backbones, dataset, jobs, logs, train.jsonl).")
    var keep = false
    @Option(help: "Workers for the in-process figures (message sizes, codec, exact sum) and the LLaMA-7B projection.")
    var projectedWorkers = 4

    var workerList: [Int] {
        workers == "none" ? [] : workers.split(separator: ",").compactMap { Int($0.trimmingCharacters(in: .whitespaces)) }
    }

    func validate() throws {
        if workers != "none" {
            let parts = workers.split(separator: ",", omittingEmptySubsequences: false)
            guard !parts.isEmpty, parts.allSatisfy({ Int($0.trimmingCharacters(in: .whitespaces)).map { $0 >= 1 } ?? false }) else {
                throw ValidationError("--workers must be positive counts separated by commas (or 'none'), found '\(workers)'")
            }
        }
        guard steps > LocalRuns.warmupSteps else {
            throw ValidationError("--steps must exceed the \(LocalRuns.warmupSteps) warm-up steps, found \(steps)")
        }
        guard projectedWorkers >= 1 else { throw ValidationError("--projected-workers must be at least 1") }
    }

    func run() throws {
        let local = workerList.isEmpty ? nil : LocalRuns(workers: workerList, steps: steps, keep: keep)
        try options.session { try CommBench.run(options, workers: projectedWorkers, local: local, into: $0) }
    }
}

struct ScaleSuite: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "scale",
        abstract: "A 1B-scale run here: TinyLlama-1.1B (BF16, 2 shards) + CLIP ViT-L/14-336 (F16 CLIPModel), trained with "
            + "local workers; peak RSS/PSS against coordinator plan, load time, seconds per sample, fraction of the sgemm "
            + "ceiling; projected to LLaMA-2-7B.",
        discussion: "Writes about 3 GB of random backbones and a 16-row dataset under --scratch, then the workers widen them "
            + "into about 6 GB of F32 copies there (DEHVF_CACHE_DIR); stops before training if /proc/meminfo's MemAvailable "
            + "is short of the plan's node total + 15%. Runs the coordinator and worker built next to bench (swift build -c "
            + "release). Takes several minutes on 2 cores; everything under --scratch is removed afterwards unless --keep. "
            + "--threads, --runs, --warmup, --configs and --modes do not apply.")
    @OptionGroup var options: BenchOptions
    @Option(help: "Scratch directory (must not exist; removed afterwards).") var scratch = "/tmp/scale"
    @Option(help: "Local worker processes (compute.threads 1 each).") var workers = 2
    @Option(help: "Training steps.") var steps = 2
    @Option(help: "data.global_batch.") var globalBatch = 4
    @Option(help: "data.micro_batch.") var microBatch = 2
    @Option(help: "Dataset rows (lengths uniform in [32, 256]).") var rows = 16
    @Flag(inversion: .prefixedNo, help: "Plan LLaMA-2-7B (sparse F16 shards) with the same ViT and data, and project the run to it.")
    var project7b = true
    @Flag(help: "Keep the scratch directory.") var keep = false

    func validate() throws {
        guard workers >= 1, steps >= 1, microBatch >= 1, globalBatch >= microBatch, globalBatch % microBatch == 0 else {
            throw ValidationError("need workers, steps >= 1 and a global batch that is a multiple of the micro-batch")
        }
        guard rows >= globalBatch * steps else {
            throw ValidationError("--rows must cover the steps (\(globalBatch * steps) samples) so every image is new")
        }
    }

    func run() throws {
        let bench = ScaleBench(scratch: URL(fileURLWithPath: scratch), workers: workers, steps: steps, globalBatch: globalBatch,
                               microBatch: microBatch, rows: rows, keep: keep, project7B: project7b)
        try options.session { try bench.run(into: $0) }
    }
}

struct AllSuites: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "all", abstract: "Every suite in turn.")
    @OptionGroup var options: BenchOptions
    func run() throws {
        try options.session { report in
            try GemmBench.run(options, into: report)
            try StepBench.run(options, into: report)
            try InferBench.run(options, into: report)
            try GenerateBench.run(options, promptTokens: 32, newTokens: 20, into: report)
            try LengthBench.run(options, into: report)
            try IOBench.run(options, scratch: NSTemporaryDirectory(), into: report)
            try CommBench.run(options, workers: 4, local: LocalRuns(), into: report)
        }
    }
}
