"""Running a planned checkpoint in transformers (for `verify`): optional, needs torch and transformers."""

from __future__ import annotations

import numpy as np

from modelport.converters import engine
from modelport.converters.base import is_floating


def sample_inputs(config: dict, length: int = 16, seed: int = 0) -> dict[str, np.ndarray]:
    """A fixed random batch of token ids (and segment ids where the model has segments)."""
    rng = np.random.default_rng(seed)
    positions = config.get("max_position_embeddings") or config.get("n_positions") or length
    length = min(length, positions)
    inputs = {"input_ids": rng.integers(0, config["vocab_size"], size=(2, length))}
    if config.get("type_vocab_size"):
        inputs["token_type_ids"] = rng.integers(0, config["type_vocab_size"], size=(2, length))
    return inputs


def load_model(plan: engine.Plan, config: dict):
    """The transformers model class the checkpoint is, with its tensors loaded in float32."""
    import torch
    import transformers

    model_class = engine.check_complete(plan, config)
    fields = {k: v for k, v in config.items() if k not in engine.RECOMPUTED_FIELDS}
    model = getattr(transformers, model_class.name)(transformers.AutoConfig.for_model(plan.mapping.model_type, **fields))
    strip = plan.mapping.base_prefix if model_class.bare else ""
    state, optional = {}, set()
    for name, planned in plan.tensors.items():
        array = engine.build(plan, planned, {"config": config})
        array = array.astype(np.float32) if is_floating(array.dtype) else array
        key = name[len(strip):] if strip and name.startswith(strip) else name
        state[key] = torch.from_numpy(np.array(array))
        if planned.row.part in model_class.optional:
            optional.add(key)
    ties = model.get_expanded_tied_weights_keys(all_submodels=True)
    for target in ties:
        if target in state:  # saved on its own (an untied head): its own parameter, not the one it may be tied to
            module, _, name = target.rpartition(".")
            setattr(model.get_submodule(module), name, torch.nn.Parameter(torch.empty_like(state[target])))
    missing, unexpected = model.load_state_dict(state, strict=False)
    unexpected = [u for u in unexpected if u not in optional]  # an optional part the class ignores (a pooler)
    untied = [m for m in missing if m not in ties and plan.mapping.alias_of("hf", m) is None]
    if untied or unexpected:
        raise RuntimeError(f"transformers' {model_class.name} does not match: missing {untied}, unexpected {unexpected}")
    model.tie_weights(missing_keys=set(missing))  # ties what the checkpoint leaves out, as from_pretrained does
    return model.float().eval()


def forward_outputs(plan: engine.Plan, config: dict) -> dict[str, np.ndarray] | None:
    """Every output of the model on a fixed input, or None when torch/transformers are not installed."""
    try:
        import torch
    except ImportError:
        return None
    model = load_model(plan, config)
    inputs = {k: torch.from_numpy(v) for k, v in sample_inputs(config).items()}
    if model.config.is_encoder_decoder:  # teacher forcing: the decoder reads the same ids
        inputs["decoder_input_ids"] = inputs["input_ids"]
    with torch.no_grad():
        outputs = model(**inputs, output_hidden_states=True)
    result = {}
    for key, value in outputs.items():
        if isinstance(value, torch.Tensor):
            result[key] = value.numpy()
        elif key == "hidden_states":
            result["last_hidden_state"] = value[-1].numpy()
    return result
