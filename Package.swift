// swift-tools-version:6.0
import PackageDescription

// One package, three C libraries reached only through thin system-library shims (see DESIGN.md §2).
let package = Package(
    name: "dehvf",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "coordinator", targets: ["Coordinator"]),
        .executable(name: "worker", targets: ["Worker"]),
        .executable(name: "bench", targets: ["Bench"]),
        .library(name: "Model", targets: ["Model"]),
        .library(name: "Shard", targets: ["Shard"]),
        .library(name: "Cluster", targets: ["Cluster"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.6.0"),
        .package(url: "https://github.com/jpsim/Yams", from: "5.0.1"),
        .package(url: "https://github.com/apple/swift-crypto", "3.0.0"..<"5.0.0"),
    ],
    targets: [
        .systemLibrary(
            name: "CZeroMQ", pkgConfig: "libzmq",
            providers: [.apt(["libzmq3-dev"])]),
        .systemLibrary(
            name: "CHDF5", pkgConfig: "hdf5",
            providers: [.apt(["libhdf5-dev"])]),
        .systemLibrary(
            name: "COpenBLAS", pkgConfig: "openblas",
            providers: [.apt(["libopenblas-dev"])]),

        .target(
            name: "Model",
            dependencies: ["COpenBLAS", .product(name: "Crypto", package: "swift-crypto")]),
        .target(name: "Shard", dependencies: ["CHDF5", "Model"]),
        .target(
            name: "Cluster",
            dependencies: ["CZeroMQ", "Model", "Shard", .product(name: "Yams", package: "Yams"),
                           .product(name: "Crypto", package: "swift-crypto")]),

        .executableTarget(
            name: "Coordinator",
            dependencies: [
                "Model", "Shard", "Cluster",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ]),
        .executableTarget(
            name: "Worker",
            dependencies: [
                "Model", "Shard", "Cluster",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ]),
        .executableTarget(
            name: "Bench",
            dependencies: [
                "Model", "Shard", "Cluster",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]),

        .executableTarget(
            name: "CheckpointCrashWriter", dependencies: ["Shard", "Model"],
            path: "Tests/Support/CheckpointCrashWriter"),

        .testTarget(name: "ModelTests", dependencies: ["Model"]),
        .testTarget(name: "ShardTests", dependencies: ["Shard", "Model"]),
        .testTarget(name: "ClusterTests", dependencies: ["Cluster", "Model", "Shard"]),
        .testTarget(name: "CoordinatorTests", dependencies: ["Cluster", "Model", "Shard"]),
    ],
    swiftLanguageModes: [.v5]
)
