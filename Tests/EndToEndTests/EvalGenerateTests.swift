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
    }
}
