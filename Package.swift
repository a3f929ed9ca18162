// swift-tools-version:6.0
import PackageDescription

// One package; the targets depend downward only (DESIGN.md §2):
//   Coordinator, Worker, Bench -> Training, Transport -> Cluster, Shard -> Model
// C is reached only through the three system-library shims, each imported by one target.
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
        .library(name: "Transport", targets: ["Transport"]),
        .library(name: "Training", targets: ["Training"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.6.0"),
        .package(url: "https://github.com/jpsim/Yams", from: "5.0.1"),
        .package(url: "https://github.com/apple/swift-crypto", "3.0.0"..<"5.0.0"),
    ],
    targets: [
        .systemLibrary(name: "CZeroMQ", pkgConfig: "libzmq", providers: [.apt(["libzmq3-dev"])]),
        .systemLibrary(name: "CHDF5", pkgConfig: "hdf5", providers: [.apt(["libhdf5-dev"])]),
        .systemLibrary(name: "COpenBLAS", pkgConfig: "openblas", providers: [.apt(["libopenblas-dev"])]),
        // glibc's mallopt, for the coordinator's memory policy (LargeBuffers.swift).
        .systemLibrary(name: "CMalloc"),

        // Tensors, kernels, safetensors, the two frozen backbones, DEHVF and AdamW.
        .target(name: "Model", dependencies: ["COpenBLAS", .product(name: "Crypto", package: "swift-crypto")]),
        // HDF5: datasets, the sampler, checkpoints, the feature store, the demo task.
        .target(name: "Shard", dependencies: ["CHDF5", "Model", .product(name: "Crypto", package: "swift-crypto")]),
        // Pure: job config, wire messages and codec, membership, scheduling, coordinator core, exact sum.
        .target(name: "Cluster", dependencies: [
            "Model", .product(name: "Yams", package: "Yams"),
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ]),
        // The only importer of CZeroMQ: sockets, the socket thread, CURVE keys, ZAP.
        .target(name: "Transport", dependencies: ["CZeroMQ", "Cluster", "Model"]),
        // The engine, train state, evaluation and generation.
        .target(name: "Training", dependencies: ["Model", "Shard", "Cluster", .product(name: "Crypto", package: "swift-crypto")]),

        .executableTarget(name: "Coordinator", dependencies: [
            "CMalloc", "Model", "Shard", "Cluster", "Transport", "Training",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ]),
        .executableTarget(name: "Worker", dependencies: [
            "Model", "Cluster", "Transport", "Training",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ]),
        .executableTarget(name: "Bench", dependencies: [
            "Model", "Shard", "Cluster", "Transport", "Training",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ]),

        // Test support: shared helpers, a checkpoint writer the crash tests SIGKILL, a process that maps a
        // half-precision backbone through the node's F32 cache (page-sharing and locking tests), and the
        // chaos soak's rogue client.
        .target(name: "TestSupport", dependencies: ["Model"], path: "Tests/Support/TestSupport"),
        .executableTarget(name: "CheckpointCrashWriter", dependencies: ["Shard", "Model"],
                          path: "Tests/Support/CheckpointCrashWriter"),
        .executableTarget(name: "SharedBackboneProbe", dependencies: ["Model"], path: "Tests/Support/SharedBackboneProbe"),
        // The export tests' inputs (demo backbones, rows, a perturbed checkpoint per mode), shared with the
        // script that makes their golden files (Scripts/reference/export_golden.py).
        .executableTarget(name: "ExportFixture", dependencies: ["Training", "Shard", "Cluster", "Model"],
                          path: "Tests/Support/ExportFixture"),
        // A hostile client for Scripts/chaos: the project's own codec and sockets, aimed at a coordinator.
        .executableTarget(name: "RogueClient", dependencies: [
            "Cluster", "Transport", "Training", "Model",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ], path: "Tests/Support/RogueClient"),

        .testTarget(name: "ModelTests", dependencies: ["Model", "TestSupport"]),
        .testTarget(name: "ShardTests", dependencies: ["Shard", "Model", "TestSupport"]),
        // Links without libzmq and libhdf5: the protocol's state machines and codec, tested with no sockets.
        .testTarget(name: "ClusterTests", dependencies: ["Cluster", "Model", "TestSupport"]),
        .testTarget(name: "TransportTests", dependencies: ["Transport", "Cluster", "Model", "TestSupport"]),
        .testTarget(name: "TrainingTests", dependencies: ["Training", "Cluster", "Shard", "Model", "TestSupport"]),
        // The built commands run as a user runs them: real processes, sockets, files and signals.
        .testTarget(name: "EndToEndTests", dependencies: ["Cluster", "Transport", "Training", "Shard", "Model", "TestSupport"]),
    ],
    swiftLanguageModes: [.v5]
)
