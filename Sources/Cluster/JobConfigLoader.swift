import Foundation
import Yams

/// One `--set dotted.key=value` override. The value is parsed as a YAML scalar or flow collection,
/// so `optim.lr=3e-4`, `model.vision_layers=[0,2]` and `cluster.launcher=inprocess` all work.
public struct ConfigOverride: Sendable, Equatable {
    public var path: [String]
    public var value: String

    /// Parses `dotted.key=value`.
    public init(parsing text: String) throws {
        guard let eq = text.firstIndex(of: "=") else {
            throw ConfigError(source: "--set", .badOverride, "`\(text)` is not of the form dotted.key=value (e.g. optim.lr=3e-4)")
        }
        let key = String(text[..<eq]).trimmingCharacters(in: .whitespaces)
        let parts = key.split(separator: ".", omittingEmptySubsequences: false).map(String.init)
        guard !key.isEmpty, parts.allSatisfy({ !$0.isEmpty }) else {
            throw ConfigError(source: "--set", .badOverride, "`\(text)`: the key must be dotted like optim.lr")
        }
        self.path = parts
        self.value = String(text[text.index(after: eq)...])
    }

    public var key: String { path.joined(separator: ".") }
}

extension JobConfig {
    /// Keys whose values are filesystem paths (resolved against the YAML file's directory).
    static let pathKeys: Set<String> = [
        "model.vision", "model.language", "data.train", "data.eval", "data.feature_cache",
        "checkpoint.dir", "security.secret_key", "security.allowed_workers",
    ]

    /// Loads a job config from a YAML file, applies `--set` overrides, resolves relative paths
    /// against the file's directory (override paths against the current directory), and validates.
    ///
    /// - Throws: ``ConfigError`` listing every unknown key, wrong type, missing path and invalid value.
    public static func load(file: String, overrides: [ConfigOverride] = []) throws -> JobConfig {
        let text: String
        do {
            text = try String(contentsOfFile: file, encoding: .utf8)
        } catch {
            throw ConfigError(source: file, .unreadableFile, "cannot read the file (\(error.localizedDescription)); check the --config path")
        }
        let dir = URL(fileURLWithPath: file).deletingLastPathComponent().path
        return try parse(yaml: text, source: file, baseDirectory: dir, overrides: overrides)
    }

    /// Parses YAML text; relative paths in it resolve against `baseDirectory`.
    public static func parse(yaml text: String, source: String = "<yaml>", baseDirectory: String,
                             overrides: [ConfigOverride] = []) throws -> JobConfig {
        var root: Node
        do {
            root = try Yams.compose(yaml: text) ?? Node.mapping(.init([]))
        } catch {
            throw ConfigError(source: source, .badYAML, "not valid YAML: \(error)")
        }
        var overridden: Set<String> = []
        for o in overrides {
            let valueNode: Node
            do {
                valueNode = try Yams.compose(yaml: o.value) ?? Node.scalar(.init(""))
            } catch {
                throw ConfigError(source: "--set", .badOverride, key: o.key, "value `\(o.value)` is not a YAML scalar or flow list: \(error)")
            }
            do {
                root = try setting(valueNode, at: o.path[...], in: root)
            } catch let e as ConfigError {
                throw ConfigError(source: "--set", problems: e.problems.map { .init($0.code, key: o.key, $0.message) })
            }
            overridden.insert(o.key)
        }
        var problems: [ConfigError.Problem] = []
        var config = decode(root, &problems)
        if problems.isEmpty, let c = config {
            config = c.resolvingPaths(base: baseDirectory,
                                      cwd: FileManager.default.currentDirectoryPath, overridden: overridden)
            problems += config!.problems()
        }
        guard problems.isEmpty, let config else { throw ConfigError(source: source, problems: problems) }
        return config
    }

    /// Replaces (or creates) the value at `path` inside a YAML mapping tree.
    static func setting(_ value: Node, at path: ArraySlice<String>, in node: Node) throws -> Node {
        guard let head = path.first else { return value }
        var pairs: [(Node, Node)] = []
        if case .mapping(let m) = node {
            pairs = m.map { ($0.key, $0.value) }
        } else if !ConfigReader.isNull(node) {
            throw ConfigError(source: "--set", .badOverride, "cannot set a key inside a value that is not a mapping")
        }
        if let i = pairs.lastIndex(where: { $0.0.scalar?.string == head }) {
            pairs[i].1 = try setting(value, at: path.dropFirst(), in: pairs[i].1)
        } else {
            pairs.append((Node.scalar(.init(head)), try setting(value, at: path.dropFirst(), in: Node.scalar(.init("")))))
        }
        return .mapping(.init(pairs))
    }

