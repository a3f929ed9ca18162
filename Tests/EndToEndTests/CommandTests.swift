import Foundation
import Model
import Shard
import TestSupport
import Testing

/// The commands as a user runs them, checked against the reference implementations' files.
@Suite("coordinator commands")
struct CommandTests {
    static func maxDiff(_ a: URL, _ b: URL, _ dataset: String) throws -> (diff: Float, scale: Float, shape: [Int]) {
        let fa = try HDF5File.open(a.path), fb = try HDF5File.open(b.path)
        let da = try fa.root.openGroup((dataset as NSString).deletingLastPathComponent)
            .openDataset((dataset as NSString).lastPathComponent)
        let db = try fb.root.openGroup((dataset as NSString).deletingLastPathComponent)
            .openDataset((dataset as NSString).lastPathComponent)
        #expect(da.shape == db.shape, "\(dataset): shape \(da.shape) vs reference \(db.shape)")
        let x: [Float] = try da.readAll(), y: [Float] = try db.readAll()
        var diff: Float = 0, scale: Float = 0
        for (p, q) in zip(x, y) { diff = max(diff, abs(p - q)); scale = max(scale, abs(q)) }
        return (diff, scale, da.shape)
    }

    @Test("inspect backbone matches transformers' hidden states and logits",
          arguments: ["llama-gqa", "llama-tied-headdim", "bf16"])
    func inspectBackbone(_ name: String) throws {
        let dir = Fixtures.root.appendingPathComponent("backbones/\(name)")
        let out = try Demo.scratch("inspect").appendingPathComponent("out.h5")
        let c = try Child("coordinator", ["inspect", "backbone", "--vision", dir.appendingPathComponent("vision").path,
                                          "--language", dir.appendingPathComponent("language").path,
                                          "--inputs", dir.appendingPathComponent("inputs.h5").path, "--out", out.path],
                          log: out.path + ".log")
        #expect(try c.wait() == 0, "\(c.output)")
        // Same bound as the library's golden test: measured differences are 1e-6..7e-6 on O(1) values.
        for ds in ["vision/hidden_states", "language/hidden_states", "language/logits"] {
            let (diff, scale, _) = try Self.maxDiff(out, dir.appendingPathComponent("reference.h5"), ds)
            #expect(diff <= 2e-5 * max(1, scale), "\(name) \(ds): max |diff| \(diff), scale \(scale)")
        }
    }

    @Test("inspect backbone says which input is wrong")
    func inspectBackboneBadInput() throws {
        let dir = Fixtures.root.appendingPathComponent("backbones/llama-gqa")
        let out = try Demo.scratch("inspect-bad").appendingPathComponent("out.h5")
        let c = try Child("coordinator", ["inspect", "backbone", "--vision", dir.appendingPathComponent("vision").path,
                                          "--language", dir.appendingPathComponent("language").path,
                                          "--inputs", dir.appendingPathComponent("reference.h5").path, "--out", out.path],
                          log: out.path + ".log")
        #expect(try c.wait() != 0)
        #expect(c.output.contains("pixel_values"), "the error names the missing dataset:\n\(c.output)")
        #expect(!FileManager.default.fileExists(atPath: out.path))
    }

    @Test("inspect gradients writes the PyTorch reference's loss and gradients", arguments: ["dehvf", "memvp", "concat"])
    func inspectGradients(_ mode: String) throws {
        let dir = Fixtures.root.appendingPathComponent("dehvf")
        let out = try Demo.scratch("grads").appendingPathComponent("grads.h5")
        let c = try Child("coordinator", ["inspect", "gradients", "--config", dir.appendingPathComponent("job-\(mode).yaml").path,
                                          "--checkpoint", dir.appendingPathComponent("checkpoint-\(mode).h5").path,
                                          "--data", dir.appendingPathComponent("data.h5").path, "--samples", "0:5",
                                          "--out", out.path], log: out.path + ".log")
        #expect(try c.wait() == 0, "\(c.output)")
        let reference = dir.appendingPathComponent("reference-\(mode).h5")
        let names = try TensorFile.read(group: try HDF5File.open(reference.path).root.openGroup("grads")).names
        for name in names {
            let (diff, scale, _) = try Self.maxDiff(out, reference, "grads/\(name)")
            #expect(diff <= 1e-4 * scale, "\(mode) \(name): max |diff| \(diff), scale \(scale)")
        }
        let ours: [Float] = try HDF5File.open(out.path).root.openDataset("loss").readAll()
        let theirs: [Float] = try HDF5File.open(reference.path).root.openDataset("loss").readAll()
        #expect(abs(ours[0] - theirs[0]) <= 1e-5 * abs(theirs[0]))
    }

