"""T5 v1.0, T5 v1.1 and mT5: Mesh TensorFlow TF1 checkpoints <-> transformers T5ForConditionalGeneration /
MT5ForConditionalGeneration.

Mesh TF names its layers `block_NNN/layer_NNN` (zero-padded), keeps attention projections as bare
`q`/`k`/`v`/`o` kernels [in, out], stores the relative attention bias once per stack (block 0) as
[heads, buckets], and names its RMS norms either `layer_norm`/`final_layer_norm` (the releases'
"legacy" sublayers) or `rms_norm` (newer gin configs): two naming schemes of the same tensors.
Which FFN (plain `wi` or gated `wi_0`/`wi_1`) and which head (untied `decoder/logits/kernel`, or the
embedding, with the decoder output scaled by d_model^-0.5) are parts a checkpoint holds or not; the
config follows from them. Sizes come from shapes (num_heads from the relative attention bias) and from
`operative_config.gin` beside the checkpoint.
"""

from __future__ import annotations

from modelport.errors import ModelportError
from modelport.mappings import keras
from modelport.mappings.base import TRANSPOSE, KerasHub, Mapping, ModelClass, Row, add_scheme

MESH_SCHEMES = ("mesh_tf", "mesh_tf_rms")  # legacy `layer_norm` names, newer `rms_norm` names
GIN = "operative_config.gin"
ATTENTION_WIDTH = "num_heads*d_kv"
MESH_RELATIVE_MAX_DISTANCE = 128  # hard-coded in Mesh TF's _relative_position_bucket


def mesh_row(hf: str, mesh: str, shape: tuple, part: str = "base", transpose: bool = False,
             rms: str | None = None, h5: str | None = None, h5_transpose: bool | None = None) -> Row:
    """One tensor under both Mesh TF namings (they differ only for norms) and, as `h5`, its name in
    transformers 4.x's TF weights (tf_model.h5; transposed as Mesh TF's unless `h5_transpose` says)."""
    names = {"mesh_tf": mesh, "mesh_tf_rms": rms or mesh}
    ops = {scheme: [TRANSPOSE] for scheme in names} if transpose else {}
    if h5:
        names["keras_h5"] = h5
        if transpose if h5_transpose is None else h5_transpose:
            ops["keras_h5"] = [TRANSPOSE]
    return Row(hf, shape=shape, part=part, ops=ops, **names)


def attention(hf: str, mesh: str, h5: str) -> list[Row]:
    """Bias-free projections; Mesh TF's combined heads make q/k/v [d_model, heads*d_kv], o the reverse."""
    return [*(mesh_row(f"{hf}.{n}.weight", f"{mesh}/{n}", (ATTENTION_WIDTH, "d_model"), transpose=True,
                       h5=f"{h5}/{n}/kernel") for n in "qkv"),
            mesh_row(f"{hf}.o.weight", f"{mesh}/o", ("d_model", ATTENTION_WIDTH), transpose=True, h5=f"{h5}/o/kernel")]


def norm(hf: str, mesh: str, h5: str) -> Row:
    """An RMS norm's scale: `<sublayer>/layer_norm/scale` (legacy) or `<sublayer>/rms_norm/scale`."""
    return mesh_row(f"{hf}.layer_norm.weight", f"{mesh}/layer_norm/scale", ("d_model",), rms=f"{mesh}/rms_norm/scale",
                    h5=f"{h5}/layer_norm/weight")


def feed_forward(hf: str, mesh: str, h5: str) -> list[Row]:
    """`wi` (one activation) or `wi_0`/`wi_1` (Mesh TF's dense_product of an activation and a linear map)."""
    return [mesh_row(f"{hf}.{n}.weight", f"{mesh}/{n}/kernel", shape, part, transpose=True, h5=f"{h5}/{n}/kernel")
            for n, shape, part in (("wi", ("d_ff", "d_model"), "plain_ffn"), ("wi_0", ("d_ff", "d_model"), "gated_ffn"),
                                   ("wi_1", ("d_ff", "d_model"), "gated_ffn"), ("wo", ("d_model", "d_ff"), "base"))]


def relative_bias(stack: str) -> Row:
    """Mesh TF's [heads, buckets]; transformers' TF embedding is torch's [buckets, heads]."""
    return mesh_row(f"{stack}.block.0.layer.0.SelfAttention.relative_attention_bias.weight",
                    f"{stack}/block_000/layer_000/SelfAttention/relative_attention_bias",
                    ("relative_attention_num_buckets", "num_heads"), transpose=True,
                    h5=f"{stack}/block_._0/layer_._0/SelfAttention/relative_attention_bias/embeddings",
                    h5_transpose=False)


