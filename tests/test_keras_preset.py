"""transformers <-> KerasHub presets (--to keras), checked by running KerasHub itself: its backbone on the preset
modelport writes must compute what transformers computes on the same weights, except where KerasHub's
backbone hard-codes something else (BERT's tanh GELU for an erf-GELU model), which the conversion must say,
with the deviation it measured; --strict refuses, --exact writes a backbone that computes the model's.

The MLM head travels as BertMaskedLM's (task.json, task.weights.h5), whose head hard-codes the erf GELU and
LayerNorm epsilon 1e-5: no BERT computes both KerasHub's tanh-GELU encoder and that head, so the plain preset's
BertMaskedLM always deviates somewhat, which the conversion says; --exact's computes the model's."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import modelport
from conftest import make_hf_bert, vocabulary
from keras_checks import assert_same_tensors, keras, keras_hub, torch, transformers
from modelport.errors import ModelportError


ATOL = 1e-4  # KerasHub computes attention and LayerNorm in other orders than torch does
TANH, ERF = "gelu_new", "gelu"
DEVIATION = "KerasHub's BertBackbone computes hidden_act='gelu_new' where the model has 'gelu'"
HEAD_DEVIATION = ("KerasHub's BertMaskedLM head computes hidden_act='gelu' where the model has 'gelu_new', "
                  "layer_norm_eps=1e-05 where the model has 1e-12")


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> dict[str, Path]:
    """transformers BERTs saved by save_pretrained (with their tokenizer), one per GELU."""
    root = tmp_path_factory.mktemp("hf")
    return {act: make_hf_bert(root / act, hidden_act=act, seed=3) for act in (TANH, ERF)}


@pytest.fixture(scope="module")
def presets(sources, tmp_path_factory) -> dict[tuple[str, bool], tuple[Path, modelport.api.ConversionReport]]:
    root = tmp_path_factory.mktemp("keras")
    return {(act, exact): (root / f"{act}-{exact}",
                           modelport.convert("bert", sources[act], "keras", root / f"{act}-{exact}", exact=exact))
            for act in (TANH, ERF) for exact in (False, True)}


def batch(seed: int = 5) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 99, size=(2, 11)), rng.integers(0, 2, size=(2, 11))


def keras_outputs(preset: Path) -> dict[str, np.ndarray]:
    ids, segments = batch()
    backbone = keras_hub.models.Backbone.from_preset(str(preset))
    outputs = backbone({"token_ids": ids, "segment_ids": segments, "padding_mask": np.ones_like(ids)})
    return {key: keras.ops.convert_to_numpy(value) for key, value in outputs.items()}


def transformers_outputs(folder: Path) -> dict[str, np.ndarray]:
    ids, segments = batch()
    model = transformers.BertModel.from_pretrained(folder, dtype=torch.float32).eval()
    with torch.no_grad():
        outputs = model(input_ids=torch.from_numpy(ids), token_type_ids=torch.from_numpy(segments))
    return {"sequence_output": outputs.last_hidden_state.numpy(), "pooled_output": outputs.pooler_output.numpy()}


def largest_difference(preset: Path, source: Path) -> float:
    actual, expected = keras_outputs(preset), transformers_outputs(source)
    return max(float(np.abs(actual[key] - expected[key]).max()) for key in expected)


@pytest.mark.parametrize("act, exact", [(TANH, False), (TANH, True), (ERF, True)])
def test_keras_hub_computes_what_transformers_computes(sources, presets, act, exact):
    preset, _ = presets[(act, exact)]
    assert largest_difference(preset, sources[act]) < ATOL
    backbone = json.loads((preset / "config.json").read_text())
    assert backbone["registered_name"] == ("modelport>ExactBertBackbone" if exact else "keras_hub>BertBackbone")


def test_erf_model_in_keras_hubs_backbone_deviates_and_says_so(sources, presets):
    """The parity check can fail: KerasHub's own BertBackbone (tanh GELU) on an erf-GELU model."""
    preset, report = presets[(ERF, False)]
    measured = largest_difference(preset, sources[ERF])
    assert measured > 2 * ATOL
    [note] = [n for n in report.notes if DEVIATION in n]
    stated = float(note.split("by up to ")[1].split(" ")[0])
    assert stated > 2 * ATOL and "--exact" in note and "--strict" in note


