"""transformers T5 / mT5 <-> KerasHub T5Backbone presets (--to keras), checked by running KerasHub itself.

KerasHub's T5 takes the activation, gating, tied head, epsilon and head size from its config, shares each
stack's relative attention bias from its first layer as transformers does, and hard-codes 32 buckets (the bias
table's shape: other counts are refused, as are unequal stacks) and a largest distance of 128: a model with
another distance deviates there, which the conversion says; --exact writes a backbone that takes it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import modelport
from keras_checks import (ATOL, assert_same_tensors, h5_datasets, keras, keras_hub, keras_outputs, largest_difference,
                          reference_datasets, stated_deviation, torch, transformers)
from modelport.errors import ModelportError
from t5_checkpoints import make_hf_t5

# Keras warns that T5MultiHeadAttention drops the padding mask Keras attaches; KerasHub passes it explicitly.
pytestmark = pytest.mark.filterwarnings("ignore:Layer '.*' \\(of type T5MultiHeadAttention\\):UserWarning")

# KerasHub's stacks have one layer count and 32 buckets; d_kv * num_heads != d_model as before.
SIZES = {"num_decoder_layers": 2, "relative_attention_num_buckets": 32}
# T5 v1.0 (relu, tied head), mT5 (gated-gelu, untied), and a T5 whose buckets reach only 64 apart.
MODELS = {"t5": ("t5", False, True, {}), "mt5": ("mt5", True, False, {}),
          "near": ("t5", False, True, {"relative_attention_max_distance": 64})}
DEVIATION = "KerasHub's T5Backbone computes relative_attention_max_distance=128 where the model has 64"
LENGTH = 24  # longer than the distances bucketed one by one, so that the largest distance matters


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("hf")
    return {name: make_hf_t5(root / name, model_type, gated=gated, tied=tied, seed=3, **SIZES, **extra)
            for name, (model_type, gated, tied, extra) in MODELS.items()}


CASES = [("t5", False), ("mt5", False), ("near", False), ("near", True)]


@pytest.fixture(scope="module")
def presets(sources, tmp_path_factory) -> dict[tuple[str, bool], tuple[Path, modelport.api.ConversionReport]]:
    root = tmp_path_factory.mktemp("keras")
    return {(name, exact): (root / f"{name}-{exact}",
                            modelport.convert(MODELS[name][0], sources[name], "keras", root / f"{name}-{exact}",
                                              exact=exact))
            for name, exact in CASES}


def ids() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(12)
    return rng.integers(0, 384, size=(2, LENGTH)), rng.integers(0, 384, size=(2, LENGTH - 5))


def keras_inputs(encoder_ids: np.ndarray, decoder_ids: np.ndarray) -> dict[str, np.ndarray]:
    return {"encoder_token_ids": encoder_ids, "encoder_padding_mask": np.ones_like(encoder_ids),
            "decoder_token_ids": decoder_ids, "decoder_padding_mask": np.ones_like(decoder_ids)}


def transformers_model(source: Path):
    config = transformers.AutoConfig.from_pretrained(source)
    return getattr(transformers, config.architectures[0]).from_pretrained(source, dtype=torch.float32).eval()


def outputs(preset: Path, source: Path) -> tuple[dict, dict]:
    encoder_ids, decoder_ids = ids()
    actual = keras_outputs(preset, keras_inputs(encoder_ids, decoder_ids))
    with torch.no_grad():
        out = transformers_model(source)(input_ids=torch.from_numpy(encoder_ids),
                                         decoder_input_ids=torch.from_numpy(decoder_ids), output_hidden_states=True)
    return actual, {"encoder_sequence_output": out.encoder_last_hidden_state.numpy(),
                    "decoder_sequence_output": out.decoder_hidden_states[-1].numpy()}


@pytest.mark.parametrize("name, exact", [("t5", False), ("mt5", False), ("near", True)])
def test_keras_hub_computes_what_transformers_computes(sources, presets, name, exact):
    preset, report = presets[(name, exact)]
    assert largest_difference(*outputs(preset, sources[name])) < ATOL
    assert not [n for n in report.notes if "KerasHub's T5Backbone computes" in n]
    backbone = json.loads((preset / "config.json").read_text())
    assert backbone["registered_name"] == ("modelport>ExactT5Backbone" if exact else "keras_hub>T5Backbone")


@pytest.mark.parametrize("name", ["t5", "mt5"])
def test_seq2seq_lm_on_the_preset_computes_transformers_logits(sources, presets, name):
    """T5Seq2SeqLM's head: the embedding scaled by d_model^-0.5 when tied (T5 v1.0), its own when not (mT5)."""
    preset, _ = presets[(name, False)]
    encoder_ids, decoder_ids = ids()
    lm = keras_hub.models.Seq2SeqLM.from_preset(str(preset), preprocessor=None)
    actual = keras.ops.convert_to_numpy(lm(keras_inputs(encoder_ids, decoder_ids)))
    with torch.no_grad():
        expected = transformers_model(sources[name])(input_ids=torch.from_numpy(encoder_ids),
                                                     decoder_input_ids=torch.from_numpy(decoder_ids)).logits.numpy()
    np.testing.assert_allclose(actual, expected, atol=ATOL, rtol=0)