def final_norm(stack: str) -> Row:
    return mesh_row(f"{stack}.final_layer_norm.weight", f"{stack}/final_layer_norm/scale", ("d_model",),
                    rms=f"{stack}/rms_norm/scale", h5=f"{stack}/final_layer_norm/weight")


ENCODER, MESH_ENCODER = "encoder.block.{layer}.layer", "encoder/block_{layer:03}"
DECODER, MESH_DECODER = "decoder.block.{decoder_layer}.layer", "decoder/block_{decoder_layer:03}"
H5_ENCODER, H5_DECODER = "encoder/block_._{layer}/layer_._", "decoder/block_._{decoder_layer}/layer_._"

ROWS = [
    # transformers' TF T5 keeps the embedding as `shared/shared/embeddings`, read without its first part.
    mesh_row("shared.weight", "shared/embedding", ("vocab_size", "d_model"), h5="shared/embeddings"),
    *attention(f"{ENCODER}.0.SelfAttention", f"{MESH_ENCODER}/layer_000/SelfAttention", f"{H5_ENCODER}0/SelfAttention"),
    relative_bias("encoder"),
    norm(f"{ENCODER}.0", f"{MESH_ENCODER}/layer_000", f"{H5_ENCODER}0"),
    *feed_forward(f"{ENCODER}.1.DenseReluDense", f"{MESH_ENCODER}/layer_001/DenseReluDense",
                  f"{H5_ENCODER}1/DenseReluDense"),
    norm(f"{ENCODER}.1", f"{MESH_ENCODER}/layer_001", f"{H5_ENCODER}1"),
    final_norm("encoder"),
    *attention(f"{DECODER}.0.SelfAttention", f"{MESH_DECODER}/layer_000/SelfAttention", f"{H5_DECODER}0/SelfAttention"),
    relative_bias("decoder"),
    norm(f"{DECODER}.0", f"{MESH_DECODER}/layer_000", f"{H5_DECODER}0"),
    *attention(f"{DECODER}.1.EncDecAttention", f"{MESH_DECODER}/layer_001/EncDecAttention",
               f"{H5_DECODER}1/EncDecAttention"),
    norm(f"{DECODER}.1", f"{MESH_DECODER}/layer_001", f"{H5_DECODER}1"),
    *feed_forward(f"{DECODER}.2.DenseReluDense", f"{MESH_DECODER}/layer_002/DenseReluDense",
                  f"{H5_DECODER}2/DenseReluDense"),
    norm(f"{DECODER}.2", f"{MESH_DECODER}/layer_002", f"{H5_DECODER}2"),
    final_norm("decoder"),
    mesh_row("lm_head.weight", "decoder/logits/kernel", ("vocab_size", "d_model"), "lm_head", transpose=True,
             h5="lm_head/kernel"),
]


# KerasHub's T5Backbone (a preset's model.weights.h5): one T5TransformerLayer per block, the decoder's numbered
# after the encoder's; the relative attention bias in each stack's first layer, [32 buckets, heads] as torch's;
# an untied head as the token embedding's reverse kernel [d_model, vocab]. T5Seq2SeqLM scales the decoder
# output by d_model^-0.5 before a tied head, as transformers' T5 does.
DECODER_BLOCK = "layers/t5_transformer_layer{decoder_layer+num_layers:_}"
add_scheme(ROWS, "keras", {
    "shared.weight": "layers/reversible_embedding/vars/0",
    "lm_head.weight": ("layers/reversible_embedding/vars/1", [TRANSPOSE]),
    "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight":
        "layers/t5_transformer_layer/self_attention/vars/0",
    "decoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight": f"{DECODER_BLOCK}/self_attention/vars/0",
    **keras.t5_layer("encoder", "{layer}", "layers/t5_transformer_layer{layer:_}"),
    **keras.t5_layer("decoder", "{decoder_layer}", DECODER_BLOCK),
    "encoder.final_layer_norm.weight": "layers/t5_layer_norm/vars/0",
    "decoder.final_layer_norm.weight": "layers/t5_layer_norm_1/vars/0",
})
KERAS = KerasHub(backbone="keras_hub.src.models.t5.t5_backbone.T5Backbone",
                 exact="modelport.keras_exact.ExactT5Backbone",
                 tokenizer="keras_hub.src.models.t5.t5_tokenizer.T5Tokenizer",
                 inputs={"encoder_token_ids": "input_ids", "encoder_padding_mask": "attention_mask",
                         "decoder_token_ids": "decoder_input_ids", "decoder_padding_mask": "decoder_attention_mask"},
                 outputs={"encoder_sequence_output": "encoder_last_hidden_state",
                          "decoder_sequence_output": "decoder_hidden_states"},
                 constraints=("num_decoder_layers == num_layers", "relative_attention_num_buckets == 32"))
