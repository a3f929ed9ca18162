import Cluster
import Foundation
import Model
import Shard
import TestSupport
import Training

/// The demo task, small (512 training rows), written once in this process for the engine tests, and job
/// configs for it built in code.
enum DemoFixture {
    private static let lock = NSLock()
    nonisolated(unsafe) private static var made: URL?

    /// The demo's backbones and datasets.
    static func data() throws -> URL {
        lock.lock()
        defer { lock.unlock() }
        if let made { return made }
        let dir = try TemporaryDirectory("training-demo").url
        try DemoTask.write(to: dir, trainSamples: 512, testSamples: 64)
        made = dir
        return dir
    }

    /// The demo job on `data` (default: ``data()``), trained on `train` (default: its train.h5).
    /// An engine over `data` with a loud visual memory (injection 300, features x1) and initial parameters
    /// perturbed by a fixed pattern, so the router mix, the projector and the prompt tables all move the
    /// logits (the router's less, so that it is not saturated).
    static func loudEngine(data: URL, mode: FusionMode = .dehvf) throws -> (TrainingEngine, TensorSet) {
        var job = try Self.job(data: data)
        job.model.fusion = mode
        job.model.injectionScale = 300
        job.model.featureScale = 1
        let engine = try TrainingEngine(job: job)
        let params = engine.initialParameters()
        for entry in params {
            let scale: Float = entry.name.hasPrefix("router") ? 0.05 : 0.5
            for i in 0..<entry.tensor.count { entry.tensor.data[i] += scale * Float((i * 7919) % 13 - 6) }
        }
        return (engine, params)
    }

    static func job(data: URL? = nil, train: String = "train.h5") throws -> JobConfig {
        let d = try data ?? Self.data()
        var job = JobConfig(model: .init(vision: ConfigPath(d.appendingPathComponent("vision").path),
                                         language: ConfigPath(d.appendingPathComponent("language").path)),
                            data: .init(train: ConfigPath(d.appendingPathComponent(train).path)))
        job.model.featureScale = 0.1
        job.model.injectionScale = 3.0
        job.data.microBatch = 8
        job.cluster.launcher = .inprocess
        try job.validate()
        return job
    }

    /// A directory for datasets on the demo backbones (links to them).
    private static func linkedDirectory(_ name: String) throws -> URL {
        let dir = try TemporaryDirectory(name).url
        let demo = try data()
        for name in ["vision", "language"] {
            try FileManager.default.createSymbolicLink(at: dir.appendingPathComponent(name),
                                                       withDestinationURL: demo.appendingPathComponent(name))
        }
        return dir
    }

    /// A caption dataset on the demo backbones: 32 rows of the demo's caption variant, row 3 without an
    /// image. Returns the directory (its train.h5, and links to the backbones).
    static func captions() throws -> URL {
        let dir = try linkedDirectory("captions")
        var c = DemoTask.captionContents(count: 32, seed: 7)
        c.hasImage[3] = 0
        try DatasetWriter.write(c, to: dir.appendingPathComponent("train.h5").path)
        return dir
    }

    /// The prompt of row i of ``variedPrompts()``: "<bos> what is shown ?" cut to 2...5 tokens.
    static func variedPrompt(row i: Int) -> [Int32] {
        let words = ["what", "is", "shown"].suffix(i % 4)
        return (["<bos>"] + words + ["?"]).map(DemoTask.id)
    }

    /// Caption rows whose prompts differ in length (``variedPrompt(row:)``: 2 to 5 tokens), so a batch is
    /// padded, its rows decode at different positions, and each row's router mean covers its own prompt;
    /// 16 rows, row 3 without an image. Returns the directory (its train.h5, and links to the backbones).
    /// With `labelsPastLength`, every other row's `lengths` stops 2 tokens short of its last label (a file
    /// a hand-written converter might make): the engine computes such a row up to its last label.
    static func variedPrompts(labelsPastLength: Bool = false) throws -> URL {
        let dir = try linkedDirectory(labelsPastLength ? "labels-past-length" : "varied-prompts")
        var c = DemoTask.captionContents(count: 16, seed: 7)
        c.hasImage[3] = 0
        let t = c.tokens
        for i in 0..<c.count {
            let row = i * t, caption = Array(c.inputIDs[(row + 5)..<(row + 9)])   // "the <colour> <shape> <eos>"
            let prompt = variedPrompt(row: i)
            c.inputIDs.replaceSubrange(row..<(row + t), with: prompt + caption + [Int32](repeating: c.padID, count: t - prompt.count - 4))
            c.labels.replaceSubrange(row..<(row + t), with: [Int32](repeating: -100, count: prompt.count) + caption
                                     + [Int32](repeating: -100, count: t - prompt.count - 4))
            c.lengths[i] = Int32(prompt.count + 4 - (labelsPastLength && i % 2 == 1 ? 2 : 0))
        }
        try DatasetWriter.write(c, to: dir.appendingPathComponent("train.h5").path)
        return dir
    }

    /// Row -> image of ``sharedImages()``: 12 rows over 5 images, as COCO's captions share theirs.
    static let sharedImageIndex: [Int32] = [0, 2, 0, 1, 3, 2, 4, 0, 1, 2, 4, 3]
    /// The row of ``sharedImages()`` without an image (its image_index still names one).
    static let rowWithoutImage = 4

    /// The same 12 caption rows twice: `shared.h5` stores 5 images once and maps the rows to them with
    /// `image_index` (``sharedImageIndex``), `duplicated.h5` stores each row's image in its own row and has
    /// no `image_index`. Returns the directory (and links to the backbones).
    static func sharedImages() throws -> URL {
        let dir = try linkedDirectory("shared-images")
        let pictures = DemoTask.captionContents(count: 5, seed: 11).images
        let plane = pictures.count / 5
        var shared = DemoTask.captionContents(count: sharedImageIndex.count, seed: 7)
        shared.hasImage[rowWithoutImage] = 0
        var duplicated = shared
        shared.images = pictures
        shared.imageIndex = sharedImageIndex
        duplicated.images = sharedImageIndex.flatMap { pictures[(Int($0) * plane)..<((Int($0) + 1) * plane)] }
        try DatasetWriter.write(shared, to: dir.appendingPathComponent("shared.h5").path)
        try DatasetWriter.write(duplicated, to: dir.appendingPathComponent("duplicated.h5").path)
        return dir
    }
}
