import Cluster
import Foundation
import Model

/// A seeded generator so every random test is reproducible.
struct SplitMix64: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

func tensor(_ shape: [Int], _ rng: inout SplitMix64, scale: Float = 1) -> Tensor {
    let t = Tensor(zeros: shape)
    for i in 0..<t.count { t.data[i] = Float.random(in: -scale...scale, using: &rng) }
    return t
}

func bits(_ t: Tensor) -> [UInt32] { t.array.map(\.bitPattern) }

/// A fresh temporary directory, removed by the caller.
func temporaryDirectory() -> String {
    let dir = NSTemporaryDirectory() + "dehvf-cluster-\(UUID().uuidString)"
    try! FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    return dir
}
