extension CLIPVisionModel {
    /// Runs the tower on a batch of images and returns each image's candidate features [S, M, Dv]:
    /// F_j = pool(post_layernorm(hidden_states[j][1:])) for the config's candidate layers (DESIGN.md §4).
    public func candidates(pixels: Tensor, for config: FuserConfig) throws -> [Tensor] {
        let perLayer = try candidateFeatures(pixelValues: pixels, layers: config.visionLayers,
                                             visualTokens: config.visualTokens)   // S x [B, M, Dv]
        let b = pixels.shape[0], block = config.visualTokens * config.visionWidth
        return (0..<b).map { i in
            let out = Tensor(zeros: [config.candidates, config.visualTokens, config.visionWidth])
            for (j, f) in perLayer.enumerated() { (out.data + j * block).update(from: f.data + i * block, count: block) }
            return out
        }
    }
}
