import Foundation
import Model
import Shard
import TestSupport
import Testing

/// `coordinator export` and `coordinator eval --logits` as a user runs them, checked against PyTorch:
/// `Tests/Fixtures/export/<mode>.json` holds the choice logits `Scripts/dehvf_torch.py` computed on the same
/// export (made by `Scripts/reference/export_golden.py`; the inputs come from the `ExportFixture` tool, a pure
/// function of fixed seeds, so this test rebuilds them bit for bit). With torch installed the script also
/// runs live.
@Suite("Export to PyTorch")
struct ExportTests {
    /// The tolerance of the issue: float32 through the demo's 4-layer LLaMA (weights x10, logits up to ~40),
    /// summed in other orders by OpenBLAS and by torch.
    static let tolerance: Float = 1e-4

    /// ExportFixture's files, made once per test process.
    enum Inputs {
        static let lock = NSLock()
        nonisolated(unsafe) static var made: URL?

        static func directory() throws -> URL {
            lock.lock()
            defer { lock.unlock() }
            if let made { return made }
            let dir = try Demo.scratch("export-inputs")
            let r = try run(try Products.path("ExportFixture"), [dir.path])
            guard r.status == 0 else { throw TestFailure("ExportFixture failed: \(r.stderr)") }
            made = dir
            return dir
        }
    }

    struct Golden: Decodable {
        var fusion: String
        var adapterSHA256: String
        var indices: [Int]
        var logits: [[Float]]
        var answers: [Int32]
        /// Greedy continuations of captions.h5's prompts, 6 tokens at most, eos 2.
        var captions: [[Int32]]
        enum CodingKeys: String, CodingKey {
            case fusion, indices, logits, answers, captions
            case adapterSHA256 = "adapter_sha256"
        }
    }

    /// The columns of `coordinator eval --logits` and `dehvf_torch.py --logits` that are compared.
    struct LogitsFile: Decodable {
        var fusion: String
        var indices: [Int]
        var logits: [[Float]]
        var predictions: [Int32]
        var answers: [Int32]
        var accuracy: Double
        var choiceTokenIDs: [Int32]
        enum CodingKeys: String, CodingKey {
            case fusion, indices, logits, predictions, answers, accuracy
            case choiceTokenIDs = "choice_token_ids"
        }
    }

    static func maxDifference(_ a: [[Float]], _ b: [[Float]]) -> Float {
        zip(a, b).flatMap { zip($0, $1).map { abs($0 - $1) } }.max() ?? .infinity
    }

    func export(_ mode: String, extra: [String] = []) throws -> (dir: URL, result: ProcessResult) {
        let inputs = try Inputs.directory()
        let out = try Demo.scratch("adapter-\(mode)")
        try FileManager.default.removeItem(at: out)
        let r = try run(try Products.path("coordinator"),
                        ["export", "--checkpoint", inputs.appendingPathComponent(mode).path, "--out", out.path] + extra)
        return (out, r)
    }

    @Test("export writes the checkpoint's tensors and settings; eval's choice logits equal PyTorch's within 1e-4",
          arguments: ["dehvf", "memvp", "concat"])
    func matchesPyTorch(mode: String) throws {
        let inputs = try Inputs.directory()
        let (adapter, exported) = try export(mode)
        #expect(exported.status == 0, "\(exported.stderr)")
        let checkpoint = try #require(try Checkpoint.readLatest(dir: inputs.appendingPathComponent(mode).path))

        // adapter.safetensors: the checkpoint's tensors, names, order, shapes and bits.
        let tensors = try SafetensorsFile(url: adapter.appendingPathComponent("adapter.safetensors"))
        #expect(tensors.names == checkpoint.params.names.sorted())
        #expect(tensors.metadata["format"] == "pt")
        for (name, want) in zip(checkpoint.params.names, checkpoint.params.tensors) {
            #expect(tensors.info(name)?.dtype == .f32, "\(name)")
            let got = try tensors.tensor(name)
            #expect(got.shape == want.shape, "\(name)")
            #expect(got.count == want.count && (0..<want.count).allSatisfy { got.data[$0].bitPattern == want.data[$0].bitPattern },
                    "\(name) differs from the checkpoint")
        }

