extension JobConfig {
    /// Every missing path, cross-field and range problem in this config (empty when valid).
    public func problems() -> [ConfigError.Problem] {
        var p: [ConfigError.Problem] = []
        func bad(_ key: String, _ message: String) { p.append(.init(.invalidValue, key: key, message)) }
        func positive(_ key: String, _ v: Int) { if v <= 0 { bad(key, "must be a positive integer, found \(v)") } }
        func required(_ key: String, _ path: ConfigPath, _ what: String) {
            if path.isEmpty { p.append(.init(.missingKey, key: key, "required: \(what)")) }
        }

        required("model.vision", model.vision, "the CLIPVisionModel or CLIPModel directory")
        required("model.language", model.language, "the LlamaForCausalLM directory")
        required("data.train", data.train, "the training dataset (HDF5)")
        if let layers = model.visionLayers {
            if layers.isEmpty { bad("model.vision_layers", "must list at least one layer (or be left out for the default)") }
            if layers.contains(where: { $0 < 0 }) { bad("model.vision_layers", "layer indices must be >= 0, found \(layers)") }
        }
        positive("model.projector_rank", model.projectorRank)
        if model.visualTokens < 0 { bad("model.visual_tokens", "must be 0 (every patch) or a positive count, found \(model.visualTokens)") }
        if !(model.dropout >= 0 && model.dropout < 1) { bad("model.dropout", "must satisfy 0 <= dropout < 1, found \(model.dropout)") }

        positive("data.global_batch", data.globalBatch)
        positive("data.micro_batch", data.microBatch)
        if data.globalBatch > 0, data.microBatch > 0, data.globalBatch % data.microBatch != 0 {
            bad("data.global_batch", "must be a multiple of data.micro_batch (\(data.microBatch)), found \(data.globalBatch)")
        }
        if data.seed < 0 { bad("data.seed", "must be >= 0, found \(data.seed)") }
        if data.featureMemoryMB < 0 {
            bad("data.feature_memory_mb", "must be >= 0 (MiB of ViT features a worker keeps in memory; 0 keeps none), "
                + "found \(data.featureMemoryMB)")
        }

        if !(optim.lr > 0) { bad("optim.lr", "must be > 0, found \(optim.lr)") }
        if optim.betas.count != 2 {
            bad("optim.betas", "must be two numbers [beta1, beta2], found \(optim.betas.count)")
        } else if !optim.betas.allSatisfy({ $0 >= 0 && $0 < 1 }) {
            bad("optim.betas", "each beta must be in [0, 1), found \(optim.betas)")
        }
        if !(optim.eps > 0) { bad("optim.eps", "must be > 0, found \(optim.eps)") }
        if !(optim.weightDecay >= 0) { bad("optim.weight_decay", "must be >= 0, found \(optim.weightDecay)") }
        if let m = optim.maxGradNorm, !(m >= 0) {
            bad("optim.max_grad_norm", "must be > 0 (the largest global L2 norm of a step's gradient), or 0 or absent for no "
                + "clipping, found \(m)")
        }
        if optim.warmupSteps < 0 { bad("optim.warmup_steps", "must be >= 0, found \(optim.warmupSteps)") }
        switch (optim.steps, optim.epochs) {
        case (nil, nil): break
        case (.some, .some): bad("optim.steps", "give either optim.steps or optim.epochs, not both")
        case (let s?, nil): positive("optim.steps", s)
        case (nil, let e?): positive("optim.epochs", e)
        }

        if eval.every < 0 { bad("eval.every", "must be 0 (only when training ends) or a positive step count, found \(eval.every)") }
        if eval.every > 0, data.eval == nil { bad("eval.every", "scores data.eval, which is not set: set data.eval to a held-out dataset") }
        if checkpoint.keepBest != .none, data.eval == nil {
            bad("checkpoint.keep_best", "ranks checkpoints by their score on data.eval, which is not set: set data.eval, or keep_best: none")
        }

        positive("compute.threads", compute.threads)
        positive("checkpoint.every", checkpoint.every)
        positive("checkpoint.keep", checkpoint.keep)

        if cluster.workers < 0 || (cluster.workers == 0 && cluster.launcher != .manual) {
            bad("cluster.workers", "must be a positive integer, found \(cluster.workers)")
        }
        if Self.parseTCP(cluster.bind) == nil {
            bad("cluster.bind", "must be tcp://host:port with a port in 1...65535, found `\(cluster.bind)`")
        }
        if cluster.launcher != .inprocess, !security.curve, !security.insecure, let (host, _) = Self.parseTCP(cluster.bind),
           !Self.isLoopback(host) {
            bad("cluster.bind", "\(cluster.bind) accepts connections from other hosts, and without security.curve anyone who "
                + "reaches the port could join and send gradients: turn on security.curve (coordinator keys --out DIR), "
                + "or set security.insecure: true on a network you trust")
        }
        positive("cluster.work_timeout_ms", cluster.workTimeoutMs)
        positive("cluster.heartbeat_ms", cluster.heartbeatMs)
        positive("cluster.timeout_ms", cluster.timeoutMs)
        if cluster.heartbeatMs > 0, cluster.timeoutMs > 0, cluster.timeoutMs <= cluster.heartbeatMs {
            bad("cluster.timeout_ms", "must exceed cluster.heartbeat_ms (\(cluster.heartbeatMs)), found \(cluster.timeoutMs)")
        }
        return p
    }

    /// Throws a ``ConfigError`` if ``problems()`` is not empty.
    public func validate(source: String = "config") throws {
        let p = problems()
        if !p.isEmpty { throw ConfigError(source: source, problems: p) }
    }

    /// Whether a bind host only accepts this machine's own connections.
    public static func isLoopback(_ host: String) -> Bool {
        host == "localhost" || host.hasPrefix("127.") || host == "[::1]" || host == "::1"
    }

    /// `tcp://host:port` → (host, port), or nil. The host may be a name, IPv4, `*` or `[IPv6]`.
    public static func parseTCP(_ endpoint: String) -> (host: String, port: Int)? {
        guard endpoint.hasPrefix("tcp://") else { return nil }
        let rest = endpoint.dropFirst(6)
        guard let colon = rest.lastIndex(of: ":") else { return nil }
        let host = String(rest[..<colon])
        guard let port = Int(rest[rest.index(after: colon)...]), (1...65535).contains(port) else { return nil }
        guard !host.isEmpty, !host.contains(where: { $0 == "/" || $0.isWhitespace }) else { return nil }
        return (host, port)
    }
}
