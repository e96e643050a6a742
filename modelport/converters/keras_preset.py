"""KerasHub presets (--to keras), written and read with h5py, without building the Keras model.

A preset is a folder: config.json (the backbone's serialized Keras config), model.weights.h5 (Keras 3's
weights file: one dataset per variable at `layers/<layer>/.../vars/<index>`; bfloat16 as 2-byte opaque data
marked with a `dtype` attribute), tokenizer.json and its assets (assets/tokenizer/vocabulary.txt for WordPiece,
vocabulary.spm for sentencepiece), and metadata.json. `keras_hub.models.Backbone.from_preset(OUT)` loads it.
When the checkpoint has a head a KerasHub task holds (BERT's MLM head: BertMaskedLM), task.json and
task.weights.h5 hold the task, and `keras_hub.models.MaskedLM.from_preset(OUT)` loads it with the head.

KerasHub's backbones hard-code some of what transformers reads from the config (the BERT family's tanh GELU
and LayerNorm epsilon, GPT-2's, T5's largest bucketed distance): the mapping lists them as the keras scheme's
defaults. When the model differs, the conversion measures how far the backbone's outputs move on a fixed input
and says so (--strict refuses); the task's head likewise (KerasHub's BERT MLM head hard-codes the erf GELU and
epsilon 1e-5). --exact writes modelport's subclasses of the backbone and task (modelport/keras_exact.py),
which compute what the config says. What modelport's names for a backbone cannot hold (ALBERT's several inner
layers per group, T5's unequal stacks or other bucket counts) is refused: the KerasHub constraints.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import re
import sys
from importlib import metadata
from pathlib import Path
from typing import Callable

import numpy as np

from modelport.converters.base import BFLOAT16, Writer, dtype_name
from modelport.converters.keras_h5 import H5Reader, h5py_module, keras_model_name
from modelport.errors import ModelportError
from modelport.mappings.base import KerasHub, Mapping, evaluate

WEIGHTS_NAME = "model.weights.h5"
TASK_WEIGHTS_NAME = "task.weights.h5"  # a task's own weights (its head), beside the backbone's
TASK_PREFIX = "task/"  # how modelport names the tensors of task.weights.h5
OPTIMIZER = "optimizer/"  # Keras saves a compiled task's optimizer state in task.weights.h5: not weights
# What a freshly compiled KerasHub task saves there (Adam's iterations and learning rate, KerasHub's default):
# without it, Keras warns when it loads the task weights.
FRESH_OPTIMIZER = {f"{OPTIMIZER}vars/0": np.int32(0), f"{OPTIMIZER}vars/1": np.float32(5e-5)}
CONFIG_NAME = "config.json"
TASK_NAME = "task.json"
TOKENIZER_NAME = "tokenizer.json"
METADATA_NAME = "metadata.json"
# transformers names of one function, as KerasHub's fixed activations are compared with the model's.
SAME_ACTIVATION = {"gelu_pytorch_tanh": "gelu_new"}


def find_keras_preset(path: Path) -> list[Path] | None:
    """A KerasHub preset folder (its config.json is a serialized Keras object), or its weights file: the
    backbone's weights file, and the task's when there is one."""
    path = Path(path)
    folder = path.parent if path.is_file() and path.name == WEIGHTS_NAME else path
    if not (folder.is_dir() and (folder / WEIGHTS_NAME).is_file() and (folder / CONFIG_NAME).is_file()):
        return None
    try:
        config = json.loads((folder / CONFIG_NAME).read_text())
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    if not (isinstance(config, dict) and "registered_name" in config):
        return None
    return [folder / WEIGHTS_NAME] + ([folder / TASK_WEIGHTS_NAME] if (folder / TASK_WEIGHTS_NAME).is_file() else [])


class KerasPresetReader(H5Reader):
    """The backbone's tensors by their paths in model.weights.h5, the task's by theirs in task.weights.h5 after
    `task/`."""

    format = "keras"

    def __init__(self, path):
        files = find_keras_preset(Path(path))
        if not files:
            raise ModelportError(f"{path}: no KerasHub preset there (config.json and {WEIGHTS_NAME})")
        super().__init__(path, files)

    def index(self, h5py, file: Path, handle) -> None:
        prefix = TASK_PREFIX if file.name == TASK_WEIGHTS_NAME else ""

        def visit(key: str, entry) -> None:
            if not isinstance(entry, h5py.Dataset):
                return
            if prefix and key.startswith(OPTIMIZER):
                self.extras.append(f"{file.name}:{key}")
                return
            self.add(file, prefix + key, handle, key, BFLOAT16 if entry.attrs.get("dtype") == "bfloat16" else None)

        handle.visititems(visit)


class KerasPresetWriter(Writer):
    """model.weights.h5 (and task.weights.h5 for `task/` tensors), a dataset per tensor as written, and
    metadata.json (one file each: Keras shards only what it saves itself)."""

    format = "keras"

    def __init__(self, out_dir, specs, max_shard_size=None):
        super().__init__(out_dir, specs, max_shard_size)
        h5py = h5py_module()
        self._handles = {WEIGHTS_NAME: h5py.File(self.out_dir / WEIGHTS_NAME, "w")}
        if any(name.startswith(TASK_PREFIX) for name in specs):
            self._handles[TASK_WEIGHTS_NAME] = h5py.File(self.out_dir / TASK_WEIGHTS_NAME, "w")
            for key, value in FRESH_OPTIMIZER.items():
                self._handles[TASK_WEIGHTS_NAME].create_dataset(key, data=value)
        self._written: set[str] = set()

    def write(self, name: str, array: np.ndarray) -> None:
        self.check(name, array)
        task = name.startswith(TASK_PREFIX)
        handle = self._handles[TASK_WEIGHTS_NAME if task else WEIGHTS_NAME]
        dataset = handle.create_dataset(name[len(TASK_PREFIX):] if task else name, data=array)
        if array.dtype == BFLOAT16:
            dataset.attrs["dtype"] = "bfloat16"
        self._written.add(name)

    def close(self) -> list[str]:
        unwritten = [n for n in self.specs if n not in self._written]
        if unwritten:
            raise ModelportError(f"internal: tensors never written: {', '.join(unwritten[:5])}")
        for handle in self._handles.values():
            handle.close()
        facts = {"parameter_count": sum(info.numel for info in self.specs.values()), "converted_by": "modelport"}
        for package in ("keras", "keras_hub"):
            try:
                facts[f"{package}_version"] = metadata.version(package.replace("_", "-"))
            except metadata.PackageNotFoundError:
                pass
        (self.out_dir / METADATA_NAME).write_text(json.dumps(facts, indent=2) + "\n")
        return [*self._handles, METADATA_NAME]


def _split(dotted: str) -> tuple[str, str]:
    module, _, name = dotted.rpartition(".")
    return module, name


def serialized(dotted: str, arguments: dict, package: str) -> dict:
    """A Keras object's serialized config, as save_to_preset writes it (named as Keras names it)."""
    module, name = _split(dotted)
    arguments = {"name": keras_model_name(name), "trainable": True, **arguments}
    return {"module": module, "class_name": name, "config": arguments, "registered_name": f"{package}>{name}"}


