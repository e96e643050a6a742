"""transformers / Google ELECTRA <-> KerasHub ElectraBackbone presets (--to keras), checked by running KerasHub
itself. KerasHub's ELECTRA hard-codes the tanh GELU where ELECTRA computes the erf GELU: the conversion says so
with the deviation it measured, and --exact writes a backbone computing the erf GELU. KerasHub's backbone also
holds a pooled_dense ELECTRA lacks, written as the identity with a zero bias and left out when read back."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import modelport
from conftest import vocabulary
from electra_checkpoints import make_hf_electra, make_tf1_electra
from keras_checks import (ATOL, assert_same_tensors, h5_datasets, keras, keras_hub, keras_outputs, largest_difference,
                          reference_datasets, stated_deviation, torch, transformers)
from modelport.errors import ModelportError


DEVIATION = "KerasHub's ElectraBackbone computes hidden_act='gelu_new' where the model has 'gelu'"
POOLED = "KerasHub's ElectraBackbone has a pooled_dense, which ELECTRA lacks"


def make_unprojected(folder: Path) -> Path:
    """An ElectraModel whose embeddings are as wide as its layers (no embeddings_project), with the tanh GELU."""
    torch.manual_seed(9)
    config = transformers.ElectraConfig(vocab_size=99, embedding_size=32, hidden_size=32, num_hidden_layers=2,
                                        num_attention_heads=4, intermediate_size=37, max_position_embeddings=64,
                                        hidden_act="gelu_new", initializer_range=0.2)
    model = transformers.ElectraModel(config).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "LayerNorm" in name:
                param.add_(torch.randn_like(param) * 0.1)
    model.save_pretrained(folder)
    (folder / "vocab.txt").write_text("\n".join(vocabulary(99)) + "\n")
    return folder


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("hf")
    discriminator, generator = make_hf_electra(root / "electra", seed=5)
    return {"discriminator": discriminator, "generator": generator, "unprojected": make_unprojected(root / "plain")}


CASES = [("discriminator", False), ("discriminator", True), ("generator", True), ("unprojected", False)]


@pytest.fixture(scope="module")
def presets(sources, tmp_path_factory) -> dict[tuple[str, bool], tuple[Path, modelport.api.ConversionReport]]:
    root = tmp_path_factory.mktemp("keras")
    return {(name, exact): (root / f"{name}-{exact}",
                            modelport.convert("electra", sources[name], "keras", root / f"{name}-{exact}", exact=exact))
            for name, exact in CASES}


def batch() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(10)
    return rng.integers(0, 99, size=(2, 15)), rng.integers(0, 2, size=(2, 15))


def outputs(preset: Path, source: Path) -> tuple[dict, dict]:
    ids, segments = batch()
    actual = keras_outputs(preset, {"token_ids": ids, "segment_ids": segments, "padding_mask": np.ones_like(ids)})
    model = transformers.ElectraModel.from_pretrained(source, dtype=torch.float32).eval()
    with torch.no_grad():
        state = model(input_ids=torch.from_numpy(ids), token_type_ids=torch.from_numpy(segments)).last_hidden_state
    return actual, {"sequence_output": state.numpy()}


@pytest.mark.parametrize("name, exact", [("discriminator", True), ("generator", True), ("unprojected", False)])
def test_keras_hub_computes_what_transformers_computes(sources, presets, name, exact):
    preset, report = presets[(name, exact)]
    actual, expected = outputs(preset, sources[name])
    assert largest_difference(actual, expected) < ATOL
    assert not [n for n in report.notes if "KerasHub's ElectraBackbone computes" in n]
    backbone = json.loads((preset / "config.json").read_text())
    assert backbone["registered_name"] == ("modelport>ExactElectraBackbone" if exact else "keras_hub>ElectraBackbone")


def test_erf_gelu_deviates_and_says_so(sources, presets):
    preset, report = presets[("discriminator", False)]
    assert largest_difference(*outputs(preset, sources["discriminator"])) > 2 * ATOL
    [note] = [n for n in report.notes if DEVIATION in n]
    assert stated_deviation(note) > 2 * ATOL
    with pytest.raises(ModelportError, match=f"{DEVIATION}: on a fixed input"):
        modelport.convert("electra", sources["discriminator"], "keras", preset.parent / "strict", strict=True)


@pytest.mark.parametrize("name", ["discriminator", "unprojected"])
def test_pooled_output_is_tanh_of_the_first_token_and_says_so(presets, sources, name):
    """The pooled_dense is the Dense after the projection when there is one, else the only Dense."""
    preset, report = presets[(name, name == "discriminator")]
    actual, _ = outputs(preset, sources[name])
    np.testing.assert_allclose(actual["pooled_output"], np.tanh(actual["sequence_output"][:, 0]), atol=1e-6, rtol=0)
    assert any(note.startswith(POOLED) for note in report.notes)
    assert "left out the head part(s): --to keras has no place for them" in report.notes or name == "unprojected"


@pytest.mark.parametrize("name", ["discriminator", "unprojected"])
def test_preset_layout_is_what_keras_hub_saves(presets, tmp_path, name):
    preset, _ = presets[(name, False)]
    assert h5_datasets(preset / "model.weights.h5") == reference_datasets(preset, tmp_path)


@pytest.mark.parametrize("name, exact, pooled", [("discriminator", True, "layers/dense_1"),
                                                 ("generator", True, "layers/dense_1"),
                                                 ("unprojected", False, "layers/dense")])
def test_round_trip_is_bit_exact_and_leaves_the_pooled_dense_out(sources, presets, tmp_path, name, exact, pooled):
    out = tmp_path / "back"
    report = modelport.convert("electra", presets[(name, exact)][0], "safetensors", out)
    assert report.model_class == "ElectraModel"
    assert assert_same_tensors(out, sources[name], prefix="" if name == "unprojected" else "electra.") == \
        (37 if name == "unprojected" else 39)
    assert f"left out {pooled}/vars/0, {pooled}/vars/1, which the keras layout holds and the electra model lacks" \
        in report.notes
    config = json.loads((out / "config.json").read_text())
    assert config["hidden_act"] == ("gelu" if exact else "gelu_new")
    source = json.loads((sources[name] / "config.json").read_text())
    for key in ("embedding_size", "hidden_size", "num_attention_heads", "intermediate_size", "num_hidden_layers"):
        assert config[key] == source[key], key


def test_tokenizer_travels(sources, presets):
    preset, _ = presets[("discriminator", True)]
    tokenizer = keras_hub.models.Tokenizer.from_preset(str(preset))
    assert type(tokenizer).__name__ == "ElectraTokenizer"
    text = "Hello world, the Model ports"
    expected = transformers.AutoTokenizer.from_pretrained(sources["discriminator"])(text, add_special_tokens=False)
    assert keras.ops.convert_to_numpy(tokenizer(text)).tolist() == expected["input_ids"]


def test_google_release_to_keras_hub_computes_what_transformers_computes(tmp_path):
    """Google's TF1 pretraining checkpoint straight to a preset (--exact): KerasHub computes what transformers
    computes on the same checkpoint converted to safetensors."""
    source = make_tf1_electra(tmp_path / "google")
    modelport.convert("electra", source, "keras", tmp_path / "keras", exact=True)
    modelport.convert("electra", source, "safetensors", tmp_path / "hf")
    assert largest_difference(*outputs(tmp_path / "keras", tmp_path / "hf")) < ATOL


def test_one_preset_holds_one_network(sources, tmp_path):
    with pytest.raises(ModelportError, match="--with: one transformers folder or KerasHub preset holds one network"):
        modelport.convert("electra", sources["discriminator"], "keras", tmp_path / "out",
                          with_parts={"generator": sources["generator"]})


def test_inspect_tells_the_pooled_dense_from_the_projection(presets):
    """`layers/dense` is the embedding projection when there is one, else KerasHub's pooled_dense."""
    for name, exact, expected in (("discriminator", True, "-> electra.embeddings_project.weight"),
                                  ("unprojected", False, "not in the model")):
        result = modelport.inspect(presets[(name, exact)][0], arch="electra")
        assert {t["name"]: t["action"] for t in result["tensors"]}["layers/dense/vars/0"] == expected
