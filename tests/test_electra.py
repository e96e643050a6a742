"""ELECTRA end to end: Google's pretraining checkpoint (discriminator and generator in one file) <->
transformers ElectraForPreTraining / ElectraForMaskedLM, checked by forward parity against an independent
reference written from Google's code and by bit-exact round trips."""

from __future__ import annotations

import json

import numpy as np
import pytest

import modelport
from conftest import sample_batch, tf_load, tf_save
from electra_checkpoints import (DISCRIMINATOR, GENERATOR, TINY_HPARAMS, google_electra_tensors, hf_electra_outputs,
                                 make_hf_electra, make_tf1_electra)
from reference import ELECTRA_ACTIVATIONS, gelu_tanh, google_electra
from test_cli import assert_one_line_error, run

pytest.importorskip("tensorflow")
pytest.importorskip("transformers")

ATOL = 1e-5
NETWORKS = {"discriminator": DISCRIMINATOR, "generator": GENERATOR}
CLASSES = {"discriminator": "ElectraForPreTraining", "generator": "ElectraForMaskedLM"}


def assert_close(actual: dict, expected: dict):
    assert set(actual) <= set(expected)
    for key, value in actual.items():
        np.testing.assert_allclose(value, expected[key], atol=ATOL, rtol=0, err_msg=key)


def weights(prefix) -> dict[str, np.ndarray]:
    return {k: v for k, v in tf_load(prefix).items()
            if not (k.endswith(("adam_m", "adam_v")) or k in ("global_step", "temperature"))}


def safetensors_tensors(folder):
    from safetensors.numpy import load_file

    return {k: v for file in sorted(folder.glob("*.safetensors")) for k, v in load_file(file).items()}


@pytest.fixture
def tf1_electra(tmp_path):
    return make_tf1_electra(tmp_path / "electra_small")


@pytest.mark.parametrize("to", ["safetensors", "pytorch"])
@pytest.mark.parametrize("part", ["discriminator", "generator"])
def test_google_checkpoint_to_transformers_matches_reference(tf1_electra, tmp_path, part, to):
    out = tmp_path / "out"
    report = modelport.convert("electra", tf1_electra, to, out, part=part)
    assert report.model_class == CLASSES[part]
    other = "generator" if part == "discriminator" else "discriminator"
    assert any(f"--part {other}" in note for note in report.notes)
    assert "temperature" in report.training_state and "global_step" in report.training_state
    config = json.loads((out / "config.json").read_text())
    network = NETWORKS[part]
    assert config["hidden_act"] == "gelu" and config["layer_norm_eps"] == 1e-12
    for key in ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "embedding_size"):
        assert config[key] == network[key], key
    ids, segments = sample_batch(network)
    assert_close(hf_electra_outputs(out, ids, segments),
                 google_electra(tf_load(tf1_electra / "model.ckpt"), network, ids, segments, part))


def test_discriminator_is_the_default_part(tf1_electra, tmp_path):
    report = modelport.convert("electra", tf1_electra, "safetensors", tmp_path / "out")
    assert report.model_class == "ElectraForPreTraining"


def test_parity_catches_activation_and_kernel_mistakes(tf1_electra, tmp_path):
    """ELECTRA's gelu is the erf form: the tanh one (BERT's), or an untransposed kernel, moves the outputs far
    beyond the tolerance."""
    import shutil

    from safetensors.numpy import save_file

    modelport.convert("electra", tf1_electra, "safetensors", tmp_path / "out")
    ids, segments = sample_batch(DISCRIMINATOR)
    tensors = tf_load(tf1_electra / "model.ckpt")
    expected = google_electra(tensors, DISCRIMINATOR, ids, segments)
    wrong = google_electra(tensors, DISCRIMINATOR, ids, segments,
                           activations=dict(ELECTRA_ACTIVATIONS, gelu=gelu_tanh))
    actual = hf_electra_outputs(tmp_path / "out", ids, segments)
    assert_close(actual, expected)
    assert np.abs(actual["discriminator_logits"] - wrong["discriminator_logits"]).max() > 10 * ATOL
    shutil.copytree(tmp_path / "out", tmp_path / "untransposed")
    tensors = safetensors_tensors(tmp_path / "out")
    key = "electra.encoder.layer.0.attention.self.key.weight"
    tensors[key] = np.ascontiguousarray(tensors[key].T)
    save_file(tensors, tmp_path / "untransposed" / "model.safetensors", metadata={"format": "pt"})
    broken = hf_electra_outputs(tmp_path / "untransposed", ids, segments)
    assert np.abs(broken["discriminator_logits"] - expected["discriminator_logits"]).max() > 10 * ATOL


