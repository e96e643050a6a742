"""KerasHub's side of the mappings (--to keras): its backbones' arguments <-> transformers' config fields, and
the weight names of the TransformerEncoder block its BERT-family backbones share and of GPT-2's
TransformerDecoder block.

A KerasHub preset's model.weights.h5 names a weight by where Keras 3 finds it: `layers/<layer>/vars/<index>`,
the layer by its class in snake case, repeated ones suffixed `_1`, `_2`, ... in the order the backbone makes
them (`transformer_encoder`, `transformer_encoder_1`); sublayers by their attribute names. Attention kernels are
[in, heads, head size] (the output projection [heads, head size, out]), biases [heads, head size]. A task's
own weights (task.weights.h5) are named the same way after `task/`.
"""

from __future__ import annotations

from modelport.mappings.base import TRANSPOSE, MergeAxes, Op
from modelport.mappings.parallel import Concat

# What KerasHub's BERT-family backbones (BERT, ALBERT, ELECTRA) hard-code, under transformers' names.
ENCODER_DEFAULTS = {"hidden_act": "gelu_new", "layer_norm_eps": 1e-12}
# What KerasHub's GPT2Backbone hard-codes, under transformers' GPT-2 names.
GPT2_DEFAULTS = {"activation_function": "gelu_new", "layer_norm_epsilon": 1e-5}

# A BERT-style backbone's arguments -> transformers' fields (BertBackbone, ElectraBackbone, AlbertBackbone).
ENCODER_FIELDS = {"vocabulary_size": "vocab_size", "num_layers": "num_hidden_layers",
                  "num_heads": "num_attention_heads", "hidden_dim": "hidden_size",
                  "intermediate_dim": "intermediate_size", "dropout": "hidden_dropout_prob",
                  "max_sequence_length": "max_position_embeddings", "num_segments": "type_vocab_size"}
# AlbertBackbone's: BERT's, a narrower embedding and shared layers (num_layers runs num_groups groups of
# num_inner_repetitions layers).
ALBERT_FIELDS = {**ENCODER_FIELDS, "embedding_dim": "embedding_size", "num_groups": "num_hidden_groups",
                 "num_inner_repetitions": "inner_group_num"}
# ElectraBackbone's: BERT's with an embedding width, and `vocab_size` for vocabulary_size.
ELECTRA_FIELDS = {**{name: field for name, field in ENCODER_FIELDS.items() if name != "vocabulary_size"},
                  "vocab_size": "vocab_size", "embedding_dim": "embedding_size"}
# GPT2Backbone's -> transformers' GPT-2 fields.
GPT2_FIELDS = {"vocabulary_size": "vocab_size", "num_layers": "n_layer", "num_heads": "n_head", "hidden_dim": "n_embd",
               "intermediate_dim": "n_inner", "dropout": "resid_pdrop", "max_sequence_length": "n_positions"}
# T5Backbone's -> transformers' T5 fields (its activation, gating and tied head are the `feed_forward_proj` and
# `tie_word_embeddings` the T5 mapping translates). One num_layers for both stacks.
T5_FIELDS = {"vocabulary_size": "vocab_size", "num_layers": "num_layers", "num_heads": "num_heads",
             "hidden_dim": "d_model", "intermediate_dim": "d_ff", "key_value_dim": "d_kv", "dropout": "dropout_rate",
             "layer_norm_epsilon": "layer_norm_epsilon", "tie_embedding_weights": "tie_word_embeddings"}
# What KerasHub's T5MultiHeadAttention hard-codes (its 32 buckets are the shape of the bias table: a constraint).
T5_DEFAULTS = {"relative_attention_max_distance": 128}

# The sublayers of a BERT-style transformers layer, by the role KerasHub's TransformerEncoder gives them.
BERT_SUBLAYERS = {"query": "attention.self.query", "key": "attention.self.key", "value": "attention.self.value",
                  "attention_output": "attention.output.dense", "attention_norm": "attention.output.LayerNorm",
                  "intermediate": "intermediate.dense", "output": "output.dense", "output_norm": "output.LayerNorm"}
ALBERT_SUBLAYERS = {"query": "attention.query", "key": "attention.key", "value": "attention.value",
                    "attention_output": "attention.dense", "attention_norm": "attention.LayerNorm",
                    "intermediate": "ffn", "output": "ffn_output", "output_norm": "full_layer_layer_norm"}


def config_to_hf(fields: dict[str, str], preset_config: dict, exact: dict = ENCODER_DEFAULTS) -> dict:
    """A preset's config.json (the backbone's serialized config) as transformers' fields; modelport's exact
    backbone (--exact) also takes what KerasHub's hard-codes (`exact`, the keras defaults of the mapping), under
    transformers' names."""
    arguments = preset_config.get("config", preset_config)
    hf = {field: arguments[name] for name, field in fields.items() if name in arguments}
    return {**hf, **{field: arguments[field] for field in exact if field in arguments}}


def config_from_hf(fields: dict[str, str], hf: dict) -> dict:
    """The backbone's arguments for a transformers config."""
    return {name: hf[field] for name, field in fields.items() if hf.get(field) is not None}