# KerasHub's activation argument (a Keras activation, serialized) <-> transformers' activation names.
KERAS_GELU_TANH = {"module": "builtins", "class_name": "function", "config": "keras_hub>gelu_approximate",
                   "registered_name": "function"}
KERAS_ACTIVATIONS = {"relu": "relu", "gelu": "gelu", "gelu_new": KERAS_GELU_TANH}


def keras_arguments(hf: dict) -> dict:
    """T5Backbone's arguments: transformers' gated-gelu is the tanh GELU (KerasHub's gelu_approximate)."""
    projection = hf.get("feed_forward_proj", "relu")
    gated = projection.startswith("gated-")
    activation = projection.removeprefix("gated-")
    activation = "gelu_new" if gated and activation == "gelu" else activation
    if activation not in KERAS_ACTIVATIONS:
        raise ModelportError(f"feed_forward_proj {projection!r} has no counterpart in KerasHub's T5Backbone "
                             f"(it computes {', '.join(KERAS_ACTIVATIONS)}, gated or not)")
    return {**keras.config_from_hf(keras.T5_FIELDS, hf), "activation": KERAS_ACTIVATIONS[activation],
            "use_gated_activation": gated}


def keras_config_to_hf(raw: dict) -> dict:
    """A T5Backbone preset's config as transformers' fields: one layer count for both stacks."""
    arguments = raw.get("config", raw)
    activation = next((name for name, value in KERAS_ACTIVATIONS.items() if value == arguments.get("activation")),
                      None)
    gated = bool(arguments.get("use_gated_activation", True))
    if activation is None or (gated and activation == "gelu"):
        raise ModelportError(f"config.json: T5Backbone activation {arguments.get('activation')!r}"
                             f"{' (gated)' if gated else ''} has no counterpart in transformers' T5 (its gated-gelu "
                             "is the tanh GELU)")
    hf = keras.config_to_hf(keras.T5_FIELDS, raw, exact=keras.T5_DEFAULTS)
    projection = ("gated-gelu" if activation == "gelu_new" else f"gated-{activation}") if gated else activation
    return {**hf, "num_decoder_layers": hf.get("num_layers"), "feed_forward_proj": projection}


def structure_config(parts: set[str], config: dict) -> dict:
    """The FFN kind and the head follow from the tensors. A tied head is Mesh TF's shared embedding and
    softmax, which scales the decoder output by d_model^-0.5: transformers' T5 does that exactly when
    tie_word_embeddings is true (transformers 5 keeps the choice as scale_decoder_outputs)."""
    gated, tied = "gated_ffn" in parts, "lm_head" not in parts
    if config.get("scale_decoder_outputs", tied) != tied:
        raise ModelportError(f"the config says scale_decoder_outputs={config['scale_decoder_outputs']} for a "
                             f"{'tied' if tied else 'separate'} LM head: Mesh TF scales exactly when the head is tied")
    activation = str(config.get("feed_forward_proj", "gated-gelu" if gated else "relu")).removeprefix("gated-")
    return {"feed_forward_proj": f"gated-{activation}" if gated else activation, "tie_word_embeddings": tied}


# --- operative_config.gin <-> HF config ------------------------------------------------------------

# Mesh TF activation names (mtf.gelu is the tanh approximation) -> transformers' names; gated FFNs are
# written as [activation, 'linear'] in gin and "gated-<activation>" in transformers.
MESH_ACTIVATIONS = {"relu": "relu", "gelu": "gelu_new"}
HF_ACTIVATIONS = {hf: mesh for mesh, hf in MESH_ACTIVATIONS.items()}
HF_DERIVED = ("dense_act_fn", "is_gated_act")  # recomputed by T5Config from feed_forward_proj


