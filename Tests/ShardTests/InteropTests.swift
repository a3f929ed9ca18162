import Foundation
import Model
import Shard
import TestSupport
import Testing

/// Files written by h5py are read here, and files written here are read by h5py. These tests need
/// python3 with h5py and numpy and fail (not skip) without them.
@Suite("h5py interop", .serialized)
struct InteropTests {
    @Test("a dataset file h5py writes (str attrs, chunked datasets, fixed and vlen strings) reads exactly")
    func h5pyWritesDataset() throws {
        let dir = try TemporaryDirectory("shard")
        defer { dir.cleanup() }
        let r = try python("""
            import sys, json, h5py, numpy as np
            rng = np.random.default_rng(3)
            N, T, H, W = 9, 6, 5, 4
            lengths = rng.integers(1, T + 1, N).astype(np.int32)
            labels = rng.integers(0, 1000, (N, T)).astype(np.int32)
            labels[rng.random((N, T)) < 0.5] = -100
            d = dict(images=rng.integers(0, 256, (N, 3, H, W), dtype=np.uint8),
                     has_image=rng.integers(0, 2, N, dtype=np.uint8),
                     input_ids=rng.integers(0, 1000, (N, T), dtype=np.int32),
                     lengths=lengths, labels=labels,
                     num_choices=np.full(N, 4, np.int32), answer=rng.integers(0, 4, N).astype(np.int32),
                     answer_position=rng.integers(0, lengths).astype(np.int32),
                     choice_token_ids=np.array([29909, 350, 315, 360, 382], np.int32))
            with h5py.File(sys.argv[1], "w") as f:
                f.attrs["format"] = "dehvf-dataset"
                f.attrs["version"] = 1
                f.attrs["task"] = "multiple-choice"
                f.attrs["pad_id"] = 0
                f.attrs["image_mean"] = np.array([0.48145466, 0.4578275, 0.40821073], np.float32)
                f.attrs["image_std"] = np.array([0.26862954, 0.26130258, 0.27577711], np.float32)
                f.attrs["fixed_note"] = np.bytes_("fixed width")
                for k, v in d.items():
                    f.create_dataset(k, data=v, chunks=(min(4, len(v)),) + v.shape[1:] if k != "choice_token_ids" else None)
                f.create_dataset("meta/subject", data=np.arange(N, dtype=np.uint8) % 3, chunks=(4,))
                f.create_dataset("references", data=["[\\"a\\"]"] * (N - 1) + ["[\\"é\\"]"], dtype=h5py.string_dtype())
                f.create_dataset("fixed_strings", data=np.array([b"ab", b"cde"], dtype="S3"))
                f.create_dataset("ignored_extra", data=np.zeros(3))
            print(json.dumps({k: v.reshape(-1).tolist() for k, v in d.items()}))
            """, [dir.file("py.h5")])
        #expect(r.status == 0, "\(r.stderr)")
        let want = try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as! [String: [Int]]
        let f = try DatasetFile(path: dir.file("py.h5"))
        #expect(f.count == 9 && f.tokens == 6 && f.imageHeight == 5 && f.imageWidth == 4)
        #expect(f.imageStd == [0.26862954, 0.26130258, 0.27577711])
        #expect(f.choiceTokenIDs == want["choice_token_ids"]!.map(Int32.init))
        let order = [8, 1, 0, 5]
        let b = try f.readBatch(indices: order)
        func rows(_ key: String, _ size: Int) -> [Int] { order.flatMap { want[key]![($0 * size)..<(($0 + 1) * size)] } }
        #expect(b.images.map(Int.init) == rows("images", 60))
        #expect(b.inputIDs.map(Int.init) == rows("input_ids", 6))
        #expect(b.labels.map(Int.init) == rows("labels", 6))
        #expect(b.lengths.map(Int.init) == rows("lengths", 1))
        #expect(b.answer!.map(Int.init) == rows("answer", 1))
        #expect(b.answerPosition!.map(Int.init) == rows("answer_position", 1))
        #expect(b.subject == order.map { UInt8($0 % 3) })
        #expect(try f.references()?.last == "[\"é\"]")
        let h = try HDF5File.open(dir.file("py.h5"))
        #expect(try h.root.readString("fixed_note") == "fixed width")
        #expect(try h.root.readString("format") == "dehvf-dataset")
        #expect(try h.root.openDataset("fixed_strings").readStrings() == ["ab", "cde"])
    }

    @Test("h5py reads a dataset file written here: str attributes, every dataset equal")
    func h5pyReadsDataset() throws {
        let dir = try TemporaryDirectory("shard")
        defer { dir.cleanup() }
        let c = makeContents(n: 7)
        try DatasetWriter.write(c, to: dir.file("d.h5"))
        let r = try python("""
            import sys, json, h5py, numpy as np
            with h5py.File(sys.argv[1], "r") as f:
                assert isinstance(f.attrs["format"], str) and isinstance(f.attrs["task"], str), dict(f.attrs)
                assert f["images"].dtype == np.uint8 and f["input_ids"].dtype == np.int32, "dtypes"
                out = {k: f[k][()].reshape(-1).tolist() for k in ("images", "input_ids", "labels", "lengths", "answer")}
                out["task"] = f.attrs["task"]; out["mean"] = f.attrs["image_mean"].tolist()
                out["subject"] = f["meta/subject"][()].tolist()
            print(json.dumps(out))
            """, [dir.file("d.h5")])
        #expect(r.status == 0, "\(r.stderr)")
        let got = try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as! [String: Any]
        #expect(got["task"] as? String == "multiple-choice")
        #expect((got["mean"] as? [Double])?.map(Float.init) == c.imageMean)
        #expect(got["images"] as? [Int] == c.images.map(Int.init))
        #expect(got["input_ids"] as? [Int] == c.inputIDs.map(Int.init))
        #expect(got["labels"] as? [Int] == c.labels.map(Int.init))
        #expect(got["lengths"] as? [Int] == c.lengths.map(Int.init))
        #expect(got["answer"] as? [Int] == c.answer!.map(Int.init))
        #expect(got["subject"] as? [Int] == c.subject!.map(Int.init))
    }