def _policy(dtype: str) -> dict:
    return {"module": "keras", "class_name": "DTypePolicy", "config": {"name": dtype}, "registered_name": None}


def differences(fixed: dict, hf: dict) -> list[tuple[str, object, object]]:
    """(field, the model's value, KerasHub's) for what KerasHub computes regardless of the config (`fixed`,
    under transformers' names)."""
    found = []
    for field, value_there in fixed.items():
        value = hf.get(field)
        if value is not None and SAME_ACTIVATION.get(value, value) != SAME_ACTIVATION.get(value_there, value_there):
            found.append((field, value, value_there))
    return found


def checks(mapping: Mapping, parts: set[str]) -> list[tuple[str, dict, Callable]]:
    """What a preset computes with fixed values: (what, those values, how to measure its deviation) for the
    backbone, and for the task's head when the preset holds it."""
    keras = _keras(mapping)
    found = [(_split(keras.backbone)[1], mapping.defaults.get("keras", {}), deviation)]
    if keras.task and keras.task.part in parts:
        found.append((f"{_split(keras.task.task)[1]} head", keras.task.defaults, task_deviation))
    return found


def check_layout(mapping: Mapping, hf: dict, parts: set[str]) -> None:
    """Refuses a checkpoint lacking a part the backbone holds (BERT's pooler), or one the mapping's keras names
    cannot hold (the KerasHub constraints)."""
    keras = _keras(mapping)
    needed = set(keras.parts) - parts
    if needed:
        raise ModelportError(f"KerasHub's {_split(keras.backbone)[1]} holds the {', '.join(sorted(needed))}, "
                             "which the checkpoint lacks")
    for constraint in keras.constraints:
        if evaluate(constraint, hf) == 0:
            values = ", ".join(f"{n}={hf.get(n)}" for n in re.findall(r"[A-Za-z_]\w*", constraint))
            raise ModelportError(f"modelport writes KerasHub's {_split(keras.backbone)[1]} only where {constraint} "
                                 f"(the model has {values})")


