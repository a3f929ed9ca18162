import Foundation
import Model
import Shard
import TestSupport
import Testing

/// The package root.
let packageRoot: String = Fixtures.packageRoot.path

/// A small deterministic dataset: N rows, T tokens, HxW images.
func makeContents(task: DatasetTask = .multipleChoice, n: Int = 10, t: Int = 8, h: Int = 4, w: Int = 5,
                  meta: Bool = true) -> DatasetContents {
    var c = DatasetContents(task: task, count: n, tokens: t, imageHeight: h, imageWidth: w, padID: 0)
    for i in 0..<c.images.count { c.images[i] = UInt8(truncatingIfNeeded: i &* 7 &+ 3) }
    for r in 0..<n {
        c.hasImage[r] = UInt8(r % 3 == 0 ? 0 : 1)
        let len = 3 + r % (t - 3)
        c.lengths[r] = Int32(len)
        for k in 0..<len { c.inputIDs[r * t + k] = Int32(100 * r + k + 1) }
        c.labels[r * t + len - 1] = Int32(100 * r + len)
    }
    if task == .multipleChoice {
        c.choiceTokenIDs = [11, 12, 13, 14, 15]
        for r in 0..<n {
            c.numChoices![r] = Int32(2 + r % 4)
            c.answer![r] = Int32(r % Int(c.numChoices![r]))
            c.answerPosition![r] = c.lengths[r] - 2
        }
    }
    if meta {
        c.subject = (0..<n).map { UInt8($0 % 3) }
        c.context = (0..<n).map { UInt8(($0 + 1) % 3) }
        c.grade = (0..<n).map { UInt8($0 % 2) }
    }
    return c
}

/// Flips one bit of the byte at `offset` in `path`.
func flipByte(_ path: String, at offset: Int) throws {
    var data = try Data(contentsOf: URL(fileURLWithPath: path))
    data[offset] ^= 0x40
    try data.write(to: URL(fileURLWithPath: path))
}

/// The offset of the first occurrence of `needle` in the file.
func offset(of needle: [UInt8], in path: String) throws -> Int? {
    let data = [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
    guard needle.count <= data.count else { return nil }
    outer: for i in 0...(data.count - needle.count) {
        for k in 0..<needle.count where data[i + k] != needle[k] { continue outer }
        return i
    }
    return nil
}

func bytes(of values: [Float]) -> [UInt8] { values.withUnsafeBytes { Array($0) } }

/// Expects `body` to throw a `ShardError` with `code` whose description contains every string in `mentions`.
func expectShardError(_ code: ShardError.Code, mentioning mentions: [String],
                      sourceLocation: SourceLocation = #_sourceLocation, _ body: () throws -> Void) {
    do {
        try body()
        Issue.record("expected ShardError.\(code), nothing was thrown", sourceLocation: sourceLocation)
    } catch let e as ShardError {
        #expect(e.code == code, "got \(e)", sourceLocation: sourceLocation)
        for m in mentions {
            #expect(e.description.contains(m), "\"\(m)\" missing from: \(e)", sourceLocation: sourceLocation)
        }
    } catch {
        Issue.record("expected ShardError.\(code), got \(error)", sourceLocation: sourceLocation)
    }
}
