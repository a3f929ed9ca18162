import Foundation
import TestSupport
import Testing

/// `logging.tensorboard` as a user sees it: the event files a real coordinator writes, read by the
/// `tensorboard` package's own loader (EventAccumulator), through a resume that computes steps again.
/// Needs python3 with tensorboard (Scripts/bootstrap installs it); fails without.
@Suite("TensorBoard event files", .serialized)
struct TensorBoardTests {
    static let checker = Fixtures.packageRoot.appendingPathComponent("Scripts/reference/check_tensorboard.py").path

    @Test("a demo job, resumed from an earlier checkpoint: every train.jsonl figure is a point, each step once, float32-exact")
    func resumedRun() throws {
        let py = try python3()
        let probe = try TestSupport.run(py, ["-c", "import tensorboard.backend.event_processing.event_accumulator"])
        if probe.status != 0 { throw PythonMissing(reason: "this test needs the tensorboard package: \(probe.stderr)") }
        let dir = try Demo.scratch("tensorboard")
        let data = try Demo.data()
        // 12 steps with checkpoints (and evaluations) at 4, 8 and 12, gradients clipped so grad_norm is live.
        let job = try Demo.job(in: dir, launcher: "inprocess", port: Demo.port(), steps: 12, every: 4,
                               extra: "eval:\n  every: 4", dataExtra: "eval: \(data.path)/test.h5", optimExtra: "max_grad_norm: 0.05")
        let first = try Child("coordinator", ["train", "--config", job], log: dir.path + "/coordinator-1.log")
        #expect(try first.wait() == 0, "\(first.output)")
        // Back to step 4: steps 4...11 are computed and logged again, the evaluations after 8 and 12 too.
        let run = dir.appendingPathComponent("run")
        let resumed = try Child("coordinator", ["train", "--config", job, "--resume", run.appendingPathComponent("step-00000004.h5").path],
                                log: dir.path + "/coordinator-2.log")
        #expect(try resumed.wait() == 0, "\(resumed.output)")

        let check = try TestSupport.run(py, [Self.checker, run.path])
        #expect(check.status == 0, "\(check.stdout)\n\(check.stderr)")
        let summary = try #require(try JSONSerialization.jsonObject(with: Data(check.stdout.utf8)) as? [String: Any], "\(check.stdout)")
        let tags = summary["tags"] as? [String] ?? []
        for tag in ["train/loss", "train/lr", "train/grad_norm", "train/samples_per_s", "train/compute_s", "train/exchange_s",
                    "train/combine_s", "eval/loss", "eval/accuracy"] {
            #expect(tags.contains(tag), "\(tag) missing from \(tags)")
        }
        // One file per run, named in the order the runs started; the resume re-logged steps that must not repeat.
        #expect((summary["files"] as? [String])?.count == 2, "\(summary)")
        #expect(summary["restarts"] as? Int == 1 && (summary["replaced"] as? Int ?? 0) >= 8 * 10, "\(summary)")
        // 12 points per train tag (x = 1...12), 3 per eval tag (x = 4, 8, 12).
        let trainTags = tags.filter { $0.hasPrefix("train/") }.count, evalTags = tags.filter { $0.hasPrefix("eval/") }.count
        #expect(summary["points"] as? Int == 12 * trainTags + 3 * evalTags, "\(summary)")

        // Without logging.tensorboard: no tb directory.
        let off = try Demo.scratch("tensorboard-off")
        let quiet = try Demo.job(in: off, launcher: "inprocess", port: Demo.port(), steps: 1, extra: "logging:\n  tensorboard: false")
        let c = try Child("coordinator", ["train", "--config", quiet], log: off.path + "/coordinator.log")
        #expect(try c.wait() == 0, "\(c.output)")
        #expect(!FileManager.default.fileExists(atPath: off.appendingPathComponent("run/tb").path))
        #expect(FileManager.default.fileExists(atPath: off.appendingPathComponent("run/train.jsonl").path))
    }
}
