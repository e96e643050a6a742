"""KerasHub presets (--to keras), written and read with h5py, without building the Keras model.

A preset is a folder: config.json (the backbone's serialized Keras config), model.weights.h5 (Keras 3's
weights file: one dataset per variable at `layers/<layer>/.../vars/<index>`; bfloat16 as 2-byte opaque data
marked with a `dtype` attribute), tokenizer.json and its assets (assets/tokenizer/vocabulary.txt), and
metadata.json. `keras_hub.models.Backbone.from_preset(OUT)` loads it.

KerasHub's backbones hard-code some of what transformers reads from the config (the BERT family's tanh GELU
and LayerNorm epsilon): the mapping lists them as the keras scheme's defaults. When the model differs, the
conversion measures how far the backbone's outputs move on a fixed input and says so (--strict refuses);
--exact writes modelport's subclass of the backbone (modelport/keras_exact.py), which computes what the
config says.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from importlib import metadata
from pathlib import Path

import numpy as np

from modelport.converters.base import BFLOAT16, Reader, TensorInfo, Writer, dtype_name
from modelport.converters.keras_h5 import h5py_module
from modelport.errors import ModelportError
from modelport.mappings.base import KerasHub, Mapping

WEIGHTS_NAME = "model.weights.h5"
CONFIG_NAME = "config.json"
TOKENIZER_NAME = "tokenizer.json"
METADATA_NAME = "metadata.json"
VOCABULARY_ASSET = "assets/tokenizer/vocabulary.txt"
# transformers names of one function, as KerasHub's fixed activations are compared with the model's.
SAME_ACTIVATION = {"gelu_pytorch_tanh": "gelu_new"}


def find_keras_preset(path: Path) -> list[Path] | None:
    """A KerasHub preset folder (its config.json is a serialized Keras object), or its weights file."""
    path = Path(path)
    folder = path.parent if path.is_file() and path.name == WEIGHTS_NAME else path
    if not (folder.is_dir() and (folder / WEIGHTS_NAME).is_file() and (folder / CONFIG_NAME).is_file()):
        return None
    try:
        config = json.loads((folder / CONFIG_NAME).read_text())
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    return [folder / WEIGHTS_NAME] if isinstance(config, dict) and "registered_name" in config else None


class KerasPresetReader(Reader):
    format = "keras"

    def __init__(self, path):
        h5py = h5py_module()
        self.path = Path(path)
        files = find_keras_preset(self.path)
        if not files:
            raise ModelportError(f"{self.path}: no KerasHub preset there (config.json and {WEIGHTS_NAME})")
        self._file = files[0]
        try:
            self._handle = h5py.File(self._file, "r")
        except OSError as error:
            raise ModelportError(f"{self._file}: not an HDF5 file ({error})") from None
        self.extras = []
        self.infos = {}
        self._handle.visititems(self._add)

    def _add(self, name: str, entry) -> None:
        if not hasattr(entry, "shape"):
            return
        bfloat16 = entry.attrs.get("dtype") == "bfloat16"
        try:
            dtype = BFLOAT16 if bfloat16 else np.dtype(entry.dtype)
            dtype_name(dtype)
        except (TypeError, ModelportError):
            raise ModelportError(f"{self._file}: {name} has dtype {entry.dtype}, which modelport does not "
                                 "convert") from None
        self.infos[name] = TensorInfo(tuple(entry.shape), dtype)

    def read(self, name: str) -> np.ndarray:
        array = np.asarray(self._handle[name][()])
        return array.view(BFLOAT16) if self.infos[name].dtype == BFLOAT16 else array

    def files(self) -> list[Path]:
        return [self._file]

    def close(self) -> None:
        self._handle.close()


class KerasPresetWriter(Writer):
    """model.weights.h5, a dataset per tensor as written, and metadata.json (one file: Keras shards only
    what it saves itself)."""

    format = "keras"

    def __init__(self, out_dir, specs, max_shard_size=None):
        super().__init__(out_dir, specs, max_shard_size)
        self._handle = h5py_module().File(self.out_dir / WEIGHTS_NAME, "w")
        self._written: set[str] = set()

    def write(self, name: str, array: np.ndarray) -> None:
        self.check(name, array)
        dataset = self._handle.create_dataset(name, data=array)
        if array.dtype == BFLOAT16:
            dataset.attrs["dtype"] = "bfloat16"
        self._written.add(name)

    def close(self) -> list[str]:
        unwritten = [n for n in self.specs if n not in self._written]
        if unwritten:
            raise ModelportError(f"internal: tensors never written: {', '.join(unwritten[:5])}")
        self._handle.close()
        facts = {"parameter_count": sum(info.numel for info in self.specs.values()), "converted_by": "modelport"}
        for package in ("keras", "keras_hub"):
            try:
                facts[f"{package}_version"] = metadata.version(package.replace("_", "-"))
            except metadata.PackageNotFoundError:
                pass
        (self.out_dir / METADATA_NAME).write_text(json.dumps(facts, indent=2) + "\n")
        return [WEIGHTS_NAME, METADATA_NAME]


def _split(dotted: str) -> tuple[str, str]:
    module, _, name = dotted.rpartition(".")
    return module, name


def _snake(name: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() and i else c.lower() for i, c in enumerate(name))


def serialized(dotted: str, arguments: dict, package: str) -> dict:
    """A Keras object's serialized config, as save_to_preset writes it."""
    module, name = _split(dotted)
    return {"module": module, "class_name": name, "config": arguments, "registered_name": f"{package}>{name}"}


