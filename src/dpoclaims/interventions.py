"""Neuron-level interventions as TransformerLens-style hooks on ``blocks.L.mlp.hook_post``.

A neuron set is a mapping ``layer -> LongTensor of neuron indices``. Interventions are hook
lists for ``bridge.hooks(fwd_hooks=...)``, always used as a context manager so that hooks
are removed when the measurement ends (the reference code left them on between metrics,
compounding interventions). Hooks fire at every position, prompt and generated alike.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import torch

from dpoclaims.pairs import MLPLayout

NeuronSet = Mapping[int, torch.Tensor]
Hook = tuple[str, Callable[[torch.Tensor, Any], torch.Tensor]]


def neuron_set_from_flat(flat_indices: torch.Tensor, d_mlp: int) -> dict[int, torch.Tensor]:
    """Group flat neuron ids (``layer * d_mlp + i``) by layer."""
    flat_indices = torch.as_tensor(flat_indices, dtype=torch.long).reshape(-1)
    layers = flat_indices // d_mlp
    return {int(layer): flat_indices[layers == layer] % d_mlp for layer in torch.unique(layers)}


def _set_hook(indices: torch.Tensor, values: torch.Tensor) -> Callable[[torch.Tensor, Any], torch.Tensor]:
    def hook(activation: torch.Tensor, hook: Any) -> torch.Tensor:
        activation = activation.clone()
        activation[..., indices] = values.to(activation.dtype)
        return activation

    return hook


def ablation_hooks(layout: MLPLayout, neurons: NeuronSet) -> list[Hook]:
    """Set the neurons' activations to 0 (equivalent to zeroing their value vectors)."""
    return [
        (layout.hook_name(layer), _set_hook(idx, torch.zeros(len(idx))))
        for layer, idx in neurons.items()
        if len(idx)
    ]


def patch_hooks(layout: MLPLayout, neurons: NeuronSet, values: Mapping[int, torch.Tensor]) -> list[Hook]:
    """Set each neuron's activation to a fixed value (e.g. its mean DPO activation).

    ``values[layer]`` is a ``[d_mlp]`` vector of per-neuron values for that layer.
    """
    return [
        (layout.hook_name(layer), _set_hook(idx, values[layer][idx]))
        for layer, idx in neurons.items()
        if len(idx)
    ]


def _in_weight(bridge: Any, layer: int) -> tuple[torch.nn.Parameter, bool]:
    """The raw input weight of layer ``layer``'s MLP and whether neurons are its columns."""
    linear = bridge.blocks[layer].mlp._modules["in"].original_component
    columns = type(linear).__name__ == "Conv1D"  # GPT-2 stores [d_model, d_mlp]
    return linear.weight, columns


@contextmanager
def scaled_key_vectors(bridge: Any, neurons: NeuronSet, factor: float) -> Iterator[None]:
    """Multiply the key vectors (rows of ``W_in``) of ``neurons`` by ``factor``; restore on exit."""
    saved: list[tuple[torch.nn.Parameter, torch.Tensor]] = []
    try:
        with torch.no_grad():
            for layer, idx in neurons.items():
                weight, columns = _in_weight(bridge, layer)
                saved.append((weight, weight.detach().clone()))
                if columns:
                    weight[:, idx] *= factor
                else:
                    weight[idx, :] *= factor
        yield
    finally:
        with torch.no_grad():
            for weight, original in saved:
                weight.copy_(original)