    @Test("h5py reads a checkpoint written here: every tensor bitwise, string attrs as str, Fletcher-32 on")
    func h5pyReadsCheckpoint() throws {
        let dir = try TemporaryDirectory("shard")
        defer { dir.cleanup() }
        let c = sampleCheckpoint(step: 6)
        let path = try c.write(to: dir.path, keep: 1)
        let r = try python("""
            import sys, json, h5py, numpy as np
            out = {}
            with h5py.File(sys.argv[1], "r") as f:
                a = f.attrs
                assert all(isinstance(a[k], str) for k in ("format", "config", "backbone")), {k: type(a[k]) for k in a}
                assert a["format"] == "dehvf-checkpoint" and int(a["version"]) == 1, dict(a)
                out["attrs"] = {k: (a[k] if isinstance(a[k], str) else int(a[k])) for k in a}
                for g in ("params", "optimizer/exp_avg", "optimizer/exp_avg_sq"):
                    for name, ds in f[g].items():
                        assert ds.dtype == np.float32 and ds.fletcher32, (g, name, ds.dtype)
                        out[g + "/" + name] = [list(ds.shape), ds[()].reshape(-1).view(np.uint32).tolist()]
                out["loss"] = f["history/loss"][()].view(np.uint32).tolist()
            print(json.dumps(out))
            """, [path])
        #expect(r.status == 0, "\(r.stderr)")
        let got = try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as! [String: Any]
        let attrs = got["attrs"] as! [String: Any]
        #expect(attrs["config"] as? String == c.config && attrs["backbone"] as? String == c.backbone)
        #expect(attrs["step"] as? Int == 6 && attrs["epoch"] as? Int == 2)
        #expect(attrs["seed"] as? Int == Int(Int64(bitPattern: c.seed)))
        for (group, list) in [("params", c.params), ("optimizer/exp_avg", c.expAvg), ("optimizer/exp_avg_sq", c.expAvgSq)] {
            for (name, t) in zip(list.names, list.tensors) {
                let entry = try #require(got["\(group)/\(name)"] as? [Any], "h5py did not see \(group)/\(name)")
                #expect(entry[0] as? [Int] == t.shape)
                #expect(entry[1] as? [Int] == t.array.map { Int($0.bitPattern) }, "\(group)/\(name)")
            }
        }
        #expect(got["loss"] as? [Int] == c.lossHistory.map { Int($0.bitPattern) })
    }

    @Test("a checkpoint h5py writes (name-ordered groups) is read here")
    func h5pyWritesCheckpoint() throws {
        let dir = try TemporaryDirectory("shard")
        defer { dir.cleanup() }
        let r = try python("""
            import sys, h5py, numpy as np
            with h5py.File(sys.argv[1], "w") as f:
                for k, v in dict(format="dehvf-checkpoint", config="{}", backbone="fp").items(): f.attrs[k] = v
                for k, v in dict(version=1, step=2, epoch=0, seed=9).items(): f.attrs[k] = v
                for g in ("params", "optimizer/exp_avg", "optimizer/exp_avg_sq"):
                    f.create_dataset(g + "/router.bias", data=np.arange(6, dtype=np.float32).reshape(2, 3), fletcher32=True)
                    f.create_dataset(g + "/projector.fc2.bias", data=np.full(4, 0.5, np.float32), fletcher32=True)
                f.create_dataset("history/loss", data=np.array([3.0, 2.5], np.float32))
            """, [dir.file("c.h5")])
        #expect(r.status == 0, "\(r.stderr)")
        let c = try Checkpoint.read(path: dir.file("c.h5"))
        #expect(c.step == 2 && c.seed == 9 && c.backbone == "fp" && c.lossHistory == [3, 2.5])
        #expect(c.params.names == ["projector.fc2.bias", "router.bias"])  // h5py default: name order
        #expect(c.params[1].tensor.shape == [2, 3] && c.params[1].tensor.array == [0, 1, 2, 3, 4, 5])
    }

    @Test("a byte flipped inside a tensor chunk, located by h5py, is caught at load")
    func flippedChunk() throws {
        let dir = try TemporaryDirectory("shard")
        defer { dir.cleanup() }
        let path = try sampleCheckpoint(step: 3).write(to: dir.path, keep: 1)
        let r = try python("""
            import sys, h5py
            with h5py.File(sys.argv[1], "r") as f:
                info = f["optimizer/exp_avg_sq/router.bias"].id.get_chunk_info(0)
                print(info.byte_offset, info.size)
            """, [path])
        #expect(r.status == 0, "\(r.stderr)")
        let parts = r.stdout.split(separator: " ").compactMap { Int($0.trimmingCharacters(in: .whitespacesAndNewlines)) }
        try #require(parts.count == 2)
        try flipByte(path, at: parts[0] + parts[1] / 2)
        expectShardError(.corrupt, mentioning: [path, "exp_avg_sq/router.bias", "corrupt"]) {
            _ = try Checkpoint.readLatest(dir: dir.path)
        }
    }
}
