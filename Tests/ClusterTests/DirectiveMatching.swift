import Cluster

extension Array where Element == Directive {
    /// Whether these directives complete step `step` (whatever its results).
    func completes(_ step: UInt64) -> Bool {
        contains { if case .stepComplete(step, _) = $0 { return true } else { return false } }
    }
}
