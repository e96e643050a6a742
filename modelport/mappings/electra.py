"""ELECTRA: Google's TF1 pretraining checkpoint <-> transformers ElectraForPreTraining (the discriminator) and
ElectraForMaskedLM (the generator).

One checkpoint holds two networks. The discriminator lives under `electra/...` with its head under
`discriminator_predictions/...`; the generator under `generator/...` with `generator_predictions/...`, and
it has no embeddings of its own: it reads the discriminator's `electra/embeddings/...` (tied, the default
of Google's code), projected to its smaller hidden size by `generator/embeddings_project`. Each network is
a variant of this mapping over the same file; `--part` picks one.

Google's ELECTRA code computes the exact (erf) GELU, transformers' `gelu`. Its releases ship no config
file: sizes come from the tensors, and the heads are max(1, hidden // 64) as in Google's get_bert_config
and get_generator_config. Its own config file is the hparams.json that run_pretraining.py --hparams reads.
"""

from __future__ import annotations

import numpy as np

from modelport.errors import ModelportError
from modelport.mappings import keras
from modelport.mappings.base import (TRANSPOSE, Filler, KerasHub, Mapping, ModelClass, PositionTable, Row, add_scheme,
                                     dense, layer_norm)

DISCRIMINATOR, GENERATOR = "discriminator", "generator"
MODEL_SIZES = {"small": (256, 12), "base": (768, 12), "large": (1024, 24)}  # (hidden, layers), training_utils.py
GOOGLE_TO_HF_ACTIVATION = {"gelu": "gelu", "relu": "relu", "tanh": "tanh", "linear": "linear"}
LAYER_NORM_EPS = 1e-12  # tf.contrib.layers.layer_norm's


def encoder_rows(scope: str, embeddings: str = "electra/embeddings") -> list[Row]:
    """The embeddings (`electra/embeddings`, shared; a generator's own under `generator/embeddings`), the
    projection and the BERT-style encoder under `scope`; transformers' TF weights (tf_model.h5) hold either
    network under `electra/`."""
    layer = "electra.encoder.layer.{layer}"

    def sub(name: str) -> dict[str, str]:
        return {"tf1": f"{scope}/encoder/layer_{{layer}}/{name}",
                "keras_h5": f"electra/encoder/layer_._{{layer}}/{name}"}

    return [
        Row("electra.embeddings.word_embeddings.weight", shape=("vocab_size", "embedding_size"),
            tf1=f"{embeddings}/word_embeddings", keras_h5="electra/embeddings/word_embeddings/weight"),
        Row("electra.embeddings.position_embeddings.weight", shape=("max_position_embeddings", "embedding_size"),
            tf1=f"{embeddings}/position_embeddings", keras_h5="electra/embeddings/position_embeddings/embeddings"),
        Row("electra.embeddings.token_type_embeddings.weight", shape=("type_vocab_size", "embedding_size"),
            tf1=f"{embeddings}/token_type_embeddings",
            keras_h5="electra/embeddings/token_type_embeddings/embeddings"),
        *layer_norm("electra.embeddings.LayerNorm", {"tf1": f"{embeddings}/LayerNorm",
                                                    "keras_h5": "electra/embeddings/LayerNorm"}, "embedding_size"),
        # Only when embedding_size differs from hidden_size, in both codes.
        *dense("electra.embeddings_project", {"tf1": f"{scope}/embeddings_project",
                                              "keras_h5": "electra/embeddings_project"},
               "embedding_size", "hidden_size", part="project"),
        *dense(f"{layer}.attention.self.query", sub("attention/self/query"), "hidden_size", "hidden_size"),
        *dense(f"{layer}.attention.self.key", sub("attention/self/key"), "hidden_size", "hidden_size"),
        *dense(f"{layer}.attention.self.value", sub("attention/self/value"), "hidden_size", "hidden_size"),
        *dense(f"{layer}.attention.output.dense", sub("attention/output/dense"), "hidden_size", "hidden_size"),
        *layer_norm(f"{layer}.attention.output.LayerNorm", sub("attention/output/LayerNorm"), "hidden_size"),
        *dense(f"{layer}.intermediate.dense", sub("intermediate/dense"), "hidden_size", "intermediate_size"),
        *dense(f"{layer}.output.dense", sub("output/dense"), "intermediate_size", "hidden_size"),
        *layer_norm(f"{layer}.output.LayerNorm", sub("output/LayerNorm"), "hidden_size"),
    ]


