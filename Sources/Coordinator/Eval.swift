import ArgumentParser
import Cluster
import Foundation
import Shard

struct Eval: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Score a checkpoint on held-out data.",
        discussion: """
            Multiple choice: the argmax of the choice letters' logits at answer_position, over the first
            num_choices letters; overall accuracy, and per ScienceQA category (NAT/SOC/LAN, TXT/IMG/NO,
            G1-6/G7-12) when the dataset has meta/*. Caption data: the mean token loss.
            """)

    @OptionGroup var job: JobOptions
    @Option(help: ArgumentHelp("Checkpoint file, or a checkpoint directory (its 'latest').", valueName: "CK.h5"))
    var checkpoint: String
    @Option(help: "Dataset to score (default: data.eval of the job).") var data: String?
    @Option(help: "Samples per forward pass.") var batchSize: Int = 32
    @Option(help: ArgumentHelp("Also write the report as JSON to this file ('-' for stdout).", valueName: "FILE"))
    var json: String?

    func run() throws {
        let config = try job.load()
        let engine = try TrainingEngine(job: config)
        let ck = try loadCheckpoint(checkpoint)
        let state = try TrainState(checkpoint: ck, fuser: engine.fuser, backbone: engine.backbone)
        guard let path = data ?? config.data.eval else {
            throw UserError("no dataset to score: pass --data FILE.h5 or set data.eval in the job")
        }
        let report = try engine.evaluate(try engine.open(path), params: state.params, batchSize: batchSize) { done, total in
            Console.progress("eval \(done)/\(total)", final: done == total)
        }
        Console.say(EvalPrinter.describe(report))
        if let json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            let data = try encoder.encode(report) + Data("\n".utf8)
            if json == "-" { FileHandle.standardOutput.write(data) } else { try data.write(to: URL(fileURLWithPath: json)) }
        }
    }
}

/// A checkpoint from a file, or from a directory's `latest`.
func loadCheckpoint(_ path: String) throws -> Checkpoint {
    var isDir: ObjCBool = false
    if FileManager.default.fileExists(atPath: path, isDirectory: &isDir), isDir.boolValue {
        guard let c = try Checkpoint.readLatest(dir: path) else { throw UserError("\(path) has no 'latest' checkpoint") }
        return c
    }
    if (path as NSString).lastPathComponent == Checkpoint.latestName {
        let dir = (path as NSString).deletingLastPathComponent
        guard let c = try Checkpoint.readLatest(dir: dir.isEmpty ? "." : dir) else { throw UserError("\(path) names no checkpoint") }
        return c
    }
    return try Checkpoint.read(path: path)
}

enum EvalPrinter {
    static func describe(_ r: EvalReport) -> String {
        var lines: [String] = []
        if let o = r.overall {
            lines.append(String(format: "accuracy %.2f%% (%d/%d) on %@, mean token loss %.4f", 100 * o.accuracy, o.correct, o.total,
                                r.dataset, r.loss))
            var row: [String] = []
            for (_, names) in EvalReport.categoryNames {
                for n in names { if let b = r.categories[n] { row.append(String(format: "%@ %.2f%% (%d)", n, 100 * b.accuracy, b.total)) } }
            }
            if !row.isEmpty { lines.append("  " + row.joined(separator: "  ")) }
        } else {
            lines.append(String(format: "mean token loss %.4f (perplexity %.2f) on %@ (%d samples)", r.loss, exp(r.loss), r.dataset, r.samples))
        }
        return lines.joined(separator: "\n")
    }
}
