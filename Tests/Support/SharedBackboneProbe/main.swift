// Test support for F32CacheTests: a real process that opens a half-precision LLaMA directory through a
// node's F32 cache, as a worker does, and shows what it got.
//   SharedBackboneProbe CACHE LANGUAGE [--wait] [--die-at-file-limit] [--weights-only]
// Opens LANGUAGE with F32Cache(directory: CACHE) (its report lines go to stderr), loads the LlamaModel
// strictly, reads one byte of every page of every mapped weight file, then prints to stdout, per file,
//   file NAME outcome=converted|reused|rebuilt seconds=S mapped=PATH rss_kb=N pss_kb=N
// (Rss and Pss of PATH's mappings in /proc/self/smaps), then "ready". With --wait it sleeps until killed,
// else exits 0. On an error it prints the error and exits 1. With --die-at-file-limit, SIGXFSZ gets its
// default action back and is unblocked (the test runner may pass it on ignored or blocked), so a write
// past `ulimit -f` kills the process half-way through a conversion, as a crash would. With --weights-only,
// LANGUAGE is any directory of safetensors weights: they are opened through the cache and nothing else is
// done; the last line is then "peak_rss_kb=N" (VmHWM), the most memory the process ever held.
import Foundation
import Model

/// Rss and Pss in kB of this process's mappings of `path`.
func smaps(of path: String) -> (rss: Int, pss: Int) {
    guard let handle = FileHandle(forReadingAtPath: "/proc/self/smaps"), let data = try? handle.readToEnd() else { return (0, 0) }
    var rss = 0, pss = 0, inside = false
    for line in String(decoding: data, as: UTF8.self).split(separator: "\n") {
        let parts = line.split(separator: " ", omittingEmptySubsequences: true)
        guard let key = parts.first else { continue }
        if key.hasSuffix(":") {
            guard inside, parts.count >= 2, let kb = Int(parts[1]) else { continue }
            if key == "Rss:" { rss += kb } else if key == "Pss:" { pss += kb }
        } else {
            // A mapping header: address range, permissions, offset, device, inode, then the path.
            inside = parts.count >= 6 && parts[5...].joined(separator: " ") == path
        }
    }
    return (rss, pss)
}

let arguments = CommandLine.arguments
guard arguments.count >= 3 else {
    FileHandle.standardError.write(Data("usage: SharedBackboneProbe CACHE LANGUAGE [--wait] [--die-at-file-limit] [--weights-only]\n".utf8))
    exit(2)
}
if arguments.contains("--die-at-file-limit") {
    signal(SIGXFSZ, SIG_DFL)
    var signals = sigset_t()
    sigemptyset(&signals)
    sigaddset(&signals, SIGXFSZ)
    sigprocmask(SIG_UNBLOCK, &signals, nil)
}
do {
    let cache = F32Cache(directory: URL(fileURLWithPath: arguments[1]))
    if arguments.contains("--weights-only") {
        let archive = try SafetensorsArchive(directory: URL(fileURLWithPath: arguments[2]), cache: cache)
        for file in archive.files {
            let seconds = String(format: "%.3f", file.cacheEntry?.seconds ?? 0)
            print("file \(file.url.lastPathComponent) outcome=\(file.cacheEntry.map { "\($0.outcome)" } ?? "direct") seconds=\(seconds)")
        }
        let status = (try? String(contentsOfFile: "/proc/self/status", encoding: .utf8)) ?? ""
        let peak = status.split(separator: "\n").first { $0.hasPrefix("VmHWM:") }?.split(separator: " ").dropFirst().first ?? "?"
        print("peak_rss_kb=\(peak)")
        exit(0)
    }
    let directory = try LanguageBackboneDirectory.open(URL(fileURLWithPath: arguments[2]), cache: cache)
    let model = try LlamaModel(config: directory.config, weights: directory.weights)
    var sum: UInt64 = 0
    for file in directory.archive.files {
        let bytes = file.storage.bytes
        for offset in stride(from: 0, to: bytes.count, by: 4096) { sum &+= UInt64(bytes[offset]) }
    }
    for file in directory.archive.files {
        let path = file.storage.url.path
        let (rss, pss) = smaps(of: path)
        let outcome = file.cacheEntry.map { "\($0.outcome)" } ?? "direct"
        let seconds = String(format: "%.3f", file.cacheEntry?.seconds ?? 0)
        print("file \(file.url.lastPathComponent) outcome=\(outcome) seconds=\(seconds) mapped=\(path) rss_kb=\(rss) pss_kb=\(pss)")
    }
    print("ready (checksum of touched bytes \(sum), model of \(model.config.numHiddenLayers) layers)")
    fflush(stdout)
    if arguments.contains("--wait") { while true { pause() } }
    exit(0)
} catch {
    print("error: \(error)")
    fflush(stdout)
    exit(1)
}
