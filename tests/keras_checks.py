"""Checks shared by the KerasHub preset tests (--to keras): KerasHub's own forward on a preset, the datasets its
own save_to_preset writes, and bit-exact comparison of safetensors files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

# Every KerasHub test needs these (conftest has pinned Keras to the torch backend before they import).
keras_hub = pytest.importorskip("keras_hub")
keras = pytest.importorskip("keras")
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

ATOL = 1e-4  # KerasHub computes attention and LayerNorm in other orders than torch does


def keras_outputs(preset: Path, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """KerasHub's backbone, loaded from the preset by `Backbone.from_preset`, on `inputs` (KerasHub's names)."""
    import keras
    import keras_hub

    backbone = keras_hub.models.Backbone.from_preset(str(preset))
    outputs = backbone(inputs)
    outputs = outputs if isinstance(outputs, dict) else {"sequence_output": outputs}
    return {key: keras.ops.convert_to_numpy(value) for key, value in outputs.items()}


def largest_difference(actual: dict[str, np.ndarray], expected: dict[str, np.ndarray]) -> float:
    return max(float(np.abs(actual[key] - expected[key]).max()) for key in expected)


def stated_deviation(note: str) -> float:
    return float(note.split("by up to ")[1].split(" ")[0])


def h5_datasets(path: Path) -> dict[str, tuple]:
    import h5py

    found = {}
    with h5py.File(path, "r") as handle:
        handle.visititems(lambda name, item: found.update({name: (item.shape, item.dtype)})
                          if hasattr(item, "shape") else None)
    return found


def reference_datasets(preset: Path, tmp_path: Path) -> dict[str, tuple]:
    """The datasets KerasHub's own save_to_preset writes for a backbone of the preset's config."""
    import keras_hub

    config = json.loads((preset / "config.json").read_text())
    backbone_class = getattr(keras_hub.models, config["class_name"].removeprefix("Exact"))
    arguments = {k: v for k, v in config["config"].items() if k not in ("name", "trainable", "dtype")}
    backbone_class(**arguments).save_to_preset(str(tmp_path / "reference"))
    return h5_datasets(tmp_path / "reference" / "model.weights.h5")


def assert_same_tensors(back: Path, source: Path, prefix: str = "") -> int:
    """Every tensor of back/model.safetensors is bit for bit the source's (named with `prefix` there)."""
    from safetensors.numpy import load_file

    original, returned = load_file(source / "model.safetensors"), load_file(back / "model.safetensors")
    for name, value in returned.items():
        expected = original[f"{prefix}{name}"]
        assert value.dtype == expected.dtype and value.tobytes() == expected.tobytes(), name
    return len(returned)
