import Foundation

/// SIGTERM/SIGINT as a flag a loop checks between units of work, so a preempted job can finish its step
/// and checkpoint (Slurm sends SIGTERM before killing). A second signal exits at once.
public enum Interruption {
    private static let lock = NSLock()
    nonisolated(unsafe) private static var received: Int32 = 0
    nonisolated(unsafe) private static var sources: [DispatchSourceSignal] = []

    /// The signal received, if any.
    public static var signal: Int32? {
        lock.lock()
        defer { lock.unlock() }
        return received == 0 ? nil : received
    }

    /// Installs the handlers. The signals are unblocked first: a process inherits its parent's mask, and
    /// a launcher that blocks them (some test runners do) would otherwise make the job unkillable by TERM.
    public static func install(onSignal: (@Sendable (Int32) -> Void)? = nil) {
        var set = sigset_t()
        sigemptyset(&set)
        for s in [SIGTERM, SIGINT, SIGHUP] { sigaddset(&set, s) }
        pthread_sigmask(SIG_UNBLOCK, &set, nil)
        for sig in [SIGTERM, SIGINT] {
            Foundation.signal(sig, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: sig, queue: .global())
            source.setEventHandler {
                lock.lock()
                let again = received != 0
                received = sig
                lock.unlock()
                if again { exit(128 + sig) }
                onSignal?(sig)
            }
            source.resume()
            sources.append(source)
        }
    }
}
