/// What the trainer adds to each LLaMA layer's feed-forward block (DEHVF's visual memory). A layer is
/// h' = h + Attn(input_layernorm(h)); x = post_attention_layernorm(h'); out = h' + MLP(x) + injection(x).
public protocol FFNInjection: AnyObject {
    /// Forward for LLM layer `layer`: x = post_attention_layernorm(h') for all B*T rows ([B*T, d]); add
    /// the injection's output into `out`, which already holds h' + MLP(x).
    func forward(layer: Int, x: UnsafePointer<Float>, out: UnsafeMutablePointer<Float>)
    /// Backward for `layer`: dOut is the gradient w.r.t. the layer output; ADD the injection's gradient
    /// w.r.t. x into dX (the injection records its own parameter gradients itself).
    func backward(layer: Int, x: UnsafePointer<Float>, dOut: UnsafePointer<Float>, dX: UnsafeMutablePointer<Float>)
}
