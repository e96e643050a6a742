"""Interrupted and failing runs: Ctrl-C, a killed process, a full disk. Never an OUT that looks complete,
an existing OUT untouched, and the next run succeeds."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

import modelport

pytest.importorskip("tensorflow")

# Runs the real CLI with every tensor write slowed down, so a signal lands mid-conversion.
SLOW_CLI = """
import sys, time
from modelport.cli import main
from modelport.converters.safetensors import SafetensorsWriter
write = SafetensorsWriter.write
def slow(self, name, array):
    write(self, name, array)
    print("wrote", name, flush=True)
    time.sleep(0.2)
SafetensorsWriter.write = slow
sys.argv = ["modelport", *sys.argv[1:]]
main()
"""


def start_slow(source: Path, out: Path, *extra: str) -> subprocess.Popen:
    process = subprocess.Popen([sys.executable, "-c", SLOW_CLI, "convert", "bert", str(source), "-o", str(out), *extra],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for _ in range(3):  # let it write a few tensors first
        assert process.stdout.readline().startswith("wrote")
    return process


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_ctrl_c_leaves_nothing(tf1_bert, tmp_path):
    out = tmp_path / "out"
    process = start_slow(tf1_bert, out)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130
    assert stderr.strip().splitlines() == ["error: interrupted; nothing was written to the output"]
    assert not out.exists() and leftovers(tmp_path) == []


def test_ctrl_c_keeps_the_existing_output(tf1_bert, tmp_path):
    out = tmp_path / "out"
    modelport.convert("bert", tf1_bert, "safetensors", out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    process = start_slow(tf1_bert, out, "--overwrite", "--dtype", "float16")
    process.send_signal(signal.SIGINT)
    process.communicate(timeout=60)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_killed_process_leaves_no_complete_looking_output_and_rerun_succeeds(tf1_bert, tmp_path):
    out = tmp_path / "out"
    process = start_slow(tf1_bert, out)
    process.kill()
    process.wait(timeout=60)
    assert not out.exists()
    assert len(leftovers(tmp_path)) == 1  # the hidden partial folder of the killed run, never named OUT
    modelport.convert("bert", tf1_bert, "safetensors", out)
    assert (out / "model.safetensors").is_file() and leftovers(tmp_path) == []


def test_injected_write_error_is_one_line_and_keeps_nothing(tf1_bert, tmp_path, monkeypatch):
    from modelport.converters import safetensors

    def fail(self, name, array):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(safetensors.SafetensorsWriter, "write", fail)
    with pytest.raises(modelport.ModelportError, match="No space left on device"):
        modelport.convert("bert", tf1_bert, "safetensors", tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["google_bert"]


@pytest.fixture
def small_disk(tmp_path):
    """A 64 KiB tmpfs, where the machine lets us mount one (root in a sandbox may not)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)], capture_output=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", str(mount)], check=False)


def test_full_disk(tf1_bert, small_disk):
    result = subprocess.run([sys.executable, "-m", "modelport", "convert", "bert", str(tf1_bert), "-o",
                             str(small_disk / "out")], capture_output=True, text=True)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith("error: ") and "No space left" in result.stderr
    assert "Traceback" not in result.stderr
    assert list(small_disk.iterdir()) == []
