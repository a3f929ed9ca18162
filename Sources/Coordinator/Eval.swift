import ArgumentParser
import Cluster
import Foundation
import Model
import Shard
import Training
import Transport

struct Eval: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Score a checkpoint on held-out data, in this process or on workers.",
        discussion: """
            Multiple choice: the argmax of the choice letters' logits at answer_position, over the first \
            num_choices letters; overall accuracy, and per ScienceQA category (NAT/SOC/LAN, TXT/IMG/NO, \
            G1-6/G7-12) when the dataset has meta/*. Caption data: the mean token loss, and with \
            --generate a greedy caption per row written as JSON lines {"index", "generated" (token ids), \
            "references"}; Scripts/caption_metrics.py decodes them and computes CIDEr-D, BLEU-4 and ROUGE-L.

            The rows are scored in units of --batch-size rows (default data.micro_batch), each at its own \
            longest row: the figures depend on the unit size, never on where the units run. By default \
            they run in this process; --workers N starts N local worker processes, and --launcher \
            local|manual|slurm runs them as `train` would with that launcher and the job's cluster section \
            (manual: workers join with `worker --join`; slurm: workers from the allocation), with failed \
            units retried elsewhere as in training.
            """)

    @OptionGroup var job: JobOptions
    @Option(help: ArgumentHelp("Checkpoint file, a checkpoint directory (its 'latest'), or a 'best' file.", valueName: "CK.h5"))
    var checkpoint: String
    @Option(help: "Dataset to score (default: data.eval of the job).") var data: String?
    @Option(help: "Rows per unit (one forward pass), default data.micro_batch.") var batchSize: Int?
    @Option(help: "Score on this many local worker processes (--launcher local with cluster.workers N).") var workers: Int?
    @Option(help: ArgumentHelp("Where the units run: inprocess (default), or a launcher as in the job's cluster section.",
                               valueName: "inprocess|local|manual|slurm"))
    var launcher: Launcher?
    @Option(help: ArgumentHelp("Also write the report as JSON to this file ('-' for stdout).", valueName: "FILE"))
    var json: String?
    @Option(help: ArgumentHelp("Caption data: write each row's greedy caption as JSON lines to this file.", valueName: "FILE"))
    var generate: String?
    @Option(help: ArgumentHelp("Multiple choice: write every row's choice-letter logits (and prediction and answer) as "
                               + "JSON to this file; in-process only.", valueName: "FILE.json"))
    var logits: String?
    @Option(help: "Most tokens generated per caption.") var maxNewTokens: Int = 30
    @Option(help: "Token id that ends a caption (default: eos_token_id in the language model's config.json).")
    var eosTokenID: Int32?

    func validate() throws {
        if let batchSize, batchSize < 1 { throw ValidationError("--batch-size must be at least 1") }
        if let workers, workers < 1 { throw ValidationError("--workers must be at least 1") }
        if let workers, let launcher, launcher != .local || workers < 1 {
            throw ValidationError("--workers N starts N local workers; it goes with no --launcher or --launcher local")
        }
        if logits != nil, workers != nil || (launcher ?? .inprocess) != .inprocess {
            throw ValidationError("--logits scores in this process: leave out --workers and --launcher")
        }
        let limit = WireLimits().maxGeneratedTokens
        guard (1...limit).contains(maxNewTokens) else { throw ValidationError("--max-new-tokens must be in 1...\(limit)") }
    }

    func run() throws {
        Interruption.install()
        var config = try job.load()
        config.cluster.launcher = launcher ?? (workers == nil ? .inprocess : .local)
        if let workers { config.cluster.workers = workers }
        try config.validate(source: job.config)
        let setup = try JobSetup(job: config, loading: config.cluster.launcher == .inprocess)
        let ck = try Checkpoint.read(fileOrDirectory: checkpoint, expecting: setup.fuser.parameterShapes)
        let state = try TrainState(checkpoint: ck, fuser: setup.fuser, backbone: setup.fingerprint)
        guard let path = data ?? config.data.eval?.path else {
            throw UserError("no dataset to score: pass --data FILE.h5 or set data.eval in the job")
        }
        let dataset = try setup.open(path)
        if logits != nil, dataset.task != .multipleChoice {
            throw UserError("--logits needs a multiple-choice dataset; \(dataset.path) is \(dataset.task.rawValue)")
        }
        if generate != nil, dataset.task != .caption {
            throw UserError("--generate needs a caption dataset; \(dataset.path) is \(dataset.task.rawValue)")
        }
        let eos = eosTokenID ?? setup.language.eosTokenID
        if generate != nil, eos == nil {
            Console.say("eval: no eos_token_id in the language model's config.json; captions run to --max-new-tokens")
        }
        let executor: StepExecutor
        if config.cluster.launcher == .inprocess {
            let inProcess = InProcessExecutor(engine: try TrainingEngine(setup: setup))
            inProcess.recordChoiceLogits = logits != nil
            executor = inProcess
        } else {
            try FileManager.default.createDirectory(atPath: config.checkpoint.dir.path, withIntermediateDirectories: true)
            executor = try DistributedExecutor(job: config, fingerprint: setup.fingerprint, step: state.step, params: state.params,
                                               maxLabelsPerSample: dataset.tokens, vocabularySize: setup.language.vocabSize)
        }
        defer { executor.shutdown() }
        let units = EvalReport.units(rows: dataset.count, size: batchSize ?? config.data.microBatch)
        let results: [EvalResult]
        do {
            results = try executor.evaluate(after: state.step, dataset: dataset, units: units, params: state.params,
                                            maxNewTokens: generate == nil ? 0 : maxNewTokens, eos: eos) { done in
                Console.progress((generate == nil ? "eval" : "eval and generate") + " \(done)/\(dataset.count)", final: done == dataset.count)
            }
        } catch let i as Interrupted {
            Console.endProgress()
            Console.say("eval: stopped by signal \(i.signal)")
            throw ExitCode(128 + i.signal)
        }
        let report = try EvalReport(dataset: dataset, units: units, results: results)
        Console.say(report.summary)
        if let generate {
            try writeCaptions(to: generate, dataset: dataset, units: units, results: results)
            Console.say("eval: wrote \(dataset.count) captions to \(generate); score them with "
                + "Scripts/caption_metrics.py \(generate) --tokenizer \(config.model.language)")
        }
        if let logits, let inProcess = executor as? InProcessExecutor {
            let file = try ChoiceLogitsFile(dataset: dataset, checkpoint: ck.source ?? checkpoint, step: state.step,
                                            fusion: config.model.fusion, units: units, logits: inProcess.choiceLogits,
                                            results: results)
            try file.write(to: logits)
            Console.say("eval: wrote the choice logits of \(dataset.count) rows to \(logits)")
        }
        if let json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
            let data = try encoder.encode(report) + Data("\n".utf8)
            if json == "-" { FileHandle.standardOutput.write(data) } else { try data.write(to: URL(fileURLWithPath: json)) }
        }
    }

    /// Each row's greedy caption as a JSON line, with the row's references when the file has them.
    func writeCaptions(to path: String, dataset: DatasetFile, units: [[Int]], results: [EvalResult]) throws {
        let references = try dataset.references()
        guard FileManager.default.createFile(atPath: path, contents: nil), let out = FileHandle(forWritingAtPath: path) else {
            throw UserError("cannot write \(path)")
        }
        defer { try? out.close() }
        for (unit, r) in zip(units, results) {
            for (i, ids) in zip(unit, r.generated) {
                var line: [String: Any] = ["index": i, "generated": ids.map(Int.init)]
                if let references {
                    guard let list = try? JSONSerialization.jsonObject(with: Data(references[i].utf8)) as? [String] else {
                        throw UserError("references of row \(i) in \(dataset.path) are not a JSON list of strings: \(references[i].prefix(80))")
                    }
                    line["references"] = list
                }
                out.write(try JSONSerialization.data(withJSONObject: line, options: [.sortedKeys]) + Data("\n".utf8))
            }
        }
    }
}

