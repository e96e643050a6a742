"""modelport: exact, streaming conversion of pretrained checkpoints between TF1, PyTorch, safetensors and Keras."""

from importlib.metadata import PackageNotFoundError, version

from modelport import api
from modelport.api import convert, extend, inspect, prune_vocab, verify
from modelport.errors import ModelportError
from modelport.keras_hook import register_when_keras_hub_loads
from modelport.mappings import MAPPINGS
from modelport.push import push

try:
    __version__ = version("modelport")
except PackageNotFoundError:  # running from a source tree
    __version__ = "0.0.0"


register_when_keras_hub_loads()


def architectures() -> list[str]:
    return list(MAPPINGS)


__all__ = ["ModelportError", "api", "architectures", "convert", "extend", "inspect", "prune_vocab", "push", "verify", "__version__"]
