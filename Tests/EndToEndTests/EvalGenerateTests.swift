import Foundation
import Shard
import TestSupport
import Testing

/// `coordinator eval --generate` as a user runs it: train a caption job, then write greedy captions.
@Suite("eval --generate")
struct EvalGenerateTests {
    @Test("coordinator eval --generate writes one JSON line per row with the generated ids and the references")
    func evalGenerate() throws {
        let demo = try Demo.data()
        let data = try Demo.scratch("captions")
        for name in ["vision", "language"] {
            try FileManager.default.createSymbolicLink(at: data.appendingPathComponent(name),
                                                       withDestinationURL: demo.appendingPathComponent(name))
        }
        try DatasetWriter.write(DemoTask.captionContents(count: 32, seed: 7), to: data.appendingPathComponent("train.h5").path)
        let job = try Demo.job(in: data, launcher: "inprocess", port: Demo.port(), steps: 2, data: data)
        let train = try Child("coordinator", ["train", "--config", job], log: data.path + "/train.log")
        #expect(try train.wait() == 0, "\(train.output)")
        let out = data.appendingPathComponent("captions.jsonl")
        let eval = try Child("coordinator", ["eval", "--config", job, "--checkpoint", data.appendingPathComponent("run").path,
                                             "--data", data.appendingPathComponent("train.h5").path, "--generate", out.path,
                                             "--max-new-tokens", "5", "--batch-size", "4"], log: data.path + "/eval.log")
        #expect(try eval.wait() == 0, "\(eval.output)")
        let lines = try String(contentsOf: out, encoding: .utf8).split(separator: "\n")
        let references = DemoTask.captionContents(count: 32, seed: 7).references!
        #expect(lines.count == 32)
        for (i, line) in lines.enumerated() {
            let object = try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any]
            #expect(object?["index"] as? Int == i)
            let ids = object?["generated"] as? [Int] ?? []
            #expect(!ids.isEmpty && ids.count <= 5 && ids.allSatisfy { $0 >= 0 && $0 < DemoTask.vocabularySize })
            let want = try JSONSerialization.jsonObject(with: Data(references[i].utf8)) as? [String]
            #expect(object?["references"] as? [String] == want)
        }
        #expect(eval.output.contains("caption_metrics.py"), "\(eval.output)")

        // The same captions from two local workers, byte for byte.
        let distributed = data.appendingPathComponent("captions-workers.jsonl")
        let onWorkers = try Child("coordinator", ["eval", "--config", job, "--checkpoint", data.appendingPathComponent("run").path,
                                                  "--data", data.appendingPathComponent("train.h5").path, "--generate", distributed.path,
                                                  "--max-new-tokens", "5", "--batch-size", "4", "--workers", "2"],
                              log: data.path + "/eval-workers.log")
        #expect(try onWorkers.wait() == 0, "\(onWorkers.output)")
        #expect(try Data(contentsOf: distributed) == Data(contentsOf: out))
    }
}

/// Held-out evaluation inside a training job and on workers, as a user runs it.
@Suite("Distributed evaluation")
struct DistributedEvalTests {
    static func evalLines(_ dir: URL) throws -> [[String: Any]] {
        try String(contentsOf: dir.appendingPathComponent("run/train.jsonl"), encoding: .utf8).split(separator: "\n")
            .compactMap { try JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }
            .filter { $0["eval"] != nil }
    }

    @Test("eval.every scores data.eval on the job's workers; best names the lowest-loss checkpoint past keep; eval --workers 2 reports what eval in process does, bitwise")
    func evalDuringTraining() throws {
        let demo = try Demo.data()
        let dir = try Demo.scratch("dist-eval")
        let job = try Demo.job(in: dir, launcher: "local", port: Demo.port(), steps: 6, dataExtra: "eval: \(demo.path)/test.h5")
        let train = try Child("coordinator", ["train", "--config", job, "--set", "eval.every=2", "--set", "checkpoint.keep_best=loss",
                                              "--set", "checkpoint.keep=1"], log: dir.path + "/train.log")
        #expect(try train.wait() == 0, "\(train.output)")
        let lines = try Self.evalLines(dir)
        #expect(lines.map { $0["step"] as? Int } == [2, 4, 6], "\(lines)")
        var best: (step: Int, loss: Double)?
        for line in lines {
            let step = line["step"] as! Int, loss = line["loss"] as! Double
            #expect(line["accuracy"] is Double && line["samples"] as? Int == 64)
            let improves = best.map { loss < $0.loss } ?? true
            #expect((line["best"] as? Bool ?? false) == improves, "step \(step)")
            if improves { best = (step, loss) }
        }
        let bestStep = try #require(best?.step)
        let run = dir.appendingPathComponent("run")
        let pointer = try String(contentsOf: run.appendingPathComponent("best"), encoding: .utf8)
        #expect(pointer == "step-0000000\(bestStep).h5\n")
        #expect(FileManager.default.fileExists(atPath: run.appendingPathComponent("step-00000006.h5").path))
        #expect(FileManager.default.fileExists(atPath: run.appendingPathComponent(pointer.trimmingCharacters(in: .newlines)).path))

        // The best checkpoint scored again, here and on two workers: the same report, and the loss of
        // its line in train.jsonl.
        var reports: [Data] = []
        for extra in [[], ["--workers", "2", "--set", "cluster.bind=tcp://127.0.0.1:\(Demo.port())"]] {
            let out = dir.appendingPathComponent("report-\(reports.count).json")
            let eval = try Child("coordinator", ["eval", "--config", job, "--checkpoint", run.appendingPathComponent("best").path,
                                                 "--json", out.path] + extra, log: dir.path + "/eval-\(reports.count).log")
            #expect(try eval.wait() == 0, "\(eval.output)")
            reports.append(try Data(contentsOf: out))
        }
        #expect(reports[0] == reports[1])
        let report = try JSONSerialization.jsonObject(with: reports[0]) as? [String: Any]
        #expect(report?["loss"] as? Double == best?.loss)
    }
}