/// `coordinator eval --logits`: each row's logits of the choice letters at its answer position, column by
/// column, as `Scripts/dehvf_torch.py --logits` writes them too (so the two can be compared directly).
struct ChoiceLogitsFile: Encodable {
    var dataset: String
    var checkpoint: String
    var step: Int
    var fusion: String
    var choiceTokenIDs: [Int32]
    /// Row indices into the dataset, in order; the other columns follow them.
    var indices: [Int]
    var logits: [[Float]]
    var predictions: [Int32]
    var answers: [Int32]
    var accuracy: Double

    enum CodingKeys: String, CodingKey {
        case dataset, checkpoint, step, fusion, indices, logits, predictions, answers, accuracy
        case choiceTokenIDs = "choice_token_ids"
    }

    init(dataset: DatasetFile, checkpoint: String, step: Int, fusion: FusionMode, units: [[Int]], logits: [[[Float]]],
         results: [EvalResult]) throws {
        guard logits.count == units.count, zip(units, logits).allSatisfy({ $0.count == $1.count }) else {
            throw UserError("internal: choice logits for \(logits.count) units of \(units.count)")
        }
        self.dataset = dataset.path
        self.checkpoint = checkpoint
        self.step = step
        self.fusion = fusion.rawValue
        choiceTokenIDs = dataset.choiceTokenIDs ?? []
        indices = units.flatMap { $0 }
        self.logits = logits.flatMap { $0 }
        predictions = results.flatMap(\.predictions)
        answers = []
        for unit in units {
            guard let a = try dataset.readBatch(indices: unit, images: false).answer else {
                throw UserError("\(dataset.path) has no answer column")
            }
            answers += a
        }
        let right = zip(predictions, answers).filter { $0 == $1 }.count
        accuracy = indices.isEmpty ? 0 : Double(right) / Double(indices.count)
    }

    func write(to path: String) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        do {
            try (try encoder.encode(self) + Data("\n".utf8)).write(to: URL(fileURLWithPath: path))
        } catch {
            throw UserError("cannot write the choice logits to \(path)", cause: error)
        }
    }
}
