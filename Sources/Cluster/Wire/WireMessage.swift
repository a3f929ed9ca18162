import Foundation
import Model

/// The wire protocol version this build speaks. Bump on any incompatible change.
/// 2: Hello carries the compute id instead of the thread count; Failed.
/// 3: evaluation units (EvalWork, EvalResult).
public let wireProtocolVersion: UInt16 = 3

/// Message kinds; the raw value is the byte on the wire.
public enum MessageKind: UInt8, Sendable, CaseIterable {
    case hello = 1, welcome, refuse, heartbeat, work, params, result, bye, stop, failed, evalWork, evalResult
}

/// Coordinator → worker: score (or caption) one unit of held-out rows with the envelope's parameters,
/// dropout off. Evaluation runs between training steps; its envelopes carry ``evaluationStep(_:)`` as
/// their step, so nothing of a training step is taken for an evaluation's, or the reverse.
public struct EvalWork: Sendable, Equatable {
    public var unit: UInt32
    /// The dataset file, as the job's `data.eval` or `coordinator eval --data` names it.
    public var dataset: String
    public var samples: [Int64]
    /// 0: score (multiple-choice predictions and the token loss); otherwise caption greedily, at most
    /// this many new tokens per row.
    public var maxNewTokens: UInt32
    /// The token that ends a caption, or -1.
    public var eos: Int32
    public init(unit: UInt32, dataset: String, samples: [Int64], maxNewTokens: UInt32 = 0, eos: Int32 = -1) {
        self.unit = unit
        self.dataset = dataset
        self.samples = samples
        self.maxNewTokens = maxNewTokens
        self.eos = eos
    }
}

/// Worker → coordinator: one evaluation unit's figures: summed token loss and label count (combined
/// exactly, like gradients), each row's predicted choice (-1 where there is none), each row's caption.
public struct EvalResult: Sendable, Equatable {
    public var unit: UInt32
    public var lossSum: Double
    public var labelCount: Int64
    public var predictions: [Int32]
    public var generated: [[Int32]]
    public var computeSeconds: Double
    public init(unit: UInt32, lossSum: Double, labelCount: Int64, predictions: [Int32], generated: [[Int32]] = [],
                computeSeconds: Double = 0) {
        self.unit = unit
        self.lossSum = lossSum
        self.labelCount = labelCount
        self.predictions = predictions
        self.generated = generated
        self.computeSeconds = computeSeconds
    }

    public static func == (a: EvalResult, b: EvalResult) -> Bool {
        a.unit == b.unit && a.lossSum.bitPattern == b.lossSum.bitPattern && a.labelCount == b.labelCount
            && a.predictions == b.predictions && a.generated == b.generated
            && a.computeSeconds.bitPattern == b.computeSeconds.bitPattern
    }
}

/// The envelope step of the evaluation that runs when `step` steps are done: the step with its top bit
/// set, a fencing token no training step carries.
public func evaluationStep(_ step: UInt64) -> UInt64 { step | (1 << 63) }

/// The steps done before the evaluation whose envelope step is `envelopeStep`; nil for a training step.
public func evaluatedStep(_ envelopeStep: UInt64) -> UInt64? {
    envelopeStep & (1 << 63) != 0 ? envelopeStep & ~(1 << 63) : nil
}

/// Worker → coordinator: asks to join. A Hello with an empty backbone is a probe: a worker started
/// without a job file asks what to load.
public struct Hello: Sendable, Equatable {
    public var workerName: String
    /// Fingerprint of the frozen backbone the worker holds (its weights and the config.json fields that
    /// change the math); empty for a probe.
    public var backbone: String
    /// ``JobConfig/computeID`` of the job config the worker parsed (0 for a probe): what it computes must be
    /// what the coordinator's job computes.
    public var computeID: UInt64
    public var protocolVersion: UInt16
    public init(workerName: String, backbone: String, computeID: UInt64, protocolVersion: UInt16 = wireProtocolVersion) {
        self.workerName = workerName
        self.backbone = backbone
        self.computeID = computeID
        self.protocolVersion = protocolVersion
    }

