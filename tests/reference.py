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


def megatron_gpt2(ranks: list[dict[str, np.ndarray]], config: dict, input_ids) -> np.ndarray:
    """Megatron-LM's model-parallel GPT-2 (CPM-LM) as its R ranks compute it, on each rank's own tensors
    (`module` names, never merged): the vocab-parallel embedding sums each rank's lookup of its own rows, each
    rank attends with its own heads from its own fused query_key_value, row-parallel outputs are summed across
    ranks before the (replicated) bias, and the logits are the ranks' vocab slices side by side. Returns the
    logits as rank 0 gathers them, in float64."""
    ranks = [{k: np.asarray(v, dtype=np.float64) for k, v in rank.items()} for rank in ranks]
    first, world = ranks[0], len(ranks)
    eps = config.get("layer_norm_epsilon", 1e-5)
    heads = config["n_head"] // world  # per rank
    batch, length = input_ids.shape
    hidden = first["word_embeddings.weight"].shape[1]
    head_size = hidden // config["n_head"]

    def gelu(x):  # Megatron's gelu_impl
        return 0.5 * x * (1.0 + np.tanh(0.7978845608028654 * x * (1.0 + 0.044715 * x * x)))

    def linear(x, t, name, bias=True):  # torch.nn.functional.linear: weight [out, in]
        return x @ t[f"{name}.weight"].T + (t[f"{name}.bias"] if bias else 0)

    embedded = 0
    for rank, t in enumerate(ranks):  # VocabParallelEmbedding: ids outside this rank's rows look up zeros; all-reduce
        rows = t["word_embeddings.weight"].shape[0]
        local = input_ids - rank * rows
        inside = (local >= 0) & (local < rows)
        embedded = embedded + np.where(inside[..., None], t["word_embeddings.weight"][np.where(inside, local, 0)], 0)
    x = embedded + first["position_embeddings.weight"][:length]
    causal = np.tril(np.ones((length, length)))
    for i in range(config["n_layer"]):
        p = f"transformer.layers.{i}"
        attention = 0
        for t in ranks:
            h = layer_norm(x, t[f"{p}.input_layernorm.weight"], t[f"{p}.input_layernorm.bias"], eps)
            mixed = linear(h, t, f"{p}.attention.query_key_value")  # this rank's [q | k | v]
            q, k, v = (m.reshape(batch, length, heads, head_size).transpose(0, 2, 1, 3) for m in np.split(mixed, 3, -1))
            scores = q @ k.transpose(0, 1, 3, 2) / math.sqrt(head_size)
            scores = scores * causal - 10000.0 * (1.0 - causal)
            probs = np.exp(scores - scores.max(-1, keepdims=True))
            probs /= probs.sum(-1, keepdims=True)
            context = (probs @ v).transpose(0, 2, 1, 3).reshape(batch, length, heads * head_size)
            attention = attention + linear(context, t, f"{p}.attention.dense", bias=False)  # RowParallelLinear
        x = x + attention + first[f"{p}.attention.dense.bias"]
        mlp = 0
        for t in ranks:
            h = layer_norm(x, t[f"{p}.post_attention_layernorm.weight"], t[f"{p}.post_attention_layernorm.bias"], eps)
            mlp = mlp + linear(gelu(linear(h, t, f"{p}.mlp.dense_h_to_4h")), t, f"{p}.mlp.dense_4h_to_h", bias=False)
        x = x + mlp + first[f"{p}.mlp.dense_4h_to_h.bias"]
    x = layer_norm(x, first["transformer.final_layernorm.weight"], first["transformer.final_layernorm.bias"], eps)
    return np.concatenate([x @ t["word_embeddings.weight"].T for t in ranks], axis=-1)  # parallel logits, gathered


def mesh_relative_position_bucket(relative_position, bidirectional: bool, num_buckets: int, max_distance: int = 128):
    """Mesh TensorFlow's _relative_position_bucket (memory position minus query position -> bucket), with the
    log computed in float32 as TensorFlow does."""
    ret = np.zeros_like(relative_position)
    n = -relative_position
    if bidirectional:
        num_buckets //= 2
        ret += (n < 0).astype(ret.dtype) * num_buckets
        n = np.abs(n)
    else:
        n = np.maximum(n, 0)
    max_exact = num_buckets // 2
    ratio = np.log(np.maximum(n, 1).astype(np.float32) / np.float32(max_exact)) / np.float32(
        math.log(max_distance / max_exact))
    large = np.minimum(max_exact + (ratio * np.float32(num_buckets - max_exact)).astype(ret.dtype), num_buckets - 1)
    return ret + np.where(n < max_exact, n, large)


