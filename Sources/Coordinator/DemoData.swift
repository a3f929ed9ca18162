import ArgumentParser
import Foundation
import Shard

extension DatasetTask: ExpressibleByArgument {}

struct DemoData: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "demo-data",
        abstract: "Write the demo: tiny random frozen backbones and a synthetic visual multiple-choice task.",
        discussion: """
            Writes OUT/vision and OUT/language (Hugging Face directories: config.json + model.safetensors), \
            OUT/train.h5 and OUT/test.h5 (DESIGN.md §5). Each 32x32 image shows one shape in one colour; each \
            question asks for the colour or the shape, with four options in a fixed order, so the answer \
            depends on the image alone (chance is 25%). With --task caption the rows are instead captions of \
            the same kind of images ("a red circle is shown"), with the reference caption per test row for \
            Scripts/caption_metrics.py; OUT/language/tokenizer.json decodes them. Nothing is downloaded.
            """)

    @Option(help: "Directory to write.") var out: String = "data/demo"
    @Option(help: "The task: multiple-choice questions, or captions of the same images.") var task: DatasetTask = .multipleChoice
    @Option(help: "Training samples.") var trainSamples: Int = 16000
    @Option(help: "Held-out samples.") var testSamples: Int = 500
    @Option(help: "Seed of the random backbones (the default is one that learns).")
    var backboneSeed: UInt64 = DemoTask.defaultBackboneSeed

    func run() throws {
        let start = Date()
        try DemoTask.write(to: URL(fileURLWithPath: out), task: task, trainSamples: trainSamples, testSamples: testSamples,
                           backboneSeed: backboneSeed) { Console.say("demo-data: \($0)") }
        Console.say("demo-data: done in \(String(format: "%.1f", Date().timeIntervalSince(start))) s")
    }
}