@pytest.mark.parametrize("act, exact", [(TANH, False), (TANH, True), (ERF, True)])
def test_no_deviation_note_when_the_backbone_computes_the_model(presets, act, exact):
    _, report = presets[(act, exact)]
    assert not [n for n in report.notes if "KerasHub's BertBackbone" in n]
    assert bool([n for n in report.notes if "KerasHub's BertMaskedLM head computes" in n]) is not exact
    assert "left out the nsp part(s): --to keras has no place for them" in report.notes


def test_strict_refuses_a_deviating_backbone(sources, tmp_path):
    with pytest.raises(ModelportError, match=f"{DEVIATION}: on a fixed input its outputs differ .* --exact"):
        modelport.convert("bert", sources[ERF], "keras", tmp_path / "strict", strict=True)
    assert not (tmp_path / "strict").exists()
    with pytest.raises(ModelportError, match=f"{HEAD_DEVIATION}: on a fixed input"):  # the head, even for tanh
        modelport.convert("bert", sources[TANH], "keras", tmp_path / "strict", strict=True)
    encoder = make_hf_bert(tmp_path / "encoder", model_class="BertModel", hidden_act=TANH)
    modelport.convert("bert", encoder, "keras", tmp_path / "agrees", strict=True)
    assert (tmp_path / "agrees" / "model.weights.h5").is_file()
    modelport.convert("bert", sources[ERF], "keras", tmp_path / "exact", strict=True, exact=True)


def test_preset_layout_is_what_keras_hub_saves(presets, tmp_path):
    """The weights file holds exactly the datasets, shapes and dtypes KerasHub's own save_to_preset writes for
    a BertBackbone of the same config."""
    import h5py

    preset, _ = presets[(TANH, False)]
    config = json.loads((preset / "config.json").read_text())["config"]
    reference = keras_hub.models.BertBackbone(**{k: v for k, v in config.items() if k not in ("name", "trainable",
                                                                                              "dtype")})
    reference.save_to_preset(str(tmp_path / "reference"))

    def datasets(path: Path) -> dict[str, tuple]:
        found = {}
        with h5py.File(path, "r") as handle:
            handle.visititems(lambda name, item: found.update({name: (item.shape, item.dtype)})
                              if hasattr(item, "shape") else None)
        return found

    assert datasets(preset / "model.weights.h5") == datasets(tmp_path / "reference" / "model.weights.h5")


def test_round_trip_is_bit_exact(sources, presets, tmp_path):
    """KerasHub -> transformers: the exact preset gives back the source's tensors and activation; the plain one
    the same tensors, described as what it computes (the tanh GELU). With the MLM head: BertForMaskedLM, with
    the pooler KerasHub's backbone holds (which transformers' class ignores)."""
    for exact, activation in ((True, ERF), (False, TANH)):
        out = tmp_path / f"back-{exact}"
        report = modelport.convert("bert", presets[(ERF, exact)][0], "safetensors", out)
        assert report.model_class == "BertForMaskedLM"
        assert assert_same_tensors(out, sources[ERF]) == 44
        if exact:  # transformers' BertForMaskedLM computes the source's MLM logits from it
            ids, segments = batch()
            model = transformers.BertForMaskedLM.from_pretrained(out, dtype=torch.float32).eval()
            with torch.no_grad():
                logits = model(input_ids=torch.from_numpy(ids), token_type_ids=torch.from_numpy(segments)).logits
            np.testing.assert_allclose(logits.numpy(), transformers_mlm_logits(sources[ERF]), atol=1e-5, rtol=0)
        assert json.loads((out / "config.json").read_text())["hidden_act"] == activation
        assert json.loads((out / "tokenizer_config.json").read_text())["do_lower_case"] is True


