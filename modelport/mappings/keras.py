"""KerasHub's side of the mappings (--to keras): its backbones' arguments <-> transformers' config fields, and
the weight names of the TransformerEncoder block its BERT-family backbones share.

A KerasHub preset's model.weights.h5 names a weight by where Keras 3 finds it: `layers/<layer>/vars/<index>`,
the layer by its class in snake case, repeated ones suffixed `_1`, `_2`, ... in the order the backbone makes
them (`transformer_encoder`, `transformer_encoder_1`); sublayers by their attribute names. Attention kernels are
[in, heads, head size] (the output projection [heads, head size, out]), biases [heads, head size].
"""

from __future__ import annotations

from modelport.mappings.base import TRANSPOSE, MergeAxes, Op

# A BERT-style backbone's arguments -> transformers' fields (BertBackbone, ElectraBackbone, AlbertBackbone).
ENCODER_FIELDS = {"vocabulary_size": "vocab_size", "num_layers": "num_hidden_layers",
                  "num_heads": "num_attention_heads", "hidden_dim": "hidden_size",
                  "intermediate_dim": "intermediate_size", "dropout": "hidden_dropout_prob",
                  "max_sequence_length": "max_position_embeddings", "num_segments": "type_vocab_size"}
# What modelport's exact backbones (--exact) take beyond KerasHub's arguments, under transformers' names.
EXACT_FIELDS = ("hidden_act", "layer_norm_eps")

# The sublayers of a BERT-style transformers layer, by the role KerasHub's TransformerEncoder gives them.
BERT_SUBLAYERS = {"query": "attention.self.query", "key": "attention.self.key", "value": "attention.self.value",
                  "attention_output": "attention.output.dense", "attention_norm": "attention.output.LayerNorm",
                  "intermediate": "intermediate.dense", "output": "output.dense", "output_norm": "output.LayerNorm"}


def config_to_hf(fields: dict[str, str], preset_config: dict) -> dict:
    """A preset's config.json (the backbone's serialized config) as transformers' fields."""
    arguments = preset_config.get("config", preset_config)
    hf = {field: arguments[name] for name, field in fields.items() if name in arguments}
    return {**hf, **{field: arguments[field] for field in EXACT_FIELDS if field in arguments}}


def config_from_hf(fields: dict[str, str], hf: dict) -> dict:
    """The backbone's arguments for a transformers config."""
    return {name: hf[field] for name, field in fields.items() if field in hf}


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