def lookup(bindings: dict, name: str, scope: str = "encoder"):
    """A gin binding `Configurable.param` (module path and `scope/` allowed) or a macro `name`; a binding in
    `scope` wins over an unscoped one, other scopes do not count."""
    ranked = []
    for key, value in bindings.items():
        key_scope, _, qualified = key.rpartition("/")
        if key_scope in (scope, "") and (qualified == name or ("." in name and qualified.endswith("." + name))):
            ranked.append((key_scope != scope, value))
    return min(ranked, key=lambda item: item[0])[1] if ranked else None


def _integer(bindings: dict, *names: str, scope: str = "encoder") -> int | None:
    for name in names:
        value = lookup(bindings, name, scope)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


def _activation_from_gin(value) -> str:
    if isinstance(value, str) and value in MESH_ACTIVATIONS:
        return MESH_ACTIVATIONS[value]
    if isinstance(value, (list, tuple)) and len(value) == 2 and value[1] == "linear" and value[0] in MESH_ACTIVATIONS:
        return f"gated-{value[0]}"
    raise ModelportError(f"{GIN}: DenseReluDense.activation = {value!r} is not one modelport knows "
                         f"({', '.join(MESH_ACTIVATIONS)}, or [one of them, 'linear'])")


def config_from_gin(bindings: dict) -> dict:
    hf = {
        "d_model": _integer(bindings, "d_model", "Unitransformer.d_model"),
        "num_heads": _integer(bindings, "num_heads", "SelfAttention.num_heads"),
        "d_kv": _integer(bindings, "d_kv", "SelfAttention.key_value_size"),
        "d_ff": _integer(bindings, "d_ff", "DenseReluDense.hidden_size"),
        "num_layers": _integer(bindings, "make_layer_stack.num_layers", "num_layers"),
        "num_decoder_layers": _integer(bindings, "make_layer_stack.num_layers", "num_layers", scope="decoder"),
        "relative_attention_num_buckets": _integer(bindings, "SelfAttention.relative_attention_num_buckets"),
    }
    hf = {key: value for key, value in hf.items() if value is not None}
    activation = lookup(bindings, "DenseReluDense.activation")
    if activation is not None:
        hf["feed_forward_proj"] = _activation_from_gin(activation)
    tied = lookup(bindings, "Unitransformer.shared_embedding_and_softmax_weights", "decoder")
    if isinstance(tied, bool):
        hf["tie_word_embeddings"] = tied
    epsilon = lookup(bindings, "sublayer_rms_norm.epsilon")
    epsilon = epsilon if isinstance(epsilon, float) else lookup(bindings, "LayerStack.norm_epsilon")
    if isinstance(epsilon, float):
        hf["layer_norm_epsilon"] = epsilon
    dropout = lookup(bindings, "dropout_rate")
    if isinstance(dropout, (int, float)) and not isinstance(dropout, bool):
        hf["dropout_rate"] = dropout
    # Mesh TF starts decoding from id 0 and buckets relative positions up to 128 apart.
    return {**hf, "decoder_start_token_id": 0, "relative_attention_max_distance": MESH_RELATIVE_MAX_DISTANCE}