def same(name: str) -> dict[str, str]:
    return {"tf1": name, "keras_h5": name}


DISCRIMINATOR_ROWS = [
    *encoder_rows("electra"),
    *dense("discriminator_predictions.dense", same("discriminator_predictions/dense"), "hidden_size", "hidden_size",
           part="head"),
    *dense("discriminator_predictions.dense_prediction", {"tf1": "discriminator_predictions/dense_1",
                                                          "keras_h5": "discriminator_predictions/dense_prediction"},
           "hidden_size", 1, part="head"),
]


def generator_rows(embeddings: str) -> list[Row]:
    return [
        *encoder_rows("generator", embeddings),
        *dense("generator_predictions.dense", same("generator_predictions/dense"), "hidden_size", "embedding_size",
               part="head"),
        *layer_norm("generator_predictions.LayerNorm", same("generator_predictions/LayerNorm"), "embedding_size",
                    part="head"),
        Row("generator_lm_head.bias", shape=("vocab_size",), part="head", tf1="generator_predictions/output_bias",
            keras_h5="generator_lm_head/bias"),
    ]


GENERATOR_ROWS = generator_rows("electra/embeddings")
# Google's untied_generator_embeddings (no release uses it): the generator's own embeddings, as wide as it is.
UNTIED_GENERATOR_ROWS = generator_rows("generator/embeddings")


# KerasHub's ElectraBackbone (a preset's model.weights.h5), either network without its head: the tanh GELU and
# LayerNorm epsilon 1e-12 hard-coded, where Google's ELECTRA computes the erf GELU.
KERAS_NAMES = {
    "electra.embeddings.word_embeddings.weight": "layers/reversible_embedding/vars/0",
    "electra.embeddings.position_embeddings.weight": "layers/position_embedding/vars/0",
    "electra.embeddings.token_type_embeddings.weight": "layers/embedding/vars/0",
    "electra.embeddings.LayerNorm.weight": "layers/layer_normalization/vars/0",
    "electra.embeddings.LayerNorm.bias": "layers/layer_normalization/vars/1",
    "electra.embeddings_project.weight": ("layers/dense/vars/0", [TRANSPOSE]),
    "electra.embeddings_project.bias": "layers/dense/vars/1",
    **keras.transformer_encoder("electra.encoder.layer.{layer}", "layers/transformer_encoder{layer:_}"),
}
for _rows in (DISCRIMINATOR_ROWS, GENERATOR_ROWS, UNTIED_GENERATOR_ROWS):
    add_scheme(_rows, "keras", KERAS_NAMES)
KERAS = KerasHub(backbone="keras_hub.src.models.electra.electra_backbone.ElectraBackbone",
                 exact="modelport.keras_exact.ExactElectraBackbone",
                 tokenizer="keras_hub.src.models.electra.electra_tokenizer.ElectraTokenizer",
                 inputs={"token_ids": "input_ids", "segment_ids": "token_type_ids", "padding_mask": "attention_mask"},
                 outputs={"sequence_output": "last_hidden_state"})
# ElectraBackbone also holds a pooled_dense (tanh of a dense layer on the first token), which neither ELECTRA
# network has: written as the identity with a zero bias, so that its pooled_output is tanh of the first token's
# state. It is the Dense made after the embedding projection, when there is one.
POOLED = ("KerasHub's ElectraBackbone has a pooled_dense, which ELECTRA lacks: written as the identity with a zero "
          "bias, so its pooled_output is tanh of the first token's final hidden state (not an output of the source "
          "model)")
PROJECTED = {"projected": "embedding_size != hidden_size"}
KERAS_FILLERS = (Filler("layers/dense{projected:_}/vars/0", ("hidden_size", "hidden_size"),
                        lambda shape: np.eye(*shape), POOLED, PROJECTED),
                 Filler("layers/dense{projected:_}/vars/1", ("hidden_size",), np.zeros, POOLED, PROJECTED))


