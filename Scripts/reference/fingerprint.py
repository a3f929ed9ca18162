"""The backbone fingerprint exactly as the Swift code computes it (Sources/Model/Safetensors/BackboneFingerprint.swift):
per directory, `name:size:sha256` of each safetensors file in name order joined by `,`, then `|config:` and the
first 16 hex digits of the SHA-256 of the config.json fields that change the math (`key=value` sorted by key;
floats as the hex bits of their float32 value, except the RoPE scaling parameters, which transformers reads as
Python floats: the hex bits of their float64 value); for a pair, `vision=<that>;language=<that>`.

    python3 Scripts/reference/fingerprint.py VISION_DIR LANGUAGE_DIR        # prints the pair's fingerprint
"""
import hashlib
import json
import os
import struct
import sys


def f32bits(x):
    return "0x%x" % struct.unpack("<I", struct.pack("<f", float(x)))[0]


def f64bits(x):
    return "0x%x" % struct.unpack("<Q", struct.pack("<d", float(x)))[0]


def first(*values):
    return next(v for v in values if v is not None)


def files(directory):
    index = os.path.join(directory, "model.safetensors.index.json")
    if os.path.exists(index):
        names = sorted(set(json.load(open(index))["weight_map"].values()))
    else:
        names = ["model.safetensors"]
    parts = []
    for name in names:
        data = open(os.path.join(directory, name), "rb").read()
        parts.append(f"{name}:{len(data)}:{hashlib.sha256(data).hexdigest()}")
    return ",".join(parts)


def vision_fields(cfg):
    if cfg.get("model_type") == "clip" or "vision_config" in cfg:
        cfg = cfg["vision_config"]
    d = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12, num_channels=3,
             image_size=224, patch_size=32, layer_norm_eps=1e-5, hidden_act="quick_gelu")
    d.update({k: cfg[k] for k in d if k in cfg})
    d["layer_norm_eps"] = f32bits(d["layer_norm_eps"])
    return d


def language_fields(cfg):
    heads = cfg.get("num_attention_heads", 32)
    hidden = cfg.get("hidden_size", 4096)
    # RoPE as LlamaConfig (Sources/Model/Llama/LlamaConfig.swift) and transformers read it: a non-empty
    # rope_scaling replaces rope_parameters; rope_type before the legacy type; the object's rope_theta before
    # the top-level one; for llama3 a top-level original_max_position_embeddings before the object's.
    rope = cfg.get("rope_scaling") or cfg.get("rope_parameters") or {}
    theta = first(rope.get("rope_theta"), cfg.get("rope_theta"), 10000)
    rope_type = first(rope.get("rope_type"), rope.get("type"), "default")
    max_positions = first(cfg.get("max_position_embeddings"), 2048)
    d = dict(hidden_size=hidden, intermediate_size=cfg.get("intermediate_size", 11008),
             num_hidden_layers=cfg.get("num_hidden_layers", 32), num_attention_heads=heads,
             num_key_value_heads=cfg.get("num_key_value_heads") or heads,
             head_dim=cfg.get("head_dim") or hidden // heads, vocab_size=cfg.get("vocab_size", 32000),
             rms_norm_eps=f32bits(cfg.get("rms_norm_eps", 1e-6)), rope_theta=f32bits(theta),
             tie_word_embeddings=str(bool(cfg.get("tie_word_embeddings", False))).lower(),
             hidden_act=cfg.get("hidden_act", "silu"),
             attention_bias=str(bool(cfg.get("attention_bias", False))).lower(),
             mlp_bias=str(bool(cfg.get("mlp_bias", False))).lower(),
             max_position_embeddings=max_positions, rope_type=rope_type)
    if rope_type in ("linear", "dynamic", "llama3"):
        d["rope_factor"] = f64bits(rope["factor"])
    if rope_type == "llama3":
        d["rope_low_freq_factor"] = f64bits(rope["low_freq_factor"])
        d["rope_high_freq_factor"] = f64bits(rope["high_freq_factor"])
        d["rope_original_max_position_embeddings"] = first(cfg.get("original_max_position_embeddings"),
                                                           rope.get("original_max_position_embeddings"), max_positions)
    return d


def digest(fields):
    line = ";".join(f"{k}={fields[k]}" for k in sorted(fields))
    return hashlib.sha256(line.encode()).hexdigest()[:16]


def directory_fingerprint(directory, kind):
    cfg = json.load(open(os.path.join(directory, "config.json")))
    fields = vision_fields(cfg) if kind == "vision" else language_fields(cfg)
    return f"{files(directory)}|config:{digest(fields)}"


def pair(vision, language):
    return f"vision={directory_fingerprint(vision, 'vision')};language={directory_fingerprint(language, 'language')}"


if __name__ == "__main__":
    print(pair(sys.argv[1], sys.argv[2]))
