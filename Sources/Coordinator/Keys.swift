import ArgumentParser
import Transport

struct Keys: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Make CURVE key pairs for a job: one for the coordinator and one per worker.",
        discussion: """
            Writes OUT/coordinator.key (public) and OUT/coordinator.key_secret, and OUT/workers/worker-N.key and \
            OUT/worker-N.key_secret. Point security.secret_key at the coordinator's secret and \
            security.allowed_workers at OUT/workers; give each worker its secret and the coordinator's public key. \
            OUT and OUT/workers are made mode 0700 (an existing one that others can enter is refused), secrets \
            0600. Keys already in OUT are an error, unless --force.
            """)
    @Option(help: "Directory to write.") var out: String = "keys"
    @Option(help: "Worker key pairs to make.") var workers: Int = 2
    @Flag(help: """
        Replace the keys in OUT: remove every *.key and *.key_secret in OUT and OUT/workers first. \
        Workers holding the old keys can no longer join.
        """)
    var force = false

    func validate() throws {
        if workers < 1 { throw ValidationError("--workers must be at least 1, got \(workers)") }
    }

    func run() throws {
        let made = try Curve.generateJobKeys(out: out, workers: workers, force: force)
        if !made.replaced.isEmpty {
            Console.say("keys: --force: removed \(made.replaced.count) old key files from \(out)")
        }
        Console.say("keys: wrote the coordinator pair and \(made.workers.count) worker pair(s) under \(out) (mode 0700, secrets 0600); "
            + "point security.secret_key at \(out)/coordinator.key_secret and security.allowed_workers at \(out)/workers")
    }
}
