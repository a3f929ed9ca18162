import Cluster
import Foundation

/// Starts the thread that owns one ZeroMQ socket for its whole life (ZeroMQ sockets are not
/// thread-safe): `make` creates and configures the socket on that thread, the caller waits until it
/// has, and gets `make`'s report back or its error rethrown; then `serve` runs on the thread until it
/// returns, and the socket is closed there. `finished` is signalled when the thread ends, either way.
enum SocketOwnerThread {
    static func start<Report>(name: String, finished: DispatchSemaphore,
                              make: @escaping () throws -> (ZMQSocket, Report),
                              serve: @escaping (ZMQSocket) -> Void) throws -> Report {
        let ready = DispatchSemaphore(value: 0)
        let outcome = Outcome<Report>()
        let thread = Thread {
            do {
                let socket: ZMQSocket
                do {
                    let made = try make()
                    socket = made.0
                    outcome.result = .success(made.1)
                } catch {
                    outcome.result = .failure(error)
                    ready.signal()
                    finished.signal()
                    return
                }
                ready.signal()
                serve(socket)
            }  // the socket is released, and so closed, here on its own thread
            finished.signal()
        }
        thread.name = name
        thread.start()
        ready.wait()
        return try outcome.result!.get()
    }

    /// Written by the new thread before `ready` is signalled, read by the caller after.
    private final class Outcome<Report>: @unchecked Sendable {
        var result: Result<Report, Error>?
    }
}
