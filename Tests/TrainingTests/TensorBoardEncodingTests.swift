import Foundation
import Testing
import Training

/// The event-file encoder against the reference tool: the expected bytes below are what tensorboard 2.21's
/// own protobuf classes and record writer produce for the same events:
///
///     from tensorboard.compat.proto import event_pb2, summary_pb2
///     from tensorboard.summary.writer.record_writer import RecordWriter
///     e = event_pb2.Event(wall_time=1700000002.75, step=300, summary=summary_pb2.Summary(value=[...]))
///     e.SerializeToString().hex(); RecordWriter(buffer).write(e.SerializeToString())
///
/// (The end-to-end check that TensorBoard's loader reads a real run's files is TensorBoardTests.)
@Suite("TensorBoard event encoding")
struct TensorBoardEncodingTests {
    func bytes(_ hex: String) -> [UInt8] {
        var out: [UInt8] = []
        var i = hex.startIndex
        while i < hex.endIndex {
            let j = hex.index(i, offsetBy: 2)
            out.append(UInt8(hex[i..<j], radix: 16)!)
            i = j
        }
        return out
    }

    @Test("CRC-32C: the standard check value and the empty string; masking as TensorFlow does")
    func crc() {
        #expect(CRC32C.checksum(Array("123456789".utf8)) == 0xE306_9283)
        #expect(CRC32C.checksum([UInt8]()) == 0)
        // 32 zero bytes: RFC 3720 (iSCSI) appendix B.4 test vector.
        #expect(CRC32C.checksum([UInt8](repeating: 0, count: 32)) == 0x8A91_36AA)
        // tensorboard.compat.tensorflow_stub.pywrap_tensorflow.masked_crc32c(b"123456789")
        #expect(CRC32C.masked(0xE306_9283) == 0xC78A_B0E5)
        #expect(CRC32C.masked(0) == 0xA282_EAD8)
    }

    @Test("events serialise as tensorboard's protobuf classes do, and frame as its RecordWriter does")
    func events() {
        let cases: [([UInt8], String, String)] = [
            (SummaryEvent.fileVersion(wallTime: 1_700_000_000.25),
             "0900001040fc54d9411a0d627261696e2e4576656e743a32",
             "1800000000000000a37f4b220900001040fc54d9411a0d627261696e2e4576656e743a32338d2fe9"),
            (SummaryEvent.sessionStart(wallTime: 1_700_000_001.5, step: 7),
             "0900006040fc54d94110073a020801",
             "0f000000000000006d532b090900006040fc54d94110073a02080165b49f66"),
            (SummaryEvent.scalars(wallTime: 1_700_000_002.75, step: 300, [("train/loss", 2.5), ("eval/categories/NAT", 0.1)]),
             "090000b040fc54d94110ac022a2f0a110a0a747261696e2f6c6f737315000020400a1a0a136576616c2f63617465676f726965732f4e415415cdcccc3d",
             "3d000000000000006049f1ec090000b040fc54d94110ac022a2f0a110a0a747261696e2f6c6f737315000020400a1a0a136576616c2f6361"
                + "7465676f726965732f4e415415cdcccc3d1087b1ba"),
        ]
        for (event, message, record) in cases {
            #expect(event == bytes(message))
            #expect(TFRecord.frame(event) == bytes(record))
        }
    }

    @Test("record framing: length, masked CRC of the length, data, masked CRC of the data")
    func framing() {
        let data = Array("123456789".utf8)
        let r = TFRecord.frame(data)
        #expect(r.count == 8 + 4 + data.count + 4)
        #expect(Array(r[0..<8]) == [9, 0, 0, 0, 0, 0, 0, 0])
        let lengthCRC = CRC32C.masked(CRC32C.checksum(r[0..<8]))
        #expect(Array(r[8..<12]) == (0..<4).map { UInt8(truncatingIfNeeded: lengthCRC >> ($0 * 8)) })
        #expect(Array(r[12..<21]) == data)
        let dataCRC = CRC32C.masked(0xE306_9283)
        #expect(Array(r[21..<25]) == (0..<4).map { UInt8(truncatingIfNeeded: dataCRC >> ($0 * 8)) })
    }

    @Test("train.jsonl lines become points: step lines at step + 1, eval lines at their step, numbers only")
    func points() throws {
        let step: [String: Any] = ["step": 4, "epoch": 0, "loss": 1.5, "lr": 1e-3, "grad_norm": 0.25, "labels": 40, "skipped": true]
        let p = try #require(TensorBoardLog.points(fromLogLine: step))
        #expect(p.step == 5)
        #expect(p.scalars.map(\.tag) == ["train/epoch", "train/grad_norm", "train/labels", "train/loss", "train/lr"])
        #expect(p.scalars.map(\.value) == [0, 0.25, 40, 1.5, Float(1e-3)])
        let eval: [String: Any] = ["eval": "/d/test.h5", "step": 8, "loss": 0.5, "accuracy": 0.75, "best": true,
                                   "categories": ["NAT": 0.5, "G1-6": 1.0]]
        let e = try #require(TensorBoardLog.points(fromLogLine: eval))
        #expect(e.step == 8)
        #expect(e.scalars.map(\.tag) == ["eval/accuracy", "eval/categories/G1-6", "eval/categories/NAT", "eval/loss"])
        #expect(TensorBoardLog.points(fromLogLine: ["loss": 1.0]) == nil)
    }

    @Test("a run's file: file version, then SessionLog.START before its first point only; a later run's file sorts after it")
    func file() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("tb-\(getpid())-\(UInt32.random(in: 0...UInt32.max))").path
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let now = Date(timeIntervalSince1970: 1_700_000_000.25)
        let log = try TensorBoardLog(directory: dir, host: "node 1", now: now)
        #expect((log.path as NSString).lastPathComponent == "events.out.tfevents.1700000000.node_1")
        let t1 = Date(timeIntervalSince1970: 1_700_000_001.5), t2 = Date(timeIntervalSince1970: 1_700_000_002.75)
        log.write(step: 7, [("train/loss", 2.5)], wallTime: t1)
        log.write(step: 8, [("train/loss", 2.0)], wallTime: t2)
        let written = try [UInt8](Data(contentsOf: URL(fileURLWithPath: log.path)))
        let expected = TFRecord.frame(SummaryEvent.fileVersion(wallTime: now.timeIntervalSince1970))
            + TFRecord.frame(SummaryEvent.sessionStart(wallTime: t1.timeIntervalSince1970, step: 7))
            + TFRecord.frame(SummaryEvent.scalars(wallTime: t1.timeIntervalSince1970, step: 7, [("train/loss", 2.5)]))
            + TFRecord.frame(SummaryEvent.scalars(wallTime: t2.timeIntervalSince1970, step: 8, [("train/loss", 2.0)]))
        #expect(written == expected)
        #expect(log.failure == nil)
        // A second run started in the same second (or with the clock behind) still sorts after the first.
        let next = try TensorBoardLog(directory: dir, host: "node 1", now: now.addingTimeInterval(-5))
        #expect((next.path as NSString).lastPathComponent == "events.out.tfevents.1700000001.node_1")
    }
}
