"""transformers ALBERT <-> KerasHub AlbertBackbone presets (--to keras), checked by running KerasHub itself.
KerasHub's ALBERT hard-codes the tanh GELU, as Google's ALBERT and transformers' default do: only an erf-GELU
model deviates there, which the conversion says; --exact writes a backbone computing the model's GELU."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import modelport
from albert_checkpoints import make_hf_albert
from keras_checks import (ATOL, assert_same_tensors, h5_datasets, keras, keras_hub, keras_outputs, largest_difference,
                          reference_datasets, stated_deviation, torch, transformers)
from modelport.errors import ModelportError


TANH, ERF = "gelu_new", "gelu"
DEVIATION = "KerasHub's AlbertBackbone computes hidden_act='gelu_new' where the model has 'gelu'"
# Four layers over two groups (layer i runs group i // 2), one inner layer each, as every ALBERT release.
SIZES = {"num_hidden_layers": 4, "num_hidden_groups": 2, "inner_group_num": 1}


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("hf")
    return {act: make_hf_albert(root / act, hidden_act=act, seed=4, **SIZES) for act in (TANH, ERF)}


@pytest.fixture(scope="module")
def presets(sources, tmp_path_factory) -> dict[tuple[str, bool], tuple[Path, modelport.api.ConversionReport]]:
    root = tmp_path_factory.mktemp("keras")
    return {(act, exact): (root / f"{act}-{exact}",
                           modelport.convert("albert", sources[act], "keras", root / f"{act}-{exact}", exact=exact))
            for act, exact in ((TANH, False), (TANH, True), (ERF, False), (ERF, True))}


def batch() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(6)
    return rng.integers(0, 99, size=(2, 13)), rng.integers(0, 2, size=(2, 13))


def difference(preset: Path, source: Path) -> float:
    ids, segments = batch()
    actual = keras_outputs(preset, {"token_ids": ids, "segment_ids": segments, "padding_mask": np.ones_like(ids)})
    model = transformers.AlbertModel.from_pretrained(source, dtype=torch.float32).eval()
    with torch.no_grad():
        out = model(input_ids=torch.from_numpy(ids), token_type_ids=torch.from_numpy(segments))
    expected = {"sequence_output": out.last_hidden_state.numpy(), "pooled_output": out.pooler_output.numpy()}
    return largest_difference(actual, expected)


@pytest.mark.parametrize("act, exact", [(TANH, False), (TANH, True), (ERF, True)])
def test_keras_hub_computes_what_transformers_computes(sources, presets, act, exact):
    preset, report = presets[(act, exact)]
    assert difference(preset, sources[act]) < ATOL
    assert not [n for n in report.notes if "KerasHub's AlbertBackbone computes" in n]
    assert "left out the mlm, sop part(s): --to keras has no place for them" in report.notes
    backbone = json.loads((preset / "config.json").read_text())
    assert backbone["registered_name"] == ("modelport>ExactAlbertBackbone" if exact else "keras_hub>AlbertBackbone")


def test_erf_model_deviates_and_says_so(sources, presets):
    preset, report = presets[(ERF, False)]
    assert difference(preset, sources[ERF]) > 2 * ATOL
    [note] = [n for n in report.notes if DEVIATION in n]
    assert stated_deviation(note) > 2 * ATOL


def test_strict_refuses_only_the_deviating_model(sources, tmp_path):
    with pytest.raises(ModelportError, match=f"{DEVIATION}: on a fixed input"):
        modelport.convert("albert", sources[ERF], "keras", tmp_path / "strict", strict=True)
    modelport.convert("albert", sources[TANH], "keras", tmp_path / "agrees", strict=True)


def test_preset_layout_is_what_keras_hub_saves(presets, tmp_path):
    preset, _ = presets[(TANH, False)]
    assert h5_datasets(preset / "model.weights.h5") == reference_datasets(preset, tmp_path)


@pytest.mark.parametrize("exact, activation", [(True, ERF), (False, TANH)])
def test_round_trip_is_bit_exact(sources, presets, tmp_path, exact, activation):
    out = tmp_path / "back"
    report = modelport.convert("albert", presets[(ERF, exact)][0], "safetensors", out)
    assert report.model_class == "AlbertModel"
    assert assert_same_tensors(out, sources[ERF], prefix="albert.") == 41
    config = json.loads((out / "config.json").read_text())
    assert config["hidden_act"] == activation
    assert (config["num_hidden_groups"], config["inner_group_num"], config["embedding_size"]) == (2, 1, 16)
    assert (out / "spiece.model").read_bytes() == (sources[ERF] / "spiece.model").read_bytes()


def test_sentencepiece_tokenizer_travels(sources, presets):
    """The preset carries the sentencepiece model; KerasHub's AlbertTokenizer gives transformers' ids on text
    that transformers' lowercasing leaves alone, and the conversion says that it does not lowercase."""
    preset, report = presets[(TANH, False)]
    assert (preset / "assets/tokenizer/vocabulary.spm").read_bytes() == (sources[TANH] / "spiece.model").read_bytes()
    tokenizer = keras_hub.models.Tokenizer.from_preset(str(preset))
    assert type(tokenizer).__name__ == "AlbertTokenizer"
    expected = transformers.AutoTokenizer.from_pretrained(sources[TANH])
    text = "hello world this is a lite bert"
    ids = expected(text, add_special_tokens=False)["input_ids"]
    assert keras.ops.convert_to_numpy(tokenizer(text)).tolist() == ids and len(ids) > 3
    titled = expected(text.title(), add_special_tokens=False)["input_ids"]
    assert keras.ops.convert_to_numpy(tokenizer(text.title())).tolist() != titled
    assert any("KerasHub's AlbertTokenizer runs the sentencepiece model on the text as given" in n
               for n in report.notes)


def test_exact_preset_loads_with_keras_hub_task_classes(presets):
    classifier = keras_hub.models.TextClassifier.from_preset(str(presets[(ERF, True)][0]), num_classes=2)
    assert type(classifier.backbone).__name__ == "ExactAlbertBackbone" and classifier.backbone.hidden_act == ERF


def test_several_inner_layers_per_group_are_refused(tmp_path):
    source = make_hf_albert(tmp_path / "hf", inner_group_num=2)
    with pytest.raises(ModelportError, match=r"modelport writes KerasHub's AlbertBackbone only where "
                                             r"inner_group_num == 1 \(the model has inner_group_num=2\)"):
        modelport.convert("albert", source, "keras", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_google_chinese_release_carries_its_wordpiece_vocabulary(tmp_path):
    """Google's Chinese ALBERT releases ship a WordPiece vocabulary, which KerasHub reads as a BertTokenizer."""
    from albert_checkpoints import TINY_ALBERT, make_tf1_albert

    source = make_tf1_albert(tmp_path / "zh", {**TINY_ALBERT, "inner_group_num": 1}, tokenizer="wordpiece")
    report = modelport.convert("albert", source, "keras", tmp_path / "out")
    assert any("vocab_chinese.txt is a WordPiece vocabulary" in n for n in report.notes)
    tokenizer = keras_hub.models.Tokenizer.from_preset(str(tmp_path / "out"))
    assert type(tokenizer).__name__ == "BertTokenizer"
    assert keras.ops.convert_to_numpy(tokenizer("the model 中文")).tolist() == [5, 7, 11, 12]
