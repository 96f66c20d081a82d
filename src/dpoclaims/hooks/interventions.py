"""Neuron-level interventions: ablation and patching as edits of the neuron activation (the
input of each layer's MLP output projection, which TransformerLens names ``blocks.L.mlp.hook_post``),
and key-vector scaling as a temporary weight edit.

A neuron set is a mapping ``layer -> LongTensor of neuron indices``. An :class:`Intervention`
is a value with a stable id (so its results can be cached) and is applied only inside
:meth:`Intervention.applied`, a context manager, so hooks and weight edits end with the
measurement (the reference code left them on between metrics, compounding interventions).
It is applied to the plain Hugging Face model of a side, through plain PyTorch hooks
(:mod:`dpoclaims.hooks.neurons`): the one path every measurement takes. Hooks fire in every
forward; an activation edit writes the positions its ``positions`` names (every one by
default; "last": the authors' generation hooks). Every tensor an intervention writes is moved to the
device and dtype of the activation or weight it meets.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field, replace
from typing import Literal, TypeVar

import torch

from dpoclaims.cache import stable_hash
from dpoclaims.errors import OptionError
from dpoclaims.hooks.neurons import POSITIONS, NeuronEdit, Positions, edit_neurons, neuron_hooks, set_neurons
from dpoclaims.models.loading import MLPLayout
from dpoclaims.models.mlp import mlp_modules, neuron_rows

NeuronSet = Mapping[int, torch.Tensor]


ModelT = TypeVar("ModelT", bound=torch.nn.Module)  # applied() yields the model it is given


def neuron_set_from_flat(flat_indices: torch.Tensor, d_mlp: int) -> dict[int, torch.Tensor]:
    """Group flat neuron ids (``layer * d_mlp + i``) by layer."""
    flat_indices = torch.as_tensor(flat_indices, dtype=torch.long).reshape(-1)
    layers = flat_indices // d_mlp
    return {int(layer): flat_indices[layers == layer] % d_mlp for layer in torch.unique(layers)}


@contextmanager
def scaled_key_vectors(
    model: torch.nn.Module, layout: MLPLayout, neurons: NeuronSet, factor: float
) -> Iterator[None]:
    """Multiply the key vectors of ``neurons`` (their rows of TransformerLens' ``W_in``: the
    input projection's weights that read d_model) by ``factor``, in place on ``model``'s
    parameters; restore them on exit, also on an error.

    Only the touched key vectors are saved (on the weight's device), not whole matrices: on a
    large model on a GPU a copy of every input projection would cost gigabytes."""
    projections = mlp_modules(model, layout)
    saved: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
    try:
        with torch.no_grad():
            for layer, idx in neurons.items():
                rows = neuron_rows(projections[layer][0], layout.d_mlp, layout.d_model, neurons_are="outputs")
                idx = idx.to(rows.device)
                saved.append((rows, idx, rows[idx].clone()))
                rows[idx] *= factor  # rows is a view of the parameter: this edits it in place
        yield
    finally:
        with torch.no_grad():
            for rows, idx, original in reversed(saved):
                rows[idx] = original


InterventionKind = Literal["none", "ablate", "patch", "scale_keys", "edit"]
# How an activation edit writes its neurons: "overwrite" sets each to a constant (``values``
# holds the constants; the authors' repository writes the scaled mean base activation),
# "scale" multiplies the live activation by a per-neuron factor (``values`` holds the factors).
EditMode = Literal["overwrite", "scale"]
EDIT_MODES: tuple[EditMode, ...] = ("overwrite", "scale")


def scale_neurons(indices: torch.Tensor, factors: torch.Tensor, positions: Positions = "every") -> NeuronEdit:
    """An edit that multiplies neurons ``indices`` by ``factors`` (one each) at ``positions``."""
    return edit_neurons(indices, factors, lambda current, factor: current * factor, positions)


@dataclass(frozen=True)
class Intervention:
    """What to do to one side of a pair during a measurement."""

    kind: InterventionKind = "none"
    neurons: tuple[int, ...] = ()  # flat ids: layer * d_mlp + index
    factor: float = 1.0  # scale_keys
    values: tuple[float, ...] = ()  # patch, edit: one value per neuron, in the order of ``neurons``
    mode: EditMode = "overwrite"  # edit only: what ``values`` hold (see EditMode)
    # Where an activation edit (ablate, patch, edit) writes in each forward; key scaling edits
    # weights, so every position. See dpoclaims.hooks.neurons.Positions.
    positions: Positions = "every"
    label: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        if self.positions not in POSITIONS:
            raise OptionError(
                f"an intervention's positions must be one of {POSITIONS}, not {self.positions!r}"
            )
        if self.kind in ("none", "scale_keys") and self.positions != "every":
            raise OptionError(
                f"a {self.kind!r} intervention acts at every position, not at {self.positions!r}"
            )

    @property
    def id(self) -> str:
        if self.kind == "none":
            return "none"
        # Only an intervention at other positions than every one has them in its id, so the ids
        # (and cache entries) of every-position interventions are those they always had.
        where = "" if self.positions == "every" else f"-{self.positions}"
        if self.kind == "edit":  # only an edit's id holds the mode, so the other kinds' ids are unchanged
            digest = stable_hash([self.neurons, self.values, self.mode], 12)
            return f"edit-{self.mode}-{len(self.neurons)}-{digest}{where}"
        digest = stable_hash([self.neurons, self.factor, self.values], 12)
        return f"{self.kind}-{len(self.neurons)}-{digest}{where}"

    def at(self, positions: Positions) -> Intervention:
        """The same intervention at ``positions`` (e.g. a generation-time edit, measured on
        held-out text at every scored position)."""
        return self if positions == self.positions else replace(self, positions=positions)

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
        if self.kind not in ("none", "scale_keys"):
            raise OptionError(f"unknown intervention kind {self.kind!r}")
        return {}

    def _per_layer_values(self, layout: MLPLayout) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
        """Per layer, the neurons and their entries of ``values`` (CPU)."""
        full = torch.zeros(layout.n_neurons)  # [n_layers * d_mlp]
        full[torch.tensor(self.neurons, dtype=torch.long)] = torch.tensor(self.values, dtype=torch.float32)
        per_layer = full.view(layout.n_layers, -1)  # [n_layers, d_mlp]
        return {layer: (idx, per_layer[layer][idx]) for layer, idx in self.neuron_set(layout).items()}

    def edits(self, layout: MLPLayout) -> dict[int, NeuronEdit]:
        """The activation edits of an ablation, a patch or an activation edit (``kind="edit"``),
        per layer, as :func:`dpoclaims.hooks.neurons.neuron_hooks` takes them (none for the other
        kinds). Every edit writes every position of every forward: prompt, generated token and
        perplexity window alike."""
        if self.kind == "edit":
            if len(self.values) != len(self.neurons):
                raise OptionError("an activation edit needs one value per neuron")
            if self.mode not in EDIT_MODES:
                raise OptionError(f"unknown edit mode {self.mode!r}; use one of {EDIT_MODES}")
            write = set_neurons if self.mode == "overwrite" else scale_neurons
            return {
                layer: write(idx, values, self.positions)
                for layer, (idx, values) in self._per_layer_values(layout).items()
            }
        return {
            layer: set_neurons(idx, values, self.positions)
            for layer, (idx, values) in self._set_values(layout).items()
            if len(idx)
        }

    @contextmanager
    def applied(
        self,
        model: ModelT,
        layout: MLPLayout,
        extra_edits: Mapping[int, NeuronEdit] | None = None,
    ) -> Iterator[ModelT]:
        """The intervention on ``model`` (a side's plain Hugging Face model); yields the model
        to run under it. The activation edits are forward pre-hooks on its neuron modules, and
        ``extra_edits`` (e.g. recording) run after them, so they see post-intervention values.
        Key scaling edits the input projections' weights in place and restores them on exit."""
        with ExitStack() as stack:
            if self.kind == "scale_keys":
                stack.enter_context(scaled_key_vectors(model, layout, self.neuron_set(layout), self.factor))
            edits = self.edits(layout)
            if edits:
                stack.enter_context(neuron_hooks(model, layout, edits))
            if extra_edits:
                stack.enter_context(neuron_hooks(model, layout, extra_edits))
            yield model
