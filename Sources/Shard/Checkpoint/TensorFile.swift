import Model

/// Named float32 tensors in HDF5 groups: what checkpoints and `inspect gradients` output are made of.
/// A name such as `router.weight` is one dataset name inside its group (never a path).
public enum TensorFile {
    /// Writes `tensors` as float32 datasets of `group`, in order, each Fletcher-32 checksummed
    /// (chunked as one chunk per tensor).
    public static func write(_ tensors: TensorSet, into group: HDF5Group) throws {
        for (name, t) in zip(tensors.names, tensors.tensors) {
            if name.isEmpty || name.contains("/") {
                throw ShardError(.badValue, "a tensor name must be non-empty and contain no '/'", path: group.path,
                                 object: group.name, expected: "a flat name like router.weight", found: "\"\(name)\"")
            }
            try group.write(name, UnsafeBufferPointer(t.buffer), shape: t.shape,
                            chunk: t.shape.isEmpty ? nil : t.shape, fletcher32: !t.shape.isEmpty)
        }
    }

    /// Reads every dataset of `group` as a float32 tensor, in creation order when the file recorded it.
    /// Every shape is checked before anything is allocated: together the tensors may need at most the
    /// file's read budget (`HDF5File.ReadBudget`). A checksum failure is `.corrupt` naming the tensor.
    public static func read(group: HDF5Group) throws -> TensorSet {
        let tensors = try open(group: group)
        try requireReadable(tensors, within: try group.file.readBudget())
        return try read(tensors)
    }

    /// Reads one float32 dataset of `group` as a tensor, after checking it fits the file's read budget.
    public static func readTensor(_ name: String, in group: HDF5Group) throws -> Tensor {
        let ds = try openTensor(name, in: group)
        try ds.requireReadable(elementSize: 4, within: try group.file.readBudget())
        return try read(ds, name: name)
    }

    /// Every dataset of `group` (in creation order when recorded), opened and required float32; nothing read.
    static func open(group: HDF5Group) throws -> [(name: String, dataset: HDF5Dataset)] {
        try group.childNames().map { ($0, try openTensor($0, in: group)) }
    }

    static func openTensor(_ name: String, in group: HDF5Group) throws -> HDF5Dataset {
        let ds = try group.openDataset(name)
        try ds.require(.float32)
        return ds
    }

    /// Throws `.badShape` naming the first tensor that takes `tensors` past `budget` bytes in all.
    static func requireReadable(_ tensors: [(name: String, dataset: HDF5Dataset)],
                                within budget: HDF5File.ReadBudget) throws {
        var total = 0
        for (_, ds) in tensors {
            try ds.requireReadable(elementSize: 4, within: budget)
            total += ds.byteCount(elementSize: 4)  // each at most the budget: no overflow
            if total > budget.bytes {
                throw ShardError(.badShape, "the tensors declare more data than the file can hold", path: ds.path,
                                 object: ds.name, expected: "at most \(budget.bytes) bytes in all (\(budget.rule))",
                                 found: "\(total) bytes up to and including this tensor")
            }
        }
    }

    /// Reads opened tensors whose sizes the caller has checked.
    static func read(_ tensors: [(name: String, dataset: HDF5Dataset)]) throws -> TensorSet {
        TensorSet(try tensors.map { NamedTensor($0.name, try read($0.dataset, name: $0.name)) })
    }

    private static func read(_ ds: HDF5Dataset, name: String) throws -> Tensor {
        let t = Tensor(zeros: ds.shape)
        do {
            try ds.readAll(into: t.buffer)
        } catch var e as ShardError {
            if e.code == .corrupt || e.code == .hdf5 {
                e.code = .corrupt
                e.message = "tensor \(name) is corrupt (its Fletcher-32 checksum or storage does not verify); "
                    + "the file is damaged: use an older checkpoint or recompute it"
            }
            throw e
        }
        return t
    }

    /// Writes a standalone file (replacing `path`, durably): each group of named tensors, tensors at the
    /// root (such as `loss`), and string/int root attributes. For `inspect gradients`:
    /// `write(to: p, groups: [("grads", grads)], root: TensorSet([NamedTensor("loss", lossScalar)]))`.
    public static func write(to path: String, groups: [(String, TensorSet)], root: TensorSet = TensorSet(),
                             strings: [(String, String)] = [], ints: [(String, Int64)] = []) throws {
        try DurableFile.write(path) { tmp in
            try HDF5File.create(tmp) { file in
                for (k, v) in strings { try file.root.setAttribute(k, string: v) }
                for (k, v) in ints { try file.root.setAttribute(k, int: v) }
                for (g, tensors) in groups { try write(tensors, into: try file.root.createGroup(g)) }
                try write(root, into: file.root)
            }
        }
    }
}
