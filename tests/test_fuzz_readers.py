"""Property tests over the PyTorch and Megatron readers (the TF1 and safetensors ones have theirs beside their
format tests): mutated files either read correctly or raise ModelportError, never anything else."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modelport.converters.formats import open_reader
from modelport.errors import ModelportError

torch = pytest.importorskip("torch")

BOUNDED = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def open_and_read_all(path) -> None:
    try:
        with open_reader(path) as reader:
            for name in reader.names():
                np.asarray(reader.read(name)).sum()
    except ModelportError:
        pass


@BOUNDED
@given(data=st.data(), legacy=st.booleans())
def test_mutated_pickles_read_or_fail_cleanly(tmp_path, data, legacy):
    path = tmp_path / "pytorch_model.bin"
    torch.save({"a.weight": torch.arange(12.0).reshape(3, 4), "b": torch.ones(5, dtype=torch.float16)}, path,
               _use_new_zipfile_serialization=not legacy)
    raw = bytearray(path.read_bytes())
    for _ in range(data.draw(st.integers(1, 4))):
        raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    if data.draw(st.booleans()):
        raw = raw[: data.draw(st.integers(0, len(raw)))]
    path.write_bytes(bytes(raw))
    open_and_read_all(tmp_path)


json_values = st.recursive(st.none() | st.booleans() | st.integers(-5, 5) | st.text(max_size=12),
                           lambda children: st.lists(children, max_size=3)
                           | st.dictionaries(st.text(max_size=8), children, max_size=3), max_leaves=8)


@BOUNDED
@given(index=json_values)
def test_arbitrary_pytorch_indexes_fail_cleanly(tmp_path, index):
    torch.save({"a": torch.ones(2)}, tmp_path / "pytorch_model-00001-of-00001.bin")
    (tmp_path / "pytorch_model.bin.index.json").write_text(json.dumps(index))
    open_and_read_all(tmp_path)


@BOUNDED
@given(tracker=st.text(max_size=20), folder=st.sampled_from(["1000", "release", "x"]))
def test_arbitrary_megatron_trackers_fail_cleanly(tmp_path, tracker, folder):
    (tmp_path / folder).mkdir(exist_ok=True)
    for rank in range(2):
        torch.save({"module": {"word_embeddings.weight": torch.ones(4, 2)}, "iteration": 1000},
                   tmp_path / folder / f"mp_rank_{rank:02d}_model_states.pt")
    (tmp_path / "latest_checkpointed_iteration.txt").write_text(tracker)
    open_and_read_all(tmp_path)
