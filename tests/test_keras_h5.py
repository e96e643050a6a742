"""transformers 4.x's TensorFlow weights (tf_model.h5) <-> transformers 5 (safetensors), for every architecture.

The fixtures in fixtures/keras_h5/ were saved by transformers 4.x's own TF classes (make_fixtures.py), with
their TensorFlow forward outputs: the converted checkpoint must reproduce them in transformers 5 (PyTorch),
and a tf_model.h5 that modelport writes must hold the same variables, in the same groups, bit for bit.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import modelport
from modelport.errors import ModelportError

h5py = pytest.importorskip("h5py")
pytest.importorskip("transformers")

FIXTURES = Path(__file__).parent / "fixtures" / "keras_h5"
ATOL = 1e-5
# A copy TF's code never reads (ALBERT's MLM bias is kept twice): written as the copy it computes with.
UNUSED = {("predictions", "predictions/bias:0"): ("predictions", "predictions/decoder/bias:0")}
# fixture -> (architecture, --part)
CASES = {"bert": ("bert", None), "bert_model": ("bert", None), "albert": ("albert", None),
         "electra": ("electra", None), "electra_generator": ("electra", "generator"), "t5": ("t5", None),
         "t5_tied": ("t5", None), "mt5": ("mt5", None), "gpt2": ("cpm", None)}


def tf_outputs(fixture: str) -> tuple[dict, dict]:
    """The fixture's inputs and TensorFlow outputs."""
    saved = np.load(FIXTURES / fixture / "outputs.npz")
    inputs = {k.split(":", 1)[1]: saved[k].astype(np.int64) for k in saved.files if k.startswith("input:")}
    return inputs, {k: saved[k] for k in saved.files if not k.startswith("input:")}


def transformers_outputs(folder: Path, inputs: dict) -> dict[str, np.ndarray]:
    """transformers 5's forward (PyTorch, float32) on an HF folder, named as the fixtures name TF's outputs."""
    import torch
    import transformers

    config = transformers.AutoConfig.from_pretrained(folder)
    model = getattr(transformers, config.architectures[0]).from_pretrained(folder, dtype=torch.float32).eval()
    with torch.no_grad():
        outputs = model(**{k: torch.from_numpy(v) for k, v in inputs.items()}, output_hidden_states=True)
    result = {key: value.numpy() for key, value in outputs.items() if isinstance(value, torch.Tensor)}
    hidden = outputs.get("decoder_hidden_states") or outputs.get("hidden_states")
    result["last_hidden_state"] = hidden[-1].numpy()
    return result


def assert_matches_tf(folder: Path, fixture: str) -> None:
    inputs, expected = tf_outputs(fixture)
    actual = transformers_outputs(folder, inputs)
    for key, value in expected.items():
        np.testing.assert_allclose(actual[key], value, atol=ATOL, rtol=0, err_msg=f"{fixture}: {key}")


def text(value) -> str:
    """Keras 2 wrote these attributes as bytes, tf-keras as str."""
    return value.decode() if isinstance(value, bytes) else value


def h5_variables(path: Path) -> dict[tuple[str, str], np.ndarray]:
    """Every variable of a single-file tf_model.h5 as (layer group, name without the model name) -> value,
    read as Keras 2 reads it: through the layer_names and weight_names attributes."""
    variables = {}
    with h5py.File(path, "r") as handle:
        for layer in map(text, handle.attrs["layer_names"]):
            for weight in map(text, handle[layer].attrs["weight_names"]):
                variables[(layer, weight.split("/", 1)[1])] = np.asarray(handle[layer][weight])
    return variables


@pytest.fixture(scope="module", params=sorted(CASES))
def converted(request, tmp_path_factory) -> tuple[str, Path]:
    fixture = request.param
    arch, part = CASES[fixture]
    out = tmp_path_factory.mktemp(fixture) / "hf"
    modelport.convert(arch, FIXTURES / fixture, "safetensors", out, part=part)
    return fixture, out


def test_tf_model_h5_converts_to_transformers_exactly(converted):
    fixture, out = converted
    assert_matches_tf(out, fixture)
    original = json.loads((FIXTURES / fixture / "config.json").read_text())
    assert json.loads((out / "config.json").read_text())["architectures"] == [original["architectures"][0]]


