"""Where a Hugging Face causal LM keeps its MLP neurons, found through public ``torch.nn.Module`` API.

- :func:`decoder_layers`: the model's decoder layers (GPT-2 ``transformer.h``, Llama-style
  ``model.layers``, multimodal ``model.language_model.layers``).
- :func:`mlp_modules`: per layer, the MLP's input projection (whose output rows are the key
  vectors: GPT-2 ``mlp.c_fc``, GPT-J ``mlp.fc_in``, a gated MLP's ``mlp.up_proj``) and its
  output projection, whose *input* is the neuron activation that TransformerLens names
  ``blocks.L.mlp.hook_post`` (GPT-2 ``mlp.c_proj``, GPT-J ``mlp.fc_out``, gated ``mlp.down_proj``).
- :func:`key_vectors` / :func:`value_vectors`: the neurons' weights as ``[d_mlp, d_model]`` rows.

Nothing here installs a hook; :mod:`dpoclaims.hooks.neurons` does, on the modules found here.
"""

from __future__ import annotations

import torch

from dpoclaims.errors import PairMismatchError
from dpoclaims.models.loading import MLPLayout

# Where the decoder layers live in the supported causal LMs.
LAYER_LIST_PATHS = ("transformer.h", "model.layers", "model.language_model.layers")
# (input projection, output projection) of the MLP by MLP kind, in order of preference.
MLP_PROJECTIONS = {"gpt2": (("c_fc", "c_proj"), ("fc_in", "fc_out")), "gated": (("up_proj", "down_proj"),)}


def _is_bridge_wrapped(model: torch.nn.Module) -> bool:
    """Whether a TransformerBridge has wrapped ``model``'s modules (its components are instances
    of TransformerLens' ``GeneralizedComponent``)."""
    try:
        from transformer_lens.model_bridge.generalized_components.base import GeneralizedComponent
    except ImportError:  # no TransformerLens: nothing can be wrapped
        return False
    return any(isinstance(module, GeneralizedComponent) for module in model.modules())


def decoder_layers(model: torch.nn.Module) -> torch.nn.ModuleList:
    """The decoder layers of a supported causal LM (a plain Hugging Face model)."""
    for path in LAYER_LIST_PATHS:
        try:
            layers = model.get_submodule(path)
        except AttributeError:
            continue
        if isinstance(layers, torch.nn.ModuleList):
            return layers
    raise PairMismatchError(
        f"cannot find the decoder layers of {type(model).__name__} (looked at {', '.join(LAYER_LIST_PATHS)})"
    )


def mlp_modules(model: torch.nn.Module, layout: MLPLayout) -> list[tuple[torch.nn.Module, torch.nn.Module]]:
    """Per layer, the MLP's (input projection, output projection) modules of a plain HF model."""
    if _is_bridge_wrapped(model):
        raise PairMismatchError(
            "this model is wrapped by a TransformerBridge; measure the plain Hugging Face model "
            "(ModelPair.model(side)), not the bridge's"
        )
    layers = decoder_layers(model)
    if len(layers) != layout.n_layers:
        raise PairMismatchError(
            f"{type(model).__name__} has {len(layers)} layers, the layout {layout.n_layers}"
        )
    found: list[tuple[torch.nn.Module, torch.nn.Module]] = []
    for index, layer in enumerate(layers):
        for in_name, out_name in MLP_PROJECTIONS[layout.kind]:
            try:
                found.append((layer.get_submodule(f"mlp.{in_name}"), layer.get_submodule(f"mlp.{out_name}")))
                break
            except AttributeError:
                continue
        else:
            names = " or ".join(f"mlp.{i}/mlp.{o}" for i, o in MLP_PROJECTIONS[layout.kind])
            raise PairMismatchError(
                f"layer {index} of {type(model).__name__} has no {names} (the neuron activation of a "
                f"{layout.kind!r} MLP is its output projection's input)"
            )
    return found


def neuron_rows(module: torch.nn.Module, d_mlp: int, d_model: int, *, neurons_are: str) -> torch.Tensor:
    """The weight of an MLP projection as ``[d_mlp, d_model]`` rows, one per neuron (a view, no copy).

    ``torch.nn.Linear`` stores ``[out_features, in_features]``; GPT-2's ``Conv1D`` stores
    ``[in, out]``. ``neurons_are`` is ``"outputs"`` for the input projection (a neuron's key vector
    reads d_model) and ``"inputs"`` for the output projection (its value vector writes d_model)."""
    weight = module.weight
    if not isinstance(weight, torch.Tensor):
        raise PairMismatchError(f"{type(module).__name__}.weight is a {type(weight).__name__}, not a tensor")
    linear_layout = isinstance(module, torch.nn.Linear)
    # Linear: outputs are rows. Conv1D: outputs are columns.
    neurons_on_rows = linear_layout == (neurons_are == "outputs")
    rows = weight if neurons_on_rows else weight.T
    if tuple(rows.shape) != (d_mlp, d_model):
        raise PairMismatchError(
            f"{type(module).__name__} weight of shape {tuple(weight.shape)} does not hold {d_mlp} neurons "
            f"of width {d_model}"
        )
    return rows


def key_vectors(model: torch.nn.Module, layout: MLPLayout) -> torch.Tensor:
    """``[n_layers, d_mlp, d_model]`` float32 on the CPU: what each neuron reads (TransformerLens' ``W_in``
    columns)."""
    return torch.stack(
        [
            neuron_rows(in_proj, layout.d_mlp, layout.d_model, neurons_are="outputs").detach().float().cpu()
            for in_proj, _ in mlp_modules(model, layout)
        ]
    )


def value_vectors(model: torch.nn.Module, layout: MLPLayout) -> torch.Tensor:
    """``[n_layers, d_mlp, d_model]`` float32 on the CPU: what each neuron writes (TransformerLens'
    ``W_out`` rows)."""
    return torch.stack(
        [
            neuron_rows(out_proj, layout.d_mlp, layout.d_model, neurons_are="inputs").detach().float().cpu()
            for _, out_proj in mlp_modules(model, layout)
        ]
    )


def neuron_activation_modules(model: torch.nn.Module, layout: MLPLayout) -> list[torch.nn.Module]:
    """Per layer, the module whose input is the neuron activation (what TransformerLens calls
    ``blocks.L.mlp.hook_post``): GPT-2's ``mlp.c_proj``, a gated MLP's ``mlp.down_proj``."""
    return [out_proj for _, out_proj in mlp_modules(model, layout)]
