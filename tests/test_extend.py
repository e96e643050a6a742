"""Position extension: outputs of short inputs are bit-identical before and after, the new rows follow each
method's formula (recomputed here independently), long inputs run in transformers, bad requests fail in one line."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

import modelport
from conftest import TINY_BERT, hf_outputs, make_hf_bert, sample_batch, tf_load
from modelport.converters.positions import extend_table
from modelport.mappings import MAPPINGS, bert
from modelport.mappings.base import PositionTable
from reference import google_bert
from test_cli import assert_one_line_error, run

pytest.importorskip("tensorflow")
pytest.importorskip("transformers")

N_TRAINED = TINY_BERT["max_position_embeddings"]  # 64
LONG = 4 * N_TRAINED
TABLE = "bert.embeddings.position_embeddings.weight"


def safetensors_tensors(folder) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    return load_file(folder / "model.safetensors")


def assert_bit_identical(actual: dict, expected: dict) -> None:
    assert actual.keys() == expected.keys()
    for key, value in expected.items():
        assert actual[key].dtype == value.dtype and actual[key].tobytes() == value.tobytes(), key


def expected_rows(trained: np.ndarray, positions: int, method: str, alpha: float = 0.4) -> np.ndarray:
    """Each method written from its description, independently of modelport (float64)."""
    p = trained.astype(np.float64)
    n = len(p)
    ids = np.arange(positions)
    if method == "hierarchical":  # bert4keras: gather u at position_ids // n and position_ids % n
        u = (p - alpha * p[:1]) / (1 - alpha)
        return alpha * u[ids // n] + (1 - alpha) * u[ids % n]
    if method == "copy":
        return p[ids % n]
    grid = np.linspace(0, n - 1, positions)
    return np.stack([np.interp(grid, np.arange(n), p[:, c]) for c in range(p.shape[1])], axis=1)


@pytest.mark.parametrize("method", ["hierarchical", "copy"])
def test_short_inputs_are_bit_identical(hf_bert, tmp_path, method):
    report = modelport.extend(hf_bert, LONG, method, out=tmp_path / "long")
    assert any(f"{N_TRAINED} -> {LONG}" in note for note in report.notes)
    for length in (12, N_TRAINED):
        ids, segments = sample_batch(TINY_BERT, length=length)
        assert_bit_identical(hf_outputs(tmp_path / "long", ids, segments), hf_outputs(hf_bert, ids, segments))


def test_tf1_source_to_safetensors_is_bit_identical_for_short_inputs(tf1_bert, tmp_path):
    modelport.convert("bert", tf1_bert, "safetensors", tmp_path / "plain")
    modelport.convert("bert", tf1_bert, "safetensors", tmp_path / "long", positions=LONG)
    ids, segments = sample_batch(TINY_BERT, length=N_TRAINED)
    assert_bit_identical(hf_outputs(tmp_path / "long", ids, segments), hf_outputs(tmp_path / "plain", ids, segments))


@pytest.mark.parametrize("method", ["hierarchical", "copy", "interpolate"])
def test_rows_follow_the_formula_and_nothing_else_changes(hf_bert, tmp_path, method):
    modelport.convert("bert", hf_bert, "safetensors", tmp_path / "plain")
    report = modelport.extend(hf_bert, LONG, method, out=tmp_path / "long")
    plain, long = safetensors_tensors(tmp_path / "plain"), safetensors_tensors(tmp_path / "long")
    trained, table = plain.pop(TABLE), long.pop(TABLE)
    assert_bit_identical(long, plain)
    assert table.shape == (LONG, trained.shape[1]) and table.dtype == trained.dtype
    np.testing.assert_allclose(table, expected_rows(trained, LONG, method), rtol=0, atol=1e-6)
    if method == "interpolate":
        assert not np.array_equal(table[:N_TRAINED], trained)
        assert any("differ from the original model even for short inputs" in note for note in report.notes)
    else:
        assert table[:N_TRAINED].tobytes() == trained.tobytes()
    configs = [json.loads((tmp_path / name / "config.json").read_text()) for name in ("plain", "long")]
    assert configs[1].pop("max_position_embeddings") == LONG
    configs[0].pop("max_position_embeddings")
    assert configs[1] == configs[0]
    assert json.loads((tmp_path / "long" / "tokenizer_config.json").read_text())["model_max_length"] == LONG


def test_alpha_changes_the_hierarchical_rows(hf_bert, tmp_path):
    modelport.extend(hf_bert, LONG, alpha=0.25, out=tmp_path / "long")
    trained = safetensors_tensors(hf_bert)[TABLE]
    table = safetensors_tensors(tmp_path / "long")[TABLE]
    np.testing.assert_allclose(table, expected_rows(trained, LONG, "hierarchical", 0.25), rtol=0, atol=1e-6)
    assert np.abs(table - expected_rows(trained, LONG, "hierarchical", 0.4)).max() > 1e-3


@pytest.mark.parametrize("method", ["hierarchical", "copy", "interpolate"])
def test_long_input_runs_in_transformers(hf_bert, tmp_path, method):
    import torch
    from transformers import AutoModelForPreTraining, AutoTokenizer

    modelport.extend(hf_bert, LONG, method, out=tmp_path / "long")
    model = AutoModelForPreTraining.from_pretrained(tmp_path / "long", dtype=torch.float32).eval()
    assert model.bert.embeddings.position_ids.shape[-1] == LONG
    assert AutoTokenizer.from_pretrained(tmp_path / "long").model_max_length == LONG
    ids, segments = sample_batch(TINY_BERT, length=LONG)
    with torch.no_grad():
        out = model(input_ids=torch.from_numpy(ids), token_type_ids=torch.from_numpy(segments))
    assert out.prediction_logits.shape == (2, LONG, TINY_BERT["vocab_size"])
    assert torch.isfinite(out.prediction_logits).all()


def test_tf1_stays_tf1_and_long_inputs_match_the_reference(tf1_bert, tmp_path):
    """TF1 in, TF1 out (read back by TensorFlow); Google's forward on it at N tokens agrees with transformers'
    on the same model converted to safetensors, and at n tokens with the original checkpoint."""
    modelport.extend(tf1_bert, LONG, out=tmp_path / "long")
    names = {p.name for p in (tmp_path / "long").iterdir()}
    assert {"bert_config.json", "bert_model.ckpt.index", "checkpoint", "vocab.txt"} <= names
    assert not names & {"config.json", "model.safetensors", "pytorch_model.bin"}
    config = json.loads((tmp_path / "long" / "bert_config.json").read_text())
    assert config == dict(TINY_BERT, max_position_embeddings=LONG)
    original, extended = tf_load(tf1_bert / "bert_model.ckpt"), tf_load(tmp_path / "long" / "bert_model.ckpt")
    name = "bert/embeddings/position_embeddings"
    assert extended[name].shape == (LONG, TINY_BERT["hidden_size"])
    assert extended[name][:N_TRAINED].tobytes() == original[name].tobytes()
    assert all(extended[k].tobytes() == original[k].tobytes() for k in extended if k != name)

    ids, segments = sample_batch(TINY_BERT, length=N_TRAINED)
    short = google_bert(extended, config, ids, segments)
    assert_bit_identical(short, google_bert(original, TINY_BERT, ids, segments))

    modelport.convert("bert", tmp_path / "long", "safetensors", tmp_path / "hf")
    ids, segments = sample_batch(TINY_BERT, length=LONG)
    expected = google_bert(extended, config, ids, segments)
    for key, value in hf_outputs(tmp_path / "hf", ids, segments).items():
        np.testing.assert_allclose(value, expected[key], atol=1e-5, rtol=0, err_msg=key)


OTHER_MODELS = {  # transformers class, config class, config: other mappings that declare a position table
    "cpm": ("GPT2LMHeadModel", "GPT2Config",
            dict(n_embd=16, n_layer=1, n_head=2, vocab_size=50, n_positions=32, n_ctx=32, bos_token_id=7,
                 eos_token_id=7)),
    "albert": ("AlbertForPreTraining", "AlbertConfig",
               dict(vocab_size=50, embedding_size=8, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                    intermediate_size=20, max_position_embeddings=32)),
    "electra": ("ElectraForPreTraining", "ElectraConfig",
                dict(vocab_size=50, embedding_size=8, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=20, max_position_embeddings=32)),
}


@pytest.mark.parametrize("arch", OTHER_MODELS)
def test_other_architectures_extend_through_their_mapping(tmp_path, arch):
    """Nothing in the engine names BERT: every mapping's PositionTable says where its positions live."""
    import torch
    import transformers

    class_name, config_name, fields = OTHER_MODELS[arch]
    torch.manual_seed(0)
    model = getattr(transformers, class_name)(getattr(transformers, config_name)(**fields)).eval()
    model.save_pretrained(tmp_path / "src")
    table = MAPPINGS[arch].positions
    modelport.extend(tmp_path / "src", 128, out=tmp_path / "long")
    config = json.loads((tmp_path / "long" / "config.json").read_text())
    assert config[table.config_field] == 128
    assert all(config[alias] == 128 for alias in table.aliases)  # GPT-2's n_ctx too, which the source states
    long = getattr(transformers, class_name).from_pretrained(tmp_path / "long").eval()
    ids = torch.from_numpy(np.random.default_rng(0).integers(0, 50, size=(2, 128)))
    with torch.no_grad():
        assert long(input_ids=ids)[0].shape[:2] == (2, 128)
        assert torch.equal(long(input_ids=ids[:, :32])[0], model(input_ids=ids[:, :32])[0])