def test_release_without_hparams_infers_sizes_and_heads(tmp_path):
    """Google's releases carry no config: sizes come from the shapes, heads are max(1, hidden // 64)."""
    source = make_tf1_electra(tmp_path / "release", hparams=None)
    for part, network in NETWORKS.items():
        out = tmp_path / part
        modelport.convert("electra", source, "safetensors", out, part=part)
        config = json.loads((out / "config.json").read_text())
        assert config["num_attention_heads"] == max(1, network["hidden_size"] // 64) == network["num_attention_heads"]
        ids, segments = sample_batch(network)
        assert_close(hf_electra_outputs(out, ids, segments),
                     google_electra(tf_load(source / "model.ckpt"), network, ids, segments, part))


def test_config_overrides_the_heads(tmp_path):
    source = make_tf1_electra(tmp_path / "release", hparams=None)
    out = tmp_path / "out"
    modelport.convert("electra", source, "safetensors", out, part="generator", config={"num_attention_heads": 4})
    assert json.loads((out / "config.json").read_text())["num_attention_heads"] == 4
    ids, segments = sample_batch(GENERATOR)
    four_heads = dict(GENERATOR, num_attention_heads=4)
    assert_close(hf_electra_outputs(out, ids, segments),
                 google_electra(tf_load(source / "model.ckpt"), four_heads, ids, segments, "generator"))


def test_inspect_lists_the_parts(tf1_electra, tmp_path):
    result = modelport.inspect(tf1_electra)
    assert result["arch"] == "electra" and result["parts"] == ["discriminator", "generator"]
    assert result["part"] == "discriminator"
    actions = {t["name"]: t["action"] for t in result["tensors"]}
    assert actions["generator/encoder/layer_1/output/dense/kernel"] == "skipped (generator: --part generator)"
    assert actions["electra/embeddings/word_embeddings"] == "-> electra.embeddings.word_embeddings.weight"
    generator = modelport.inspect(tf1_electra, part="generator")
    assert {t["name"]: t["action"] for t in generator["tensors"]}["generator/encoder/layer_1/output/dense/kernel"] == \
        "-> electra.encoder.layer.1.output.dense.weight"
    disc_only = make_tf1_electra(tmp_path / "disc", gen=None)
    assert modelport.inspect(disc_only)["parts"] == ["discriminator"]


@pytest.mark.parametrize("heads, model_class", [(True, "ElectraForPreTraining"), (False, "ElectraModel")])
def test_discriminator_only_checkpoints_convert(tmp_path, heads, model_class):
    source = make_tf1_electra(tmp_path / "disc", gen=None, heads=heads)
    out = tmp_path / "out"
    assert modelport.convert("electra", source, "safetensors", out).model_class == model_class
    ids, segments = sample_batch(DISCRIMINATOR)
    assert_close(hf_electra_outputs(out, ids, segments),
                 google_electra(tf_load(source / "model.ckpt"), DISCRIMINATOR, ids, segments))
    with pytest.raises(modelport.ModelportError, match="holds no electra generator, only the discriminator"):
        modelport.convert("electra", source, "safetensors", tmp_path / "gen", part="generator")


def test_embeddings_as_wide_as_the_discriminator_have_no_projection(tmp_path):
    """base/large: embedding_size equals the discriminator's hidden size (no electra/embeddings_project) and
    the generator projects them down."""
    disc = dict(DISCRIMINATOR, embedding_size=128)
    gen = dict(GENERATOR, embedding_size=128)
    source = make_tf1_electra(tmp_path / "base", hparams=None, disc=disc, gen=gen)
    names = tf_load(source / "model.ckpt")
    assert "electra/embeddings_project/kernel" not in names and "generator/embeddings_project/kernel" in names
    for part, network in (("discriminator", disc), ("generator", gen)):
        out = tmp_path / part
        modelport.convert("electra", source, "safetensors", out, part=part)
        assert ("electra.embeddings_project.weight" in safetensors_tensors(out)) == (part == "generator")
        ids, segments = sample_batch(network)
        assert_close(hf_electra_outputs(out, ids, segments),
                     google_electra(tf_load(source / "model.ckpt"), network, ids, segments, part))


def test_transformers_parts_to_one_google_checkpoint(tmp_path):
    discriminator, generator = make_hf_electra(tmp_path / "hf")
    out = tmp_path / "tf"
    report = modelport.convert("electra", discriminator, "tf", out, with_parts={"generator": generator})
    assert {"model.ckpt.index", "hparams.json", "vocab.txt"} <= {p.name for p in out.iterdir()}
    tensors = weights(out / "model.ckpt")
    assert sorted(tensors) == sorted(google_electra_tensors())  # both networks, the embeddings once
    assert report.tensors == len(tensors)
    hparams = json.loads((out / "hparams.json").read_text())
    assert hparams["generator_hidden_size"] == 0.5 and hparams["generator_layers"] == 1.0
    source = json.loads((out / "modelport.json").read_text())["source"]
    assert source["part"] == "discriminator"
    assert source["with"] == [{"part": "generator", "format": "safetensors", "layout": "hf"}]
    assert {f["name"] for f in source["files"]} == {"model.safetensors", "config.json"}  # both folders' (same names)
    assert hparams["model_hparam_overrides"]["hidden_size"] == 128 and hparams["embedding_size"] == 32
    for part, folder in (("discriminator", discriminator), ("generator", generator)):
        ids, segments = sample_batch(NETWORKS[part])
        assert_close(hf_electra_outputs(folder, ids, segments),
                     google_electra(tensors, NETWORKS[part], ids, segments, part))


def test_parts_must_share_their_embeddings(tmp_path):
    from safetensors.numpy import load_file, save_file

    discriminator, generator = make_hf_electra(tmp_path / "hf")
    tensors = load_file(generator / "model.safetensors")
    tensors["electra.embeddings.position_embeddings.weight"][0, 0] += 1
    save_file(tensors, generator / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(modelport.ModelportError, match="position_embeddings.weight differs"):
        modelport.convert("electra", discriminator, "tf", tmp_path / "tf", with_parts={"generator": generator})
    assert not (tmp_path / "tf").exists()


def test_google_round_trip_is_bit_exact(tf1_electra, tmp_path):
    for part in NETWORKS:
        modelport.convert("electra", tf1_electra, "safetensors", tmp_path / part, part=part)
    modelport.convert("electra", tmp_path / "generator", "tf", tmp_path / "back",
                      with_parts={"discriminator": tmp_path / "discriminator"})
    original, back = weights(tf1_electra / "model.ckpt"), weights(tmp_path / "back" / "model.ckpt")
    assert sorted(back) == sorted(original)
    for name, value in original.items():
        assert back[name].dtype == value.dtype and back[name].tobytes() == value.tobytes(), name
    for part in NETWORKS:  # the written hparams.json reads back as the same networks
        modelport.convert("electra", tmp_path / "back", "safetensors", tmp_path / f"again-{part}", part=part)
        assert json.loads((tmp_path / f"again-{part}" / "config.json").read_text()) == \
            json.loads((tmp_path / part / "config.json").read_text())


@pytest.mark.parametrize("part", ["discriminator", "generator"])
def test_hf_round_trip_is_bit_exact(tmp_path, part):
    folders = dict(zip(NETWORKS, make_hf_electra(tmp_path / "hf")))
    report = modelport.convert("electra", folders[part], "tf", tmp_path / "tf")
    assert (tmp_path / "tf" / "hparams.json").is_file() and report.model_class == CLASSES[part]
    modelport.convert("electra", tmp_path / "tf", "safetensors", tmp_path / "back")
    original, back = safetensors_tensors(folders[part]), safetensors_tensors(tmp_path / "back")
    assert sorted(back) == sorted(original)
    for name, value in original.items():
        assert back[name].tobytes() == value.tobytes(), name
    original_config = json.loads((folders[part] / "config.json").read_text())
    back_config = json.loads((tmp_path / "back" / "config.json").read_text())
    for key in ("architectures", "hidden_size", "embedding_size", "num_attention_heads", "num_hidden_layers",
                "intermediate_size", "hidden_act", "vocab_size", "max_position_embeddings"):
        assert back_config[key] == original_config[key], key


def test_generator_alone_to_google_layout(tmp_path):
    _, generator = make_hf_electra(tmp_path / "hf")
    out = tmp_path / "tf"
    modelport.convert("electra", generator, "tf", out)
    tensors = weights(out / "model.ckpt")
    assert not any(name.startswith(("electra/encoder", "discriminator_predictions")) for name in tensors)
    assert {"electra/embeddings/word_embeddings", "generator/encoder/layer_1/output/dense/kernel"} <= set(tensors)
    assert modelport.inspect(out)["parts"] == ["generator"]
    ids, segments = sample_batch(GENERATOR)
    assert_close(hf_electra_outputs(generator, ids, segments),
                 google_electra(tensors, GENERATOR, ids, segments, "generator"))


def test_prune_vocab_keeps_the_generator_head_in_step(tmp_path):
    _, generator = make_hf_electra(tmp_path / "hf")
    (tmp_path / "keep.txt").write_text("\n".join(map(str, range(10, 30))) + "\n")
    modelport.api.prune_vocab(generator, tmp_path / "keep.txt", out=tmp_path / "pruned")
    keep = list(range(5)) + list(range(10, 30))  # the special tokens [PAD] .. [MASK] are always kept
    ids, segments = sample_batch(GENERATOR)
    ids = np.asarray(keep)[ids % len(keep)]
    original = hf_electra_outputs(generator, ids, segments)["mlm_logits"][..., keep]
    pruned = hf_electra_outputs(tmp_path / "pruned", np.searchsorted(keep, ids), segments)["mlm_logits"]
    np.testing.assert_allclose(pruned, original, atol=ATOL, rtol=0)


def test_verify_a_part(tf1_electra, tmp_path):
    modelport.convert("electra", tf1_electra, "safetensors", tmp_path / "gen", part="generator")
    report = modelport.verify(tf1_electra, tmp_path / "gen", part="generator")
    assert report.ok and all(row["result"] == "bit-exact" for row in report.rows)
    assert {row["output"] for row in report.forward} >= {"logits"}


def test_cli_parts(tf1_electra, tmp_path):
    disc_only = make_tf1_electra(tmp_path / "disc", gen=None)
    assert_one_line_error(run("convert", "electra", disc_only, "--part", "generator", "-o", tmp_path / "x"),
                          "holds no electra generator")
    assert_one_line_error(run("convert", "electra", disc_only, "--part", "critic", "-o", tmp_path / "x"),
                          "discriminator, generator")
    assert_one_line_error(run("convert", "bert", disc_only, "--part", "generator", "-o", tmp_path / "x"), "--part")
    for part in NETWORKS:
        result = run("convert", "electra", tf1_electra, "--part", part, "-o", tmp_path / part, "-q")
        assert result.returncode == 0, result.stderr
    merged = run("convert", "electra", tmp_path / "discriminator", "--with", f"generator={tmp_path / 'generator'}",
                 "--to", "tf", "-o", tmp_path / "tf")
    assert merged.returncode == 0, merged.stderr
    assert sorted(weights(tmp_path / "tf" / "model.ckpt")) == sorted(weights(tf1_electra / "model.ckpt"))
    assert_one_line_error(run("convert", "electra", tmp_path / "discriminator", "--with", "generator",
                              "-o", tmp_path / "y"), "PART=DIR")
    assert_one_line_error(run("convert", "electra", tmp_path / "discriminator", "--with",
                              f"generator={tmp_path / 'generator'}", "-o", tmp_path / "y"), "--to tf")
    table = run("inspect", tf1_electra)
    assert "parts: discriminator, generator" in table.stdout


def test_a_generator_with_embeddings_of_its_own_converts_and_so_does_the_discriminator(tmp_path):
    """Google's untied_generator_embeddings puts the generator's own embeddings under generator/embeddings (as
    wide as the generator, so no projection): the generator is read with them, not with the discriminator's
    electra/embeddings, which stay the discriminator's."""
    gen = {**GENERATOR, "embedding_size": GENERATOR["hidden_size"]}
    tensors = google_electra_tensors(gen=None)
    untied = google_electra_tensors(gen, gen=gen, seed=1)
    tensors.update({name.replace("electra/embeddings", "generator/embeddings"): value
                    for name, value in untied.items() if name.startswith("electra/embeddings/")})
    tensors.update({name: value for name, value in untied.items() if name.startswith("generator")})
    assert not any(name.startswith("generator/embeddings_project") for name in tensors)
    source = tmp_path / "untied"
    source.mkdir()
    tf_save(source / "model.ckpt", tensors)
    (source / "vocab.txt").write_text("\n".join(f"t{i}" for i in range(DISCRIMINATOR["vocab_size"])) + "\n")
    # run_pretraining.py's hparams say so too: Google's get_generator_config then gives it embedding_size=None
    (source / "hparams.json").write_text(json.dumps({**TINY_HPARAMS, "untied_generator_embeddings": True}))

    inspected = modelport.inspect(source, part="generator")
    assert inspected["parts"] == ["discriminator", "generator"]
    actions = {t["name"]: t["action"] for t in inspected["tensors"]}
    assert actions["generator/embeddings/word_embeddings"] == "-> electra.embeddings.word_embeddings.weight"
    assert actions["electra/embeddings/word_embeddings"] == "skipped (discriminator: --part discriminator)"
    for part, config in (("generator", gen), ("discriminator", DISCRIMINATOR)):
        out = tmp_path / part
        modelport.convert("electra", source, "safetensors", out, part=part)
        assert json.loads((out / "config.json").read_text())["embedding_size"] == config["embedding_size"]
        ids, segments = sample_batch(config)
        assert_close(hf_electra_outputs(out, ids, segments),
                     google_electra(tf_load(source / "model.ckpt"), config, ids, segments, part))
    assert not np.allclose(tensors["generator/embeddings/word_embeddings"][:, :32],
                           tensors["electra/embeddings/word_embeddings"])  # the parity above can tell them apart
