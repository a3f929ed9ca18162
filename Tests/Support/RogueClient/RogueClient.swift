// Test support for Scripts/chaos: a hostile client that attacks a running coordinator for a given time
// with the project's own codec and socket thread, cycling through every attack below, logging each one
// and what came back to stderr. It never crashes on what it receives and exits 0 at the end of its
// time (or at SIGTERM/SIGINT), after a summary line per attack.
//
//   RogueClient --connect tcp://127.0.0.1:PORT --config JOB.yaml --seconds 60
//               [--curve-secret worker-4.key_secret --server-key coordinator.key] [--impersonate local-0]
//
// As an insider it loads the job file (TrainingEngine) to compute the backbone fingerprint, the compute
// id and the largest frame the coordinator accepts, and with CURVE on it holds a listed key.
import ArgumentParser
import Cluster
import Foundation
import Model
import Training
import Transport

@main
struct RogueClient: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "RogueClient", abstract: "Attack a DEHVF coordinator for a while (test support for Scripts/chaos).")

    @Option(help: "The coordinator's address.") var connect: String
    @Option(help: "The job file the coordinator runs (the rogue is an insider).") var config: String
    @Option(help: "How long to attack.") var seconds: Double = 60
    @Option(help: "A listed CURVE secret key (an insider's), with security.curve on.") var curveSecret: String?
    @Option(help: "The coordinator's CURVE public key file.") var serverKey: String?
    @Option(help: "A real worker's routing id to present with the rogue's own key (CURVE only).") var impersonate: [String] = []
    @Option(help: "Pause between attacks, in milliseconds.") var pauseMs: Int64 = 150
    @Option(help: "Seed of the garbage.") var seed: UInt64 = 1

    func validate() throws {
        guard (curveSecret == nil) == (serverKey == nil) else { throw ValidationError("--curve-secret and --server-key go together") }
        if !impersonate.isEmpty && curveSecret == nil {
            // Without CURVE a routing id is all a worker is: taking one over is not an attack the protocol can refuse.
            throw ValidationError("--impersonate needs CURVE (--curve-secret)")
        }
    }

    func run() throws {
        Interruption.install()
        let job = try JobConfig.load(file: config)
        let engine = try TrainingEngine(job: job)
        var curve: CurveRole?
        var unlisted: CurveRole?
        if let curveSecret, let serverKey {
            let server = try Curve.readKey(file: serverKey)
            curve = .client(try CurveKeyPair(secretKeyFile: curveSecret), serverPublicKey: server)
            unlisted = .client(try CurveKeyPair.generate(), serverPublicKey: server)
        }
        let params = engine.initialParameters()
        let insider = Insider(jobID: job.jobID, computeID: job.computeID, fingerprint: engine.fingerprint,
                              parameters: params.shapes,
                              maxFrameBytes: WireLimits.forJob(parameters: params, microBatch: job.data.microBatch).maxFrameBytes,
                              microBatches: job.data.globalBatch / job.data.microBatch,
                              heartbeatMs: Millis(job.cluster.heartbeatMs), workTimeoutMs: Millis(job.cluster.workTimeoutMs))
        let rogue = try Rogue(endpoint: connect, curve: curve, unlisted: unlisted, insider: insider,
                              impersonate: impersonate, seed: seed)
        Rogue.say("attacking \(connect) for \(seconds) s\(curve == nil ? "" : " with CURVE (listed key \(curveSecret!))"); "
            + "job \(job.jobIDString), compute id \(String(job.computeID, radix: 16)), largest accepted frame \(insider.maxFrameBytes) bytes")
        let end = monotonicMillis() + Millis(seconds * 1000)
        var round = 0
        while monotonicMillis() < end, !Rogue.stopping {
            let attack = rogue.attacks[round % rogue.attacks.count]
            rogue.perform(attack, until: end)
            round += 1
            Thread.sleep(forTimeInterval: Double(pauseMs) / 1000)
        }
        rogue.summary()
    }
}

/// What an insider knows about the job: enough to be admitted and to forge well-formed records.
struct Insider {
    var jobID: UInt64
    var computeID: UInt64
    var fingerprint: String
    var parameters: [(name: String, shape: [Int])]
    var maxFrameBytes: Int64
    var microBatches: Int
    var heartbeatMs: Millis
    var workTimeoutMs: Millis
}
