import Foundation

/// What this process holds, as the kernel counts it.
public enum ProcessMemory {
    /// The most this process ever held resident (VmHWM in /proc/self/status), nil where there is none.
    /// `coordinator train` and `worker` print it as they end, to set beside `coordinator plan`'s figure.
    public static func peakResidentBytes() -> Int? {
        guard let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8),
              let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmHWM:") }),
              let kB = line.split(whereSeparator: \.isWhitespace).dropFirst().first.flatMap({ Int($0) }) else { return nil }
        return kB * 1024
    }
}
