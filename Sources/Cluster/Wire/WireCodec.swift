import Foundation
import Model

/// One outgoing frame: small bytes (header, meta), or a tensor's raw float32 storage, which the socket
/// sends without copying (the frame keeps the tensor alive until ZeroMQ has sent it).
public enum WireFrame: Sendable {
    case bytes([UInt8])
    case tensor(Tensor)

    public var byteCount: Int {
        switch self {
        case .bytes(let b): b.count
        case .tensor(let t): t.count * 4
        }
    }

    /// A copy of the frame's bytes (for tests and tools; the socket path does not copy).
    public var bytes: [UInt8] {
        switch self {
        case .bytes(let b): return b
        case .tensor(let t): return Array(UnsafeRawBufferPointer(start: t.data, count: t.count * 4))
        }
    }
}

/// Sizes beyond which a frame is rejected as absurd before anything is allocated. The defaults suit a
/// worker reading its coordinator; the coordinator decodes with ``forJob(parameters:microBatch:)``.
public struct WireLimits: Sendable {
    /// Config JSON, fingerprints.
    public var maxStringBytes = 16 << 20
    public var maxNameBytes = 1024
    /// Failure and refusal reasons.
    public var maxReasonBytes = 4096
    public var maxRank = 8
    public var maxTensors = 65_536
    public var maxSamples = 1 << 24
    public var maxTensorBytes: UInt64 = 1 << 34
    /// New tokens per generated caption.
    public var maxGeneratedTokens = 4096
    public init() {}

    /// What a coordinator accepts from its workers: no tensor larger than the job's largest parameter,
    /// no more tensors than it has, no more samples than a micro-batch, short strings.
    public static func forJob(parameters: TensorSet, microBatch: Int) -> WireLimits {
        var l = WireLimits()
        l.maxStringBytes = 64 << 10
        l.maxTensors = parameters.count
        l.maxSamples = max(microBatch, 1)
        l.maxTensorBytes = UInt64(parameters.tensors.map { $0.count * 4 }.max() ?? 0)
        return l
    }

    /// The largest frame such a message can have: a ZeroMQ socket drops a peer that sends more
    /// (ZMQ_MAXMSGSIZE), before the frame is ever handed to the shell.
    public var maxFrameBytes: Int64 { Int64(max(maxTensorBytes, UInt64(maxStringBytes) + 4096)) }
}

/// Binary encoding of ``Envelope``s as ZeroMQ multipart messages (all integers little-endian):
///
/// - frame 0, header (24 bytes): magic `"DHVF"`, u16 version, u8 kind, u8 reserved (0), u64 job id, u64 step;
/// - frame 1, meta: the kind's fields; for tensor-carrying kinds it ends with a table
///   u32 count, then per tensor u16 name length, UTF-8 name, u8 rank, rank × u64 dims;
/// - frames 2..., one per tensor in table order: its raw little-endian float32 elements.
///
/// Decoding is strict: every byte must be accounted for, so a message that decodes re-encodes to the
/// identical frames.
public enum WireCodec {
    public static let magic: UInt32 = 0x4656_4844  // "DHVF" read as little-endian u32
    public static let headerBytes = 24

    // MARK: encode

    /// The frames of an envelope. Tensor names must be at most ``WireLimits/maxNameBytes`` UTF-8 bytes and
    /// ranks at most ``WireLimits/maxRank`` (true of every DESIGN.md §4 name); the decoder rejects others.
    public static func encode(_ e: Envelope) -> [WireFrame] {
        var h = ByteWriter()
        h.u32(magic)
        h.u16(e.version)
        h.u8(e.message.kind.rawValue)
        h.u8(0)
        h.u64(e.jobID)
        h.u64(e.step)

        var m = ByteWriter()
        switch e.message {
        case .hello(let x):
            m.string(x.workerName)
            m.string(x.backbone)
            m.u16(x.protocolVersion)
            m.u64(x.computeID)
        case .welcome(let x):
            m.string(x.configJSON)
        case .refuse(let reason):
            m.string(reason)
        case .heartbeat, .stop, .params:
            break
        case .work(let x):
            m.u64(x.epoch)
            m.u32(x.microBatch)
            m.u8(x.dropout ? 1 : 0)
            m.u32(UInt32(x.samples.count))
            for s in x.samples { m.i64(s) }
        case .result(let x):
            m.u32(x.microBatch)
            m.f64(x.gradients.lossSum)
            m.i64(x.gradients.labelCount)
            m.f64(x.computeSeconds)
        case .failed(let x):
            m.u32(x.microBatch)
            m.string(x.reason)
        case .evalWork(let x):
            m.u32(x.unit)
            m.string(x.dataset)
            m.u32(x.maxNewTokens)
            m.i32(x.eos)
            m.u32(UInt32(x.samples.count))
            for s in x.samples { m.i64(s) }
        case .evalResult(let x):
            m.u32(x.unit)
            m.f64(x.lossSum)
            m.i64(x.labelCount)
            m.f64(x.computeSeconds)
            m.u32(UInt32(x.predictions.count))
            for p in x.predictions { m.i32(p) }
            m.u32(UInt32(x.generated.count))
            for row in x.generated {
                m.u32(UInt32(row.count))
                for t in row { m.i32(t) }
            }
        case .bye(let ids):
            m.u32(UInt32(ids.count))
            for i in ids { m.u32(i) }
        }
        let tensors = e.message.tensors
        if hasTensors(e.message.kind) {
            m.u32(UInt32(tensors.count))
            for t in tensors {
                let name = Array(t.name.utf8)
                m.u16(UInt16(truncatingIfNeeded: name.count))
                m.bytes.append(contentsOf: name)
                m.u8(UInt8(truncatingIfNeeded: t.tensor.shape.count))
                for d in t.tensor.shape { m.u64(UInt64(d)) }
            }
        }
        #if _endian(big)
        // Tensor frames are raw host floats: a big-endian host would need to byte-swap here.
        #error("WireCodec assumes a little-endian host")
        #endif
        return [.bytes(h.bytes), .bytes(m.bytes)] + tensors.map { .tensor($0.tensor) }
    }

