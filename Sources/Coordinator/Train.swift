import ArgumentParser
import Cluster
import Foundation
import Transport

struct Train: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Train a job: shard the dataset into micro-batches, combine their gradients exactly, apply AdamW.",
        discussion: """
            cluster.launcher picks where micro-batches are computed:
              inprocess  in this process (one machine, no network)
              local      cluster.workers `worker` processes started here, over ZeroMQ
              manual     workers that join with `worker --join tcp://HOST:PORT`
              slurm      workers started by srun (see clusters/slurm/train.sbatch)
            Progress goes to stderr; one JSON line per step is appended to CHECKPOINT_DIR/train.jsonl. \
            Checkpoints are written every checkpoint.every steps and at the end; --resume continues a job. \
            A checkpoint.dir that already holds checkpoints is refused without --resume or --fresh, and one \
            that another training run is using (CHECKPOINT_DIR/.lock) is refused.
            """)

    @OptionGroup var job: JobOptions

    @Option(help: ArgumentHelp("Continue from a checkpoint: 'latest' (in checkpoint.dir) or a file.", valueName: "latest|PATH"))
    var resume: String?

    @Flag(help: "Start over in a checkpoint.dir that holds an earlier run: remove its checkpoints, latest, train.jsonl, worker logs and TensorBoard events first.")
    var fresh = false

    func validate() throws {
        if fresh && resume != nil { throw ValidationError("--fresh starts over and --resume continues: give one of them") }
    }

    func run() throws {
        Interruption.install()
        // A file-size limit (ulimit -f) makes a write fail with EFBIG, which is reported, instead of
        // killing the coordinator mid-checkpoint.
        signal(SIGXFSZ, SIG_IGN)
        let config = try job.load()
        if config.cluster.launcher != .inprocess { LargeBuffers.returnToKernelWhenFreed() }
        // The checkpoint directory is this run's until the process ends (with or without --resume).
        let directory = try TrainingRun.claim(config.checkpoint.dir.path, fresh: fresh, resuming: resume != nil)
        try withExtendedLifetime(directory) { try TrainingRun(job: config, resume: resume).run() }
    }
}
