import Foundation
import Model
import Shard
import TestSupport
import Testing

/// Runs Scripts/prepare_*.py on the fabricated releases in Tests/Fixtures/prepare (regenerate them with
/// Scripts/make_prepare_fixtures.py) and reads the outputs with `DatasetFile`. Needs python3 with h5py,
/// tokenizers and Pillow; fails without them.
@Suite("Prepare scripts", .serialized)
struct PrepareScriptTests {
    static let fixtures = packageRoot + "/Tests/Fixtures/prepare"

    func script(_ name: String, _ args: [String]) throws {
        let py = try python3()
        let probe = try run(py, ["-c", "import h5py, tokenizers, PIL, numpy"])
        if probe.status != 0 {
            throw PythonMissing(reason: "prepare scripts need h5py, tokenizers and Pillow: \(probe.stderr)")
        }
        let r = try run(py, [packageRoot + "/Scripts/" + name] + args)
        #expect(r.status == 0, "\(name) failed: \(r.stderr)")
    }

    @Test("ScienceQA: QCM prompt rows with the answer letter's token right after answer_position")
    func scienceQA() throws {
        let dir = try TemporaryDirectory("shard")
        defer { dir.cleanup() }
        try script("prepare_scienceqa.py", ["--root", Self.fixtures + "/scienceqa", "--tokenizer", Self.fixtures + "/tokenizer",
                                            "--split", "train", "--image-size", "8", "--out", dir.file("sqa.h5")])
        let f = try DatasetFile(path: dir.file("sqa.h5"))
        let problems = try JSONSerialization.jsonObject(
            with: Data(contentsOf: URL(fileURLWithPath: Self.fixtures + "/scienceqa/problems.json"))) as! [String: [String: Any]]
        let pids = ["1", "2", "3", "4"]  // pid_splits.json's train order
        #expect(f.task == .multipleChoice && f.count == 4 && f.imageHeight == 8 && f.imageWidth == 8)
        let choices = try #require(f.choiceTokenIDs)
        #expect(choices.count == 5 && Set(choices).count == 5)
        #expect(f.imageMean == DatasetContents.clipMean && f.imageStd == DatasetContents.clipStd)
        let b = try f.readBatch(indices: [0, 1, 2, 3])
        let t = f.tokens
        for (r, pid) in pids.enumerated() {
            let p = problems[pid]!
            let answer = p["answer"] as! Int
            let ap = Int(b.answerPosition![r])
            #expect(Int(b.answer![r]) == answer && Int(b.numChoices![r]) == (p["choices"] as! [Any]).count)
            #expect(b.labels[r * t + ap + 1] == choices[answer], "row \(r): label after answer_position")
            #expect(b.inputIDs[r * t + ap + 1] == choices[answer])
            #expect((0...ap).allSatisfy { b.labels[r * t + $0] == -100 }, "row \(r): prompt positions carry no loss")
            #expect(Int(b.lengths[r]) == ap + 2)
            let hasImage = !(p["image"] is NSNull)
            #expect(b.hasImage[r] == (hasImage ? 1 : 0))
            let plane = b.images[(r * 192)..<((r + 1) * 192)]
            #expect(hasImage == plane.contains { $0 != 0 })
        }
        #expect(b.subject == [0, 2, 1, 0])  // NAT, LAN, SOC, NAT
        #expect(b.context == [1, 0, 1, 2])  // IMG, TXT, IMG, NO
        #expect(b.grade == [0, 1, 1, 0])    // grade3, grade8, grade11, grade6
    }

    @Test("COCO: one row per training caption (restval included), each image stored once with image_index, references kept for val")
    func coco() throws {
        let dir = try TemporaryDirectory("shard")
        defer { dir.cleanup() }
        let common = ["--karpathy", Self.fixtures + "/coco/dataset_coco.json", "--images", Self.fixtures + "/coco/images",
                      "--tokenizer", Self.fixtures + "/tokenizer", "--image-size", "8"]
        try script("prepare_coco.py", common + ["--split", "train", "--out", dir.file("train.h5")])
        try script("prepare_coco.py", common + ["--split", "val", "--out", dir.file("val.h5")])
        let train = try DatasetFile(path: dir.file("train.h5"))
        #expect(train.task == .caption && train.count == 2 + 3 + 2)
        #expect(try train.references() == nil)
        let b = try train.readBatch(indices: Array(0..<7))
        #expect(b.hasImage == Array(repeating: 1, count: 7))
        for r in 0..<7 {
            let labelled = (0..<train.tokens).filter { b.labels[r * train.tokens + $0] != -100 }
            #expect(!labelled.isEmpty && labelled.first! > 0 && labelled.last! == Int(b.lengths[r]) - 1)
            #expect(labelled.allSatisfy { b.labels[r * train.tokens + $0] == b.inputIDs[r * train.tokens + $0] })
        }
        // Each image is stored once: the fixture's train and restval images have 2, 3 and 2 captions, and a
        // row's image is its entry's.
        #expect(train.imageCount == 3)
        #expect((0..<7).map(train.image(ofRow:)) == [0, 0, 1, 1, 1, 2, 2])
        let plane = 192
        func image(_ r: Int) -> ArraySlice<UInt8> { b.images[(r * plane)..<((r + 1) * plane)] }
        for r in 1..<7 {
            #expect((image(r) == image(r - 1)) == (train.image(ofRow: r) == train.image(ofRow: r - 1)), "row \(r)")
        }
        func values(_ t: Tensor) -> [Float] { Array(UnsafeBufferPointer(start: t.data, count: t.count)) }
        let stored = try train.normalizedImages(images: [0, 1, 2])
        #expect(stored.shape == [3, 3, 8, 8])
        #expect(values(stored) == values(try train.normalizedImages(indices: [1, 4, 6])))
        // images is [I, 3, H, W]; every dataset is chunked with Fletcher-32; the superblock is version 3, the
        // HDF5 1.10 format's (h5py's libver v110, as the Swift writer).
        let layout = try run(try python3(), ["-c", """
            import sys, h5py
            f = h5py.File(sys.argv[1], "r")
            plain = []
            f.visititems(lambda n, o: plain.append(n) if isinstance(o, h5py.Dataset) and not (o.chunks and o.fletcher32) else None)
            print(f["images"].shape, f["image_index"].shape, "superblock", f.id.get_create_plist().get_version()[0], "plain", plain)
            """, dir.file("train.h5")])
        #expect(layout.status == 0, "\(layout.stderr)")
        #expect(layout.stdout.contains("(3, 3, 8, 8) (7,) superblock 3 plain []"), "\(layout.stdout)")
        let val = try DatasetFile(path: dir.file("val.h5"))
        #expect(val.count == 1 && val.imageCount == 1 && val.image(ofRow: 0) == 0)
        let refs = try #require(try val.references())
        let decoded = try JSONSerialization.jsonObject(with: Data(refs[0].utf8)) as? [String]
        #expect(decoded == ["A man riding a bike.", "A cyclist on a road.", "A person on a bicycle."])
    }