def preset_config(mapping: Mapping, arguments: dict, hf: dict, dtype: np.dtype, exact: bool) -> dict:
    """config.json of the preset: the backbone, or with --exact modelport's subclass that also takes the
    fields the backbone hard-codes."""
    keras = _keras(mapping)
    arguments = {"dtype": _policy(dtype_name(dtype)), **arguments}
    if exact:
        arguments.update({field: hf[field] for field in mapping.defaults.get("keras", {}) if field in hf})
        return serialized(keras.exact, {"name": keras_model_name(_split(keras.backbone)[1]), **arguments},
                          "modelport")
    return serialized(keras.backbone, arguments, "keras_hub")


def _keras(mapping: Mapping) -> KerasHub:
    if mapping.keras is None:
        raise ModelportError(f"{mapping.arch} has no KerasHub backbone in modelport")
    return mapping.keras


def write_tokenizer(out_dir: Path, mapping: Mapping, settings: dict, tokenizer: str = "") -> list[str]:
    """tokenizer.json for the vocabulary the tokenizer kind wrote to the preset's assets: the architecture's
    KerasHub tokenizer, or `tokenizer` (a dotted class) when the kind says which one reads its files."""
    config = serialized(tokenizer or _keras(mapping).tokenizer,
                        {"dtype": _policy("int32"), "config_file": TOKENIZER_NAME, **settings}, "keras_hub")
    (out_dir / TOKENIZER_NAME).write_text(json.dumps(config, indent=4) + "\n")
    return [TOKENIZER_NAME]


def write_task(out_dir: Path, mapping: Mapping, backbone: dict, exact: bool, parts: set[str]) -> list[str]:
    """task.json, when the preset holds the task's head: the task with the preset's backbone, and its
    preprocessor (sequences as long as the backbone's positions) around the preset's tokenizer, if any."""
    task = _keras(mapping).task
    if task is None or task.part not in parts:
        return []
    preprocessor = None
    if (out_dir / TOKENIZER_NAME).is_file():
        length = backbone["config"].get("max_sequence_length")
        preprocessor = serialized(task.preprocessor, {
            "dtype": _policy("float32"), "tokenizer": json.loads((out_dir / TOKENIZER_NAME).read_text()),
            "config_file": "preprocessor.json", **({"sequence_length": length} if length else {})}, "keras_hub")
    arguments = {"backbone": backbone, "preprocessor": preprocessor}
    config = (serialized(task.exact, {"name": keras_model_name(_split(task.task)[1]), **arguments}, "modelport")
              if exact else serialized(task.task, arguments, "keras_hub"))
    (out_dir / TASK_NAME).write_text(json.dumps(config, indent=4) + "\n")
    return [TASK_NAME]


