"""Neuron-level interventions: ablation and patching as edits of the neuron activation (the
input of each layer's MLP output projection, which the bridge names ``blocks.L.mlp.hook_post``),
and key-vector scaling as a temporary weight edit.

A neuron set is a mapping ``layer -> LongTensor of neuron indices``. An :class:`Intervention`
is a value with a stable id (so its results can be cached) and is applied only inside
:meth:`Intervention.applied`, a context manager, so hooks and weight edits end with the
measurement (the reference code left them on between metrics, compounding interventions).
Two equivalent ways to apply it (a test shows they agree): plain PyTorch hooks on the raw
Hugging Face model (:mod:`dpoclaims.neuron_hooks`; what the library's measurements use, at the
raw model's speed) or the TransformerBridge's hook points (for fixtures users write with
TransformerLens). Hooks fire at every position, prompt and generated alike. Every tensor an
intervention writes is moved to the device and dtype of the activation or weight it meets.
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
from dpoclaims.neuron_hooks import NeuronEdit, neuron_hooks, set_neurons

NeuronSet = Mapping[int, torch.Tensor]
Hook = tuple[str, Callable[[torch.Tensor, Any], torch.Tensor]]


def neuron_set_from_flat(flat_indices: torch.Tensor, d_mlp: int) -> dict[int, torch.Tensor]:
    """Group flat neuron ids (``layer * d_mlp + i``) by layer."""
    flat_indices = torch.as_tensor(flat_indices, dtype=torch.long).reshape(-1)
    layers = flat_indices // d_mlp
    return {int(layer): flat_indices[layers == layer] % d_mlp for layer in torch.unique(layers)}


def _set_hook(indices: torch.Tensor, values: torch.Tensor) -> Callable[[torch.Tensor, Any], torch.Tensor]:
    """A bridge hook setting ``indices`` to ``values``: :func:`set_neurons` with the hook's signature."""
    edit = set_neurons(indices, values)

    def hook(activation: torch.Tensor, hook: Any) -> torch.Tensor:
        return edit(activation)

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
    """Multiply the key vectors (rows of ``W_in``) of ``neurons`` by ``factor``, in place on the
    bridge's parameters (which :func:`dpoclaims.neuron_hooks.raw_model` shares); restore on exit.

    Only the touched key vectors are saved (on the weight's device), not whole matrices: on a
    large model on a GPU a copy of every ``W_in`` would cost gigabytes."""
    saved: list[tuple[torch.nn.Parameter, bool, torch.Tensor, torch.Tensor]] = []
    try:
        with torch.no_grad():
            for layer, idx in neurons.items():
                weight, columns = _in_weight(bridge, layer)
                idx = idx.to(weight.device)
                saved.append((weight, columns, idx, (weight[:, idx] if columns else weight[idx, :]).clone()))
                if columns:
                    weight[:, idx] *= factor
                else:
                    weight[idx, :] *= factor
        yield
    finally:
        with torch.no_grad():
            for weight, columns, idx, original in reversed(saved):
                weight.index_copy_(1 if columns else 0, idx, original)


InterventionKind = Literal["none", "ablate", "patch", "scale_keys", "edit"]
# How an activation edit writes its neurons: "overwrite" sets each to a constant (``values``
# holds the constants; the authors' repository writes the scaled mean base activation),
# "scale" multiplies the live activation by a per-neuron factor (``values`` holds the factors).
EditMode = Literal["overwrite", "scale"]
EDIT_MODES: tuple[EditMode, ...] = ("overwrite", "scale")


def scale_neurons(indices: torch.Tensor, factors: torch.Tensor) -> NeuronEdit:
    """An edit that multiplies neurons ``indices`` by ``factors`` (one each) at every position;
    the factors follow the activation's device and dtype."""
    cache: dict[tuple[torch.device, torch.dtype], tuple[torch.Tensor, torch.Tensor]] = {}

    def edit(activation: torch.Tensor) -> torch.Tensor:
        key = (activation.device, activation.dtype)
        if key not in cache:
            cache[key] = (
                indices.to(activation.device),
                factors.to(device=activation.device, dtype=activation.dtype),
            )
        index, factor = cache[key]
        activation = activation.clone()
        activation[..., index] = activation[..., index] * factor
        return activation

    return edit