def differences(mapping: Mapping, hf: dict) -> list[tuple[str, object, object]]:
    """(field, the model's value, the backbone's) for what KerasHub's backbone computes regardless of its config."""
    found = []
    for field, fixed in mapping.defaults.get("keras", {}).items():
        value = hf.get(field)
        if value is not None and SAME_ACTIVATION.get(value, value) != SAME_ACTIVATION.get(fixed, fixed):
            found.append((field, value, fixed))
    return found


def preset_config(mapping: Mapping, arguments: dict, hf: dict, dtype: np.dtype, exact: bool,
                  parts: set[str]) -> dict:
    """config.json of the preset: the backbone, or with --exact modelport's subclass that also takes the
    fields the backbone hard-codes. Refuses a checkpoint lacking a part the backbone holds (BERT's pooler)."""
    keras = _keras(mapping)
    needed = {row.part for row in mapping.rows if "keras" in row.names} - parts
    if needed:
        raise ModelportError(f"KerasHub's {_split(keras.backbone)[1]} holds the {', '.join(sorted(needed))}, "
                             "which the checkpoint lacks")
    dotted = keras.exact if exact else keras.backbone
    policy = {"module": "keras", "class_name": "DTypePolicy", "config": {"name": dtype_name(dtype)},
              "registered_name": None}
    arguments = {"name": _snake(_split(keras.backbone)[1]), "trainable": True, "dtype": policy, **arguments}
    if exact:
        arguments.update({field: hf[field] for field in mapping.defaults.get("keras", {}) if field in hf})
    return serialized(dotted, arguments, "modelport" if exact else "keras_hub")


def _keras(mapping: Mapping) -> KerasHub:
    if mapping.keras is None:
        raise ModelportError(f"{mapping.arch} has no KerasHub backbone in modelport")
    return mapping.keras


def write_tokenizer(out_dir: Path, mapping: Mapping, settings: dict) -> list[str]:
    """tokenizer.json for the vocabulary the tokenizer kind wrote to the preset's assets."""
    arguments = {"name": _snake(_split(mapping.keras.tokenizer)[1]), "trainable": True,
                 "dtype": {"module": "keras", "class_name": "DTypePolicy", "config": {"name": "int32"},
                           "registered_name": None},
                 "config_file": TOKENIZER_NAME, **settings}
    config = serialized(mapping.keras.tokenizer, arguments, "keras_hub")
    (out_dir / TOKENIZER_NAME).write_text(json.dumps(config, indent=4) + "\n")
    return [TOKENIZER_NAME]


def describe(mapping: Mapping, found: list[tuple[str, object, object]]) -> str:
    backbone = _split(_keras(mapping).backbone)[1]
    what = ", ".join(f"{field}={fixed!r} where the model has {value!r}" for field, value, fixed in found)
    return f"KerasHub's {backbone} computes {what}"


@contextlib.contextmanager
def _native_stderr_silenced():
    sys.stderr.flush()
    saved = os.dup(2)
    with open(os.devnull, "w") as devnull:
        os.dup2(devnull.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def deviation(plan, config: dict, preset: Path, mapping: Mapping) -> float | None:
    """How far the preset's backbone moves from transformers' base model on a fixed input (the largest absolute
    difference over the backbone's outputs), or None without keras-hub, torch and transformers."""
    try:
        with _native_stderr_silenced():  # keras_hub imports TensorFlow, whose C++ logging ignores Python
            import keras
            import keras_hub
            import torch
    except ImportError:
        return None
    from modelport.converters.runtime import load_model, sample_inputs

    hub = _keras(mapping)
    inputs = sample_inputs(config)
    inputs["attention_mask"] = np.ones_like(inputs["input_ids"])
    model = load_model(plan, config).base_model
    with torch.no_grad():
        expected = model(**{key: torch.from_numpy(inputs[key]) for key in hub.inputs.values() if key in inputs})
    backbone = keras_hub.models.Backbone.from_preset(str(preset))
    actual = backbone({name: inputs[key] for name, key in hub.inputs.items()})
    return max(float(np.max(np.abs(keras.ops.convert_to_numpy(actual[name]) - expected[key].numpy())))
               for name, key in hub.outputs.items())
