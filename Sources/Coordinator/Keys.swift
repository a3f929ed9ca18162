import ArgumentParser
import Transport

struct Keys: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Make CURVE key pairs for a job: one for the coordinator and one per worker.",
        discussion: """
            Writes OUT/coordinator.key (public) and OUT/coordinator.key_secret, and OUT/workers/worker-N.key and
            worker-N.key_secret. Point security.secret_key at the coordinator's secret and
            security.allowed_workers at OUT/workers; give each worker its secret and the coordinator's public key.
            """)
    @Option(help: "Directory to write.") var out: String = "keys"
    @Option(help: "Worker key pairs to make.") var workers: Int = 2

    func run() throws {
        let made = try Curve.generateJobKeys(out: out, workers: workers)
        Console.say("keys: wrote the coordinator pair and \(made.workers.count) worker pairs under \(out)")
    }
}
