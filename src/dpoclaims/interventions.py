"""Neuron-level interventions: ablation and patching as hooks on ``blocks.L.mlp.hook_post``,
and key-vector scaling as a temporary weight edit.

A neuron set is a mapping ``layer -> LongTensor of neuron indices``. An :class:`Intervention`
is a value with a stable id (so its results can be cached) and is applied only inside
:meth:`Intervention.applied`, a context manager, so hooks and weight edits end with the
measurement (the reference code left them on between metrics, compounding interventions).
Hooks fire at every position, prompt and generated alike. Every tensor an intervention
writes is moved to the device and dtype of the activation or weight it meets.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from dpoclaims.cache import stable_hash
from dpoclaims.errors import OptionError
from dpoclaims.models import MLPLayout

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
        activation[..., indices.to(activation.device)] = values.to(activation.device, activation.dtype)
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
                idx = idx.to(weight.device)
                if columns:
                    weight[:, idx] *= factor
                else:
                    weight[idx, :] *= factor
        yield
    finally:
        with torch.no_grad():
            for weight, original in saved:
                weight.copy_(original)


InterventionKind = Literal["none", "ablate", "patch", "scale_keys"]


@dataclass(frozen=True)
class Intervention:
    """What to do to one side of a pair during a measurement."""

    kind: InterventionKind = "none"
    neurons: tuple[int, ...] = ()  # flat ids: layer * d_mlp + index
    factor: float = 1.0  # scale_keys
    values: tuple[float, ...] = ()  # patch: one value per neuron, in the order of ``neurons``
    label: str = field(default="", compare=False)

    @property
    def id(self) -> str:
        if self.kind == "none":
            return "none"
        return f"{self.kind}-{len(self.neurons)}-{stable_hash([self.neurons, self.factor, self.values], 12)}"

    def neuron_set(self, layout: MLPLayout) -> dict[int, torch.Tensor]:
        return neuron_set_from_flat(torch.tensor(self.neurons, dtype=torch.long), layout.d_mlp)

    def hooks(self, layout: MLPLayout) -> list[Hook]:
        """The activation hooks of an ablation or a patch (none for the other kinds)."""
        if self.kind == "ablate":
            return ablation_hooks(layout, self.neuron_set(layout))
        if self.kind == "patch":
            if len(self.values) != len(self.neurons):
                raise OptionError("a patch needs one value per neuron")
            full = torch.zeros(layout.n_neurons)  # [n_layers * d_mlp]
            full[torch.tensor(self.neurons, dtype=torch.long)] = torch.tensor(
                self.values, dtype=torch.float32
            )
            neurons = self.neuron_set(layout)
            values = {layer: full.view(layout.n_layers, -1)[layer] for layer in neurons}
            return patch_hooks(layout, neurons, values)
        if self.kind not in ("none", "scale_keys"):
            raise OptionError(f"unknown intervention kind {self.kind!r}")
        return []

    @contextmanager
    def applied(self, bridge: Any, layout: MLPLayout, extra_hooks: Sequence[Hook] = ()) -> Iterator[None]:
        """The intervention on ``bridge``, with ``extra_hooks`` (e.g. recording) after its own
        hooks, so what they see is post-intervention."""
        with ExitStack() as stack:
            if self.kind == "scale_keys":
                stack.enter_context(scaled_key_vectors(bridge, self.neuron_set(layout), self.factor))
            hooks = self.hooks(layout) + list(extra_hooks)
            if hooks:
                stack.enter_context(bridge.hooks(fwd_hooks=hooks))
            yield
