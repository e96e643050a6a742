"""KerasHub backbones that compute what their config says (`modelport convert ... --to keras --exact`).

KerasHub's BERT-family backbones hard-code the tanh GELU and a LayerNorm epsilon of 1e-12; a model trained
with the exact (erf) GELU (transformers' `gelu`, Google's ELECTRA, sentence-transformers' MiniLM) or another
epsilon computes differently there. These subclasses build the same layers, so KerasHub's weights files load
unchanged, then set the activation and epsilon from `hidden_act` and `layer_norm_eps` (transformers' names
and values). They register as `modelport>ExactBertBackbone` and friends when this module is imported, which
`import modelport` arranges once keras_hub is imported (see modelport/keras_hook.py).
"""

from __future__ import annotations

import inspect

import keras
from keras_hub.models import BertBackbone


def _gelu(approximate: bool):
    def gelu(x):
        return keras.activations.gelu(x, approximate=approximate)
    return gelu


# transformers' activation names -> the Keras function computing the same.
ACTIVATIONS = {"gelu": _gelu(False), "gelu_new": _gelu(True), "gelu_pytorch_tanh": _gelu(True),
               "relu": keras.activations.relu, "tanh": keras.activations.tanh, "linear": keras.activations.linear}


def activation(name: str):
    if name not in ACTIVATIONS:
        raise ValueError(f"hidden_act {name!r}: modelport's exact backbones compute {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[name]


def make_exact(encoder_layers, norms, hidden_act: str, layer_norm_eps: float) -> None:
    """Set the activation of every TransformerEncoder's feed-forward layer and the epsilon of every LayerNorm
    (the embeddings' in `norms`, the encoders' own): the functional graph calls them as they are now."""
    function = activation(hidden_act)
    for layer in encoder_layers:
        layer.activation = function
        layer._feedforward_intermediate_dense.activation = function
        norms = [*norms, layer._self_attention_layer_norm, layer._feedforward_layer_norm]
    for norm in norms:
        norm.epsilon = layer_norm_eps


@keras.saving.register_keras_serializable(package="modelport")
class ExactBertBackbone(BertBackbone):
    """BertBackbone with `hidden_act` and `layer_norm_eps`."""

    def __init__(self, *args, hidden_act: str = "gelu_new", layer_norm_eps: float = 1e-12, **kwargs):
        super().__init__(*args, **kwargs)
        self.hidden_act, self.layer_norm_eps = hidden_act, layer_norm_eps
        make_exact(self.transformer_layers, [self.embeddings_layer_norm], hidden_act, layer_norm_eps)

    def get_config(self):
        return {**super().get_config(), "hidden_act": self.hidden_act, "layer_norm_eps": self.layer_norm_eps}


def register_family(backbone: type, exact: type) -> None:
    """KerasHub finds a preset's tokenizer, preprocessors and tasks by their `backbone_cls`: an exact twin of
    each class made for `backbone` (BertTokenizer, BertTextClassifier, ...) lets `from_preset` find them for
    the exact backbone too."""
    known = set(keras.saving.get_custom_objects().values())
    for cls in [c for c in known if inspect.isclass(c) and c.__dict__.get("backbone_cls") is backbone]:
        twin = type(f"Exact{cls.__name__}", (cls,), {"backbone_cls": exact, "__module__": __name__})
        globals()[twin.__name__] = keras.saving.register_keras_serializable(package="modelport")(twin)


register_family(BertBackbone, ExactBertBackbone)