MESH_ACTIVATIONS = {"relu": lambda x: np.maximum(x, 0), "gelu": gelu_tanh}  # mtf.gelu is the tanh form


def mesh_t5(tensors: dict[str, np.ndarray], config: dict, input_ids, decoder_input_ids) -> dict[str, np.ndarray]:
    """Mesh TensorFlow's Bitransformer as T5 v1.0, v1.1 and mT5 use it (transformer.py, transformer_layers.py,
    attention.py) with teacher forcing, on Mesh TF variable names. `config`: num_heads, and `activation` as gin's
    DenseReluDense.activation ('relu', or ['gelu', 'linear'] for the gated FFN of wi_0 and wi_1)."""
    t = {k: np.asarray(v, dtype=np.float64) for k, v in tensors.items()}
    heads, eps = config["num_heads"], config.get("epsilon", 1e-6)
    activation = config["activation"]
    act = MESH_ACTIVATIONS[activation if isinstance(activation, str) else activation[0]]
    embedding = t["shared/embedding"]

    def scale(*names):  # legacy sublayers name the norm layer_norm/final_layer_norm, newer ones rms_norm
        return next(t[n] for n in names if n in t)

    def rms_norm(x, weight):  # no mean subtraction, no bias
        return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * weight

    def attend(x, memory, prefix, bias):
        def split(h):
            return h.reshape(*h.shape[:2], heads, -1).transpose(0, 2, 1, 3)

        q, k, v = split(x @ t[f"{prefix}/q"]), split(memory @ t[f"{prefix}/k"]), split(memory @ t[f"{prefix}/v"])
        scores = q @ k.transpose(0, 1, 3, 2) + bias  # no 1/sqrt(d_kv): Mesh TF folds it into the initializer
        probs = np.exp(scores - scores.max(-1, keepdims=True))
        probs /= probs.sum(-1, keepdims=True)
        return (probs @ v).transpose(0, 2, 1, 3).reshape(*x.shape[:2], -1) @ t[f"{prefix}/o"]

    def position_bias(stack, length, bidirectional):
        table = t[f"{stack}/block_000/layer_000/SelfAttention/relative_attention_bias"]  # [heads, buckets]
        relative = np.arange(length)[None, :] - np.arange(length)[:, None]
        return table[:, mesh_relative_position_bucket(relative, bidirectional, table.shape[1])][None]

    def feed_forward(x, prefix):
        if f"{prefix}/wi/kernel" in t:
            hidden = act(x @ t[f"{prefix}/wi/kernel"])
        else:  # mtf.layers.dense_product: activation(x wi_0) * (x wi_1)
            hidden = act(x @ t[f"{prefix}/wi_0/kernel"]) * (x @ t[f"{prefix}/wi_1/kernel"])
        return hidden @ t[f"{prefix}/wo/kernel"]

    def blocks(stack):
        return sorted({int(n.split("/")[1][len("block_"):]) for n in t if n.startswith(f"{stack}/block_")})

    def norm(x, prefix):
        return rms_norm(x, scale(f"{prefix}/layer_norm/scale", f"{prefix}/rms_norm/scale"))

    x = embedding[input_ids]
    bias = position_bias("encoder", x.shape[1], True)
    for i in blocks("encoder"):
        p = f"encoder/block_{i:03d}"
        h = norm(x, f"{p}/layer_000")
        x = x + attend(h, h, f"{p}/layer_000/SelfAttention", bias)
        x = x + feed_forward(norm(x, f"{p}/layer_001"), f"{p}/layer_001/DenseReluDense")
    encoded = rms_norm(x, scale("encoder/final_layer_norm/scale", "encoder/rms_norm/scale"))

    y = embedding[decoder_input_ids]
    length = y.shape[1]
    causal = np.where(np.arange(length)[None, :] > np.arange(length)[:, None], -1e9, 0.0)
    bias = position_bias("decoder", length, False) + causal
    for i in blocks("decoder"):
        p = f"decoder/block_{i:03d}"
        h = norm(y, f"{p}/layer_000")
        y = y + attend(h, h, f"{p}/layer_000/SelfAttention", bias)
        y = y + attend(norm(y, f"{p}/layer_001"), encoded, f"{p}/layer_001/EncDecAttention", 0.0)
        y = y + feed_forward(norm(y, f"{p}/layer_002"), f"{p}/layer_002/DenseReluDense")
    y = rms_norm(y, scale("decoder/final_layer_norm/scale", "decoder/rms_norm/scale"))
    if "decoder/logits/kernel" in t:
        logits = y @ t["decoder/logits/kernel"]
    else:  # shared embedding and softmax weights: the decoder output is scaled by d_model^-0.5 first
        logits = (y * embedding.shape[1] ** -0.5) @ embedding.T
    return {"encoder_last_hidden_state": encoded, "logits": logits}