    public var isProbe: Bool { backbone.isEmpty }
}

/// Worker → coordinator: the micro-batch of the envelope's step could not be computed here; why.
public struct Failed: Sendable, Equatable {
    public var microBatch: UInt32
    public var reason: String
    public init(microBatch: UInt32, reason: String) {
        self.microBatch = microBatch
        self.reason = reason
    }
}

/// Coordinator → worker: admitted; here is the job (canonical config JSON) and the current parameters.
public struct Welcome: Sendable, Equatable {
    public var configJSON: String
    public var params: TensorSet
    public init(configJSON: String, params: TensorSet) {
        self.configJSON = configJSON
        self.params = params
    }
}

/// Coordinator → worker: compute the gradient of one micro-batch at the envelope's step.
public struct Work: Sendable, Equatable {
    public var epoch: UInt64
    public var microBatch: UInt32
    /// Dataset row indices of the micro-batch's samples, in order.
    public var samples: [Int64]
    /// Whether dropout is on (training) or off (evaluation).
    public var dropout: Bool
    public init(epoch: UInt64, microBatch: UInt32, samples: [Int64], dropout: Bool) {
        self.epoch = epoch
        self.microBatch = microBatch
        self.samples = samples
        self.dropout = dropout
    }
}

/// Worker → coordinator: one micro-batch's gradient record.
public struct WorkResult: Sendable, Equatable {
    public var microBatch: UInt32
    public var gradients: MicroBatchGradients
    /// Wall time the worker spent computing it (for the coordinator's communication/compute split).
    public var computeSeconds: Double
    public init(microBatch: UInt32, gradients: MicroBatchGradients, computeSeconds: Double = 0) {
        self.microBatch = microBatch
        self.gradients = gradients
        self.computeSeconds = computeSeconds
    }

    public static func == (a: WorkResult, b: WorkResult) -> Bool {
        a.microBatch == b.microBatch && a.gradients == b.gradients
            && a.computeSeconds.bitPattern == b.computeSeconds.bitPattern
    }
}

/// The body of a message.
public enum Message: Sendable, Equatable {
    case hello(Hello)
    case welcome(Welcome)
    /// Coordinator → worker: not admitted (wrong backbone, wrong protocol version, …).
    case refuse(reason: String)
    /// Both ways: still alive.
    case heartbeat
    case work(Work)
    /// Coordinator → worker: the parameters after the optimizer step that produced envelope.step.
    case params(TensorSet)
    case result(WorkResult)
    case failed(Failed)
    case evalWork(EvalWork)
    case evalResult(EvalResult)
    /// Worker → coordinator: leaving; the micro-batches it had not finished.
    case bye(unfinished: [UInt32])
    /// Coordinator → worker: the job is over; exit.
    case stop

    public var kind: MessageKind {
        switch self {
        case .hello: .hello
        case .welcome: .welcome
        case .refuse: .refuse
        case .heartbeat: .heartbeat
        case .work: .work
        case .params: .params
        case .result: .result
        case .failed: .failed
        case .evalWork: .evalWork
        case .evalResult: .evalResult
        case .bye: .bye
        case .stop: .stop
        }
    }

    /// The tensors that travel as raw frames after the meta frame, in order.
    public var tensors: TensorSet {
        switch self {
        case .welcome(let w): w.params
        case .params(let p): p
        case .result(let r): r.gradients.grads
        default: TensorSet()
        }
    }
}

/// A message with its header fields. `step` is the fencing token: replies for an older step or another
/// job are dropped.
public struct Envelope: Sendable, Equatable {
    public var jobID: UInt64
    public var step: UInt64
    public var message: Message
    public var version: UInt16

    public init(jobID: UInt64, step: UInt64, _ message: Message, version: UInt16 = wireProtocolVersion) {
        self.jobID = jobID
        self.step = step
        self.message = message
        self.version = version
    }
}
