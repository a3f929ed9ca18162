import ArgumentParser
import Cluster
import Foundation
import Model
import Shard

struct CheckpointCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "checkpoint", abstract: "Look inside checkpoints.", subcommands: [Show.self])

    struct Show: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Print a checkpoint's step, job config, parameter shapes and loss history.")

        @Argument(help: "Checkpoint file, or a checkpoint directory (its 'latest').") var path: String

        func run() throws {
            let c = try Checkpoint.read(fileOrDirectory: path)
            print("checkpoint \(c.source ?? path)")
            print("  step \(c.step), epoch \(c.epoch), seed \(c.seed)")
            print("  backbone \(c.backbone)")
            var total = 0
            print("  parameters:")
            for (name, t) in zip(c.params.names, c.params.tensors) {
                var sq = 0.0
                for i in 0..<t.count { sq += Double(t.data[i]) * Double(t.data[i]) }
                total += t.count
                print(String(format: "    %-22@ %-14@ %9d values  norm %.4g", name, "\(t.shape)", t.count, sq.squareRoot()))
            }
            print("  \(total) trainable values; optimizer moments for \(c.expAvg.count) tensors")
            let h = c.lossHistory
            if let first = h.first, let last = h.last {
                let tail = h.suffix(max(1, h.count / 10))
                print(String(format: "  loss: first %.4f, last %.4f, min %.4f, mean of the last %d steps %.4f", first, last,
                             h.min()!, tail.count, tail.reduce(0, +) / Float(tail.count)))
            } else {
                print("  loss history: empty")
            }
            if let job = try? JobConfig(json: c.config) {
                print("  job: \(job.model.fusion), lr \(job.optim.lr), global batch \(job.data.globalBatch), job id \(job.jobIDString)")
            }
            print("  config: \(c.config)")
        }
    }
}