def config_from_hf(scheme: str, hf: dict) -> tuple[dict, list[str]]:
    """The gin bindings that describe the model (and that config_from_gin reads back), or a KerasHub
    T5Backbone's arguments."""
    if scheme == "keras":
        return keras_arguments(hf), []
    warnings = []
    projection = hf.get("feed_forward_proj", "relu")
    gated = projection.startswith("gated-")
    activation = projection.removeprefix("gated-")
    if gated and activation == "gelu":  # transformers runs gated-gelu with gelu_new
        activation = "gelu_new"
    if activation in HF_ACTIVATIONS:
        mesh_activation = [HF_ACTIVATIONS[activation], "linear"] if gated else HF_ACTIVATIONS[activation]
    else:
        raise ModelportError(f"feed_forward_proj {projection!r} has no counterpart in Mesh TensorFlow (its gelu is "
                             "the tanh form: relu, gelu_new, gated-gelu and gated-relu convert)")
    distance = hf.get("relative_attention_max_distance", MESH_RELATIVE_MAX_DISTANCE)
    if distance != MESH_RELATIVE_MAX_DISTANCE:
        warnings.append(f"relative_attention_max_distance is {distance}; Mesh TF hard-codes "
                        f"{MESH_RELATIVE_MAX_DISTANCE}, so long inputs compute differently there")
    norm_sublayer = "sublayer_rms_norm" if scheme == "mesh_tf_rms" else "sublayer_legacy_rms_norm"
    final_sublayer = "sublayer_rms_norm" if scheme == "mesh_tf_rms" else "sublayer_legacy_final_rms_norm"
    layers = {"encoder": hf["num_layers"], "decoder": hf.get("num_decoder_layers") or hf["num_layers"]}
    bindings = {"d_model": hf["d_model"], "d_ff": hf["d_ff"], "d_kv": hf["d_kv"], "num_heads": hf["num_heads"],
                "num_layers": hf["num_layers"], "dropout_rate": hf.get("dropout_rate", 0.1),
                "sublayer_rms_norm.epsilon": hf.get("layer_norm_epsilon", 1e-6),
                "Unitransformer.positional_embedding": False,
                "SelfAttention.relative_attention_type": "bias_shared"}
    for stack, count in layers.items():
        bindings.update({
            f"{stack}/make_layer_stack.num_layers": count,
            f"{stack}/DenseReluDense.activation": mesh_activation,
            f"{stack}/SelfAttention.relative_attention_num_buckets": hf.get("relative_attention_num_buckets", 32),
            f"{stack}/LayerStack.sublayers_per_layer": [f"@transformer.{norm_sublayer}", "@transformer.sublayer_call_layer",
                                                        "@transformer.sublayer_dropout", "@transformer.sublayer_residual"],
            f"{stack}/LayerStack.sublayers_final": [f"@transformer.{final_sublayer}", "@transformer.sublayer_dropout"],
        })
    bindings["decoder/Unitransformer.shared_embedding_and_softmax_weights"] = bool(hf.get("tie_word_embeddings"))
    return bindings, warnings


def config_to_hf(scheme: str, raw: dict) -> dict:
    if scheme in MESH_SCHEMES:
        return config_from_gin(raw)
    if scheme == "keras":
        return keras_config_to_hf(raw)
    return {key: value for key, value in raw.items() if key not in HF_DERIVED}


def t5_family(arch: str, model_type: str, classes: list[ModelClass]) -> Mapping:
    return Mapping(
        arch=arch,
        model_type=model_type,
        rows=ROWS,
        classes=classes,
        counts={"layer": "num_layers", "decoder_layer": "num_decoder_layers"},
        tied={"encoder.embed_tokens.weight": "shared.weight", "decoder.embed_tokens.weight": "shared.weight"},
        optional_ties={"lm_head.weight": "shared.weight"},
        # An unused weight older transformers versions saved (Mesh TF has no such bias); transformers ignores it.
        buffers=["decoder.block.0.layer.1.EncDecAttention.relative_attention_bias.weight"],
        # --to tf writes the releases' norm names; tf-rms the newer rms_norm ones (and the gin that makes them)
        formats={"tf": ("tf1", "mesh_tf"), "tf-rms": ("tf1", "mesh_tf_rms"), "safetensors": ("safetensors", "hf"),
                 "pytorch": ("pytorch", "hf"),
                 "keras-h5": ("keras_h5", "keras_h5"), "keras": ("keras", "keras")},
        config_files={"mesh_tf": GIN, "mesh_tf_rms": GIN, "hf": "config.json", "keras": "config.json"},
        checkpoint_names={"mesh_tf": "model.ckpt-0", "mesh_tf_rms": "model.ckpt-0"},
        config_to_hf=config_to_hf,
        config_from_hf=config_from_hf,
        required_config=("num_heads",),
        tokenizer="t5",
        structure_config=structure_config,
        vocab_tensors={"shared.weight": 0, "lm_head.weight": 0},
        h5_copies={"encoder": "shared/", "decoder": "shared/"},
        defaults={"keras": keras.T5_DEFAULTS},
        keras=KERAS,
    )


FFN_PARTS = ("plain_ffn", "gated_ffn")
# T5 covers every structure: v1.0 (plain FFN, tied head) and v1.1 (gated FFN, separate head) and the mixes.
T5 = t5_family("t5", "t5", [ModelClass.of("T5ForConditionalGeneration", "base", ffn, *head)
                            for ffn in FFN_PARTS for head in ((), ("lm_head",))])
# transformers' MT5 never scales the decoder output, so it only holds models with a separate head.
MT5 = t5_family("mt5", "mt5", [ModelClass.of("MT5ForConditionalGeneration", "base", ffn, "lm_head")
                               for ffn in FFN_PARTS])
MAPPINGS = (T5, MT5)