def _post_ln_attention_block(t, x, heads, eps, attention, output, norm):
    """Self-attention (`attention`/{query,key,value}), its output projection `output`, the residual and the
    LayerNorm `norm`, as Google's BERT-family transformer_model computes them (post-LN, 1/sqrt(d) scaling)."""
    batch, length, width = x.shape
    size = width // heads

    def split(h):
        return h.reshape(batch, length, heads, size).transpose(0, 2, 1, 3)

    q, k, v = (split(_dense(t, x, f"{attention}/{n}")) for n in ("query", "key", "value"))
    scores = q @ k.transpose(0, 1, 3, 2) / math.sqrt(size)
    probs = np.exp(scores - scores.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    context = (probs @ v).transpose(0, 2, 1, 3).reshape(batch, length, width)
    return _norm(t, _dense(t, context, output) + x, norm, eps)


def _ffn_block(t, x, act, eps, inner, output, norm):
    return _norm(t, _dense(t, act(_dense(t, x, inner)), output) + x, norm, eps)


def _bert_layer(t, p, x, heads, act, eps):
    """One layer of Google BERT's transformer_model under scope `p` (ELECTRA's and albert_zh's too)."""
    x = _post_ln_attention_block(t, x, heads, eps, f"{p}/attention/self", f"{p}/attention/output/dense",
                                 f"{p}/attention/output/LayerNorm")
    return _ffn_block(t, x, act, eps, f"{p}/intermediate/dense", f"{p}/output/dense", f"{p}/output/LayerNorm")


def _dense(t, x, name):
    return x @ t[f"{name}/kernel"] + t[f"{name}/bias"]


def _norm(t, x, name, eps):
    return layer_norm(x, t[f"{name}/gamma"], t[f"{name}/beta"], eps)


def _embed(t, scope, words, token_type_ids, eps):
    """embedding_postprocessor: the looked-up words plus token types and positions, then the LayerNorm."""
    length = words.shape[1]
    x = words + t[f"{scope}/token_type_embeddings"][token_type_ids] + t[f"{scope}/position_embeddings"][:length]
    return _norm(t, x, f"{scope}/LayerNorm", eps)


def google_albert(tensors: dict[str, np.ndarray], config: dict, input_ids, token_type_ids) -> dict[str, np.ndarray]:
    """Google ALBERT's modeling.py (embeddings at embedding_size, embedding_hidden_mapping_in only when that
    differs from hidden_size, layer i running group int(i / layers * groups) and each of its inner groups:
    attention_1, LayerNorm, ffn_1, LayerNorm_1) and run_pretraining.py's MLM and sentence-order heads."""
    t = {k: np.asarray(v, dtype=np.float64) for k, v in tensors.items()}
    act = ACTIVATIONS[config["hidden_act"]]
    eps = config.get("layer_norm_eps", 1e-12)
    heads, layers = config["num_attention_heads"], config["num_hidden_layers"]
    groups, inner = config.get("num_hidden_groups", 1), config.get("inner_group_num", 1)
    e = "bert/embeddings"
    x = _embed(t, e, t[f"{e}/word_embeddings"][input_ids], token_type_ids, eps)
    if x.shape[-1] != config["hidden_size"]:
        x = _dense(t, x, "bert/encoder/embedding_hidden_mapping_in")
    for layer in range(layers):
        group = int(layer / layers * groups)
        for i in range(inner):
            p = f"bert/encoder/transformer/group_{group}/inner_group_{i}"
            x = _post_ln_attention_block(t, x, heads, eps, f"{p}/attention_1/self", f"{p}/attention_1/output/dense",
                                         f"{p}/LayerNorm")
            x = _ffn_block(t, x, act, eps, f"{p}/ffn_1/intermediate/dense", f"{p}/ffn_1/intermediate/output/dense",
                           f"{p}/LayerNorm_1")
    return _bert_heads(t, x, act, eps, t[f"{e}/word_embeddings"].T, "sop_logits")


def _bert_heads(t, x, act, eps, decoder, pair_head):
    out = {"sequence_output": x, "pooled_output": np.tanh(_dense(t, x[:, 0], "bert/pooler/dense"))}
    if "cls/predictions/output_bias" in t:
        h = _norm(t, act(_dense(t, x, "cls/predictions/transform/dense")), "cls/predictions/transform/LayerNorm", eps)
        out["mlm_logits"] = h @ decoder + t["cls/predictions/output_bias"]
    if "cls/seq_relationship/output_weights" in t:
        pair = "cls/seq_relationship"
        out[pair_head] = out["pooled_output"] @ t[f"{pair}/output_weights"].T + t[f"{pair}/output_bias"]
    return out


def albert_zh(tensors: dict[str, np.ndarray], config: dict, input_ids, token_type_ids) -> dict[str, np.ndarray]:
    """brightmart's albert_zh modeling.py: embedding_lookup_factorized (W [vocab, E] gathered, then times W2
    [E, hidden]), THEN token types, positions and the LayerNorm at hidden width; one BERT block
    `layer_shared` run num_hidden_layers times; run_pretraining.py's heads (the MLM output goes through W2ᵀ
    then Wᵀ)."""
    t = {k: np.asarray(v, dtype=np.float64) for k, v in tensors.items()}
    act = ACTIVATIONS[config["hidden_act"]]
    eps = config.get("layer_norm_eps", 1e-12)
    e = "bert/embeddings"
    word, project = t[f"{e}/word_embeddings"], t[f"{e}/word_embeddings_2"]
    x = _embed(t, e, word[input_ids] @ project, token_type_ids, eps)
    for _ in range(config["num_hidden_layers"]):
        x = _bert_layer(t, "bert/encoder/layer_shared", x, config["num_attention_heads"], act, eps)
    return _bert_heads(t, x, act, eps, project.T @ word.T, "sop_logits")


# Google ELECTRA's get_activation: its "gelu" is the exact erf form.
ELECTRA_ACTIVATIONS = {"gelu": gelu_erf, "relu": lambda x: np.maximum(x, 0), "tanh": np.tanh}


def google_electra(tensors: dict[str, np.ndarray], config: dict, input_ids, token_type_ids,
                   part: str = "discriminator", activations: dict = ELECTRA_ACTIVATIONS) -> dict[str, np.ndarray]:
    """One network of Google ELECTRA's pretraining model (modeling.py BertModel, run_pretraining.py heads):
    the discriminator under `electra/`, or the generator under `generator/`, which reads the discriminator's
    `electra/embeddings` (tied embeddings) unless it has its own, `generator/embeddings`
    (untied_generator_embeddings). `embeddings_project` runs when the embeddings are narrower than the
    network's hidden_size. `config` is that network's (hidden_size, layers, heads, hidden_act)."""
    t = {k: np.asarray(v, dtype=np.float64) for k, v in tensors.items()}
    act = activations[config.get("hidden_act", "gelu")]
    eps = 1e-12
    scope = "electra" if part == "discriminator" else "generator"
    e = f"{scope}/embeddings" if f"{scope}/embeddings/word_embeddings" in t else "electra/embeddings"
    x = _embed(t, e, t[f"{e}/word_embeddings"][input_ids], token_type_ids, eps)
    if x.shape[-1] != config["hidden_size"]:
        x = _dense(t, x, f"{scope}/embeddings_project")
    for i in range(config["num_hidden_layers"]):
        x = _bert_layer(t, f"{scope}/encoder/layer_{i}", x, config["num_attention_heads"], act, eps)
    out = {"sequence_output": x}
    if part == "discriminator" and "discriminator_predictions/dense/kernel" in t:
        hidden = act(_dense(t, x, "discriminator_predictions/dense"))
        out["discriminator_logits"] = _dense(t, hidden, "discriminator_predictions/dense_1")[..., 0]
    if part == "generator" and "generator_predictions/output_bias" in t:
        hidden = _norm(t, act(_dense(t, x, "generator_predictions/dense")), "generator_predictions/LayerNorm", eps)
        out["mlm_logits"] = hidden @ t[f"{e}/word_embeddings"].T + t["generator_predictions/output_bias"]
    return out
