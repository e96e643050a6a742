"""Which file format a path holds, and the reader and writer for each format."""

from __future__ import annotations

import importlib
from pathlib import Path

from modelport.converters.base import Reader, Writer
from modelport.errors import ModelportError

# format -> (module, reader class, writer class, finder returning the files or None); detection order.
FORMATS = {
    "megatron": ("modelport.converters.megatron", "MegatronReader", "MegatronWriter", "find_megatron_files"),
    "safetensors": ("modelport.converters.safetensors", "SafetensorsReader", "SafetensorsWriter", "find_safetensors_files"),
    "pytorch": ("modelport.converters.pytorch", "PyTorchReader", "PyTorchWriter", "find_pytorch_files"),
    "keras_h5": ("modelport.converters.keras_h5", "KerasH5Reader", "KerasH5Writer", "find_keras_h5_files"),
    "keras": ("modelport.converters.keras_preset", "KerasPresetReader", "KerasPresetWriter", "find_keras_preset"),
    "tf1": ("modelport.converters.tf1", "TF1Reader", "TF1Writer", "find_tf1_prefix"),
}


def _part(fmt: str, index: int):
    module = importlib.import_module(FORMATS[fmt][0])
    return getattr(module, FORMATS[fmt][index])


def detect_format(path: Path) -> str:
    path = Path(path)
    for fmt in FORMATS:
        if _part(fmt, 3)(path):
            return fmt
    if not path.exists() and not Path(f"{path}.index").exists():
        raise ModelportError(f"{path}: no such file or folder")
    raise ModelportError(f"{path}: no checkpoint found (looked for safetensors, PyTorch pickles, tf_model.h5, KerasHub presets and TF1 .index files)")


def open_reader(path: Path, fmt: str | None = None) -> Reader:
    return _part(fmt or detect_format(path), 1)(Path(path))


def writer_class(fmt: str) -> type[Writer]:
    return _part(fmt, 2)
