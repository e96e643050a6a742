"""Independent reference forwards, written from the original papers' code (not from modelport): they take
tensors by their ORIGINAL names, as TensorFlow reads them, and compute in float64."""

from __future__ import annotations

import math

import numpy as np

erf = np.vectorize(math.erf)


def gelu_tanh(x):
    return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


def gelu_erf(x):
    return 0.5 * x * (1.0 + erf(x / math.sqrt(2.0)))


# Google's bert_config.json activation names, as its modeling.py reads them ("gelu_exact" is modelport's
# name for the erf form, which Google's code lacks).
ACTIVATIONS = {"gelu": gelu_tanh, "gelu_exact": gelu_erf, "relu": lambda x: np.maximum(x, 0), "tanh": np.tanh}


def layer_norm(x, gamma, beta, eps=1e-12):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * gamma + beta


def google_bert(tensors: dict[str, np.ndarray], config: dict, input_ids, token_type_ids) -> dict[str, np.ndarray]:
    """Google BERT's modeling.py + run_pretraining.py heads, on TF variable names."""
    t = {k: np.asarray(v, dtype=np.float64) for k, v in tensors.items()}
    act = ACTIVATIONS[config["hidden_act"]]
    eps = config.get("layer_norm_eps", 1e-12)
    heads = config["num_attention_heads"]
    batch, length = input_ids.shape
    x = (t["bert/embeddings/word_embeddings"][input_ids] + t["bert/embeddings/token_type_embeddings"][token_type_ids]
         + t["bert/embeddings/position_embeddings"][:length])
    x = layer_norm(x, t["bert/embeddings/LayerNorm/gamma"], t["bert/embeddings/LayerNorm/beta"], eps)

    def dense(h, name):
        return h @ t[f"{name}/kernel"] + t[f"{name}/bias"]

    for i in range(config["num_hidden_layers"]):
        p = f"bert/encoder/layer_{i}"
        width = x.shape[-1] // heads

        def split(h):
            return h.reshape(batch, length, heads, width).transpose(0, 2, 1, 3)

        q, k, v = (split(dense(x, f"{p}/attention/self/{n}")) for n in ("query", "key", "value"))
        scores = q @ k.transpose(0, 1, 3, 2) / math.sqrt(width)
        scores = np.exp(scores - scores.max(-1, keepdims=True))
        probs = scores / scores.sum(-1, keepdims=True)
        context = (probs @ v).transpose(0, 2, 1, 3).reshape(batch, length, heads * width)
        x = layer_norm(dense(context, f"{p}/attention/output/dense") + x,
                       t[f"{p}/attention/output/LayerNorm/gamma"], t[f"{p}/attention/output/LayerNorm/beta"], eps)
        inner = act(dense(x, f"{p}/intermediate/dense"))
        x = layer_norm(dense(inner, f"{p}/output/dense") + x,
                       t[f"{p}/output/LayerNorm/gamma"], t[f"{p}/output/LayerNorm/beta"], eps)
    out = {"sequence_output": x}
    if "bert/pooler/dense/kernel" in t:
        out["pooled_output"] = np.tanh(dense(x[:, 0], "bert/pooler/dense"))
    if "cls/predictions/output_bias" in t:
        h = act(dense(x, "cls/predictions/transform/dense"))
        h = layer_norm(h, t["cls/predictions/transform/LayerNorm/gamma"], t["cls/predictions/transform/LayerNorm/beta"], eps)
        out["mlm_logits"] = h @ t["bert/embeddings/word_embeddings"].T + t["cls/predictions/output_bias"]
    if "cls/seq_relationship/output_weights" in t:
        out["nsp_logits"] = out["pooled_output"] @ t["cls/seq_relationship/output_weights"].T + t["cls/seq_relationship/output_bias"]
    return out
