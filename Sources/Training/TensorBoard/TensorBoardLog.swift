import Foundation
import Shard

/// The coordinator's TensorBoard event file: `CHECKPOINT_DIR/tb/events.out.tfevents.<seconds>.<host>`,
/// one per run, holding the train.jsonl figures as scalars (``points(fromLogLine:)``).
///
/// The x axis is the number of optimizer steps completed, which is what checkpoints and evaluations are
/// named by: train.jsonl's step line `"step": s` (the step from 0) is the point at s + 1, an eval line
/// `"step": n` (after n steps) the point at n. A resumed run continues the same curves: its file starts with
/// `SessionLog.START` at its first point's step, and files are named so that they sort in the order the
/// runs started (TensorBoard reads a directory's files in name order), so the loaders discard what the
/// earlier run logged from that step on (the steps computed again after a resume from an earlier
/// checkpoint) and show each step once. Both loaders were checked (tensorboard 2.21): the Python
/// EventAccumulator purges only on that START (with file version 2; without it a resumed run's steps
/// appear twice), the Rust data server behind `tensorboard --logdir` drops a series' points at or past
/// a step it sees again.
public final class TensorBoardLog {
    public static let directoryName = CheckpointDirectory.eventDirectory
    public static let filePrefix = CheckpointDirectory.eventFilePrefix

    /// The event file this run writes.
    public let path: String
    private let handle: FileHandle
    private var started = false
    /// Set after a failed write: the log stops (training does not), and says so once.
    public private(set) var failure: Error?

    /// Creates this run's event file in `directory` (made if missing) and writes its file-version event.
    public init(directory: String, host: String = ProcessInfo.processInfo.hostName, now: Date = Date()) throws {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let seconds = max(Int(now.timeIntervalSince1970), Self.newestSeconds(in: directory).map { $0 + 1 } ?? 0)
        let safeHost = String(host.map { $0.isLetter || $0.isNumber || $0 == "." || $0 == "-" || $0 == "_" ? $0 : "_" })
        path = (directory as NSString).appendingPathComponent("\(Self.filePrefix)\(seconds).\(safeHost.isEmpty ? "host" : safeHost)")
        guard FileManager.default.createFile(atPath: path, contents: nil) else {
            throw CocoaError(.fileWriteUnknown, userInfo: [NSFilePathErrorKey: path])
        }
        handle = try FileHandle(forWritingTo: URL(fileURLWithPath: path))
        try handle.write(contentsOf: TFRecord.frame(SummaryEvent.fileVersion(wallTime: now.timeIntervalSince1970)))
    }

    deinit { try? handle.close() }

    /// Appends one point per scalar at `step`; the first call of a run first writes `SessionLog.START` at
    /// `step`. Each event goes to the file in one write, so a reader (or a crash) sees whole records only
    /// up to a torn tail, which TensorBoard's loaders skip.
    public func write(step: Int, _ scalars: [(tag: String, value: Float)], wallTime: Date = Date()) {
        guard failure == nil, !scalars.isEmpty else { return }
        let t = wallTime.timeIntervalSince1970
        var bytes: [UInt8] = []
        if !started { bytes += TFRecord.frame(SummaryEvent.sessionStart(wallTime: t, step: step)) }
        bytes += TFRecord.frame(SummaryEvent.scalars(wallTime: t, step: step, scalars))
        do {
            try handle.write(contentsOf: bytes)
            started = true
        } catch {
            failure = error
        }
    }

    /// A train.jsonl line as TensorBoard points: its step on this log's x axis, and every number it holds
    /// (except the step) as `train/<key>` for a step line or `eval/<key>` for an eval line (`"eval"` set),
    /// a mapping of numbers (an eval line's `categories`) as `eval/<key>/<name>`; sorted by tag. Strings
    /// and booleans (`skipped`, `best`) are not scalars. Nil for a line without a step.
    public static func points(fromLogLine fields: [String: Any]) -> (step: Int, scalars: [(tag: String, value: Float)])? {
        guard let step = fields["step"] as? Int else { return nil }
        let isEval = fields["eval"] != nil
        let prefix = isEval ? "eval/" : "train/"
        var scalars: [(tag: String, value: Float)] = []
        for (key, value) in fields where key != "step" {
            if let v = number(value) {
                scalars.append((prefix + key, Float(v)))
            } else if let nested = value as? [String: Any] {
                for (name, inner) in nested { if let v = number(inner) { scalars.append(("\(prefix)\(key)/\(name)", Float(v))) } }
            }
        }
        return (isEval ? step : step + 1, scalars.sorted { $0.tag < $1.tag })
    }

    private static func number(_ value: Any) -> Double? {
        switch value {
        case is Bool: nil
        case let d as Double: d
        case let f as Float: Double(f)
        case let i as Int: Double(i)
        case let i as Int64: Double(i)
        default: nil
        }
    }

    /// The largest `<seconds>` among the event files already in `directory`.
    static func newestSeconds(in directory: String) -> Int? {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
        return names.compactMap { name -> Int? in
            guard name.hasPrefix(filePrefix) else { return nil }
            return Int(name.dropFirst(filePrefix.count).prefix { $0.isNumber })
        }.max()
    }
}
