"""The streaming engine's overlap of reading and writing: reading runs ahead of a slow writer by more than one
tensor (a layer's big kernels alternate with tiny biases), but never by more than AHEAD_BYTES plus one tensor,
and a failure on either side stops the other."""

from __future__ import annotations

import threading

import numpy as np
import pytest

import modelport
from modelport.converters import engine
from modelport.converters.safetensors import SafetensorsWriter
from modelport.converters.tf1 import TF1Reader
from modelport.errors import ModelportError
from conftest import make_tf1_bert


class Traffic:
    """Bytes read and written so far, and the largest lead reading ever had over writing."""

    def __init__(self):
        self.lock = threading.Lock()
        self.read = self.written = self.lead = self.largest = 0
        self.reads = 0

    def on_read(self, array: np.ndarray) -> None:
        with self.lock:
            self.reads += 1
            self.read += array.nbytes
            self.largest = max(self.largest, array.nbytes)
            self.lead = max(self.lead, self.read - self.written)

    def on_write(self, array: np.ndarray) -> None:
        with self.lock:
            self.written += array.nbytes


@pytest.fixture
def traffic(monkeypatch) -> Traffic:
    seen = Traffic()
    read, write = TF1Reader.read, SafetensorsWriter.write

    def counted_read(self, name):
        array = read(self, name)
        seen.on_read(array)
        return array

    def counted_write(self, name, array):
        write(self, name, array)
        seen.on_write(array)

    monkeypatch.setattr(TF1Reader, "read", counted_read)
    monkeypatch.setattr(SafetensorsWriter, "write", counted_write)
    return seen


def test_reading_runs_several_tensors_ahead_of_a_slow_writer(tmp_path, traffic, monkeypatch):
    source = make_tf1_bert(tmp_path / "tf1", optimizer=False)
    write = SafetensorsWriter.write
    held = threading.Event()

    def first_write_waits(self, name, array):
        if not held.is_set():
            held.set()
            for _ in range(500):  # until four tensors are read (or 5 s, and the assertion below fails)
                if traffic.reads >= 4:
                    break
                threading.Event().wait(0.01)
        write(self, name, array)

    monkeypatch.setattr(SafetensorsWriter, "write", first_write_waits)
    modelport.convert("bert", source, "safetensors", tmp_path / "out")
    assert traffic.reads >= 4 and traffic.lead > traffic.largest


def test_reading_never_runs_further_ahead_than_its_budget(tmp_path, traffic, monkeypatch):
    source = make_tf1_bert(tmp_path / "tf1", optimizer=False)
    monkeypatch.setattr(engine, "AHEAD_BYTES", 4096)
    write = SafetensorsWriter.write

    def slow_write(self, name, array):  # gives the preparing threads every chance to run ahead
        threading.Event().wait(0.002)
        write(self, name, array)

    monkeypatch.setattr(SafetensorsWriter, "write", slow_write)
    modelport.convert("bert", source, "safetensors", tmp_path / "out")
    assert traffic.written == traffic.read
    assert 4096 < traffic.lead <= 4096 + traffic.largest


def test_a_failed_read_stops_the_conversion_and_leaves_no_output(tmp_path, monkeypatch):
    source = make_tf1_bert(tmp_path / "tf1", optimizer=False)
    read = TF1Reader.read

    def failing_read(self, name):
        if name.endswith("layer_1/output/dense/kernel"):
            raise ModelportError(f"{name}: injected read failure")
        return read(self, name)

    monkeypatch.setattr(TF1Reader, "read", failing_read)
    with pytest.raises(ModelportError, match="injected read failure"):
        modelport.convert("bert", source, "safetensors", tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["tf1"]


def test_a_same_layout_conversion_transposes_nothing(tmp_path, monkeypatch):
    """extend's TF1 -> TF1 goes through the canonical form; the kernels' transposes in and out cancel, and the
    output is still every source tensor (bar the extended table) bit for bit."""
    from modelport.mappings import base

    source = make_tf1_bert(tmp_path / "tf1", optimizer=False)
    transposes = []
    transposed = base.transposed
    monkeypatch.setattr(base, "transposed", lambda array: transposes.append(array.shape) or transposed(array))
    modelport.extend(source, 128, out=tmp_path / "long")
    assert transposes == []
    before, after = TF1Reader(source), TF1Reader(tmp_path / "long")
    assert set(before.names()) == set(after.names())
    for name in before.names():
        if not name.endswith("position_embeddings"):
            assert np.array_equal(before.read(name), after.read(name)), name
    modelport.convert("bert", source, "safetensors", tmp_path / "st")
    assert len(transposes) > 0  # the counter sees the transposes a layout change needs
