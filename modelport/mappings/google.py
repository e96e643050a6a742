"""Config files of Google's TF1 BERT-family code (bert_config.json, albert_config.json): its activation
names and its hard-coded LayerNorm epsilon, to and from transformers' fields."""

from __future__ import annotations

from modelport.errors import ModelportError

LAYER_NORM_EPS = 1e-12  # hard-coded in Google's modeling.py (tf.contrib.layers.layer_norm)

# Google's "gelu" is the tanh approximation, transformers' `gelu_new`. Its code has no erf form:
# "gelu_exact" is modelport's name for it, so an erf model written to TF1 converts back exactly.
ACTIVATIONS = {"gelu": "gelu_new", "gelu_exact": "gelu", "relu": "relu", "tanh": "tanh", "linear": "linear"}
DEFAULTS = {"hidden_act": "gelu_new", "layer_norm_eps": LAYER_NORM_EPS}  # what Google's code assumes


def config_to_hf(file_name: str, raw: dict) -> dict:
    """A Google config file's fields as transformers reads them (same names, translated activation)."""
    hf = dict(raw)
    if "hidden_act" in raw:
        if raw["hidden_act"] not in ACTIVATIONS:
            raise ModelportError(f"{file_name}: unknown hidden_act {raw['hidden_act']!r}")
        hf["hidden_act"] = ACTIVATIONS[raw["hidden_act"]]
    return hf


def config_from_hf(hf: dict, fields: list[str], file_name: str, hf_default_activation: str) -> tuple[dict, list[str]]:
    """The Google config file for an HF config (its `fields` only), and warnings for what Google's code
    would compute differently."""
    raw = {key: hf[key] for key in fields if key in hf}
    activation = hf.get("hidden_act", hf_default_activation)
    google = {hf_name: name for name, hf_name in ACTIVATIONS.items()}.get(activation)
    if google is None:
        raise ModelportError(f"hidden_act {activation!r} has no counterpart in Google's code")
    raw["hidden_act"] = google
    warnings = []
    if google == "gelu_exact":
        warnings.append(f'the model uses the exact (erf) GELU: {file_name} says "gelu_exact", which Google\'s '
                        'modeling.py does not know (its "gelu" is the tanh form)')
    eps = hf.get("layer_norm_eps", LAYER_NORM_EPS)
    if eps != LAYER_NORM_EPS:
        raw["layer_norm_eps"] = eps
        warnings.append(f"layer_norm_eps is {eps}; Google's modeling.py hard-codes {LAYER_NORM_EPS}")
    return raw, warnings