def heads(config: dict) -> dict:
    """Google's code sets num_attention_heads = max(1, hidden // 64) for both networks."""
    return {"num_attention_heads": max(1, config["hidden_size"] // 64)} if "hidden_size" in config else {}


def _activation(raw: dict) -> str:
    google = raw.get("hidden_act", "gelu")
    if google not in GOOGLE_TO_HF_ACTIVATION:
        raise ModelportError(f"hparams.json: unknown hidden_act {google!r}")
    return GOOGLE_TO_HF_ACTIVATION[google]


def discriminator_config(raw: dict) -> dict:
    """hparams.json as Google's configure_pretraining.py and get_bert_config read it, in HF fields."""
    size = raw.get("model_size", "small")
    if size not in MODEL_SIZES:
        raise ModelportError(f"hparams.json: unknown model_size {size!r} (small, base or large)")
    overrides = dict(raw.get("model_hparam_overrides", {}))
    hidden = overrides.get("hidden_size", MODEL_SIZES[size][0])
    config = {"hidden_size": hidden, "num_hidden_layers": MODEL_SIZES[size][1],
              "num_attention_heads": max(1, hidden // 64), "intermediate_size": 4 * hidden, **overrides,
              "hidden_act": _activation(overrides), "vocab_size": raw.get("vocab_size", 30522)}
    config["embedding_size"] = raw.get("embedding_size") or (128 if size == "small" else hidden)
    return config


def generator_config(raw: dict) -> dict:
    """Google's get_generator_config: the discriminator's config scaled by generator_hidden_size and
    generator_layers, with its own intermediate size and heads."""
    config = discriminator_config(raw)
    hidden = int(round(config["hidden_size"] * raw.get("generator_hidden_size", 0.25)))
    layers = int(round(config["num_hidden_layers"] * raw.get("generator_layers", 1.0)))
    generator = {**config, "hidden_size": hidden, "num_hidden_layers": layers, "intermediate_size": 4 * hidden,
                 "num_attention_heads": max(1, hidden // 64)}
    if raw.get("untied_generator_embeddings"):  # embeddings of its own, as wide as it (embedding_size=None)
        generator["embedding_size"] = hidden
    return generator


def google_hparams(scheme: str, configs: dict[str, dict]) -> tuple[dict, list[str]]:
    """hparams.json for the parts written (the discriminator, the generator or both), as run_pretraining.py
    --hparams reads it, and warnings for what Google's code would build differently."""
    disc, gen = configs.get(DISCRIMINATOR), configs.get(GENERATOR)
    base = disc or gen
    hf_to_google = {v: k for k, v in GOOGLE_TO_HF_ACTIVATION.items()}
    activation = base.get("hidden_act", "gelu")
    if activation not in hf_to_google:
        raise ModelportError(f"hidden_act {activation!r} has no counterpart in Google's ELECTRA code (its gelu is "
                             "the exact erf form)")
    warnings = []
    eps = base.get("layer_norm_eps", LAYER_NORM_EPS)
    if eps != LAYER_NORM_EPS:
        warnings.append(f"layer_norm_eps is {eps}; Google's ELECTRA code hard-codes 1e-12")
    overrides = {key: base[key] for key in ("max_position_embeddings", "type_vocab_size") if key in base}
    overrides["hidden_act"] = hf_to_google[activation]
    # A generator alone is described as the generator of a discriminator of its own size (which the
    # checkpoint lacks): Google's code then derives exactly its sizes.
    sizes = {key: base[key] for key in ("hidden_size", "num_hidden_layers", "num_attention_heads",
                                        "intermediate_size")} if disc else \
        {"hidden_size": gen["hidden_size"], "num_hidden_layers": gen["num_hidden_layers"]}
    size = next((name for name, known in MODEL_SIZES.items()
                 if known == (sizes["hidden_size"], sizes["num_hidden_layers"])), "small")
    hparams = {"model_size": size, "vocab_size": base["vocab_size"], "embedding_size": base["embedding_size"],
               "model_hparam_overrides": {**overrides, **sizes}}
    if gen:
        hparams["generator_hidden_size"] = gen["hidden_size"] / sizes["hidden_size"]
        hparams["generator_layers"] = gen["num_hidden_layers"] / sizes["num_hidden_layers"]
        derived = generator_config(hparams)
        differing = [key for key in ("hidden_size", "num_hidden_layers", "intermediate_size", "num_attention_heads")
                     if derived[key] != gen[key]]
        if differing:
            warnings.append(f"Google's code derives the generator's {', '.join(differing)} from the discriminator's "
                            f"and would build {', '.join(f'{k}={derived[k]}' for k in differing)}, not the "
                            f"generator's {', '.join(f'{k}={gen[k]}' for k in differing)}")
    return hparams, warnings


def hparams_reader(read):
    def config_to_hf(scheme: str, raw: dict) -> dict:
        if scheme == "keras":
            return keras.config_to_hf(keras.ELECTRA_FIELDS, raw)
        return dict(raw) if scheme == "hf" else read(raw)
    return config_to_hf


def hparams_writer(variant: str):
    def config_from_hf(scheme: str, hf: dict) -> tuple[dict, list[str]]:
        if scheme == "keras":
            return keras.config_from_hf(keras.ELECTRA_FIELDS, hf), []
        return google_hparams(scheme, {variant: hf})
    return config_from_hf


VARIANTS: dict[str, Mapping] = {}
SHARED = dict(
    arch="electra",
    model_type="electra",
    base_prefix="electra.",
    counts={"layer": "num_hidden_layers"},
    buffers=["electra.embeddings.position_ids", "electra.embeddings.token_type_ids"],
    skip=[r"temperature"],
    formats={"tf": ("tf1", "tf1"), "safetensors": ("safetensors", "hf"), "pytorch": ("pytorch", "hf"),
             "keras-h5": ("keras_h5", "keras_h5"), "keras": ("keras", "keras")},
    config_files={"tf1": "hparams.json", "hf": "config.json", "keras": "config.json"},
    checkpoint_names={"tf1": "model.ckpt"},
    defaults={"tf1": {"hidden_act": "gelu", "layer_norm_eps": LAYER_NORM_EPS}, "keras": keras.ENCODER_DEFAULTS},
    computed_defaults=heads,
    constraints=("hidden_size % num_attention_heads == 0",),
    tokenizer="wordpiece",
    positions=PositionTable("electra.embeddings.position_embeddings.weight", "max_position_embeddings"),
    vocab_tensors={"electra.embeddings.word_embeddings.weight": 0, "generator_lm_head.bias": 0},
    variants=VARIANTS,
    merge_configs=google_hparams,
    keras=KERAS,
    omitted={"keras": ("head",)},
    fillers={"keras": KERAS_FILLERS},
)
MAPPING = Mapping(
    **SHARED,
    rows=DISCRIMINATOR_ROWS,
    classes=[ModelClass.of("ElectraForPreTraining", "base", "head", optional=["project"]),
             ModelClass.of("ElectraModel", "base", bare=True, optional=["project"])],
    variant=DISCRIMINATOR,
    config_to_hf=hparams_reader(discriminator_config),
    config_from_hf=hparams_writer(DISCRIMINATOR),
)
GENERATOR_FIELDS = dict(
    classes=[ModelClass.of("ElectraForMaskedLM", "base", "head", optional=["project"]),
             ModelClass.of("ElectraModel", "base", bare=True, optional=["project"])],
    tied={"generator_lm_head.weight": "electra.embeddings.word_embeddings.weight"},
    h5_copies={"generator_lm_head": "electra/embeddings/"},
    variant=GENERATOR,
    config_to_hf=hparams_reader(generator_config),
    config_from_hf=hparams_writer(GENERATOR),
)
GENERATOR_MAPPING = Mapping(
    **SHARED, **GENERATOR_FIELDS, rows=GENERATOR_ROWS,
    # the layout with embeddings of its own is the same network: written as the tied one, read as it comes
    alternatives=[Mapping(**SHARED, **GENERATOR_FIELDS, rows=UNTIED_GENERATOR_ROWS)],
)
VARIANTS.update({DISCRIMINATOR: MAPPING, GENERATOR: GENERATOR_MAPPING})
