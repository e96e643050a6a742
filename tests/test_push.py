"""`modelport push` against a local stand-in for the Hub (tests/hub_server.py): the real huggingface_hub client
makes its real HTTP requests to 127.0.0.1; proxies point nowhere, so any other destination would fail."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

import modelport
from conftest import assert_one_line_error, make_tf1_bert
from hub_server import HubServer
from modelport.errors import ModelportError

pytest.importorskip("huggingface_hub")

TOKEN = "hf_modelportTestToken0123456789abcdef"
DEAD_PROXY = "http://127.0.0.1:9"  # the discard port: nothing answers there
HUB_CALLS = ("/api/repos/create", "/preupload/", "/info/lfs/objects/batch", "/commit/", "/branch/")


@pytest.fixture(scope="module")
def converted(tmp_path_factory) -> tuple[Path, Path]:
    """A Google-layout TF1 checkpoint and its safetensors conversion, verified (so the record holds results)."""
    root = tmp_path_factory.mktemp("push")
    source = make_tf1_bert(root / "google")
    modelport.convert("bert", source, "safetensors", root / "hf")
    assert modelport.verify(source, root / "hf").ok
    return source, root / "hf"


@pytest.fixture
def folder(converted, tmp_path) -> Path:
    return Path(shutil.copytree(converted[1], tmp_path / "hf"))


@pytest.fixture
def hub():
    with HubServer(token=TOKEN) as server:
        yield server


@pytest.fixture
def hub_in_process(hub, monkeypatch) -> HubServer:
    """The Hub stand-in for in-process pushes: huggingface_hub read HF_HUB_OFFLINE (set by conftest) and
    HF_HUB_DISABLE_XET at import, so their module values are set as the environment would have."""
    import huggingface_hub.constants

    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_DISABLE_XET", True)
    return hub


def hub_env(endpoint: str, tmp_path: Path, **extra: str) -> dict:
    """The environment of a `modelport` process pushing to ENDPOINT only, with no token unless given."""
    dropped = {"HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_OIDC_RESOURCE", "HF_TOKEN_PATH", "http_proxy", "https_proxy",
               "all_proxy", "no_proxy"}
    env = {key: value for key, value in os.environ.items() if key not in dropped}
    env.update({"HF_ENDPOINT": endpoint, "HF_HUB_DISABLE_XET": "1", "HF_HUB_OFFLINE": "0",
                "HF_HOME": str(tmp_path / "hf_home"), "HTTP_PROXY": DEAD_PROXY, "HTTPS_PROXY": DEAD_PROXY,
                "ALL_PROXY": DEAD_PROXY, "NO_PROXY": "127.0.0.1", "COLUMNS": "200", **extra})
    return env


def run(env: dict, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "modelport", *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=300)


def local_files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def assert_token_nowhere(result: subprocess.CompletedProcess, *folders: Path) -> None:
    assert TOKEN not in result.stdout + result.stderr
    for folder in folders:
        for name, data in local_files(folder).items():
            assert TOKEN.encode() not in data, name


def test_push_uploads_the_folder_byte_identical_with_a_card(converted, folder, hub, tmp_path):
    result = run(hub_env(hub.url, tmp_path, HF_TOKEN=TOKEN), "push", folder, "org/tiny-bert")
    assert result.returncode == 0, result.stderr
    assert "committed" in result.stderr and "org/tiny-bert" in result.stderr
    local = local_files(folder)
    assert {"model.safetensors", "config.json", "vocab.txt", "tokenizer_config.json", "modelport.json",
            "README.md"} <= set(local)
    assert hub.files("org/tiny-bert") == local
    assert hashlib.sha256(local["model.safetensors"]).hexdigest() in hub.blobs  # binary: went through LFS
    calls = [r for r in hub.requests if any(call in r.path for call in HUB_CALLS)]
    assert {"/api/repos/create", "/api/models/org/tiny-bert/preupload/main",
            "/api/models/org/tiny-bert/commit/main"} <= {r.path for r in calls}
    assert all(r.headers.get("authorization") == f"Bearer {TOKEN}" for r in calls)
    assert all("modelport/" in r.headers.get("user-agent", "") for r in calls)
    assert "visibility" not in json.loads(calls[0].body) and not hub.repos["org/tiny-bert"]["private"]
    assert_token_nowhere(result, folder, tmp_path / "hf_home")

    from huggingface_hub import ModelCard

    card = ModelCard(local["README.md"].decode())
    assert card.data.library_name == "transformers" and {"modelport", "bert"} <= set(card.data.tags)
    source, _ = converted
    for name in ("bert_model.ckpt.index", "bert_config.json"):
        assert hashlib.sha256((source / name).read_bytes()).hexdigest() in card.text
    assert "| bert_model.ckpt.data-00000-of-00001 |" in card.text and "crc32c of each tensor" in card.text
    assert 'BertForPreTraining.from_pretrained("org/tiny-bert")' in card.text
    assert "46 of 46 tensors bit-exact" in card.text and "prediction_logits" in card.text
    record = json.loads(local["modelport.json"])
    assert record["arch"] == "bert" and record["source"]["format"] == "tf1" and record["output"]["dtype"] == "float32"
    assert hub.repos["org/tiny-bert"]["commits"][0]["summary"].startswith("Upload BertForPreTraining")


def test_private_revision_and_pull_request_reach_the_server(folder, hub, tmp_path):
    env = hub_env(hub.url, tmp_path, HF_TOKEN=TOKEN)
    first = run(env, "push", folder, "org/m", "--private", "--revision", "dev", "--commit-message", "first upload")
    assert first.returncode == 0, first.stderr
    create = next(r for r in hub.requests if r.path == "/api/repos/create")
    assert json.loads(create.body)["visibility"] == "private" and hub.repos["org/m"]["private"]
    assert "/api/models/org/m/branch/dev" in [r.path for r in hub.requests]
    assert "/api/models/org/m/commit/dev" in [r.path for r in hub.requests]
    local = local_files(folder)
    assert hub.files("org/m", "dev") == local and hub.files("org/m", "main") == {}
    assert hub.repos["org/m"]["commits"][0]["summary"] == "first upload"

    pull = run(env, "push", folder, "org/m", "--create-pr")
    assert pull.returncode == 0, pull.stderr
    assert f"{hub.url}/org/m/discussions/1" in pull.stderr
    commit = [r for r in hub.requests if "/commit/" in r.path][-1]
    assert commit.path == "/api/models/org/m/commit/main" and commit.query == {"create_pr": "1"}
    assert hub.files("org/m", "refs/pr/1") == local_files(folder) and hub.files("org/m", "main") == {}
    assert_one_line_error(run(env, "push", folder, "org/m", "--create-pr", "--revision", "dev"), "--create-pr")


def test_token_from_the_option_and_from_the_stored_login(folder, hub, tmp_path):
    by_option = run(hub_env(hub.url, tmp_path), "push", folder, "org/a", "--token", TOKEN)
    assert by_option.returncode == 0, by_option.stderr
    (tmp_path / "hf_home").mkdir(exist_ok=True)
    (tmp_path / "hf_home" / "token").write_text(TOKEN)
    by_login = run(hub_env(hub.url, tmp_path), "push", folder, "org/b")
    assert by_login.returncode == 0, by_login.stderr
    commits = [r for r in hub.requests if "/commit/" in r.path]
    assert len(commits) == 2 and all(r.headers["authorization"] == f"Bearer {TOKEN}" for r in commits)
    for result in (by_option, by_login):
        assert_token_nowhere(result, folder)


def test_no_token_is_refused_before_sending(folder, hub, tmp_path):
    assert_one_line_error(run(hub_env(hub.url, tmp_path), "push", folder, "org/a"), "no Hugging Face token",
                          "HF_TOKEN")
    assert hub.requests == []


@pytest.mark.parametrize("failure, expected", [
    (None, ["401", "Invalid credentials", "/api/repos/create", "not accepted"]),
    (("/api/repos/create", 500), ["500", "/api/repos/create"]),
    (("/commit/", 500), ["500", "/api/models/org/x/commit/main"]),
    (("/preupload/", 404), ["404", "preupload", "no such repository"]),
])
def test_server_errors_are_one_line(folder, hub, tmp_path, failure, expected):
    token = TOKEN
    if failure is None:
        hub.token = "hf_theServerExpectsAnotherToken"
    else:
        hub.fail(*failure)
    result = run(hub_env(hub.url, tmp_path, HF_TOKEN=token), "push", folder, "org/x")
    assert_one_line_error(result, "org/x", *expected)
    assert_token_nowhere(result, folder)
    assert hub.requests


def test_unreachable_endpoint_is_one_line(folder, tmp_path):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        endpoint = f"http://127.0.0.1:{probe.getsockname()[1]}"  # closed once the probe is
    result = run(hub_env(endpoint, tmp_path, HF_TOKEN=TOKEN), "push", folder, "org/x")
    assert_one_line_error(result, "cannot push to", endpoint, "ConnectError")
    assert_token_nowhere(result, folder)


def test_dry_run_lists_and_sends_nothing(folder, hub, tmp_path):
    before = local_files(folder)
    result = run(hub_env(hub.url, tmp_path, HF_TOKEN=TOKEN), "push", folder, "org/d", "--dry-run", "--private",
                 "--revision", "dev")
    assert result.returncode == 0, result.stderr
    assert hub.requests == []
    assert local_files(folder) == before  # no card written
    out = result.stdout
    assert "org/d" in out and hub.url in out and "revision: dev" in out and "private: yes" in out
    assert "create pull request: no" in out and "token: from HF_TOKEN" in out and "nothing was sent" in out
    for name, data in before.items():
        assert f"{len(data):,} bytes" in next(line for line in out.splitlines() if line.strip().startswith(name))
    assert "README.md" in out and "model card, generated" in out
    assert_token_nowhere(result, folder)
    offline = run(hub_env(hub.url, tmp_path, HF_HUB_OFFLINE="1"), "push", folder, "org/d", "--dry-run")
    assert offline.returncode == 0 and "token: none found" in offline.stdout and hub.requests == []


def test_offline_mode_refuses_a_real_push(folder, hub, tmp_path):
    result = run(hub_env(hub.url, tmp_path, HF_TOKEN=TOKEN, HF_HUB_OFFLINE="1"), "push", folder, "org/o")
    assert_one_line_error(result, "HF_HUB_OFFLINE", "--dry-run")
    assert hub.requests == [] and not (folder / "README.md").exists()


def _drop(name):
    return lambda folder: (folder / name).unlink()


def _edit_config(**changes):
    def edit(folder):
        config = json.loads((folder / "config.json").read_text())
        config.update(changes)
        (folder / "config.json").write_text(json.dumps({k: v for k, v in config.items() if v is not None}))
    return edit


def _truncate(folder):
    data = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize("damage, expected", [
    (_drop("config.json"), "no config.json"),
    (_edit_config(intermediate_size=64), "intermediate_size"),
    (_edit_config(num_hidden_layers=None), "does not state num_hidden_layers (the weights say 2)"),
    (_edit_config(num_hidden_layers=3), "missing"),
    (_drop("vocab.txt"), "no tokenizer file vocab.txt or tokenizer.json"),
    (_drop("tokenizer_config.json"), "no tokenizer file tokenizer_config.json"),
    (_drop("model.safetensors"), "no checkpoint found"),
    (_truncate, "model.safetensors"),
])
def test_invalid_folders_are_refused_before_anything_is_sent(folder, hub_in_process, damage, expected):
    damage(folder)
    with pytest.raises(ModelportError, match=expected.replace("(", r"\(").replace(")", r"\)")):
        modelport.push(folder, "org/bad", token=TOKEN)
    assert hub_in_process.requests == [] and not (folder / "README.md").exists()


def test_missing_shard_is_refused(converted, hub_in_process, tmp_path):
    source, _ = converted
    sharded = tmp_path / "sharded"
    modelport.convert("bert", source, "safetensors", sharded, max_shard_size="40KB")
    shards = sorted(sharded.glob("model-*.safetensors"))
    assert len(shards) > 1
    shards[-1].unlink()
    with pytest.raises(ModelportError, match=f"shard {shards[-1].name} is missing"):
        modelport.push(sharded, "org/bad", token=TOKEN)
    assert hub_in_process.requests == []


def test_api_push_keeps_an_own_card_and_rewrites_a_generated_one(folder, hub_in_process):
    hub = hub_in_process
    result = modelport.push(folder, "org/first", token=TOKEN)
    assert result.card == "generated" and result.commit_url.startswith(f"{hub.url}/org/first/commit/")
    assert set(result.files) == set(local_files(folder)) and result.pull_request_url is None
    assert b'"org/first"' in hub.files("org/first")["README.md"]
    modelport.push(folder, "org/second", token=TOKEN)  # the generated card follows the new repository
    assert b'"org/second"' in hub.files("org/second")["README.md"]
    own = "---\nlicense: mit\n---\n\n# My BERT\n"
    (folder / "README.md").write_text(own)
    kept = modelport.push(folder, "org/third", token=TOKEN)
    assert kept.card == "kept" and hub.files("org/third")["README.md"] == own.encode()


def test_convert_push_to(converted, hub, tmp_path):
    source, _ = converted
    out = tmp_path / "out"
    refused = run(hub_env(hub.url, tmp_path), "convert", "bert", source, "-o", out, "--push-to", "org/c")
    assert_one_line_error(refused, "no Hugging Face token")
    assert not out.exists() and hub.requests == []  # refused before converting
    result = run(hub_env(hub.url, tmp_path, HF_TOKEN=TOKEN), "convert", "bert", source, "-o", out, "--push-to",
                 "org/c")
    assert result.returncode == 0, result.stderr
    assert hub.files("org/c") == local_files(out)
    failed = run(hub_env(hub.url, tmp_path, HF_TOKEN="hf_wrong"), "convert", "bert", source, "-o", tmp_path / "o2",
                 "--push-to", "org/c", "-q")
    assert_one_line_error(failed, "is written, but the push failed", "401", "modelport push")
    assert (tmp_path / "o2" / "model.safetensors").is_file()


def test_extend_push_to_records_the_extension(converted, hub, tmp_path):
    source, _ = converted
    out = tmp_path / "long"
    result = run(hub_env(hub.url, tmp_path, HF_TOKEN=TOKEN), "extend", source, "--positions", "128", "-o", out,
                 "--push-to", "org/long")
    assert result.returncode == 0, result.stderr
    pushed = hub.files("org/long")
    assert pushed == local_files(out)
    record = json.loads(pushed["modelport.json"])
    assert record["position_extension"]["positions"] == 128
    assert record["position_extension"]["method"] == "hierarchical"
    assert b"position extension" in pushed["README.md"]
    assert b"tf.train.load_checkpoint" in pushed["README.md"]  # extend keeps the source's TF1 format


def test_record_checksums_match_the_source_files(converted):
    """Files are identified by sha256, except a TF1 data file: its tensors' crc32c, in the hashed index, were
    checked as they were read."""
    source, out = converted
    record = json.loads((out / "modelport.json").read_text())
    files = {f["name"]: f for f in record["source"]["files"]}
    assert {name: f.get("sha256") for name, f in files.items()} == {
        **{name: hashlib.sha256((source / name).read_bytes()).hexdigest()
           for name in ("bert_model.ckpt.index", "bert_config.json")},
        "bert_model.ckpt.data-00000-of-00001": None}
    data = files["bert_model.ckpt.data-00000-of-00001"]
    assert data["bytes"] == (source / data["name"]).stat().st_size
    assert data["checked_by"] == "crc32c of each tensor, in bert_model.ckpt.index"
    assert record["verify"]["ok"] and record["verify"]["bit_exact"] == record["verify"]["tensors"]