    static func hasTensors(_ k: MessageKind) -> Bool { k == .welcome || k == .params || k == .result }

    // MARK: decode

    /// The header fields alone (so a shell can answer a wrong-version Hello with a Refuse).
    public static func header<F: WireFrameBytes>(_ frame: F) throws -> (version: UInt16, kind: UInt8, jobID: UInt64, step: UInt64) {
        try frame.withWireBytes { raw in
            var r = ByteReader(raw)
            let m = try r.u32("header magic")
            guard m == magic else { throw WireError.badMagic(m) }
            let version = try r.u16("header version")
            let kind = try r.u8("header kind")
            let reserved = try r.u8("header reserved byte")
            let job = try r.u64("header job id")
            let step = try r.u64("header step")
            try r.expectEnd("header")
            guard reserved == 0 else { throw WireError.reservedBitsSet(reserved) }
            return (version, kind, job, step)
        }
    }

    /// Decodes a multipart message (without any ROUTER identity frame).
    public static func decode<F: WireFrameBytes>(_ frames: [F], limits: WireLimits = .init()) throws -> Envelope {
        guard frames.count >= 2 else { throw WireError.wrongFrameCount(expected: 2, found: frames.count) }
        let h = try header(frames[0])
        guard h.version == wireProtocolVersion else { throw WireError.unsupportedVersion(h.version) }
        guard let kind = MessageKind(rawValue: h.kind) else { throw WireError.unknownKind(h.kind) }

        var (message, table) = try frames[1].withWireBytes { raw -> (Message, [(String, [Int])]) in
            var r = ByteReader(raw)
            var message: Message
            switch kind {
            case .hello:
                let name = try r.string("worker name", limit: limits.maxNameBytes)
                let backbone = try r.string("backbone fingerprint", limit: limits.maxStringBytes)
                let version = try r.u16("hello protocol version")
                let computeID = try r.u64("compute id")
                message = .hello(Hello(workerName: name, backbone: backbone, computeID: computeID, protocolVersion: version))
            case .welcome:
                message = .welcome(Welcome(configJSON: try r.string("config JSON", limit: limits.maxStringBytes), params: TensorSet()))
            case .refuse:
                message = .refuse(reason: try r.string("refusal reason", limit: limits.maxStringBytes))
            case .heartbeat: message = .heartbeat
            case .stop: message = .stop
            case .params: message = .params(TensorSet())
            case .work:
                let epoch = try r.u64("epoch")
                let mb = try r.u32("micro-batch index")
                let dropout = try r.bool("dropout flag")
                let n = try r.count("sample count", limit: limits.maxSamples, minBytesEach: 8)
                var samples = [Int64]()
                samples.reserveCapacity(n)
                for _ in 0..<n { samples.append(try r.i64("sample index")) }
                message = .work(Work(epoch: epoch, microBatch: mb, samples: samples, dropout: dropout))
            case .result:
                let mb = try r.u32("micro-batch index")
                let loss = try r.f64("loss sum")
                let labels = try r.i64("label count")
                let seconds = try r.f64("compute seconds")
                message = .result(WorkResult(microBatch: mb, gradients: MicroBatchGradients(lossSum: loss, labelCount: labels, grads: TensorSet()),
                                             computeSeconds: seconds))
            case .evalWork:
                let unit = try r.u32("evaluation unit")
                let dataset = try r.string("dataset path", limit: limits.maxReasonBytes)
                let maxNew = try r.u32("max new tokens")
                let eos = try r.i32("eos token")
                let n = try r.count("sample count", limit: limits.maxSamples, minBytesEach: 8)
                var samples = [Int64]()
                samples.reserveCapacity(n)
                for _ in 0..<n { samples.append(try r.i64("sample index")) }
                message = .evalWork(EvalWork(unit: unit, dataset: dataset, samples: samples, maxNewTokens: maxNew, eos: eos))
            case .evalResult:
                let unit = try r.u32("evaluation unit")
                let loss = try r.f64("loss sum")
                let labels = try r.i64("label count")
                let seconds = try r.f64("compute seconds")
                let n = try r.count("prediction count", limit: limits.maxSamples, minBytesEach: 4)
                var predictions = [Int32]()
                predictions.reserveCapacity(n)
                for _ in 0..<n { predictions.append(try r.i32("prediction")) }
                let rows = try r.count("caption count", limit: limits.maxSamples, minBytesEach: 4)
                var generated: [[Int32]] = []
                for _ in 0..<rows {
                    let len = try r.count("caption length", limit: limits.maxGeneratedTokens, minBytesEach: 4)
                    var ids = [Int32]()
                    ids.reserveCapacity(len)
                    for _ in 0..<len { ids.append(try r.i32("caption token")) }
                    generated.append(ids)
                }
                message = .evalResult(EvalResult(unit: unit, lossSum: loss, labelCount: labels, predictions: predictions,
                                                  generated: generated, computeSeconds: seconds))
            case .failed:
                let mb = try r.u32("micro-batch index")
                message = .failed(Failed(microBatch: mb, reason: try r.string("failure reason", limit: limits.maxReasonBytes)))
            case .bye:
                let n = try r.count("unfinished count", limit: limits.maxSamples, minBytesEach: 4)
                var ids = [UInt32]()
                ids.reserveCapacity(n)
                for _ in 0..<n { ids.append(try r.u32("unfinished micro-batch")) }
                message = .bye(unfinished: ids)
            }
            var table: [(String, [Int])] = []
            if hasTensors(kind) {
                let n = try r.count("tensor count", limit: limits.maxTensors, minBytesEach: 3)
                var seen = Set<String>()
                for _ in 0..<n {
                    let len = Int(try r.u16("tensor name length"))
                    guard len <= limits.maxNameBytes else {
                        throw WireError.tooLarge("tensor name length", value: UInt64(len), limit: UInt64(limits.maxNameBytes))
                    }
                    guard let name = String(validating: try r.take(len, "tensor name"), as: UTF8.self) else {
                        throw WireError.badUTF8("tensor name")
                    }
                    guard seen.insert(name).inserted else { throw WireError.badValue("duplicate tensor name \(name)") }
                    let rank = Int(try r.u8("tensor rank"))
                    guard rank <= limits.maxRank else {
                        throw WireError.tooLarge("rank of \(name)", value: UInt64(rank), limit: UInt64(limits.maxRank))
                    }
                    var shape: [Int] = []
                    var bytes: UInt64 = 4
                    for _ in 0..<rank {
                        let d = try r.u64("dimension of \(name)")
                        // Checked alone too: after a zero dimension the product cannot catch a huge one.
                        guard d <= limits.maxTensorBytes else {
                            throw WireError.tooLarge("dimension of \(name)", value: d, limit: limits.maxTensorBytes)
                        }
                        let (p, o) = bytes.multipliedReportingOverflow(by: d)
                        guard !o, p <= limits.maxTensorBytes else {
                            throw WireError.tooLarge("byte size of \(name)", value: o ? .max : p, limit: limits.maxTensorBytes)
                        }
                        bytes = p
                        shape.append(Int(d))
                    }
                    table.append((name, shape))
                }
            }
            try r.expectEnd("meta frame")
            return (message, table)
        }

        guard frames.count == 2 + table.count else {
            throw WireError.wrongFrameCount(expected: 2 + table.count, found: frames.count)
        }
        var tensors: [NamedTensor] = []
        tensors.reserveCapacity(table.count)
        for (i, (name, shape)) in table.enumerated() {
            let t = try frames[2 + i].withWireBytes { raw -> Tensor in
                let count = shape.reduce(1, *)
                guard raw.count == count * 4 else {
                    throw WireError.shapeMismatch(name: name, expectedBytes: UInt64(count * 4), foundBytes: raw.count)
                }
                let t = Tensor(zeros: shape)
                if count > 0 { UnsafeMutableRawPointer(t.data).copyMemory(from: raw.baseAddress!, byteCount: count * 4) }
                return t
            }
            tensors.append(NamedTensor(name, t))
        }
        let set = TensorSet(tensors)
        switch message {
        case .welcome(var w): w.params = set; message = .welcome(w)
        case .params: message = .params(set)
        case .result(var r): r.gradients.grads = set; message = .result(r)
        default: break
        }
        return Envelope(jobID: h.jobID, step: h.step, message, version: h.version)
    }
}
