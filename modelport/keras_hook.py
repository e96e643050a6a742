"""Registers modelport's exact KerasHub backbones (modelport/keras_exact.py) with Keras once keras_hub is
imported, before or after modelport: presets written with --exact then load after `import modelport`, and
modelport itself never imports Keras (slow, and most conversions do not need it)."""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys

EXACT_MODULE = "modelport.keras_exact"


def _register() -> None:
    try:
        importlib.import_module(EXACT_MODULE)
    except (ImportError, AttributeError):  # a keras_hub without the backbones subclassed there
        pass


class _AfterKerasHub(importlib.abc.MetaPathFinder):
    """Finds keras_hub as the other finders do, and registers the exact backbones when it has loaded."""

    def find_spec(self, name, path=None, target=None):
        if name != "keras_hub":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.loader is not None:
            load = spec.loader.exec_module

            def exec_module(module):
                load(module)
                _register()
            spec.loader.exec_module = exec_module
        return spec


def register_when_keras_hub_loads() -> None:
    if "keras_hub" in sys.modules:
        _register()
    elif not any(isinstance(finder, _AfterKerasHub) for finder in sys.meta_path):
        sys.meta_path.insert(0, _AfterKerasHub())
