import Cluster
import Foundation
import Model
import Shard
import TestSupport

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

    /// A caption dataset on the demo backbones: 32 rows of the demo's caption variant, row 3 without an
    /// image. Returns the directory (its train.h5, and links to the backbones).
    static func captions() throws -> URL {
        let dir = try TemporaryDirectory("captions").url
        let demo = try data()
        for name in ["vision", "language"] {
            try FileManager.default.createSymbolicLink(at: dir.appendingPathComponent(name),
                                                       withDestinationURL: demo.appendingPathComponent(name))
        }
        var c = DemoTask.captionContents(count: 32, seed: 7)
        c.hasImage[3] = 0
        try DatasetWriter.write(c, to: dir.appendingPathComponent("train.h5").path)
        return dir
    }
}