@dataclass(frozen=True)
class Intervention:
    """What to do to one side of a pair during a measurement."""

    kind: InterventionKind = "none"
    neurons: tuple[int, ...] = ()  # flat ids: layer * d_mlp + index
    factor: float = 1.0  # scale_keys
    values: tuple[float, ...] = ()  # patch, edit: one value per neuron, in the order of ``neurons``
    mode: EditMode = "overwrite"  # edit only: what ``values`` hold (see EditMode)
    label: str = field(default="", compare=False)

    @property
    def id(self) -> str:
        if self.kind == "none":
            return "none"
        if self.kind == "edit":  # only an edit's id holds the mode, so the other kinds' ids are unchanged
            digest = stable_hash([self.neurons, self.values, self.mode], 12)
            return f"edit-{self.mode}-{len(self.neurons)}-{digest}"
        return f"{self.kind}-{len(self.neurons)}-{stable_hash([self.neurons, self.factor, self.values], 12)}"

    def neuron_set(self, layout: MLPLayout) -> dict[int, torch.Tensor]:
        return neuron_set_from_flat(torch.tensor(self.neurons, dtype=torch.long), layout.d_mlp)

    def _set_values(self, layout: MLPLayout) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
        """Per layer, the neurons an ablation or a patch sets and their values (CPU; the edits
        move them to the activation's device and dtype); empty for the other kinds."""
        if self.kind == "ablate":
            return {layer: (idx, torch.zeros(len(idx))) for layer, idx in self.neuron_set(layout).items()}
        if self.kind == "patch":
            if len(self.values) != len(self.neurons):
                raise OptionError("a patch needs one value per neuron")
            return self._per_layer_values(layout)
        if self.kind == "edit":
            raise OptionError(
                "an activation edit runs on the raw Hugging Face model only: apply it with "
                "Intervention.applied(..., raw=pair.raw(side)) or Intervention.edits()"
            )
        if self.kind not in ("none", "scale_keys"):
            raise OptionError(f"unknown intervention kind {self.kind!r}")
        return {}

    def _per_layer_values(self, layout: MLPLayout) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
        """Per layer, the neurons and their entries of ``values`` (CPU)."""
        full = torch.zeros(layout.n_neurons)  # [n_layers * d_mlp]
        full[torch.tensor(self.neurons, dtype=torch.long)] = torch.tensor(self.values, dtype=torch.float32)
        per_layer = full.view(layout.n_layers, -1)  # [n_layers, d_mlp]
        return {layer: (idx, per_layer[layer][idx]) for layer, idx in self.neuron_set(layout).items()}

    def hooks(self, layout: MLPLayout) -> list[Hook]:
        """The bridge hooks (on ``blocks.L.mlp.hook_post``) of an ablation or a patch (none for
        the other kinds)."""
        return [
            (layout.hook_name(layer), _set_hook(idx, values))
            for layer, (idx, values) in self._set_values(layout).items()
            if len(idx)
        ]

    def edits(self, layout: MLPLayout) -> dict[int, NeuronEdit]:
        """The same as :meth:`hooks`, as :func:`dpoclaims.neuron_hooks.neuron_hooks` edits for the
        raw Hugging Face model; an activation edit (``kind="edit"``) exists on this path only.
        Every edit writes every position of every forward: prompt, generated token and
        perplexity window alike."""
        if self.kind == "edit":
            if len(self.values) != len(self.neurons):
                raise OptionError("an activation edit needs one value per neuron")
            if self.mode not in EDIT_MODES:
                raise OptionError(f"unknown edit mode {self.mode!r}; use one of {EDIT_MODES}")
            write = set_neurons if self.mode == "overwrite" else scale_neurons
            return {
                layer: write(idx, values) for layer, (idx, values) in self._per_layer_values(layout).items()
            }
        return {
            layer: set_neurons(idx, values)
            for layer, (idx, values) in self._set_values(layout).items()
            if len(idx)
        }

    @contextmanager
    def applied(
        self,
        bridge: Any,
        layout: MLPLayout,
        extra_hooks: Sequence[Hook] = (),
        *,
        raw: torch.nn.Module | None = None,
        extra_edits: Mapping[int, NeuronEdit] | None = None,
    ) -> Iterator[torch.nn.Module]:
        """The intervention on one side of a pair; yields the model to run under it.

        With ``raw`` (``raw_model(bridge)``, e.g. :meth:`dpoclaims.pairs.ModelPair.raw`): the
        activation edits are forward pre-hooks on the raw model's neuron modules, and
        ``extra_edits`` (e.g. recording) run after them, so they see post-intervention values;
        yields ``raw``. This is the path the library's measurements take. Without ``raw``: the
        bridge's hook points, with ``extra_hooks`` after the intervention's own; yields
        ``bridge.original_model``, whose forward fires them. Key scaling edits ``W_in`` in
        place on the bridge's parameters, which the raw model shares, so both paths see it.
        """
        if raw is not None and extra_hooks:
            raise OptionError("bridge hooks do not fire on the raw model: pass extra_edits with raw=")
        if raw is None and extra_edits:
            raise OptionError("extra_edits apply to the raw model: pass raw=raw_model(bridge)")
        with ExitStack() as stack:
            if self.kind == "scale_keys":
                stack.enter_context(scaled_key_vectors(bridge, self.neuron_set(layout), self.factor))
            if raw is None:
                hooks = self.hooks(layout) + list(extra_hooks)
                if hooks:
                    stack.enter_context(bridge.hooks(fwd_hooks=hooks))
                yield bridge.original_model
                return
            edits = self.edits(layout)
            if edits:
                stack.enter_context(neuron_hooks(raw, layout, edits))
            if extra_edits:
                stack.enter_context(neuron_hooks(raw, layout, extra_edits))
            yield raw
