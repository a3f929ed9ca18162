// Test support for the export tests (Tests/EndToEndTests/ExportTests.swift) and for the script that makes
// their golden files (Scripts/reference/export_golden.py): the same inputs, a pure function of nothing.
//   ExportFixture DIR   writes into DIR:
//     vision/, language/   the demo backbones (DemoTask, backbone seed 3)
//     rows.h5              32 demo multiple-choice rows (test seed 2); rows 5 and 20 without an image
//     captions.h5          16 rows of the demo's caption variant (seed 7); row 3 without an image
//     job-<mode>.yaml      a job on those files for each fusion mode (dehvf with candidate layers [1, 2, 4],
//                          memvp and concat average-pooled to 4 visual tokens)
//     <mode>/              its checkpoint (step 0): the initial parameters plus a seeded perturbation big
//                          enough that every trainable tensor moves the choice logits (router.weight starts
//                          at zero, value_pos too: unperturbed they would not)
// Nothing here depends on BLAS or on the machine: the backbones, rows and parameters come from counter-based
// generators, so the files are the same bits everywhere.
import Cluster
import Foundation
import Model
import Shard
import Training

let rowCount = 32
let rowsWithoutImage: Set<Int> = [5, 20]

/// The job of `mode` on the files in `dir`, as the tests and the golden script use it.
func makeJob(_ mode: FusionMode, in dir: URL) throws -> JobConfig {
    var job = JobConfig(model: .init(vision: ConfigPath(dir.appendingPathComponent("vision").path),
                                     language: ConfigPath(dir.appendingPathComponent("language").path)),
                        data: .init(train: ConfigPath(dir.appendingPathComponent("rows.h5").path)))
    job.model.fusion = mode
    job.model.featureScale = 0.1
    job.model.injectionScale = 3.0
    switch mode {
    case .dehvf: job.model.visionLayers = [1, 2, 4]
    case .memvp, .concat: job.model.visualTokens = 4
    }
    job.data.microBatch = 8
    job.data.globalBatch = 32
    job.cluster.launcher = .inprocess
    job.checkpoint.dir = ConfigPath(dir.appendingPathComponent(mode.rawValue).path)
    try job.validate()
    return job
}

/// Standard deviation of the perturbation added to each tensor.
let perturbation: [String: Float] = [
    "router.weight": 0.15, "router.bias": 0.5,
    "projector.fc1.weight": 0.1, "projector.fc1.bias": 0.2, "projector.fc2.weight": 0.1, "projector.fc2.bias": 0.2,
    "prompt.key_pos": 0.1, "prompt.value_pos": 0.1,
]

func writeRows(to path: String) throws {
    let t = DemoTask.tokens, side = DemoTask.imageSize, pixels = 3 * side * side
    var c = DatasetContents(task: .multipleChoice, count: rowCount, tokens: t, imageHeight: side, imageWidth: side,
                            padID: DemoTask.padID)
    c.choiceTokenIDs = DemoTask.choiceTokenIDs
    for i in 0..<rowCount {
        let s = DemoTask.sample(seed: 2, index: i)
        c.images.replaceSubrange(i * pixels..<(i + 1) * pixels, with: s.image)
        c.hasImage[i] = rowsWithoutImage.contains(i) ? 0 : 1
        c.inputIDs.replaceSubrange(i * t..<(i + 1) * t, with: s.inputIDs)
        c.labels.replaceSubrange(i * t..<(i + 1) * t, with: s.labels)
        c.lengths[i] = s.length
        c.answer![i] = s.answer
        c.numChoices![i] = 4
        c.answerPosition![i] = s.answerPosition
    }
    try DatasetWriter.write(c, to: path)
}

func writeFixture(to dir: URL) throws {
    try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    for (name, made) in [("vision", RandomBackbone.clipVision(DemoTask.visionConfig, seed: DemoTask.defaultBackboneSeed)),
                         ("language", RandomBackbone.llama(DemoTask.languageConfig, seed: DemoTask.defaultBackboneSeed,
                                                           weightScale: 10))] {
        let sub = dir.appendingPathComponent(name)
        try FileManager.default.createDirectory(at: sub, withIntermediateDirectories: true)
        try made.config.write(to: sub.appendingPathComponent("config.json"), atomically: true, encoding: .utf8)
        try SafetensorsWriter.write(made.tensors, to: sub.appendingPathComponent("model.safetensors"))
    }
    try writeRows(to: dir.appendingPathComponent("rows.h5").path)
    var captions = DemoTask.captionContents(count: 16, seed: 7)
    captions.hasImage[3] = 0
    try DatasetWriter.write(captions, to: dir.appendingPathComponent("captions.h5").path)
    for mode in FusionMode.allCases {
        let job = try makeJob(mode, in: dir)
        let setup = try JobSetup(job: job, loading: false)
        let params = setup.initialParameters()
        for (name, tensor) in zip(params.names, params.tensors) {
            var rng = InitRNG(seed: 15, name: "export-fixture-\(mode.rawValue)-\(name)")
            let sigma = perturbation[name] ?? 0.1
            for i in 0..<tensor.count { tensor.data[i] += sigma * rng.normal() }
        }
        let ck = Checkpoint(step: 0, epoch: 0, seed: UInt64(job.data.seed), config: job.canonicalJSON(),
                            backbone: setup.fingerprint, params: params, expAvg: params.zerosLike(),
                            expAvgSq: params.zerosLike(), lossHistory: [])
        try ck.write(to: job.checkpoint.dir.path, keep: 1)
        try job.canonicalJSON().write(to: dir.appendingPathComponent("job-\(mode.rawValue).yaml"), atomically: true,
                                      encoding: .utf8)
    }
}

guard CommandLine.arguments.count == 2 else {
    FileHandle.standardError.write(Data("usage: ExportFixture DIR\n".utf8))
    exit(2)
}
do {
    try writeFixture(to: URL(fileURLWithPath: CommandLine.arguments[1]))
} catch {
    FileHandle.standardError.write(Data("ExportFixture: \(error)\n".utf8))
    exit(1)
}
