// Test support for CheckpointTests.crash: writes checkpoints into argv[1] forever, resuming from its
// latest, until the test kills it with SIGKILL. The values are the same function of the step as
// `sampleCheckpoint(step:big: true)` in Tests/ShardTests/CheckpointTests.swift.
import Foundation
import Model
import Shard

func checkpoint(step: Int) -> Checkpoint {
    func t(_ shape: [Int], _ salt: Float) -> Tensor {
        let n = shape.reduce(1, *)
        return Tensor(shape: shape, values: (0..<n).map { Float(step) * 1000 + salt + Float($0) * 0.001 })
    }
    let shapes: [(String, [Int])] = [
        ("router.weight", [4, 4, 4096]), ("router.bias", [2, 3]),
        ("projector.fc1.weight", [5, 6]), ("projector.fc1.bias", [5]), ("prompt.key_pos", [7, 4]),
    ]
    return Checkpoint(
        step: step, epoch: step / 3, seed: 0xDEAD_BEEF_0000_0001, config: "{\"model\": {\"fusion\": \"dehvf\"}, \"ü\": 1}",
        backbone: "vision 123 sha256:ab; language 456 sha256:cd",
        params: TensorSet(shapes.map { ($0.0, t($0.1, 0.25)) }), expAvg: TensorSet(shapes.map { ($0.0, t($0.1, 0.5)) }),
        expAvgSq: TensorSet(shapes.map { ($0.0, t($0.1, 0.75)) }), lossHistory: (0..<step).map { Float($0) * 0.5 + 1 })
}

let dir = CommandLine.arguments.count > 1 ? CommandLine.arguments[1] : "."
do {
    var step = (try Checkpoint.readLatest(dir: dir)?.step ?? 0) + 1
    while true {
        try checkpoint(step: step).write(to: dir, keep: 2)
        step += 1
    }
} catch {
    FileHandle.standardError.write(Data("CheckpointCrashWriter: \(error)\n".utf8))
    exit(1)
}
