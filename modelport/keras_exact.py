"""KerasHub backbones that compute what their config says (`modelport convert ... --to keras --exact`).

KerasHub's BERT-family backbones (BERT, ALBERT, ELECTRA) hard-code the tanh GELU and a LayerNorm epsilon of
1e-12, its GPT-2 the tanh GELU and 1e-5, its T5 the largest relative distance its attention buckets (128); a
model trained with the exact (erf) GELU (transformers' `gelu`, Google's ELECTRA, sentence-transformers'
MiniLM), another epsilon or another distance computes differently there. These subclasses build the same
layers, so KerasHub's weights files load unchanged, then set what differs from the fields transformers' config
names it by (`hidden_act` and `layer_norm_eps`, GPT-2's `activation_function` and `layer_norm_epsilon`, T5's
`relative_attention_max_distance`). They register as `modelport>ExactBertBackbone` and friends
when this module is imported, which `import modelport` arranges once keras_hub is imported (see
modelport/keras_hook.py).
"""

from __future__ import annotations

import inspect

import keras
from keras_hub.models import AlbertBackbone, BertBackbone, BertMaskedLM, ElectraBackbone, GPT2Backbone, T5Backbone

from modelport.mappings.keras import ENCODER_DEFAULTS, GPT2_DEFAULTS, T5_DEFAULTS


def _gelu(approximate: bool):
    def gelu(x):
        return keras.activations.gelu(x, approximate=approximate)
    return gelu


# transformers' activation names -> the Keras function computing the same.
ACTIVATIONS = {"gelu": _gelu(False), "gelu_new": _gelu(True), "gelu_pytorch_tanh": _gelu(True),
               "relu": keras.activations.relu, "tanh": keras.activations.tanh, "linear": keras.activations.linear}


def activation(name: str):
    if name not in ACTIVATIONS:
        raise ValueError(f"activation {name!r}: modelport's exact backbones compute {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[name]


def make_exact(blocks, norms, activation_name: str, epsilon: float) -> None:
    """Set the activation of every transformer block's feed-forward layer (KerasHub's TransformerEncoder and
    TransformerDecoder name it alike) and the epsilon of every LayerNorm (the backbone's own in `norms`, the
    blocks'): the functional graph calls them as they are now."""
    function = activation(activation_name)
    norms = list(norms)
    for block in blocks:
        block.activation = function
        block._feedforward_intermediate_dense.activation = function
        norms += [block._self_attention_layer_norm, block._feedforward_layer_norm]
    for norm in norms:
        norm.epsilon = epsilon


def exact_backbone(backbone: type, fields: dict, blocks, norms) -> type:
    """A subclass of `backbone` that also takes `fields` (transformers' names of the activation and the epsilon,
    with KerasHub's fixed values as defaults); `blocks` and `norms` find its transformer blocks and its own
    LayerNorms. Registered as `modelport>Exact<backbone>`."""
    activation_field, epsilon_field = fields

    def __init__(self, *args, **kwargs):
        values = {name: kwargs.pop(name, default) for name, default in fields.items()}
        backbone.__init__(self, *args, **kwargs)
        for name, value in values.items():
            setattr(self, name, value)
        make_exact(blocks(self), norms(self), values[activation_field], values[epsilon_field])

    def get_config(self):
        return {**backbone.get_config(self), **{name: getattr(self, name) for name in fields}}

    exact = type(f"Exact{backbone.__name__}", (backbone,), {
        "__init__": __init__, "get_config": get_config, "__module__": __name__,
        "__doc__": f"{backbone.__name__} with `{activation_field}` and `{epsilon_field}`."})
    return keras.saving.register_keras_serializable(package="modelport")(exact)


def register_family(backbone: type, exact: type) -> None:
    """KerasHub finds a preset's tokenizer, preprocessors and tasks by their `backbone_cls`: an exact twin of
    each class made for `backbone` (BertTokenizer, BertTextClassifier, ...) lets `from_preset` find them for
    the exact backbone too."""
    known = set(keras.saving.get_custom_objects().values())
    for cls in [c for c in known if inspect.isclass(c) and c.__dict__.get("backbone_cls") is backbone
                and f"Exact{c.__name__}" not in globals()]:  # (one defined in this module already)
        twin = type(f"Exact{cls.__name__}", (cls,), {"backbone_cls": exact, "__module__": __name__})
        globals()[twin.__name__] = keras.saving.register_keras_serializable(package="modelport")(twin)


def _own_norm(backbone):
    return [backbone.embeddings_layer_norm]


ExactBertBackbone = exact_backbone(BertBackbone, ENCODER_DEFAULTS, lambda b: b.transformer_layers, _own_norm)
ExactAlbertBackbone = exact_backbone(AlbertBackbone, ENCODER_DEFAULTS,  # a list of inner layers per group
                                     lambda b: [layer for group in b.transformer_layers for layer in group], _own_norm)
ExactElectraBackbone = exact_backbone(ElectraBackbone, ENCODER_DEFAULTS, lambda b: b.transformer_layers, _own_norm)
ExactGPT2Backbone = exact_backbone(GPT2Backbone, GPT2_DEFAULTS, lambda b: b.transformer_layers,
                                   lambda b: [b.layer_norm])


@keras.saving.register_keras_serializable(package="modelport")
class ExactBertMaskedLM(BertMaskedLM):
    """BertMaskedLM on the exact backbone, whose head computes that backbone's activation and epsilon: transformers'
    BERT uses one hidden_act and layer_norm_eps for the encoder and the MLM head, where KerasHub's head hard-codes
    the erf GELU and 1e-5."""

    backbone_cls = ExactBertBackbone

    def __init__(self, backbone, preprocessor=None, **kwargs):
        super().__init__(backbone, preprocessor, **kwargs)
        head = self.masked_lm_head
        head._intermediate_dense.activation = activation(backbone.hidden_act)
        head._intermediate_layer_norm.epsilon = backbone.layer_norm_eps


@keras.saving.register_keras_serializable(package="modelport")
class ExactT5Backbone(T5Backbone):
    """T5Backbone with transformers' `relative_attention_max_distance` (KerasHub's attention hard-codes 128):
    every attention layer buckets relative positions up to that distance apart."""

    def __init__(self, *args, relative_attention_max_distance: int = T5_DEFAULTS["relative_attention_max_distance"],
                 **kwargs):
        super().__init__(*args, **kwargs)
        self.relative_attention_max_distance = relative_attention_max_distance
        for layer in [*self.encoder_transformer_layers, *self.decoder_transformer_layers]:
            layer.self_attention.relative_attention_max_distance = relative_attention_max_distance

    def get_config(self):
        return {**super().get_config(), "relative_attention_max_distance": self.relative_attention_max_distance}


for _backbone, _exact in ((BertBackbone, ExactBertBackbone), (AlbertBackbone, ExactAlbertBackbone),
                          (ElectraBackbone, ExactElectraBackbone), (GPT2Backbone, ExactGPT2Backbone),
                          (T5Backbone, ExactT5Backbone)):
    register_family(_backbone, _exact)