    @Test("train, then checkpoint show and eval --json read what it wrote")
    func trainShowEval() throws {
        let dir = try Demo.scratch("show")
        let job = try Demo.job(in: dir, launcher: "inprocess", port: Demo.port(), steps: 5, every: 2)
        let t = try Child("coordinator", ["train", "--config", job], log: dir.path + "/train.log")
        #expect(try t.wait() == 0, "\(t.output)")
        let files = try FileManager.default.contentsOfDirectory(atPath: dir.appendingPathComponent("run").path)
        #expect(Set(files.filter { $0.hasPrefix("step-") }) == ["step-00000002.h5", "step-00000004.h5", "step-00000005.h5"])
        let show = try Child("coordinator", ["checkpoint", "show", dir.appendingPathComponent("run").path], log: dir.path + "/show.log")
        #expect(try show.wait() == 0)
        #expect(show.output.contains("step 5, epoch 0"), "\(show.output)")
        #expect(show.output.contains("router.weight") && show.output.contains("[4, 3, 64]"), "\(show.output)")
        let report = dir.appendingPathComponent("eval.json")
        let e = try Child("coordinator", ["eval", "--config", job, "--checkpoint", dir.appendingPathComponent("run/latest").path,
                                          "--data", try Demo.data().appendingPathComponent("test.h5").path, "--json", report.path],
                          log: dir.path + "/eval.log")
        #expect(try e.wait() == 0, "\(e.output)")
        let json = try JSONSerialization.jsonObject(with: Data(contentsOf: report)) as? [String: Any]
        let overall = json?["overall"] as? [String: Any]
        #expect(overall?["total"] as? Int == 64, "\(String(describing: json))")
        #expect(e.output.contains("accuracy"), "\(e.output)")
    }

    @Test("--resume refuses a checkpoint of another model shape and says which tensor")
    func resumeRefusesOtherShape() throws {
        let dir = try Demo.scratch("refuse")
        let job = try Demo.job(in: dir, launcher: "inprocess", port: Demo.port(), steps: 2)
        let t = try Child("coordinator", ["train", "--config", job], log: dir.path + "/train.log")
        #expect(try t.wait() == 0, "\(t.output)")
        let r = try Child("coordinator", ["train", "--config", job, "--resume", "latest", "--set", "model.projector_rank=16"],
                          log: dir.path + "/resume.log")
        #expect(try r.wait() != 0)
        #expect(r.output.contains("projector.fc1.weight"), "\(r.output)")
    }

    @Test("a diverging run (lr 1e30): non-finite steps are skipped and logged, the third in a row ends the job saying what to do")
    func divergence() throws {
        let dir = try Demo.scratch("diverge")
        let job = try Demo.job(in: dir, launcher: "inprocess", port: Demo.port(), steps: 10, extra: "")
        let t = try Child("coordinator", ["train", "--config", job, "--set", "optim.lr=1e30", "--set", "optim.warmup_steps=0"],
                          log: dir.path + "/train.log")
        #expect(try t.wait() != 0)
        #expect(t.output.contains("step 2: the combined gradient is not finite; the step is skipped"), "\(t.output)")
        #expect(t.output.contains("3 steps in a row (the last is step 4) had non-finite gradients")
                && t.output.contains("Lower optim.lr"), "\(t.output)")
        let lines = try String(contentsOf: dir.appendingPathComponent("run/train.jsonl"), encoding: .utf8)
            .split(separator: "\n").map { try JSONSerialization.jsonObject(with: Data($0.utf8)) as! [String: Any] }
        #expect(lines.count == 4, "one applied step, then three skipped: \(lines)")
        #expect(lines.first?["loss"] is Double && lines.first?["skipped"] == nil)
        #expect(lines.dropFirst().allSatisfy { $0["skipped"] as? Bool == true && $0["loss"] == nil }, "\(lines)")
    }

    @Test("a typo in the job file is an error that names the key")
    func unknownKey() throws {
        let dir = try Demo.scratch("typo")
        let job = try Demo.job(in: dir, launcher: "inprocess", port: Demo.port(), steps: 1, extra: "compute:\n  thread: 2")
        let t = try Child("coordinator", ["train", "--config", job], log: dir.path + "/train.log")
        #expect(try t.wait() != 0)
        #expect(t.output.contains("compute.thread"), "\(t.output)")
    }

    @Test("training again into a checkpoint.dir with checkpoints is refused unless --resume or --fresh")
    func existingRun() throws {
        let dir = try Demo.scratch("again")
        let job = try Demo.job(in: dir, launcher: "inprocess", port: Demo.port(), steps: 2, every: 1)
        let first = try Child("coordinator", ["train", "--config", job], log: dir.path + "/first.log")
        #expect(try first.wait() == 0, "\(first.output)")
        let (step, params) = try Demo.latest(dir)
        #expect(step == 2)
        let again = try Child("coordinator", ["train", "--config", job], log: dir.path + "/again.log")
        #expect(try again.wait() != 0)
        #expect(again.output.contains("--resume latest") && again.output.contains("--fresh"), "\(again.output)")
        #expect(try Demo.latest(dir).params.isBitwiseEqual(params), "the refused run must not touch the checkpoints")
        let both = try Child("coordinator", ["train", "--config", job, "--fresh", "--resume", "latest"], log: dir.path + "/both.log")
        #expect(try both.wait() != 0)
        let fresh = try Child("coordinator", ["train", "--config", job, "--fresh"], log: dir.path + "/fresh.log")
        #expect(try fresh.wait() == 0, "\(fresh.output)")
        #expect(fresh.output.contains("removed 2 checkpoint(s)"), "\(fresh.output)")
        #expect(Demo.logLines(dir) == 2, "the log holds the new run only")
        #expect(try Demo.latest(dir).params.isBitwiseEqual(params), "a fresh run of the same job gives the same parameters")
    }
}
