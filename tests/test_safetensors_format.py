"""modelport's own safetensors reader and writer: interoperable with the reference implementation, and
hostile headers or indexes give a ModelportError naming the file, never anything else."""

from __future__ import annotations

import json
import struct

import ml_dtypes
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modelport.converters.base import TensorInfo
from modelport.converters.safetensors import SafetensorsReader, SafetensorsWriter
from modelport.errors import ModelportError

safetensors_numpy = pytest.importorskip("safetensors.numpy")

SAMPLES = {
    "f32": np.arange(12, dtype=np.float32).reshape(3, 4),
    "f16": np.linspace(-2, 2, 10, dtype=np.float16),
    "bf16": np.linspace(-3, 3, 6).astype(ml_dtypes.bfloat16).reshape(2, 3),
    "i64": np.array(7, dtype=np.int64),
    "empty": np.zeros((0, 5), dtype=np.float32),
    "u8": np.arange(5, dtype=np.uint8),
    "flag": np.array([True, False]),
}


def write(folder, tensors, max_shard_size=None):
    writer = SafetensorsWriter(folder, {n: TensorInfo(v.shape, v.dtype) for n, v in tensors.items()}, max_shard_size)
    for name, value in tensors.items():
        writer.write(name, value)
    return writer.close()


def test_reference_reads_what_we_write(tmp_path):
    plain = {k: v for k, v in SAMPLES.items() if k != "bf16"}  # safetensors.numpy has no bf16
    write(tmp_path, plain)
    loaded = safetensors_numpy.load_file(tmp_path / "model.safetensors")
    assert sorted(loaded) == sorted(plain)
    for name, value in plain.items():
        assert loaded[name].dtype == value.dtype and loaded[name].tobytes() == value.tobytes()


def test_we_read_what_the_reference_writes_including_bf16(tmp_path):
    import torch
    from safetensors.torch import save_file

    save_file({"w": torch.arange(6, dtype=torch.bfloat16).reshape(2, 3), "b": torch.ones(3)}, tmp_path / "m.safetensors")
    reader = SafetensorsReader(tmp_path / "m.safetensors")
    assert reader.infos["w"].dtype == np.dtype(ml_dtypes.bfloat16)
    assert reader.read("w").astype(np.float32).tolist() == [[0, 1, 2], [3, 4, 5]]


def test_sharded_round_trip(tmp_path):
    files = write(tmp_path, SAMPLES, max_shard_size=40)
    assert "model.safetensors.index.json" in files and len(files) > 3
    reader = SafetensorsReader(tmp_path)
    for name, value in SAMPLES.items():
        assert reader.read(name).dtype == value.dtype and reader.read(name).tobytes() == value.tobytes()


def raw_file(path, header: bytes, data: bytes = b"") -> None:
    path.write_bytes(struct.pack("<Q", len(header)) + header + data)


@pytest.mark.parametrize("header, data, message", [
    (b"{}", b"", None),
    (b"[1, 2]", b"", "not a JSON object"),
    (b"{not json", b"", "not a JSON object"),
    (json.dumps({"a": {"dtype": "F99", "shape": [1], "data_offsets": [0, 4]}}).encode(), b"\0" * 4, "unknown dtype"),
    (json.dumps({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 4]}}).encode(), b"\0" * 4, "spans 4 bytes"),
    (json.dumps({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},
                 "b": {"dtype": "F32", "shape": [1], "data_offsets": [2, 6]}}).encode(), b"\0" * 6, "overlaps"),
    (json.dumps({"a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}).encode(), b"\0" * 8, "gap"),
    (json.dumps({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}).encode(), b"\0" * 2, "truncated"),
    (json.dumps({"a": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}}).encode(), b"\0" * 4, "malformed"),
    (json.dumps({"a": {"dtype": "F32", "shape": [1]}}).encode(), b"\0" * 4, "lacks"),
])
def test_malformed_headers(tmp_path, header, data, message):
    path = tmp_path / "model.safetensors"
    raw_file(path, header, data)
    if message is None:
        assert SafetensorsReader(path).names() == []
        return
    with pytest.raises(ModelportError, match=message) as error:
        SafetensorsReader(path)
    assert str(path) in str(error.value)


def test_header_length_beyond_the_file(tmp_path):
    path = tmp_path / "model.safetensors"
    path.write_bytes(struct.pack("<Q", 10**15) + b"{}")
    with pytest.raises(ModelportError, match="runs past the file"):
        SafetensorsReader(path)
    path.write_bytes(b"abc")
    with pytest.raises(ModelportError, match="too short"):
        SafetensorsReader(path)


@pytest.mark.parametrize("shard", ["../evil.safetensors", "/etc/passwd", "sub/x.safetensors", "missing.safetensors"])
def test_index_shard_names_must_stay_inside_and_exist(tmp_path, shard):
    write(tmp_path, {"a": np.ones(2, np.float32)})
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"a": shard}}))
    with pytest.raises(ModelportError, match="model.safetensors.index.json"):
        SafetensorsReader(tmp_path)


def open_and_read_all(path) -> None:
    """Either reads or raises ModelportError: anything else fails the property tests."""
    try:
        reader = SafetensorsReader(path)
        for name in reader.names():
            reader.read(name)
    except ModelportError:
        pass


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_mutated_files_read_or_fail_cleanly(tmp_path, data):
    write(tmp_path, SAMPLES)
    path = tmp_path / "model.safetensors"
    raw = bytearray(path.read_bytes())
    for _ in range(data.draw(st.integers(1, 4))):
        position = data.draw(st.integers(0, len(raw) - 1))
        raw[position] = data.draw(st.integers(0, 255))
    if data.draw(st.booleans()):
        raw = raw[: data.draw(st.integers(0, len(raw)))]
    path.write_bytes(bytes(raw))
    open_and_read_all(path)


json_values = st.recursive(st.none() | st.booleans() | st.integers(-10, 10**12) | st.text(max_size=8),
                           lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3),
                           max_leaves=10)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(entries=st.dictionaries(st.text(max_size=5), json_values, max_size=4), tail=st.binary(max_size=64))
def test_arbitrary_json_headers_read_or_fail_cleanly(tmp_path, entries, tail):
    raw_file(tmp_path / "model.safetensors", json.dumps(entries).encode(), tail)
    open_and_read_all(tmp_path / "model.safetensors")


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(index=json_values)
def test_arbitrary_index_files_fail_cleanly(tmp_path, index):
    write(tmp_path, {"a": np.ones(2, np.float32)})
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    open_and_read_all(tmp_path)
