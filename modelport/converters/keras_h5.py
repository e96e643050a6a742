"""transformers 4.x's TensorFlow weights (tf_model.h5), read and written with h5py, no TensorFlow needed.

TFPreTrainedModel.save_pretrained wrote them with Keras 2's save_weights: the file's `layer_names` attribute
lists the model's top-level layers (`bert`, `mlm___cls`, ...); each layer's group lists its variables in a
`weight_names` attribute, `<model name>/<layer>/.../<variable>:0`, and holds one dataset per name (a layer
holding another's variables, such as an LM head and the embeddings it is tied to, holds copies). The model
name is Keras's snake-case of the TF class name (`tf_bert_for_pre_training`); transformers' loader drops it
and matches the rest, so modelport names tensors without it and without the `:0` suffix. Sharded files
(`tf_model-00001-of-00002.h5` and `tf_model.h5.index.json`) hold each variable once, at its name without the
model name, listed in their `layer_names`.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from modelport.converters.base import BFLOAT16, Reader, TensorInfo, Writer, dtype_name, is_floating, read_shard_index, shard_groups
from modelport.errors import ModelportError

SINGLE_NAME = "tf_model.h5"
INDEX_NAME = "tf_model.h5.index.json"
SUFFIX = ":0"
# Keras splits an attribute larger than the HDF5 object header limit into `name0`, `name1`, ...
ATTRIBUTE_LIMIT = 64512
KERAS_VERSION = "2.15.0"  # the Keras 2 whose h5 layout this is (transformers 4.x's last TensorFlow pairing)
TOP_LEVEL = "top_level_model_weights"  # Keras 2's group for weights owned by the model itself (none here)
FLOATS = ("float32", "float16", "float64")


def h5py_module():
    try:
        import h5py
    except ImportError:
        raise ModelportError("tf_model.h5 needs h5py: pip install 'modelport[keras]'") from None
    return h5py


def keras_model_name(tf_class: str) -> str:
    """Keras 2's default model name, the snake case of its class name (TFBertForPreTraining ->
    tf_bert_for_pre_training, TFGPT2LMHeadModel -> tfgpt2lm_head_model)."""
    intermediate = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", tf_class)
    return re.sub("([a-z])([A-Z])", r"\1_\2", intermediate).lower()


def load_attribute(group, name: str) -> list[str]:
    """A list-of-strings attribute, joined back from its chunks when Keras split it."""
    if name in group.attrs:
        values = list(group.attrs[name])
    else:
        values, chunk = [], 0
        while f"{name}{chunk}" in group.attrs:
            values += list(group.attrs[f"{name}{chunk}"])
            chunk += 1
    return [v.decode("utf8") if isinstance(v, bytes) else str(v) for v in values]


def save_attribute(group, name: str, values: list[str]) -> None:
    """As Keras's save_attributes_to_hdf5_group: bytes, in as many chunks as the header limit needs."""
    data = np.asarray([v.encode("utf8") for v in values], dtype="S") if values else np.asarray([], dtype="S1")
    chunks = max(1, -(-data.nbytes // ATTRIBUTE_LIMIT))
    if chunks == 1:
        group.attrs[name] = data
        return
    for index, chunk in enumerate(np.array_split(data, chunks)):
        group.attrs[f"{name}{index}"] = chunk


def find_keras_h5_files(path: Path) -> list[Path] | None:
    path = Path(path)
    if path.is_file():
        if path.name == INDEX_NAME:
            return sorted(set(read_shard_index(path).values()))
        if path.suffix != ".h5" or path.name.endswith(".weights.h5"):  # Keras 3's files are KerasHub presets
            return None
        return [path] if path.name == SINGLE_NAME or _has_layer_names(path) else None
    if not path.is_dir():
        return None
    if (path / INDEX_NAME).is_file():
        return sorted(set(read_shard_index(path / INDEX_NAME).values()))
    return [path / SINGLE_NAME] if (path / SINGLE_NAME).is_file() else None


def _has_layer_names(path: Path) -> bool:
    h5py = h5py_module()
    try:
        with h5py.File(path, "r") as handle:
            return "layer_names" in handle.attrs or "layer_names0" in handle.attrs
    except OSError:
        return False


def strip(weight_name: str, prefixed: bool) -> str:
    """A variable's name as modelport sees it: without the model name (when it has one) and `:0`."""
    name = weight_name.split("/", 1)[1] if prefixed and "/" in weight_name else weight_name
    return name[:-len(SUFFIX)] if name.endswith(SUFFIX) else name


class H5Reader(Reader):
    """Tensors stored as HDF5 datasets (Keras weights files): opens `files`, lets `index` register each
    file's datasets with `add`, and reads one dataset at a time."""

    def __init__(self, path, files: list[Path]):
        h5py = h5py_module()
        self.path = Path(path)
        self._files = files
        self.extras = []
        self.infos = {}
        self._where: dict[str, tuple[object, str]] = {}
        self._handles = []
        for file in files:
            try:
                handle = h5py.File(file, "r")
            except OSError as error:
                raise ModelportError(f"{file}: not an HDF5 file ({error})") from None
            self._handles.append(handle)
            self.index(h5py, file, handle)

    def index(self, h5py, file: Path, handle) -> None:
        raise NotImplementedError

    def add(self, file: Path, name: str, group, key: str, dtype: np.dtype | None = None) -> None:
        """Register dataset group[key] as tensor `name` (the first time only: later ones are copies)."""
        if name in self.infos:
            return
        dataset = group[key]
        try:
            dtype = dtype or np.dtype(dataset.dtype)
            dtype_name(dtype)
        except (TypeError, ModelportError):
            raise ModelportError(f"{file}: {key} has dtype {dataset.dtype}, which modelport does not convert") from None
        self.infos[name] = TensorInfo(tuple(dataset.shape), dtype)
        self._where[name] = (group, key)

    def read(self, name: str) -> np.ndarray:
        group, key = self._where[name]
        array = np.asarray(group[key][()])
        return array.view(BFLOAT16) if self.infos[name].dtype == BFLOAT16 else array

    def files(self) -> list[Path]:
        return list(self._files)

    def close(self) -> None:
        for handle in self._handles:
            handle.close()
        self._handles.clear()


class KerasH5Reader(H5Reader):
    format = "keras_h5"

    def __init__(self, path):
        files = find_keras_h5_files(Path(path))
        if not files:
            raise ModelportError(f"{path}: no tf_model.h5 there")
        super().__init__(path, files)

    def index(self, h5py, file: Path, handle) -> None:
        layers = load_attribute(handle, "layer_names")
        if not layers:
            raise ModelportError(f"{file}: has no layer_names attribute: not Keras weights (tf_model.h5)")
        for layer in layers:
            if layer not in handle:
                raise ModelportError(f"{file}: lists layer {layer}, which it does not hold")
            entry = handle[layer]
            if isinstance(entry, h5py.Dataset):  # a shard: layer_names lists the variables themselves
                self.add(file, strip(layer, prefixed=False), handle, layer)
                continue
            for weight in load_attribute(entry, "weight_names"):
                if weight not in entry:
                    raise ModelportError(f"{file}: layer {layer} lists {weight}, which it does not hold")
                # a layer's copy of another layer's variable (the embeddings of a tied head) is skipped by add
                self.add(file, strip(weight, prefixed=True), entry, weight)


class KerasH5Writer(Writer):
    """Writes the layout TFPreTrainedModel.save_pretrained wrote, which transformers 4.x's TF classes load by
    name (each variable once, in its own layer's group). `model_class` is the transformers class (its TF
    twin's name prefixes the variables)."""

    format = "keras_h5"

    def __init__(self, out_dir, specs, max_shard_size=None, model_class: str = "",
                 copies: dict[str, str] | None = None):
        super().__init__(out_dir, specs, max_shard_size)
        self.h5py = h5py_module()
        wrong = sorted({dtype_name(i.dtype) for i in specs.values() if is_floating(i.dtype)} - set(FLOATS))
        if wrong:
            raise ModelportError(f"tf_model.h5 cannot hold {', '.join(wrong)} (transformers' TF classes load "
                                 "float32 or float16): pass --dtype float32 or --dtype float16")
        self.model_name = keras_model_name("TF" + model_class)
        self.copies = copies or {}
        groups = shard_groups(specs, max_shard_size)
        count = len(groups)
        self.sharded = count > 1
        self.file_names = [SINGLE_NAME] if not self.sharded else [
            f"tf_model-{i:05d}-of-{count:05d}.h5" for i in range(1, count + 1)]
        self._file_of = {name: file for file, group in zip(self.file_names, groups) for name in group}
        self._handles = {file: self.h5py.File(self.out_dir / file, "w") for file in self.file_names}
        self._layers: dict[str, list[str]] = {}  # top-level layer -> its variables, in writing order
        self._written: set[str] = set()

    def _weight_name(self, name: str) -> str:
        return f"{self.model_name}/{name}{SUFFIX}"

    def write(self, name: str, array: np.ndarray) -> None:
        self.check(name, array)
        self._written.add(name)
        handle = self._handles[self._file_of[name]]
        if self.sharded:
            handle.create_dataset(f"{name}{SUFFIX}", data=array)
            return
        layer = name.split("/", 1)[0]
        self._layers.setdefault(layer, []).append(name)
        group = handle.require_group(layer)
        group.create_dataset(self._weight_name(name), data=array)

    def _copy(self, handle, layer: str, names: list[str]) -> None:
        """Another layer's variables, saved again in `layer`'s group as Keras 2 does for a layer that reads
        them (transformers' loader then finds every variable of every layer)."""
        for name in names:
            source = handle[name.split("/", 1)[0]][self._weight_name(name)]
            handle[layer].create_dataset(self._weight_name(name), data=source[()])
            self._layers[layer].append(name)

    def close(self) -> list[str]:
        unwritten = [n for n in self.specs if n not in self._written]
        if unwritten:
            raise ModelportError(f"internal: tensors never written: {', '.join(unwritten[:5])}")
        if self.sharded:
            for file, handle in self._handles.items():
                save_attribute(handle, "layer_names", [f"{n}{SUFFIX}" for n, f in self._file_of.items() if f == file])
            weight_map = {self._weight_name(n): f for n, f in self._file_of.items()}
            total = sum(info.nbytes for info in self.specs.values())
            (self.out_dir / INDEX_NAME).write_text(json.dumps({"metadata": {"total_size": total},
                                                              "weight_map": weight_map}, indent=2) + "\n")
        else:
            handle = self._handles[SINGLE_NAME]
            save_attribute(handle, "layer_names", list(self._layers))
            handle.attrs["backend"] = b"tensorflow"
            handle.attrs["keras_version"] = KERAS_VERSION.encode()
            for layer, prefix in self.copies.items():
                if layer in self._layers:
                    self._copy(handle, layer, [n for n in self.specs if n.startswith(prefix)])
            for layer, names in self._layers.items():
                save_attribute(handle[layer], "weight_names", [self._weight_name(n) for n in names])
            save_attribute(handle.create_group(TOP_LEVEL), "weight_names", [])
        for handle in self._handles.values():
            handle.close()
        return list(self.file_names) + ([INDEX_NAME] if self.sharded else [])
