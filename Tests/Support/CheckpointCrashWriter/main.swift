// Test support for CheckpointTests: a real process that writes checkpoints or holds a checkpoint
// directory, for the tests to kill or to starve of disk. The values are the same function of the step as
// `sampleCheckpoint(step:big: true)` in Tests/ShardTests/CheckpointTests.swift.
//   CheckpointCrashWriter DIR               writes checkpoints into DIR forever, resuming from its latest,
//                                           until SIGKILLed (CheckpointTests.crash)
//   CheckpointCrashWriter DIR --once STEP   writes the checkpoint of STEP and exits 0; on an error prints it
//                                           and exits 1 (CheckpointTests.writeFails, under `ulimit -f`)
//   CheckpointCrashWriter DIR --lock        takes DIR's CheckpointDirectory lock, prints "locked", and sleeps
//                                           until killed (CheckpointDirectoryTests)
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

let arguments = CommandLine.arguments
let dir = arguments.count > 1 ? arguments[1] : "."
do {
    switch arguments.count > 2 ? arguments[2] : "" {
    case "--once":
        guard arguments.count > 3, let step = Int(arguments[3]) else { throw ShardError(.badValue, "--once needs a step") }
        try checkpoint(step: step).write(to: dir, keep: 2)
        exit(0)
    case "--lock":
        let owner = CheckpointDirectory(path: dir)
        try owner.lock()
        print("locked")
        fflush(stdout)
        while true { pause() }
    default:
        var step = (try Checkpoint.readLatest(dir: dir)?.step ?? 0) + 1
        while true {
            try checkpoint(step: step).write(to: dir, keep: 2)
            step += 1
        }
    }
} catch {
    FileHandle.standardError.write(Data("CheckpointCrashWriter: \(error)\n".utf8))
    exit(1)
}
