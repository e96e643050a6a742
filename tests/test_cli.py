"""The `modelport` command as users run it: real processes, one-line errors, nothing half-written."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import assert_one_line_error, make_hf_bert, make_tf1_bert

pytest.importorskip("tensorflow")


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, COLUMNS="200")
    return subprocess.run([sys.executable, "-m", "modelport", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=300)


def test_convert_prints_summary_and_skipped_state(tf1_bert, tmp_path):
    result = run("convert", "bert", tf1_bert, "--to", "safetensors", "-o", tmp_path / "out")
    assert result.returncode == 0, result.stderr
    assert "skipped training state" in result.stderr and "global_step" in result.stderr
    assert "BertForPreTraining" in result.stderr and "parameters" in result.stderr
    assert (tmp_path / "out" / "model.safetensors").is_file()


def test_quiet_prints_nothing(tf1_bert, tmp_path):
    result = run("convert", "bert", tf1_bert, "-o", tmp_path / "out", "--quiet")
    assert result.returncode == 0 and result.stderr == "" and result.stdout == ""


def test_missing_source(tmp_path):
    assert_one_line_error(run("convert", "bert", tmp_path / "nowhere", "-o", tmp_path / "out"), "no such file")
    assert not (tmp_path / "out").exists()


def test_existing_output_is_refused_then_replaced_with_overwrite(tf1_bert, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert_one_line_error(run("convert", "bert", tf1_bert, "-o", out), "already exists", "--overwrite")
    assert (out / "keep.txt").read_text() == "mine"
    assert run("convert", "bert", tf1_bert, "-o", out, "--overwrite", "-q").returncode == 0
    assert not (out / "keep.txt").exists() and (out / "model.safetensors").is_file()


def test_truncated_checkpoint(tf1_bert, tmp_path):
    data = tf1_bert / "bert_model.ckpt.data-00000-of-00001"
    data.write_bytes(data.read_bytes()[:1000])
    assert_one_line_error(run("convert", "bert", tf1_bert, "-o", tmp_path / "out"), "bert_model.ckpt.data")
    assert not (tmp_path / "out").exists() and list(tmp_path.glob(".out*")) == []


def test_corrupt_tensor_leaves_nothing(tmp_path):
    source = make_tf1_bert(tmp_path / "src", optimizer=False)  # every byte of the data file is a weight
    data = source / "bert_model.ckpt.data-00000-of-00001"
    raw = bytearray(data.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    data.write_bytes(bytes(raw))
    assert_one_line_error(run("convert", "bert", source, "-o", tmp_path / "out"), "checksum")
    assert not (tmp_path / "out").exists() and list(tmp_path.glob(".out*")) == []


def test_architecture_mismatch_says_what_it_is(tmp_path):
    import transformers

    gpt2 = transformers.GPT2LMHeadModel(transformers.GPT2Config(n_embd=16, n_layer=1, n_head=2, vocab_size=50))
    gpt2.save_pretrained(tmp_path / "gpt2")
    assert_one_line_error(run("convert", "bert", tmp_path / "gpt2", "-o", tmp_path / "out"),
                          "does not look like a bert checkpoint", "a cpm checkpoint (hf names")  # GPT-2 names


def test_shape_disagrees_with_config(tf1_bert, tmp_path):
    config = json.loads((tf1_bert / "bert_config.json").read_text())
    (tf1_bert / "bert_config.json").write_text(json.dumps(dict(config, intermediate_size=64)))
    assert_one_line_error(run("convert", "bert", tf1_bert, "-o", tmp_path / "out"),
                          "bert/encoder/layer_0/intermediate/dense/", "intermediate_size")


def test_heads_not_dividing_hidden_size(tf1_bert, tmp_path):
    config = json.loads((tf1_bert / "bert_config.json").read_text())
    (tf1_bert / "bert_config.json").write_text(json.dumps(dict(config, num_attention_heads=5)))
    assert_one_line_error(run("convert", "bert", tf1_bert, "-o", tmp_path / "out"), "num_attention_heads")


def test_unknown_tensor_is_an_error_unless_allowed(tmp_path):
    from conftest import TINY_BERT, google_bert_tensors, tf_save

    folder = make_tf1_bert(tmp_path / "src")
    tensors = google_bert_tensors(TINY_BERT)
    tensors["bert/encoder/layer_0/attention/self/rotary/kernel"] = tensors["bert/pooler/dense/kernel"]
    tf_save(folder / "bert_model.ckpt", tensors)
    assert_one_line_error(run("convert", "bert", folder, "-o", tmp_path / "out"),
                          "bert/encoder/layer_0/attention/self/rotary/kernel", "--allow-unmapped")
    result = run("convert", "bert", folder, "-o", tmp_path / "out", "--allow-unmapped")
    assert result.returncode == 0 and "left out 1 unmapped" in result.stderr


def test_missing_layer_tensor_is_an_error(tmp_path):
    from conftest import TINY_BERT, google_bert_tensors, tf_save

    folder = make_tf1_bert(tmp_path / "src")
    tensors = google_bert_tensors(TINY_BERT)
    del tensors["bert/encoder/layer_1/attention/self/key/bias"]
    tf_save(folder / "bert_model.ckpt", tensors)
    assert_one_line_error(run("convert", "bert", folder, "-o", tmp_path / "out"),
                          "missing", "bert.encoder.layer.1.attention.self.key.bias")


def test_unknown_architecture_and_bad_options(tf1_bert, tmp_path):
    assert_one_line_error(run("convert", "bort", tf1_bert, "-o", tmp_path / "out"), "unknown architecture")
    assert_one_line_error(run("convert", "bert", tf1_bert, "-o", tmp_path / "out", "--max-shard-size", "lots"),
                          "lots")
    assert run("convert", "bert", tf1_bert, "-o", tmp_path / "out", "--to", "onnx").returncode == 2


def test_config_file_that_is_not_json(tf1_bert, tmp_path):
    (tmp_path / "c.json").write_text("{nope")
    assert_one_line_error(run("convert", "bert", tf1_bert, "-o", tmp_path / "out", "--config", tmp_path / "c.json"),
                          "c.json", "not valid JSON")


def test_inspect_json_and_table(tf1_bert):
    result = run("inspect", tf1_bert, "--json")
    assert result.returncode == 0
    data = json.loads(result.stdout)
    assert data["arch"] == "bert" and data["layout"] == "tf1" and data["training_state"] > 0
    table = run("inspect", tf1_bert)
    assert "bert/pooler/dense/kernel" in table.stdout and "bert.pooler.dense.weight" in table.stdout


def test_verify_exit_codes(tmp_path):
    source = make_hf_bert(tmp_path / "hf")
    assert run("convert", "bert", source, "--to", "tf", "-o", tmp_path / "tf", "-q").returncode == 0
    good = run("verify", source, tmp_path / "tf")
    assert good.returncode == 0, good.stderr
    assert "bit-exact" in good.stdout and "prediction_logits" in good.stdout
    other = make_hf_bert(tmp_path / "other", seed=1)
    bad = run("verify", source, other)
    assert bad.returncode == 1 and "differ" in bad.stderr
