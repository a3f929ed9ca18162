import Foundation

/// How a LLaMA's rotary frequencies are scaled: transformers' `rope_type` with its parameters, read from
/// `rope_scaling` (older configs) or `rope_parameters` (transformers 5), under the `rope_type` key or the
/// legacy `type` key. The frequencies themselves are `Rotary.inverseFrequencies`.
///
/// Parameters are kept in double because transformers reads them as Python floats, and some of its
/// arithmetic with them is in double before anything is rounded to float32.
///
/// Every type here has attention scaling 1.0 in transformers (`attention_factor = 1.0` in each of
/// `_compute_linear_scaling_rope_parameters`, `_compute_dynamic_ntk_parameters`,
/// `_compute_llama3_parameters`; an `attention_factor` key in the config is ignored for them), so cos and
/// sin are used as they are.
public enum RopeScaling: Sendable, Equatable {
    /// `default`: inv_freq_i = 1 / theta^(2i / head_dim).
    case none
    /// `linear` (position interpolation): the default frequencies divided by `factor`.
    case linear(factor: Double)
    /// `dynamic` (dynamic NTK): for a forward call whose largest position + 1 (`seq_len`) exceeds
    /// `max_position_embeddings`, theta is raised to
    /// theta * (factor * seq_len / max_position_embeddings - (factor - 1))^(head_dim / (head_dim - 2));
    /// shorter calls use the default frequencies. The only type that allows positions past
    /// `max_position_embeddings`.
    case dynamic(factor: Double)
    /// `llama3` (Llama 3.1): wavelengths longer than original_max_position_embeddings / low_freq_factor are
    /// divided by `factor`, those shorter than original_max_position_embeddings / high_freq_factor kept, and
    /// those between interpolated smoothly.
    case llama3(factor: Double, lowFreqFactor: Double, highFreqFactor: Double, originalMaxPositionEmbeddings: Int)

    /// The types this package computes, as config.json names them.
    public static let supportedTypes = ["default", "linear", "dynamic", "llama3"]

    /// The config.json name of the type.
    public var typeName: String {
        switch self {
        case .none: "default"
        case .linear: "linear"
        case .dynamic: "dynamic"
        case .llama3: "llama3"
        }
    }

    /// Whether positions at or past `max_position_embeddings` are meaningful for this type: only dynamic
    /// NTK adapts its frequencies to a longer call; the others were trained (or interpolated) for the
    /// context `max_position_embeddings` states.
    public var allowsPositionsPastMaxPositionEmbeddings: Bool {
        if case .dynamic = self { return true }
        return false
    }
}

/// A `rope_scaling` / `rope_parameters` object of config.json as transformers reads it. Only the keys this
/// package uses are read; `keyCount` tells an empty object (which transformers treats as absent) from one
/// with keys we do not read.
struct RopeParametersObject: Decodable {
    var keyCount: Int
    var ropeType: String?
    var legacyType: String?
    var ropeTheta: Float?
    var factor: Double?
    var lowFreqFactor: Double?
    var highFreqFactor: Double?
    var originalMaxPositionEmbeddings: Int?
    var partialRotaryFactor: Double?

    struct Key: CodingKey {
        var stringValue: String
        var intValue: Int? { nil }
        init(stringValue: String) { self.stringValue = stringValue }
        init?(intValue: Int) { nil }
    }

    init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: Key.self)
        keyCount = c.allKeys.count
        ropeType = try c.decodeIfPresent(String.self, forKey: Key(stringValue: "rope_type"))
        legacyType = try c.decodeIfPresent(String.self, forKey: Key(stringValue: "type"))
        ropeTheta = try c.decodeIfPresent(Float.self, forKey: Key(stringValue: "rope_theta"))
        let type = ropeType ?? legacyType
        // Other types (yarn, longrope) give these keys other meanings or shapes; they are refused by name
        // later, so their values are not read here.
        guard type == nil || RopeScaling.supportedTypes.contains(type!) else { return }
        factor = try c.decodeIfPresent(Double.self, forKey: Key(stringValue: "factor"))
        lowFreqFactor = try c.decodeIfPresent(Double.self, forKey: Key(stringValue: "low_freq_factor"))
        highFreqFactor = try c.decodeIfPresent(Double.self, forKey: Key(stringValue: "high_freq_factor"))
        originalMaxPositionEmbeddings = try c.decodeIfPresent(Int.self, forKey: Key(stringValue: "original_max_position_embeddings"))
        partialRotaryFactor = try c.decodeIfPresent(Double.self, forKey: Key(stringValue: "partial_rotary_factor"))
    }

    /// The type as transformers' `standardize_rope_params` settles it: `rope_type`, else `type`, else default.
    var type: String { ropeType ?? legacyType ?? "default" }

    /// The scaling this object asks for, checked as transformers checks it (a missing required key is an
    /// error there too) plus the values that would make its formulas divide by zero or go negative.
    /// `topLevelOriginalMaxPositionEmbeddings`: transformers lets a top-level
    /// `original_max_position_embeddings` override the object's for llama3 (`standardize_rope_params`).
    func scaling(maxPositionEmbeddings: Int, headDim: Int, topLevelOriginalMaxPositionEmbeddings: Int?,
                 topLevelPartialRotaryFactor: Double?) throws -> RopeScaling {
        let type = self.type
        guard RopeScaling.supportedTypes.contains(type) else {
            throw ModelError(.unsupported,
                "rope type '\(type)' is not supported; supported rope types: \(RopeScaling.supportedTypes.joined(separator: ", "))")
        }
        if type == "default" { return .none }
        if let partial = partialRotaryFactor ?? topLevelPartialRotaryFactor, partial != 1 {
            throw ModelError(.unsupported,
                "partial_rotary_factor \(partial) with rope type '\(type)' is not supported (LLaMA rotates the whole head)")
        }
        func required(_ value: Double?, _ key: String) throws -> Double {
            guard let value else { throw ModelError(.badConfig, "rope type '\(type)' needs '\(key)' in rope_scaling/rope_parameters") }
            guard value.isFinite, value > 0 else {
                throw ModelError(.badConfig, "rope type '\(type)': '\(key)' must be a positive number, got \(value)")
            }
            return value
        }
        let factor = try required(self.factor, "factor")
        switch type {
        case "linear":
            return .linear(factor: factor)
        case "dynamic":
            guard headDim > 2 else {
                throw ModelError(.badConfig, "rope type 'dynamic' needs head_dim > 2 (its exponent is head_dim / (head_dim - 2)); head_dim is \(headDim)")
            }
            return .dynamic(factor: factor)
        default:
            let low = try required(lowFreqFactor, "low_freq_factor")
            let high = try required(highFreqFactor, "high_freq_factor")
            guard high > low else {
                throw ModelError(.badConfig,
                    "rope type 'llama3': high_freq_factor (\(high)) must be greater than low_freq_factor (\(low))")
            }
            let original = topLevelOriginalMaxPositionEmbeddings ?? originalMaxPositionEmbeddings ?? maxPositionEmbeddings
            guard original > 0 else {
                throw ModelError(.badConfig, "rope type 'llama3': original_max_position_embeddings must be positive, got \(original)")
            }
            return .llama3(factor: factor, lowFreqFactor: low, highFreqFactor: high, originalMaxPositionEmbeddings: original)
        }
    }
}