    @Test("caption_metrics.py: captions equal to their only reference score CIDEr-D 10 and BLEU-4 1; a wrong one scores less")
    func captionMetrics() throws {
        let dir = try TemporaryDirectory("shard")
        defer { dir.cleanup() }
        let py = try python3()
        // Generated ids from the fixture tokenizer, as `eval --generate` writes them; then a copy whose
        // last caption is another image's.
        let write = try run(py, ["-c", """
            import json, sys
            from tokenizers import Tokenizer
            tok = Tokenizer.from_file(sys.argv[1] + "/tokenizer.json")
            caps = ["a red bus on a wet street", "two dogs play in the snow", "a plate of green food", "an old clock tower"]
            with open(sys.argv[2], "w") as f:
                for i, c in enumerate(caps):
                    f.write(json.dumps({"index": i, "generated": tok.encode(c).ids, "references": [c.capitalize() + "."]}) + "\\n")
            """, Self.fixtures + "/tokenizer", dir.file("exact.jsonl")])
        #expect(write.status == 0, "\(write.stderr)")
        let wrong = try run(py, ["-c", """
            import json, sys
            lines = [json.loads(l) for l in open(sys.argv[1])]
            lines[3]["generated"] = lines[0]["generated"]
            open(sys.argv[2], "w").write("".join(json.dumps(l) + "\\n" for l in lines))
            """, dir.file("exact.jsonl"), dir.file("wrong.jsonl")])
        #expect(wrong.status == 0, "\(wrong.stderr)")
        func score(_ file: String) throws -> [String: Any] {
            let r = try run(py, [packageRoot + "/Scripts/caption_metrics.py", dir.file(file), "--tokenizer", Self.fixtures + "/tokenizer",
                                 "--json", dir.file(file + ".out")])
            #expect(r.status == 0, "\(r.stderr)")
            return try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: dir.file(file + ".out")))) as? [String: Any] ?? [:]
        }
        let exact = try score("exact.jsonl"), worse = try score("wrong.jsonl")
        let cider = exact["cider_d"] as? Double ?? 0, bleu = (exact["bleu"] as? [Double])?.last ?? (exact["bleu_4"] as? Double ?? 0)
        #expect(abs(cider - 10) < 1e-6, "\(exact)")
        #expect(abs(bleu - 1) < 1e-6, "\(exact)")
        #expect((worse["cider_d"] as? Double ?? 10) < cider - 1, "\(worse)")
    }

    @Test("caption_metrics.py's CIDEr-D, BLEU-1..4 and ROUGE-L equal pycocoevalcap's on the golden captions (Scripts/reference/caption_metrics_golden.py)")
    func captionMetricsGolden() throws {
        let py = try python3()
        let r = try run(py, ["-c", """
            import json, sys
            sys.path.insert(0, sys.argv[1])
            import caption_metrics as cm
            g = json.load(open(sys.argv[2]))
            ours = {"cider_d": cm.cider_d(g["hypotheses"], g["references"]), "bleu": cm.bleu(g["hypotheses"], g["references"]),
                    "rouge_l": cm.rouge_l(g["hypotheses"], g["references"])}
            worst = max(abs(x - y) for k in ours for x, y in zip(ours[k], g[k]))
            assert all(len(ours[k]) == len(g[k]) for k in ours)
            print(worst)
            """, packageRoot + "/Scripts", packageRoot + "/Tests/Fixtures/captions/metrics_golden.json"])
        #expect(r.status == 0, "\(r.stderr)")
        let worst = Double(r.stdout.trimmingCharacters(in: .whitespacesAndNewlines)) ?? .infinity
        #expect(worst <= 1e-9, "largest difference from pycocoevalcap: \(r.stdout)")
    }
}