def test_written_tf_model_h5_is_what_transformers_writes(converted, tmp_path):
    """Back to tf_model.h5: the same variables in the same layer groups (tied heads' copies of the embeddings
    included), bit for bit, and modelport reads it back into the same model."""
    fixture, hf = converted
    arch, part = CASES[fixture]
    modelport.convert(arch, hf, "keras-h5", tmp_path / "h5")
    original, written = h5_variables(FIXTURES / fixture / "tf_model.h5"), h5_variables(tmp_path / "h5" / "tf_model.h5")
    assert sorted(written) == sorted(original)
    for key, value in original.items():
        value = original[UNUSED.get(key, key)]
        assert written[key].dtype == value.dtype and written[key].tobytes() == value.tobytes(), key
    with h5py.File(tmp_path / "h5" / "tf_model.h5", "r") as handle:
        assert text(handle.attrs["backend"]) == "tensorflow" and "top_level_model_weights" in handle
    written_config = json.loads((tmp_path / "h5" / "config.json").read_text())
    assert written_config["architectures"] == json.loads((hf / "config.json").read_text())["architectures"]
    modelport.convert(arch, tmp_path / "h5", "safetensors", tmp_path / "back", part=part)
    assert_matches_tf(tmp_path / "back", fixture)


def test_albert_reads_the_bias_tf_computes_with():
    """transformers' TF ALBERT keeps the MLM bias twice and adds only `decoder/bias`; the fixture's two copies
    differ, so taking `bias` would break the parity above."""
    variables = h5_variables(FIXTURES / "albert" / "tf_model.h5")
    assert not np.array_equal(variables[("predictions", "predictions/bias:0")],
                              variables[("predictions", "predictions/decoder/bias:0")])


def test_inspect_detects_tf_model_h5():
    result = modelport.inspect(FIXTURES / "bert")
    assert (result["format"], result["arch"], result["layout"]) == ("keras_h5", "bert", "keras_h5")
    actions = {t["name"]: t["action"] for t in result["tensors"]}
    key = "bert/encoder/layer_._1/attention/self/key/kernel"
    assert actions[key] == "-> bert.encoder.layer.1.attention.self.key.weight"
    assert actions["nsp___cls/seq_relationship/kernel"] == "-> cls.seq_relationship.weight"


def test_sharded_tf_model_h5_round_trip(tmp_path):
    """Over --max-shard-size: transformers' sharded layout (each variable once, an index of full names)."""
    modelport.convert("bert", FIXTURES / "bert", "safetensors", tmp_path / "hf")
    report = modelport.convert("bert", tmp_path / "hf", "keras-h5", tmp_path / "sharded", max_shard_size="2KB")
    shards = sorted(f for f in report.files if f.endswith(".h5"))
    assert len(shards) > 1 and "tf_model.h5.index.json" in report.files
    index = json.loads((tmp_path / "sharded" / "tf_model.h5.index.json").read_text())
    assert "tf_bert_for_pre_training/bert/embeddings/word_embeddings/weight:0" in index["weight_map"]
    with h5py.File(tmp_path / "sharded" / shards[0], "r") as handle:
        listed = list(map(text, handle.attrs["layer_names"]))
        assert listed and all(name.endswith(":0") and name in handle for name in listed)
    modelport.convert("bert", tmp_path / "sharded", "safetensors", tmp_path / "back")
    assert_matches_tf(tmp_path / "back", "bert")


def test_bfloat16_is_refused(tmp_path):
    modelport.convert("bert", FIXTURES / "bert", "safetensors", tmp_path / "hf")
    with pytest.raises(ModelportError, match="tf_model.h5 cannot hold bfloat16"):
        modelport.convert("bert", tmp_path / "hf", "keras-h5", tmp_path / "h5", dtype="bfloat16")
    assert not (tmp_path / "h5").exists()


def test_float16_round_trip(tmp_path):
    modelport.convert("bert", FIXTURES / "bert", "keras-h5", tmp_path / "h5", dtype="float16")
    variables = h5_variables(tmp_path / "h5" / "tf_model.h5")
    assert {v.dtype for v in variables.values()} == {np.dtype(np.float16)}
    modelport.convert("bert", tmp_path / "h5", "keras-h5", tmp_path / "again")
    again = h5_variables(tmp_path / "again" / "tf_model.h5")
    assert all(again[k].tobytes() == v.tobytes() for k, v in variables.items())


def test_truncated_file_is_one_line_error(tmp_path):
    folder = tmp_path / "broken"
    folder.mkdir()
    (folder / "tf_model.h5").write_bytes((FIXTURES / "bert" / "tf_model.h5").read_bytes()[:5000])
    with pytest.raises(ModelportError, match="tf_model.h5"):
        modelport.convert("bert", folder, "safetensors", tmp_path / "out")