def test_tokenizer_travels(sources, presets):
    preset, _ = presets[(ERF, True)]
    assert (preset / "assets" / "tokenizer" / "vocabulary.txt").read_text().splitlines() == vocabulary(99)
    text = "Hello world, the model ports"
    expected = transformers.BertTokenizer.from_pretrained(sources[ERF])(text, add_special_tokens=False)["input_ids"]
    tokenizer = keras_hub.models.Tokenizer.from_preset(str(preset))
    assert keras.ops.convert_to_numpy(tokenizer(text)).tolist() == expected


def test_exact_preset_loads_with_keras_hub_task_classes(presets):
    preset, _ = presets[(ERF, True)]
    classifier = keras_hub.models.TextClassifier.from_preset(str(preset), num_classes=3)
    assert type(classifier.backbone).__name__ == "ExactBertBackbone"
    assert classifier.backbone.hidden_act == ERF


def test_inspect_detects_a_preset(presets):
    result = modelport.inspect(presets[(TANH, False)][0])
    assert (result["format"], result["arch"], result["layout"]) == ("keras", "bert", "keras")
    actions = {t["name"]: t["action"] for t in result["tensors"]}
    assert actions["layers/transformer_encoder_1/_self_attention_layer/key_dense/vars/0"] == \
        "-> bert.encoder.layer.1.attention.self.key.weight"


def test_a_checkpoint_without_the_pooler_is_refused(tmp_path):
    source = make_hf_bert(tmp_path / "mlm", model_class="BertForMaskedLM")
    with pytest.raises(ModelportError, match="BertBackbone holds the pooler, which the checkpoint lacks"):
        modelport.convert("bert", source, "keras", tmp_path / "out")


def test_cli_says_so_on_stderr(sources, tmp_path):
    def run(*args):
        return subprocess.run([sys.executable, "-m", "modelport", "convert", "bert", sources[ERF], "--to", "keras",
                               *map(str, args)], capture_output=True, text=True, timeout=300)

    warned = run("-o", tmp_path / "plain", "--quiet")
    assert warned.returncode == 0, warned.stderr
    assert f"note: {DEVIATION}: on a fixed input its outputs differ from the model's by up to" in warned.stderr
    refused = run("-o", tmp_path / "strict", "--strict")
    assert refused.returncode == 1 and f"error: {DEVIATION}" in refused.stderr
    assert "Traceback" not in refused.stderr and not (tmp_path / "strict").exists()
    wrong = run("-o", tmp_path / "h5", "--exact", "--to", "keras-h5")
    assert wrong.returncode == 1 and "error: --exact applies to --to keras" in wrong.stderr


def masked_lm_logits(preset: Path) -> tuple[np.ndarray, str]:
    """KerasHub's MaskedLM from the preset (its task.json), every position masked, and its class."""
    ids, segments = batch()
    task = keras_hub.models.MaskedLM.from_preset(str(preset), preprocessor=None)
    positions = np.broadcast_to(np.arange(ids.shape[1]), ids.shape)
    logits = task({"token_ids": ids, "segment_ids": segments, "padding_mask": np.ones_like(ids),
                   "mask_positions": positions})
    return keras.ops.convert_to_numpy(logits), type(task).__name__


def transformers_mlm_logits(folder: Path) -> np.ndarray:
    ids, segments = batch()
    model = transformers.BertForPreTraining.from_pretrained(folder, dtype=torch.float32).eval()
    with torch.no_grad():
        outputs = model(input_ids=torch.from_numpy(ids), token_type_ids=torch.from_numpy(segments))
    return outputs.prediction_logits.numpy()


