import Foundation

/// One step's time, split: compute per worker, the rest of the exchange (messages, scheduling,
/// waiting), and the exact sum + AdamW on the coordinator.
struct StepTiming {
    var wall, compute, exchange, combine: Double
}

/// Mean step timings after warm-up, for the end-of-run line.
struct StepTimings {
    private var sum = StepTiming(wall: 0, compute: 0, exchange: 0, combine: 0)
    private var count = 0

    mutating func add(_ t: StepTiming) {
        sum.wall += t.wall; sum.compute += t.compute; sum.exchange += t.exchange; sum.combine += t.combine
        count += 1
    }

    var summary: String? {
        guard count > 0 else { return nil }
        let n = Double(count), w = sum.wall / n
        func part(_ x: Double) -> String { String(format: "%.1f ms (%.0f%%)", 1000 * x / n, 100 * x / n / w) }
        return String(format: "mean step %.1f ms over %d steps: compute per worker ", 1000 * w, count) + part(sum.compute)
            + ", exchange " + part(sum.exchange) + ", exact sum + AdamW " + part(sum.combine)
    }
}