def describe(what: str, found: list[tuple[str, object, object]]) -> str:
    differing = ", ".join(f"{field}={fixed!r} where the model has {value!r}" for field, value, fixed in found)
    return f"KerasHub's {what} computes {differing}"


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


def _runtimes():
    """keras, keras_hub and torch, or None when one is missing (the deviation is then not measured)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # TensorFlow's C++ log lines would break one-line output
    try:
        with _native_stderr_silenced():  # keras_hub imports TensorFlow, whose C++ logging ignores Python
            import keras
            import keras_hub
            import torch
    except ImportError:
        return None
    return keras, keras_hub, torch


def _fixed_inputs(config: dict) -> dict[str, np.ndarray]:
    """A fixed batch under transformers' names: an encoder-decoder's decoder reads the same ids."""
    from modelport.converters.runtime import sample_inputs

    inputs = sample_inputs(config)
    ones = np.ones_like(inputs["input_ids"])
    inputs.update(attention_mask=ones, decoder_input_ids=inputs["input_ids"], decoder_attention_mask=ones)
    return inputs


def deviation(plan, config: dict, preset: Path) -> float | None:
    """How far the preset's backbone moves from transformers' base model on a fixed input (the largest absolute
    difference over the backbone's outputs), or None without keras-hub, torch and transformers."""
    if (runtimes := _runtimes()) is None:
        return None
    keras, keras_hub, torch = runtimes
    from modelport.converters.runtime import load_model

    hub = _keras(plan.mapping)
    inputs = _fixed_inputs(config)
    model = load_model(plan, config).base_model
    with torch.no_grad():
        expected = model(**{key: torch.from_numpy(inputs[key]) for key in hub.inputs.values()},
                         output_hidden_states=True)
    backbone = keras_hub.models.Backbone.from_preset(str(preset))
    actual = backbone({name: inputs[key] for name, key in hub.inputs.items()})
    actual = actual if isinstance(actual, dict) else dict(zip(hub.outputs, [actual]))
    return max(float(np.max(np.abs(keras.ops.convert_to_numpy(actual[name]) - _last(expected[key]).numpy())))
               for name, key in hub.outputs.items())


def task_deviation(plan, config: dict, preset: Path) -> float | None:
    """How far the preset's task moves from transformers' model with the head on a fixed input, every position
    masked (the largest absolute difference of the logits), or None without keras-hub, torch and transformers."""
    if (runtimes := _runtimes()) is None:
        return None
    keras, _, torch = runtimes
    from modelport.converters.runtime import load_model

    hub = _keras(plan.mapping)
    inputs = _fixed_inputs(config)
    with torch.no_grad():
        outputs = load_model(plan, config)(**{key: torch.from_numpy(inputs[key]) for key in hub.inputs.values()})
    expected = next(outputs[name] for name in hub.task.output if name in outputs).numpy()
    task_class = getattr(importlib.import_module(_split(hub.task.task)[0]), _split(hub.task.task)[1])
    task = task_class.from_preset(str(preset), preprocessor=None)
    positions = np.broadcast_to(np.arange(inputs["input_ids"].shape[1]), inputs["input_ids"].shape)
    actual = task({**{name: inputs[key] for name, key in hub.inputs.items()}, "mask_positions": positions})
    return float(np.max(np.abs(keras.ops.convert_to_numpy(actual) - expected)))


def _last(output):
    """An output, or the last of a tuple of them (a stack's hidden states: its final one)."""
    return output[-1] if isinstance(output, tuple) else output
