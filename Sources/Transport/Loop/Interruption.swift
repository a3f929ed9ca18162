import Foundation

/// SIGTERM/SIGINT as a flag a loop checks between units of work, so a preempted job can finish its step
/// and checkpoint (Slurm sends SIGTERM before killing). A second SIGINT exits at once; a repeated SIGTERM
/// is ignored, because Slurm delivers one TERM to a task several times (directly, through srun, and from a
/// batch script that forwards it) and a duplicate must not cut short the checkpoint the first asked for.
/// Slurm's SIGKILL after KillWait still ends a task that takes too long.
public enum Interruption {
    private static let lock = NSLock()
    nonisolated(unsafe) private static var received: Int32 = 0
    nonisolated(unsafe) private static var sources: [DispatchSourceSignal] = []
    nonisolated(unsafe) private static var observers: [@Sendable (Int32) -> Void] = []

    /// The signal received, if any.
    public static var signal: Int32? {
        lock.lock()
        defer { lock.unlock() }
        return received == 0 ? nil : received
    }

    /// Calls `handler` (on a dispatch queue) when the first TERM or INT arrives, or at once if one
    /// already has: a loop waiting on its event queue posts the signal there rather than polling.
    public static func observe(_ handler: @escaping @Sendable (Int32) -> Void) {
        lock.lock()
        let already = received
        if already == 0 { observers.append(handler) }
        lock.unlock()
        if already != 0 { handler(already) }
    }

    /// Installs the handlers. The signals are unblocked first: a process inherits its parent's mask, and
    /// a launcher that blocks them (some test runners do) would otherwise make the job unkillable by TERM.
    public static func install() {
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
                if !again { received = sig }
                let notify = again ? [] : observers
                lock.unlock()
                if again {
                    if sig == SIGINT { exit(128 + sig) }
                    return
                }
                for o in notify { o(sig) }
            }
            source.resume()
            sources.append(source)
        }
    }
}
