import Foundation

/// Human output on stderr (stdout stays for results a script may parse).
enum Console {
    static let isTerminal = isatty(2) != 0

    static func say(_ line: String) { FileHandle.standardError.write(Data((line + "\n").utf8)) }

    /// A progress line: rewritten in place on a terminal, printed every `every` seconds otherwise.
    static func progress(_ line: String, final: Bool = false) {
        if isTerminal {
            FileHandle.standardError.write(Data(("\r\u{1B}[K" + line + (final ? "\n" : "")).utf8))
        } else {
            let now = Date()
            if final || now.timeIntervalSince(lastPlain) >= 5 {
                lastPlain = now
                say(line)
            }
        }
    }
    /// Clears a progress line on a terminal, so that what is said next starts on a line of its own.
    static func endProgress() {
        if isTerminal { FileHandle.standardError.write(Data("\r\u{1B}[K".utf8)) }
    }

    nonisolated(unsafe) static var lastPlain = Date.distantPast
}

func formatDuration(_ seconds: Double) -> String {
    guard seconds.isFinite, seconds >= 0 else { return "?" }
    let s = Int(seconds.rounded())
    if s >= 3600 { return "\(s / 3600)h\(String(format: "%02d", s / 60 % 60))m" }
    if s >= 60 { return "\(s / 60)m\(String(format: "%02d", s % 60))s" }
    return "\(s)s"
}