@pytest.mark.parametrize("act", [TANH, ERF])
def test_exact_masked_lm_computes_the_pretrained_head(sources, presets, act):
    logits, task_class = masked_lm_logits(presets[(act, True)][0])
    assert task_class == "ExactBertMaskedLM"
    np.testing.assert_allclose(logits, transformers_mlm_logits(sources[act]), atol=ATOL, rtol=0)


@pytest.mark.parametrize("act, differing", [(TANH, HEAD_DEVIATION),
                                            (ERF, "KerasHub's BertMaskedLM head computes layer_norm_eps=1e-05 "
                                                  "where the model has 1e-12")])
def test_keras_hub_masked_lm_head_deviates_and_says_so(sources, presets, act, differing):
    """KerasHub's BertMaskedLM carries the pretrained head, computed with its own GELU and epsilon."""
    preset, report = presets[(act, False)]
    logits, task_class = masked_lm_logits(preset)
    assert task_class == "BertMaskedLM"
    measured = float(np.abs(logits - transformers_mlm_logits(sources[act])).max())
    [note] = [n for n in report.notes if differing in n]
    stated = float(note.split("by up to ")[1].split(" ")[0])
    assert measured > 2 * ATOL and 1 / 3 < stated / measured < 3  # measured on another input: the same order


def test_task_weights_are_what_keras_hub_saves(presets, tmp_path):
    from keras_checks import h5_datasets

    preset, _ = presets[(TANH, False)]
    task = keras_hub.models.MaskedLM.from_preset(str(preset))
    task.save_to_preset(str(tmp_path / "reference"))
    written, saved = (h5_datasets(path) for path in (preset / "task.weights.h5",
                                                       tmp_path / "reference" / "task.weights.h5"))
    # (the optimizer's step counter is int64 under Keras's TensorFlow backend, int32 under torch)
    assert {k: v[0] for k, v in written.items()} == {k: v[0] for k, v in saved.items()}
    assert {k: v for k, v in written.items() if "optimizer" not in k} == \
        {k: v for k, v in saved.items() if "optimizer" not in k}
    assert task.preprocessor.sequence_length == 64
    assert keras.ops.convert_to_numpy(task.preprocessor.tokenizer("the model")).tolist() == [5, 7]


def test_a_preset_passes_the_push_checks(presets):
    """push validates a preset's own tokenizer files (tokenizer.json and its assets), not transformers'."""
    preset, _ = presets[("gelu_new", False)]
    result = modelport.push(preset, "someone/tiny-bert-keras", dry_run=True)
    assert "tokenizer.json" in result.files


TENSORFLOW_BACKEND_RUN = """
import json, sys
import numpy as np
import modelport, keras, keras_hub
assert keras.config.backend() == "tensorflow"
ids, segments = (np.array(json.loads(arg)) for arg in sys.argv[2:4])
backbone = keras_hub.models.Backbone.from_preset(sys.argv[1])
outputs = backbone({"token_ids": ids, "segment_ids": segments, "padding_mask": np.ones_like(ids)})
np.savez(sys.argv[4], **{key: keras.ops.convert_to_numpy(value) for key, value in outputs.items()})
"""


def test_an_exact_preset_computes_the_model_under_the_tensorflow_backend(sources, presets, tmp_path):
    """Keras's default backend is TensorFlow (these tests pin torch): a preset with modelport's exact backbone
    loads there after `import modelport` and computes what transformers computes."""
    pytest.importorskip("tensorflow")
    preset, _ = presets[(ERF, True)]
    ids, segments = batch()
    env = {**os.environ, "KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run([sys.executable, "-c", TENSORFLOW_BACKEND_RUN, str(preset), json.dumps(ids.tolist()),
                             json.dumps(segments.tolist()), str(tmp_path / "outputs.npz")],
                            env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    outputs, expected = np.load(tmp_path / "outputs.npz"), transformers_outputs(sources[ERF])
    for key, value in expected.items():
        assert float(np.abs(outputs[key] - value).max()) < ATOL, key