        // adapter_config.json: everything that rebuilds the model.
        let config = try #require(try JSONSerialization.jsonObject(
            with: Data(contentsOf: adapter.appendingPathComponent("adapter_config.json"))) as? [String: Any])
        let expected: [String: Any] = [
            "format": "dehvf-adapter", "version": 1, "fusion": mode, "projector_rank": 128, "feature_scale": 0.1,
            "injection_scale": 3.0, "dropout": 0.1, "llm_layers": 4, "llm_width": 64, "vision_width": 64,
            "vision_depth": 4, "patch_tokens": 16, "visual_tokens": mode == "dehvf" ? 16 : 4, "step": 0,
            "vision": inputs.appendingPathComponent("vision").path, "language": inputs.appendingPathComponent("language").path,
            "backbone": checkpoint.backbone,
        ]
        for (key, value) in expected {
            #expect((config[key] as? NSObject)?.isEqual(value) == true, "\(key): \(config[key] ?? "missing"), expected \(value)")
        }
        #expect(config["vision_layers"] as? [Int] == (mode == "dehvf" ? [1, 2, 4] : [3]))
        let shapes = try #require(config["tensors"] as? [String: [Int]])
        #expect(shapes == Dictionary(uniqueKeysWithValues: checkpoint.params.shapes.map { ($0.name, $0.shape) }))

        // The same bytes the golden logits were computed from: the inputs are what the script had.
        let golden = try JSONDecoder().decode(Golden.self, from: Data(contentsOf: Fixtures.root.appendingPathComponent("export/\(mode).json")))
        #expect(golden.fusion == mode)
        #expect(try BackboneFingerprint.sha256HexStreaming(adapter.appendingPathComponent("adapter.safetensors")).digest
                == golden.adapterSHA256, "the export differs from the one Tests/Fixtures/export was made from; rerun Scripts/reference/export_golden.py if that was meant")

        // coordinator eval --logits against the PyTorch logits.
        let logitsPath = adapter.deletingLastPathComponent().appendingPathComponent("eval-\(mode)-\(getpid()).json")
        let eval = try run(try Products.path("coordinator"),
                           ["eval", "--config", inputs.appendingPathComponent("job-\(mode).yaml").path,
                            "--checkpoint", inputs.appendingPathComponent(mode).path,
                            "--data", inputs.appendingPathComponent("rows.h5").path, "--logits", logitsPath.path])
        #expect(eval.status == 0, "\(eval.stderr)")
        let swift = try JSONDecoder().decode(LogitsFile.self, from: Data(contentsOf: logitsPath))
        #expect(swift.fusion == mode)
        #expect(swift.indices == Array(0..<32) && swift.indices == golden.indices)
        #expect(swift.answers == golden.answers)
        #expect(swift.choiceTokenIDs == DemoTask.choiceTokenIDs)
        #expect(swift.logits.count == 32 && swift.logits.allSatisfy { $0.count == 4 })
        let difference = Self.maxDifference(swift.logits, golden.logits)
        #expect(difference <= Self.tolerance, "max |coordinator eval - PyTorch| = \(difference) in \(mode)")
        // The predictions are the argmax of those logits, and the accuracy counts them.
        for (row, p) in zip(swift.logits, swift.predictions) { #expect(row[Int(p)] == row.max()) }
        #expect(swift.accuracy == Double(zip(swift.predictions, swift.answers).filter { $0 == $1 }.count) / 32)

        // Greedy captions: the same token ids as dehvf_torch.py --generate (the logits agree to ~1e-5, far
        // from any near-tie on these rows).
        let captionsPath = adapter.deletingLastPathComponent().appendingPathComponent("captions-\(mode)-\(getpid()).jsonl")
        let generate = try run(try Products.path("coordinator"),
                               ["eval", "--config", inputs.appendingPathComponent("job-\(mode).yaml").path,
                                "--checkpoint", inputs.appendingPathComponent(mode).path,
                                "--data", inputs.appendingPathComponent("captions.h5").path, "--generate", captionsPath.path,
                                "--max-new-tokens", "6", "--eos-token-id", "2"])
        #expect(generate.status == 0, "\(generate.stderr)")
        let generated = try String(contentsOf: captionsPath, encoding: .utf8).split(separator: "\n").map { line in
            ((try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])?["generated"] as? [Int] ?? []).map(Int32.init)
        }
        #expect(generated.count == 16 && generated == golden.captions, "\(generated) vs PyTorch \(golden.captions)")

        // With torch here, the script itself, live.
        guard let py = try? python3(), (try? run(py, ["-c", "import torch, transformers, safetensors, h5py"]))?.status == 0 else {
            return
        }
        let torchPath = adapter.deletingLastPathComponent().appendingPathComponent("torch-\(mode)-\(getpid()).json")
        let live = try run(py, [Fixtures.packageRoot.appendingPathComponent("Scripts/dehvf_torch.py").path, "--adapter", adapter.path,
                                "--data", inputs.appendingPathComponent("rows.h5").path, "--logits", torchPath.path, "--threads", "1"])
        #expect(live.status == 0, "\(live.stderr)")
        let torch = try JSONDecoder().decode(LogitsFile.self, from: Data(contentsOf: torchPath))
        let liveDifference = Self.maxDifference(swift.logits, torch.logits)
        #expect(torch.indices == swift.indices)
        #expect(liveDifference <= Self.tolerance, "max |coordinator eval - dehvf_torch.py| = \(liveDifference) in \(mode)")
    }

    @Test("export refuses a non-empty --out unless --force, which replaces only its two files")
    func refusesToOverwrite() throws {
        let inputs = try Inputs.directory()
        let out = try Demo.scratch("adapter-used")
        try "keep me".write(to: out.appendingPathComponent("notes.txt"), atomically: true, encoding: .utf8)
        let coordinator = try Products.path("coordinator")
        let args = ["export", "--checkpoint", inputs.appendingPathComponent("memvp").path, "--out", out.path]
        let refused = try run(coordinator, args)
        #expect(refused.status != 0)
        #expect(refused.stderr.contains("not empty") && refused.stderr.contains("--force"), "\(refused.stderr)")
        #expect(!FileManager.default.fileExists(atPath: out.appendingPathComponent("adapter.safetensors").path))

        let forced = try run(coordinator, args + ["--force"])
        #expect(forced.status == 0, "\(forced.stderr)")
        #expect(FileManager.default.fileExists(atPath: out.appendingPathComponent("adapter.safetensors").path))
        #expect(FileManager.default.fileExists(atPath: out.appendingPathComponent("adapter_config.json").path))
        #expect(try String(contentsOf: out.appendingPathComponent("notes.txt"), encoding: .utf8) == "keep me")

        // A file as --out, a missing checkpoint: clear errors, nothing written.
        let file = out.appendingPathComponent("notes.txt").path
        let onFile = try run(coordinator, ["export", "--checkpoint", inputs.appendingPathComponent("memvp").path, "--out", file])
        #expect(onFile.status != 0 && onFile.stderr.contains("is a file"), "\(onFile.stderr)")
        let missing = try run(coordinator, ["export", "--checkpoint", out.appendingPathComponent("none.h5").path,
                                            "--out", out.appendingPathComponent("new").path])
        #expect(missing.status != 0 && missing.stderr.contains("none.h5"), "\(missing.stderr)")
    }

    @Test("export reads moved backbones from --vision/--language and names them in adapter_config.json; a wrong one is a clear error")
    func movedBackbones() throws {
        let inputs = try Inputs.directory()
        let moved = try Demo.scratch("moved-backbones")
        for name in ["vision", "language"] {
            try FileManager.default.createSymbolicLink(at: moved.appendingPathComponent(name),
                                                       withDestinationURL: inputs.appendingPathComponent(name))
        }
        let (adapter, r) = try export("dehvf", extra: ["--vision", moved.appendingPathComponent("vision").path,
                                                       "--language", moved.appendingPathComponent("language").path])
        #expect(r.status == 0, "\(r.stderr)")
        let config = try JSONSerialization.jsonObject(with: Data(contentsOf: adapter.appendingPathComponent("adapter_config.json"))) as? [String: Any]
        #expect(config?["vision"] as? String == moved.appendingPathComponent("vision").path)
        #expect(config?["language"] as? String == moved.appendingPathComponent("language").path)

        let (_, wrong) = try export("dehvf", extra: ["--vision", moved.appendingPathComponent("nowhere").path])
        #expect(wrong.status != 0)
        #expect(wrong.stderr.contains("--vision DIR") && wrong.stderr.contains("nowhere"), "\(wrong.stderr)")
    }

    @Test("eval --logits is refused with workers, and on caption data")
    func logitsNeedsInProcessMultipleChoice() throws {
        let inputs = try Inputs.directory()
        let coordinator = try Products.path("coordinator")
        let base = ["eval", "--config", inputs.appendingPathComponent("job-memvp.yaml").path,
                    "--checkpoint", inputs.appendingPathComponent("memvp").path, "--logits", "/dev/null"]
        let withWorkers = try run(coordinator, base + ["--workers", "2"])
        #expect(withWorkers.status != 0 && withWorkers.stderr.contains("--logits"), "\(withWorkers.stderr)")
        let captions = try Demo.scratch("logits-captions")
        try DatasetWriter.write(DemoTask.captionContents(count: 4, seed: 7), to: captions.appendingPathComponent("c.h5").path)
        let onCaptions = try run(coordinator, base + ["--data", captions.appendingPathComponent("c.h5").path])
        #expect(onCaptions.status != 0 && onCaptions.stderr.contains("multiple-choice"), "\(onCaptions.stderr)")
    }
}
