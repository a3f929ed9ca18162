import Cluster
import Foundation
import Model

/// What a step costs on the wire with N workers, each computing one micro-batch: the coordinator sends
/// the parameters to every worker (`params`) and receives one `result` (summed gradients) from each.
/// Measured: message bytes, WireCodec encode and decode time, ExactSum.combine time of N results; for
/// the bench shape and projected to LLaMA-7B + ViT-L/14 (the fuser's real parameter count). Socket
/// time is not measured here (that comes from real multi-process runs).
enum CommBench {
    static func run(_ o: BenchOptions, workers: Int, into report: Report) throws {
        let bench = try BenchShape.bench.fuser(.dehvf)
        for (name, config) in [(BenchShape.bench.name, bench), (LargeShape.name, try LargeShape.fuser())] {
            report.section("comm: \(name), dehvf, \(workers) workers, \(config.parameterCount) trainable parameters")
            let params = config.benchParameters()
            let named = params.pairs.map { NamedTensor($0.0, $0.1) }
            let broadcast = Envelope(jobID: 1, step: 7, .params(named))
            var rng = BenchRNG(11)
            let results = (0..<workers).map { w in
                Envelope(jobID: 1, step: 7, .result(WorkResult(
                    microBatch: UInt32(w), lossSum: 12.5 + Double(w), labelCount: 128,
                    grads: params.pairs.map { NamedTensor($0.0, rng.tensor($0.1.shape, scale: 1e-3)) })))
            }
            let paramBytes = WireCodec.encode(broadcast).reduce(0) { $0 + $1.byteCount }
            let resultBytes = WireCodec.encode(results[0]).reduce(0) { $0 + $1.byteCount }
            let perStep = Double(workers * (paramBytes + resultBytes))
            report.add("comm", config: name, mode: "dehvf", name: "params message", unit: "bytes", Samples([Double(paramBytes)]))
            report.add("comm", config: name, mode: "dehvf", name: "result message", unit: "bytes", Samples([Double(resultBytes)]))
            report.add("comm", config: name, mode: "dehvf", name: "bytes per step, \(workers) workers", unit: "MB", Samples([perStep / 1e6]))
            for gbit in [1.0, 10.0] {
                report.add("comm", config: name, mode: "dehvf", name: "wire time at \(Int(gbit)) Gbit/s (coordinator link)",
                           unit: "ms", Samples([perStep * 8 / (gbit * 1e9) * 1e3]))
            }

            let encode = timeRuns(runs: o.runs, warmup: o.warmup) {
                for r in results { _ = WireCodec.encode(r) }
                _ = WireCodec.encode(broadcast)
            }
            // The receiver holds each frame as bytes (a ZeroMQ message), so decoding starts from byte arrays.
            let received = results.map { WireCodec.encode($0).map(\.bytes) }
            let receivedParams = WireCodec.encode(broadcast).map(\.bytes)
            let decode = try timeRuns(runs: o.runs, warmup: o.warmup) {
                for r in received { _ = try WireCodec.decode(r) }
                _ = try WireCodec.decode(receivedParams)
            }
            let contributions = results.map { e -> GradientContribution in
                guard case .result(let r) = e.message else { fatalError("built as results above") }
                return GradientContribution(r)
            }
            let combine = try timeRuns(runs: o.runs, warmup: o.warmup) { _ = try ExactSum.combine(contributions) }
            let state = TrainState(params: config.benchParameters())
            var optim = JobConfig.Optim()
            optim.steps = 1_000_000
            // labelCount 1: apply divides the gradient by it in place, and repeated division would drift
            // into subnormals and time something else.
            var combined = try ExactSum.combine(contributions)
            combined.labelCount = 1
            let adam = try timeRuns(runs: o.runs, warmup: o.warmup) {
                try state.apply(combined, optim: optim, totalSteps: 1_000_000)
            }
            let mb = perStep / 1e6
            report.add("comm", config: name, mode: "dehvf", name: "encode, all messages of a step", unit: "ms", encode.map { $0 * 1e3 })
            report.add("comm", config: name, mode: "dehvf", name: "decode, all messages of a step", unit: "ms", decode.map { $0 * 1e3 })
            report.add("comm", config: name, mode: "dehvf", name: "decode rate", unit: "MB/s", decode.rate(mb))
            report.add("comm", config: name, mode: "dehvf", name: "ExactSum.combine of \(workers)", unit: "ms", combine.map { $0 * 1e3 })
            report.add("comm", config: name, mode: "dehvf", name: "AdamW apply", unit: "ms", adam.map { $0 * 1e3 })
        }
    }
}
