"""transformers GPT-2 (CPM-LM's GPT2LMHeadModel) <-> KerasHub GPT2Backbone presets (--to keras), checked by
running KerasHub itself. KerasHub's GPT-2 hard-codes the tanh GELU and LayerNorm epsilon 1e-5, which are CPM's
and transformers' GPT-2 defaults: a model with others deviates there, which the conversion says; --exact
writes a backbone computing the model's."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import modelport
from keras_checks import (ATOL, assert_same_tensors, h5_datasets, keras, keras_hub, keras_outputs, largest_difference,
                          reference_datasets, stated_deviation, torch, transformers)
from modelport.errors import ModelportError
from test_cpm import CORPUS, cpm_generate_encode, make_hf_cpm, train_cpm_sentencepiece


# CPM's GELU and epsilon; the same function under transformers' other name; the erf GELU and another epsilon.
MODELS = {"cpm": {}, "pytorch_tanh": {"activation_function": "gelu_pytorch_tanh"},
          "erf": {"activation_function": "gelu", "layer_norm_epsilon": 1e-3}}
DEVIATION = ("KerasHub's GPT2Backbone computes activation_function='gelu_new' where the model has 'gelu', "
             "layer_norm_epsilon=1e-05 where the model has 0.001")


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("hf")
    folders = {name: make_hf_cpm(root / name, seed=2, **fields) for name, fields in MODELS.items()}
    train_cpm_sentencepiece(folders["cpm"] / "spiece.model")
    return folders


@pytest.fixture(scope="module")
def presets(sources, tmp_path_factory) -> dict[tuple[str, bool], tuple[Path, modelport.api.ConversionReport]]:
    root = tmp_path_factory.mktemp("keras")
    return {(name, exact): (root / f"{name}-{exact}",
                            modelport.convert("cpm", sources[name], "keras", root / f"{name}-{exact}", exact=exact))
            for name in MODELS for exact in (False, True)}


def ids() -> np.ndarray:
    return np.random.default_rng(8).integers(0, 96, size=(2, 17))


def difference(preset: Path, source: Path) -> float:
    tokens = ids()
    actual = keras_outputs(preset, {"token_ids": tokens, "padding_mask": np.ones_like(tokens)})
    model = transformers.GPT2Model.from_pretrained(source, dtype=torch.float32).eval()
    with torch.no_grad():
        expected = {"sequence_output": model(input_ids=torch.from_numpy(tokens)).last_hidden_state.numpy()}
    return largest_difference(actual, expected)


@pytest.mark.parametrize("name, exact", [("cpm", False), ("cpm", True), ("pytorch_tanh", False), ("erf", True)])
def test_keras_hub_computes_what_transformers_computes(sources, presets, name, exact):
    preset, report = presets[(name, exact)]
    assert difference(preset, sources[name]) < ATOL
    assert not [n for n in report.notes if "KerasHub's GPT2Backbone computes" in n]
    backbone = json.loads((preset / "config.json").read_text())
    assert backbone["registered_name"] == ("modelport>ExactGPT2Backbone" if exact else "keras_hub>GPT2Backbone")


def test_other_activation_and_epsilon_deviate_and_say_so(sources, presets):
    preset, report = presets[("erf", False)]
    assert difference(preset, sources["erf"]) > 2 * ATOL
    [note] = [n for n in report.notes if DEVIATION in n]
    assert stated_deviation(note) > 2 * ATOL
    with pytest.raises(ModelportError, match="KerasHub's GPT2Backbone computes activation_function='gelu_new'"):
        modelport.convert("cpm", sources["erf"], "keras", preset.parent / "strict", strict=True)


def test_causal_lm_on_the_preset_computes_transformers_logits(sources, presets):
    """GPT2CausalLM's head is the token embedding, tied as CPM's LM head is: the preset holds the whole model."""
    preset, _ = presets[("cpm", False)]
    tokens = ids()
    causal_lm = keras_hub.models.GPT2CausalLM.from_preset(str(preset), preprocessor=None)
    actual = keras.ops.convert_to_numpy(causal_lm({"token_ids": tokens, "padding_mask": np.ones_like(tokens)}))
    model = transformers.GPT2LMHeadModel.from_pretrained(sources["cpm"], dtype=torch.float32).eval()
    with torch.no_grad():
        expected = model(input_ids=torch.from_numpy(tokens)).logits.numpy()
    np.testing.assert_allclose(actual, expected, atol=ATOL, rtol=0)


def test_preset_layout_is_what_keras_hub_saves(presets, tmp_path):
    preset, _ = presets[("cpm", False)]
    assert h5_datasets(preset / "model.weights.h5") == reference_datasets(preset, tmp_path)


@pytest.mark.parametrize("name, exact", [("cpm", False), ("erf", True), ("erf", False)])
def test_round_trip_is_bit_exact(sources, presets, tmp_path, name, exact):
    """The exact preset gives back the model's activation and epsilon; the plain one describes what it computes."""
    out = tmp_path / "back"
    report = modelport.convert("cpm", presets[(name, exact)][0], "safetensors", out)
    assert report.model_class == "GPT2LMHeadModel"
    assert assert_same_tensors(out, sources[name]) == 28
    config = json.loads((out / "config.json").read_text())
    expected = {**json.loads((sources[name] / "config.json").read_text()), **({} if exact else
                                                                              {"activation_function": "gelu_new",
                                                                               "layer_norm_epsilon": 1e-5})}
    for key in ("activation_function", "layer_norm_epsilon", "n_embd", "n_head", "n_layer", "n_positions",
                "vocab_size", "bos_token_id", "eos_token_id"):
        assert config[key] == expected[key], key


def test_sentencepiece_model_travels_and_the_note_says_what_keras_hub_cannot_do(sources, presets):
    """KerasHub has no CPM tokenizer: its SentencePieceTokenizer over CPM's model gives CPM-Generate's ids on text
    segmented as CPM's tokenizer does it first, and the conversion says so."""
    import jieba

    preset, report = presets[("cpm", False)]
    model_file = sources["cpm"] / "spiece.model"
    assert (preset / "assets/tokenizer/vocabulary.spm").read_bytes() == model_file.read_bytes()
    tokenizer = keras_hub.models.Tokenizer.from_preset(str(preset))
    assert type(tokenizer).__name__ == "SentencePieceTokenizer"
    text = CORPUS[1] + "\n" + CORPUS[3]
    prepared = " ".join(word.translate(str.maketrans(" \n", "\u2582\u2583")) for word in jieba.cut(text))
    assert keras.ops.convert_to_numpy(tokenizer(prepared)).tolist() == cpm_generate_encode(model_file, text)
    assert any("KerasHub has no tokenizer for CPM" in n and "jieba" in n for n in report.notes)
    back = preset.parent / "tokenizer-back"
    modelport.convert("cpm", preset, "safetensors", back)
    assert (back / "spiece.model").read_bytes() == model_file.read_bytes()