def test_stored_position_ids_buffer_does_not_keep_the_old_length(tmp_path):
    """Older transformers saved `position_ids`; it is a derived buffer, so the output holds none saying n."""
    from safetensors.numpy import save_file

    source = make_hf_bert(tmp_path / "hf")
    tensors = safetensors_tensors(source)
    tensors["bert.embeddings.position_ids"] = np.arange(N_TRAINED, dtype=np.int64)[None]
    save_file(tensors, source / "model.safetensors", metadata={"format": "pt"})
    modelport.extend(source, LONG, out=tmp_path / "long")
    assert "bert.embeddings.position_ids" not in safetensors_tensors(tmp_path / "long")


@pytest.mark.parametrize("method", ["hierarchical", "copy", "interpolate"])
def test_reserved_rows_are_kept(method):
    """RoBERTa-style tables: 2 leading rows (padding offset) stay, the trained rows after them are extended."""
    rng = np.random.default_rng(0)
    table = rng.normal(size=(2 + 10, 4)).astype(np.float32)
    extended = extend_table(table, 35, method, reserved=2)
    assert extended.shape == (2 + 35, 4) and extended.dtype == np.float32
    assert extended[:2].tobytes() == table[:2].tobytes()
    np.testing.assert_allclose(extended[2:], expected_rows(table[2:], 35, method), rtol=0, atol=1e-6)
    if method == "copy":
        assert all(extended[k].tobytes() == table[2 + (k - 2) % 10].tobytes() for k in range(2, 37))
    if method != "interpolate":
        assert extended[:12].tobytes() == table.tobytes()