def test_other_largest_distance_deviates_and_says_so(sources, presets):
    preset, report = presets[("near", False)]
    assert largest_difference(*outputs(preset, sources["near"])) > 2 * ATOL
    [note] = [n for n in report.notes if DEVIATION in n]
    assert stated_deviation(note) > 2 * ATOL
    with pytest.raises(ModelportError, match=f"{DEVIATION}: on a fixed input"):
        modelport.convert("t5", sources["near"], "keras", preset.parent / "strict", strict=True)


@pytest.mark.parametrize("name", ["t5", "mt5"])
def test_preset_layout_is_what_keras_hub_saves(presets, tmp_path, name):
    preset, _ = presets[(name, False)]
    assert h5_datasets(preset / "model.weights.h5") == reference_datasets(preset, tmp_path)


@pytest.mark.parametrize("name, exact", [("t5", False), ("mt5", False), ("near", True)])
def test_round_trip_is_bit_exact(sources, presets, tmp_path, name, exact):
    arch = MODELS[name][0]
    out = tmp_path / "back"
    report = modelport.convert(arch, presets[(name, exact)][0], "safetensors", out)
    assert report.model_class == transformers.AutoConfig.from_pretrained(sources[name]).architectures[0]
    assert assert_same_tensors(out, sources[name]) == (52 if name == "mt5" else 47)
    config, source = (json.loads((folder / "config.json").read_text()) for folder in (out, sources[name]))
    assert config["tie_word_embeddings"] is MODELS[name][2]  # (transformers saves mT5's as true, untied or not)
    for key in ("feed_forward_proj", "d_model", "d_kv", "d_ff", "num_heads", "num_layers",
                "num_decoder_layers", "relative_attention_num_buckets", "relative_attention_max_distance",
                "layer_norm_epsilon", "vocab_size"):
        assert config[key] == source[key], key


def test_tokenizer_travels(sources, presets):
    """KerasHub's T5Tokenizer runs the sentencepiece model as transformers' does; the note says which sentinel ids
    it lacks (T5's are appended after the pieces, mT5's model holds them)."""
    text = "abc de fgh 的一是"
    for name in ("t5", "mt5"):
        preset, report = presets[(name, False)]
        tokenizer = keras_hub.models.Tokenizer.from_preset(str(preset))
        assert type(tokenizer).__name__ == "T5Tokenizer"
        expected = transformers.AutoTokenizer.from_pretrained(sources[name])(text, add_special_tokens=False)
        assert keras.ops.convert_to_numpy(tokenizer(text)).tolist() == expected["input_ids"]
        sentinels = [n for n in report.notes if "sentinel ids" in n]
        assert sentinels == (["KerasHub's T5Tokenizer knows the sentencepiece model's 200 pieces only, not the 100 "
                              "sentinel ids transformers' T5Tokenizer appends (<extra_id_0> is id 299 there)"]
                             if name == "t5" else [])


@pytest.mark.parametrize("sizes, message", [
    ({"num_decoder_layers": 3}, r"only where num_decoder_layers == num_layers \(the model has num_decoder_layers=3, "
                                r"num_layers=2\)"),
    ({"num_decoder_layers": 2, "relative_attention_num_buckets": 16},
     r"only where relative_attention_num_buckets == 32 \(the model has relative_attention_num_buckets=16\)")])
def test_what_keras_hub_cannot_hold_is_refused(tmp_path, sizes, message):
    source = make_hf_t5(tmp_path / "hf", "t5", gated=False, tied=True, **sizes)
    with pytest.raises(ModelportError, match=message):
        modelport.convert("t5", source, "keras", tmp_path / "out")
