import ArgumentParser
import Cluster

/// `coordinator`: owns a DEHVF fine-tuning job (DESIGN.md §1, §7).
@main
struct Coordinator: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "coordinator",
        abstract: "Run and inspect DEHVF fine-tuning jobs: a frozen CLIP vision encoder and a frozen LLaMA, "
            + "with a small trainable fuser trained by workers over ZeroMQ.",
        discussion: """
            Start here:
              coordinator demo-data --out data/demo
              coordinator train --config clusters/local.yaml
              coordinator eval --config clusters/local.yaml --checkpoint runs/demo

            A job is one YAML file (see clusters/local.yaml and the README). Any key can be overridden \
            with --set dotted.key=value.
            """,
        subcommands: [Train.self, Eval.self, Export.self, Plan.self, DemoData.self, Inspect.self, CheckpointCommand.self, Keys.self])
}

/// The job-config options every job command shares.
struct JobOptions: ParsableArguments {
    @Option(name: .long, help: "The job's YAML config file (e.g. clusters/local.yaml).")
    var config: String

    @Option(name: .customLong("set"), help: ArgumentHelp(
        "Override a config key, e.g. --set optim.lr=3e-4 (repeatable).", valueName: "dotted.key=value"))
    var overrides: [String] = []
}

extension JobOptions {
    /// The job file with its `--set` overrides applied, validated.
    func load() throws -> JobConfig {
        try JobConfig.load(file: config, overrides: try overrides.map { try ConfigOverride(parsing: $0) })
    }
}
