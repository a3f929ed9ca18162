import ArgumentParser
import Cluster
import Foundation
import Model
import Shard
import Training

struct Eval: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Score a checkpoint on held-out data.",
        discussion: """
            Multiple choice: the argmax of the choice letters' logits at answer_position, over the first
            num_choices letters; overall accuracy, and per ScienceQA category (NAT/SOC/LAN, TXT/IMG/NO,
            G1-6/G7-12) when the dataset has meta/*. Caption data: the mean token loss, and with
            --generate a greedy caption per row written as JSON lines {"index", "generated" (token ids),
            "references"}; Scripts/caption_metrics.py decodes them and computes CIDEr-D and BLEU.
            """)

    @OptionGroup var job: JobOptions
    @Option(help: ArgumentHelp("Checkpoint file, or a checkpoint directory (its 'latest').", valueName: "CK.h5"))
    var checkpoint: String
    @Option(help: "Dataset to score (default: data.eval of the job).") var data: String?
    @Option(help: "Samples per forward pass.") var batchSize: Int = 32
    @Option(help: ArgumentHelp("Also write the report as JSON to this file ('-' for stdout).", valueName: "FILE"))
    var json: String?
    @Option(help: ArgumentHelp("Caption data: write each row's greedy caption as JSON lines to this file.", valueName: "FILE"))
    var generate: String?
    @Option(help: "Most tokens generated per caption.") var maxNewTokens: Int = 30
    @Option(help: "Token id that ends a caption (default: eos_token_id in the language model's config.json).")
    var eosTokenID: Int32?

    func validate() throws {
        guard batchSize >= 1 else { throw ValidationError("--batch-size must be at least 1") }
        guard maxNewTokens >= 1 else { throw ValidationError("--max-new-tokens must be at least 1") }
    }

    func run() throws {
        let config = try job.load()
        let engine = try TrainingEngine(job: config)
        let ck = try Checkpoint.read(fileOrDirectory: checkpoint)
        let state = try TrainState(checkpoint: ck, fuser: engine.fuser, backbone: engine.fingerprint)
        guard let path = data ?? config.data.eval?.path else {
            throw UserError("no dataset to score: pass --data FILE.h5 or set data.eval in the job")
        }
        let report = try engine.evaluate(try engine.open(path), params: state.params, batchSize: batchSize) { done, total in
            Console.progress("eval \(done)/\(total)", final: done == total)
        }
        Console.say(report.summary)
        if let generate { try writeCaptions(to: generate, engine: engine, dataset: try engine.open(path), state: state) }
        if let json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            let data = try encoder.encode(report) + Data("\n".utf8)
            if json == "-" { FileHandle.standardOutput.write(data) } else { try data.write(to: URL(fileURLWithPath: json)) }
        }
    }
}

extension Eval {
    /// Greedy captions for every row of a caption dataset, as JSON lines.
    func writeCaptions(to path: String, engine: TrainingEngine, dataset: DatasetFile, state: TrainState) throws {
        guard dataset.task == .caption else { throw UserError("--generate needs a caption dataset; \(dataset.path) is \(dataset.task.rawValue)") }
        let eos = eosTokenID ?? engine.backbone.language.config.eosTokenID
        if eos == nil { Console.say("eval: no eos_token_id in the language model's config.json; captions run to --max-new-tokens") }
        let references = try dataset.references()
        guard FileManager.default.createFile(atPath: path, contents: nil), let out = FileHandle(forWritingAtPath: path) else {
            throw UserError("cannot write \(path)")
        }
        defer { try? out.close() }
        var start = 0
        while start < dataset.count {
            let indices = Array(start..<min(start + batchSize, dataset.count))
            let captions = try engine.generate(dataset, indices: indices, params: state.params, maxNewTokens: maxNewTokens, eos: eos)
            for (i, ids) in zip(indices, captions) {
                var line: [String: Any] = ["index": i, "generated": ids.map(Int.init)]
                if let references {
                    guard let list = try? JSONSerialization.jsonObject(with: Data(references[i].utf8)) as? [String] else {
                        throw UserError("references of row \(i) in \(dataset.path) are not a JSON list of strings: \(references[i].prefix(80))")
                    }
                    line["references"] = list
                }
                out.write(try JSONSerialization.data(withJSONObject: line, options: [.sortedKeys]) + Data("\n".utf8))
            }
            start += batchSize
            Console.progress("generate \(min(start, dataset.count))/\(dataset.count)", final: start >= dataset.count)
        }
        Console.say("eval: wrote \(dataset.count) captions to \(path); score them with Scripts/caption_metrics.py \(path) --tokenizer \(engine.job.model.language)")
    }
}