def test_reserved_rows_through_the_engine(hf_bert, tmp_path, monkeypatch):
    """A mapping with reserved rows: N usable positions make a table (and a config field) of reserved + N."""
    offset = dataclasses.replace(bert.MAPPING, arch="bert_offset",
                                 positions=PositionTable(TABLE, "max_position_embeddings", reserved=2))
    monkeypatch.setitem(MAPPINGS, "bert_offset", offset)
    report = modelport.extend(hf_bert, 100, "copy", arch="bert_offset", out=tmp_path / "long")
    assert any(f"{N_TRAINED - 2} -> 100" in note for note in report.notes)
    trained, table = safetensors_tensors(hf_bert)[TABLE], safetensors_tensors(tmp_path / "long")[TABLE]
    assert table.shape[0] == 102 and table[:N_TRAINED].tobytes() == trained.tobytes()
    assert table[N_TRAINED].tobytes() == trained[2].tobytes()
    assert json.loads((tmp_path / "long" / "config.json").read_text())["max_position_embeddings"] == 102


def test_bf16_table_keeps_its_dtype():
    import ml_dtypes

    table = np.random.default_rng(1).normal(size=(8, 3)).astype(ml_dtypes.bfloat16)
    extended = extend_table(table, 64)
    assert extended.dtype == table.dtype and extended[:8].tobytes() == table.tobytes()
    np.testing.assert_allclose(extended.astype(np.float64), expected_rows(table, 64, "hierarchical"), rtol=1e-2)


@pytest.mark.parametrize("args, fragments", [
    (["--positions", str(N_TRAINED)], ["--positions 64", "already has 64 positions"]),
    (["--positions", str(N_TRAINED**2 + 1)], ["--positions 4097", "64^2 = 4096", "--method copy"]),
    (["--positions", str(LONG), "--alpha", "1.5"], ["--alpha 1.5", "0 < alpha < 1"]),
])
def test_bad_requests_fail_in_one_line_and_write_nothing(tf1_bert, tmp_path, args, fragments):
    assert_one_line_error(run("extend", tf1_bert, *args, "-o", tmp_path / "out"), *fragments)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["google_bert"]


@pytest.mark.parametrize("alpha", [0.0, 1.0, -0.4, float("nan")])
def test_alpha_outside_the_open_interval(hf_bert, tmp_path, alpha):
    with pytest.raises(modelport.ModelportError, match="0 < alpha < 1"):
        modelport.extend(hf_bert, LONG, alpha=alpha, out=tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_model_without_learned_positions(tmp_path):
    """T5 has relative position buckets, no table to extend: one line on stderr, non-zero exit, no output."""
    import transformers

    config = transformers.T5Config(vocab_size=50, d_model=16, d_kv=8, d_ff=20, num_layers=1, num_heads=2)
    transformers.T5ForConditionalGeneration(config).save_pretrained(tmp_path / "t5")
    assert_one_line_error(run("extend", tmp_path / "t5", "--positions", LONG, "-o", tmp_path / "out"),
                          "t5 has no learned absolute position table")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t5"]


def test_convert_takes_positions(tf1_bert, tmp_path):
    result = run("convert", "bert", tf1_bert, "--to", "pytorch", "-o", tmp_path / "out", "--positions", LONG,
                 "--method", "copy")
    assert result.returncode == 0, result.stderr
    assert f"positions {N_TRAINED} -> {LONG} (copy)" in result.stderr
    assert json.loads((tmp_path / "out" / "config.json").read_text())["max_position_embeddings"] == LONG
    assert (tmp_path / "out" / "pytorch_model.bin").is_file()