def transformer_encoder(hf_layer: str, block: str, heads: str = "num_attention_heads",
                        sublayers: dict[str, str] = BERT_SUBLAYERS) -> dict[str, str | tuple[str, list[Op]]]:
    """KerasHub's TransformerEncoder `block` as the transformers layer `hf_layer` (post-LayerNorm BERT)."""
    attention = f"{block}/_self_attention_layer"
    names: dict[str, str | tuple[str, list[Op]]] = {}
    for role, keras_name in (("query", "query_dense"), ("key", "key_dense"), ("value", "value_dense")):
        names[f"{hf_layer}.{sublayers[role]}.weight"] = (f"{attention}/{keras_name}/vars/0",
                                                         [MergeAxes(1, heads, -1), TRANSPOSE])
        names[f"{hf_layer}.{sublayers[role]}.bias"] = (f"{attention}/{keras_name}/vars/1", [MergeAxes(0, heads, -1)])
    names[f"{hf_layer}.{sublayers['attention_output']}.weight"] = (f"{attention}/output_dense/vars/0",
                                                                   [MergeAxes(0, heads, -1), TRANSPOSE])
    names[f"{hf_layer}.{sublayers['attention_output']}.bias"] = f"{attention}/output_dense/vars/1"
    for role, keras_name in (("attention_norm", "_self_attention_layer_norm"),
                             ("output_norm", "_feedforward_layer_norm")):
        names[f"{hf_layer}.{sublayers[role]}.weight"] = f"{block}/{keras_name}/vars/0"
        names[f"{hf_layer}.{sublayers[role]}.bias"] = f"{block}/{keras_name}/vars/1"
    for role, keras_name in (("intermediate", "_feedforward_intermediate_dense"),
                             ("output", "_feedforward_output_dense")):
        names[f"{hf_layer}.{sublayers[role]}.weight"] = (f"{block}/{keras_name}/vars/0", [TRANSPOSE])
        names[f"{hf_layer}.{sublayers[role]}.bias"] = f"{block}/{keras_name}/vars/1"
    return names


def gpt2_decoder(hf_layer: str, block: str, heads: str = "n_head") -> dict[str, str | tuple]:
    """KerasHub's TransformerDecoder `block` (pre-LayerNorm, no cross-attention) as GPT-2's layer `hf_layer`,
    whose Conv1D weights are [in, out] as Keras kernels are, and whose c_attn is query, key and value side by
    side."""
    attention = f"{block}/_self_attention_layer"
    qkv = tuple(f"{attention}/{role}_dense" for role in ("query", "key", "value"))
    return {
        f"{hf_layer}.ln_1.weight": f"{block}/_self_attention_layer_norm/vars/0",
        f"{hf_layer}.ln_1.bias": f"{block}/_self_attention_layer_norm/vars/1",
        f"{hf_layer}.attn.c_attn.weight": (tuple(f"{name}/vars/0" for name in qkv),
                                           [MergeAxes(1, heads, -1), Concat(1, "3*n_embd", parts=3)]),
        f"{hf_layer}.attn.c_attn.bias": (tuple(f"{name}/vars/1" for name in qkv),
                                         [MergeAxes(0, heads, -1), Concat(0, "3*n_embd", parts=3)]),
        f"{hf_layer}.attn.c_proj.weight": (f"{attention}/output_dense/vars/0", [MergeAxes(0, heads, -1)]),
        f"{hf_layer}.attn.c_proj.bias": f"{attention}/output_dense/vars/1",
        f"{hf_layer}.ln_2.weight": f"{block}/_feedforward_layer_norm/vars/0",
        f"{hf_layer}.ln_2.bias": f"{block}/_feedforward_layer_norm/vars/1",
        f"{hf_layer}.mlp.c_fc.weight": f"{block}/_feedforward_intermediate_dense/vars/0",
        f"{hf_layer}.mlp.c_fc.bias": f"{block}/_feedforward_intermediate_dense/vars/1",
        f"{hf_layer}.mlp.c_proj.weight": f"{block}/_feedforward_output_dense/vars/0",
        f"{hf_layer}.mlp.c_proj.bias": f"{block}/_feedforward_output_dense/vars/1",
    }


def gated(config: dict) -> bool:
    """Whether a T5 config's feed-forward is gated (transformers' `gated-<activation>`)."""
    return str(config.get("feed_forward_proj", "relu")).startswith("gated-")


def t5_layer(stack: str, layer: str, block: str) -> dict[str, str | tuple]:
    """KerasHub's T5TransformerLayer `block` as transformers' T5 block `{stack}.block.{layer}`: self-attention,
    a decoder's cross-attention, then the feed-forward, each after its RMS norm. Dense kernels [in, out] are
    torch's Linear weights [out, in] transposed. The feed-forward's activated half is `input_projector`, a plain
    one's wi or a gated one's wi_0 (the config tells which), its linear half `gate_projector`."""
    hf = f"{stack}.block.{layer}.layer"
    attentions = [("0", "SelfAttention", "self_attention")]
    if stack == "decoder":
        attentions.append(("1", "EncDecAttention", "cross_attention"))
    names: dict[str, str | tuple] = {}
    for index, module, attention in attentions:
        for projection in ("query", "key", "value", "output"):
            names[f"{hf}.{index}.{module}.{projection[0]}.weight"] = (
                f"{block}/{attention}/{projection}_projector/vars/0", [TRANSPOSE])
        names[f"{hf}.{index}.layer_norm.weight"] = f"{block}/{attention}_layer_norm/vars/0"
    ffn = f"{hf}.{len(attentions)}"
    names.update({
        f"{ffn}.DenseReluDense.wi.weight": (f"{block}/input_projector/vars/0", [TRANSPOSE],
                                            lambda config: not gated(config)),
        f"{ffn}.DenseReluDense.wi_0.weight": (f"{block}/input_projector/vars/0", [TRANSPOSE], gated),
        f"{ffn}.DenseReluDense.wi_1.weight": (f"{block}/gate_projector/vars/0", [TRANSPOSE]),
        f"{ffn}.DenseReluDense.wo.weight": (f"{block}/output_projector/vars/0", [TRANSPOSE]),
        f"{ffn}.layer_norm.weight": f"{block}/layer_norm/vars/0",
    })
    return names
