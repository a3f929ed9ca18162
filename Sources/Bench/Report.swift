import Foundation

/// One figure: the median of repeated runs with its spread, in the JSON schema the plot script reads.
struct Figure: Codable {
    var suite: String
    var config: String
    var mode: String
    var name: String
    var unit: String
    var median: Double
    var min: Double
    var max: Double
}

/// Collects figures, prints each as it is measured, and writes them all as one JSON array at the end.
final class Report {
    let path: String?
    private(set) var figures: [Figure] = []

    init(path: String?) { self.path = path }

    func section(_ title: String) { print("\n== \(title)") }

    func note(_ text: String) { print("   " + text) }

    @discardableResult
    func add(_ suite: String, config: String, mode: String, name: String, unit: String, _ s: Samples) -> Figure {
        let f = Figure(suite: suite, config: config, mode: mode, name: name, unit: unit,
                       median: s.median, min: s.min, max: s.max)
        figures.append(f)
        let where_ = [config, mode].filter { !$0.isEmpty }.joined(separator: "/")
        print("  " + Self.pad(where_, 20) + " " + Self.pad(name, 40) + " " + Self.pad(Self.number(f.median), 10, left: true)
              + " " + Self.pad(unit, 9) + " [" + Self.number(f.min) + ", " + Self.number(f.max) + "]")
        return f
    }

    func save() throws {
        guard let path else { return }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        try encoder.encode(figures).write(to: URL(fileURLWithPath: path))
        print("\nwrote \(figures.count) figures to \(path)")
    }

    static func pad(_ s: String, _ width: Int, left: Bool = false) -> String {
        let fill = String(repeating: " ", count: max(0, width - s.count))
        return left ? fill + s : s + fill
    }

    static func number(_ x: Double) -> String {
        if x == 0 { return "0" }
        let a = abs(x)
        if a >= 1e6 || a < 1e-3 { return String(format: "%.3e", x) }
        if a >= 100 { return String(format: "%.1f", x) }
        if a >= 1 { return String(format: "%.3f", x) }
        return String(format: "%.4f", x)
    }
}

/// Repeated measurements of one quantity.
struct Samples {
    /// In the order measured (rounds pair up across figures).
    var raw: [Double]
    /// Sorted.
    var values: [Double]
    init(_ values: [Double]) { raw = values; self.values = values.sorted() }
    var median: Double {
        let n = values.count
        return n % 2 == 1 ? values[n / 2] : (values[n / 2 - 1] + values[n / 2]) / 2
    }
    var min: Double { values.first ?? .nan }
    var max: Double { values.last ?? .nan }
    /// The same runs seen as a rate: `work / seconds` for each (so min and max swap roles).
    func rate(_ work: Double) -> Samples { Samples(raw.map { work / $0 }) }
    func map(_ f: (Double) -> Double) -> Samples { Samples(raw.map(f)) }
    /// Round-by-round ratio self[i] / other[i].
    func over(_ other: Samples) -> Samples { Samples(zip(raw, other.raw).map { $0 / $1 }) }
}

func now() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) * 1e-9
}

/// CPU seconds of this process (all threads): unlike wall time, not charged for time another tenant of the
/// machine holds the core.
func cpuNow() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) * 1e-9
}

/// Wall seconds of each of `runs` calls after `warmup` untimed calls.
func timeRuns(runs: Int, warmup: Int, _ body: () throws -> Void) rethrows -> Samples {
    for _ in 0..<warmup { try body() }
    var out: [Double] = []
    for _ in 0..<runs {
        let s = now()
        try body()
        out.append(now() - s)
    }
    return Samples(out)
}