    /// Reads the whole tree; nil when a required path is missing.
    static func decode(_ root: Node, _ p: inout [ConfigError.Problem]) -> JobConfig? {
        var top = ConfigReader(mapping: root, path: "", problems: &p)
        let sections = CodingKeys.allCases.map(\.rawValue)

        var m = ConfigReader(mapping: top.node("model"), path: "model", problems: &p)
        let vision = m.string("vision", nil, &p)
        let language = m.string("language", nil, &p)
        if vision == nil { p.append(.init(.missingKey, key: "model.vision", "required: the CLIPVisionModel or CLIPModel directory")) }
        if language == nil { p.append(.init(.missingKey, key: "model.language", "required: the LlamaForCausalLM directory")) }
        var model = Model(vision: vision ?? "", language: language ?? "")
        model.fusion = m.string("fusion", model.fusion, &p)!
        model.visionLayers = m.intList("vision_layers", &p)
        model.projectorRank = m.int("projector_rank", model.projectorRank, &p)
        model.visualTokens = m.int("visual_tokens", model.visualTokens, &p)
        model.featureScale = m.double("feature_scale", model.featureScale, &p)
        model.injectionScale = m.double("injection_scale", model.injectionScale, &p)
        model.dropout = m.double("dropout", model.dropout, &p)
        m.reportUnknown(known: Model.CodingKeys.allCases.map(\.rawValue), &p)

        var d = ConfigReader(mapping: top.node("data"), path: "data", problems: &p)
        let train = d.string("train", nil, &p)
        if train == nil { p.append(.init(.missingKey, key: "data.train", "required: the training dataset (HDF5)")) }
        var data = Data(train: train ?? "")
        data.eval = d.string("eval", nil, &p)
        data.globalBatch = d.int("global_batch", data.globalBatch, &p)
        data.microBatch = d.int("micro_batch", data.microBatch, &p)
        data.seed = d.int("seed", data.seed, &p)
        data.featureCache = d.string("feature_cache", nil, &p)
        d.reportUnknown(known: Data.CodingKeys.allCases.map(\.rawValue), &p)

        var o = ConfigReader(mapping: top.node("optim"), path: "optim", problems: &p)
        var optim = Optim()
        optim.lr = o.double("lr", optim.lr, &p)
        optim.betas = o.doubleList("betas", &p) ?? optim.betas
        optim.eps = o.double("eps", optim.eps, &p)
        optim.weightDecay = o.double("weight_decay", optim.weightDecay, &p)
        optim.warmupSteps = o.int("warmup_steps", optim.warmupSteps, &p)
        let steps = o.optionalInt("steps", &p)
        let epochs = o.optionalInt("epochs", &p)
        if steps != nil && epochs != nil {
            p.append(.init(.invalidValue, key: "optim.steps", "give either optim.steps or optim.epochs, not both"))
        }
        optim.steps = epochs == nil ? (steps ?? 300) : nil
        optim.epochs = epochs
        o.reportUnknown(known: Optim.CodingKeys.allCases.map(\.rawValue), &p)

        var c = ConfigReader(mapping: top.node("compute"), path: "compute", problems: &p)
        var compute = Compute()
        compute.threads = c.int("threads", compute.threads, &p)
        c.reportUnknown(known: Compute.CodingKeys.allCases.map(\.rawValue), &p)

        var k = ConfigReader(mapping: top.node("checkpoint"), path: "checkpoint", problems: &p)
        var checkpoint = Checkpoint()
        checkpoint.dir = k.string("dir", checkpoint.dir, &p)!
        checkpoint.every = k.int("every", checkpoint.every, &p)
        checkpoint.keep = k.int("keep", checkpoint.keep, &p)
        k.reportUnknown(known: Checkpoint.CodingKeys.allCases.map(\.rawValue), &p)

        var u = ConfigReader(mapping: top.node("cluster"), path: "cluster", problems: &p)
        var cluster = Cluster()
        cluster.launcher = u.string("launcher", cluster.launcher, &p)!
        cluster.workers = u.int("workers", cluster.workers, &p)
        cluster.bind = u.string("bind", cluster.bind, &p)!
        cluster.heartbeatMs = u.int("heartbeat_ms", cluster.heartbeatMs, &p)
        cluster.timeoutMs = u.int("timeout_ms", cluster.timeoutMs, &p)
        u.reportUnknown(known: Cluster.CodingKeys.allCases.map(\.rawValue), &p)

        var s = ConfigReader(mapping: top.node("security"), path: "security", problems: &p)
        var security = Security()
        security.curve = s.bool("curve", security.curve, &p)
        security.secretKey = s.string("secret_key", security.secretKey, &p)!
        security.allowedWorkers = s.string("allowed_workers", security.allowedWorkers, &p)!
        s.reportUnknown(known: Security.CodingKeys.allCases.map(\.rawValue), &p)

        top.reportUnknown(known: sections, &p)
        guard vision != nil, language != nil, train != nil else { return nil }
        return JobConfig(model: model, data: data, optim: optim, compute: compute,
                         checkpoint: checkpoint, cluster: cluster, security: security)
    }

    func resolvingPaths(base: String, cwd: String, overridden: Set<String>) -> JobConfig {
        func abs(_ path: String, _ key: String) -> String {
            if path.hasPrefix("/") { return URL(fileURLWithPath: path).standardizedFileURL.path }
            let from = overridden.contains(key) ? cwd : base
            return URL(fileURLWithPath: from).appendingPathComponent(path).standardizedFileURL.path
        }
        var c = self
        c.model.vision = abs(c.model.vision, "model.vision")
        c.model.language = abs(c.model.language, "model.language")
        c.data.train = abs(c.data.train, "data.train")
        c.data.eval = c.data.eval.map { abs($0, "data.eval") }
        c.data.featureCache = c.data.featureCache.map { abs($0, "data.feature_cache") }
        c.checkpoint.dir = abs(c.checkpoint.dir, "checkpoint.dir")
        c.security.secretKey = abs(c.security.secretKey, "security.secret_key")
        c.security.allowedWorkers = abs(c.security.allowedWorkers, "security.allowed_workers")
        return c
    }
}
