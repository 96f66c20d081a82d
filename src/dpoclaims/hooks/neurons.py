"""Record and edit MLP neuron activations through plain PyTorch hooks on a Hugging Face model.

Every measurement the library makes runs the plain Hugging Face model of each side (never a
TransformerBridge-wrapped one: the bridge replaces the model's modules in place and, under
some library releases, its wrapped attention mishandles the KV cache). Where the neurons are
is :mod:`dpoclaims.models.mlp`'s business; this module installs the hooks:

- :func:`neuron_hooks` attaches forward pre-hooks to the MLP output projections, so a callable
  sees each layer's neuron activation ``[batch, seq, d_mlp]`` and may replace it.
- :class:`LastPositionRecorder` accumulates, per prompt, the activation at the last position
  of every forward (the v1 capture convention) with no device work on most steps.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, Literal

import torch

from dpoclaims.errors import PairMismatchError
from dpoclaims.models.loading import MLPLayout
from dpoclaims.models.mlp import neuron_activation_modules

# A layer's edit: receives the neuron activation [batch, seq, d_mlp]; returns a replacement
# tensor (ablation, patching) or None (recording). It must not modify its argument in place.
NeuronEdit = Callable[[torch.Tensor], "torch.Tensor | None"]


def _pre_hook(layer: int, edit: NeuronEdit) -> Callable[[torch.nn.Module, tuple[Any, ...]], Any]:
    def hook(module: torch.nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...] | None:
        if not args:
            raise PairMismatchError(
                f"layer {layer}: {type(module).__name__} was called without a positional input, "
                "so its neuron activation cannot be hooked"
            )
        replacement = edit(args[0])
        return None if replacement is None else (replacement, *args[1:])

    return hook


@contextmanager
def neuron_hooks(
    model: torch.nn.Module, layout: MLPLayout, edits: Mapping[int, NeuronEdit]
) -> Iterator[None]:
    """Call ``edits[layer]`` on that layer's neuron activation ``[batch, seq, d_mlp]`` in every
    forward of ``model`` (a plain HF model) inside the block; hooks are removed on exit, also
    on an error. An edit returns a replacement or None. Nested blocks chain: an inner
    block's edits see what the outer block's edits returned (so a recorder nested inside an
    ablation records post-intervention values)."""
    modules = neuron_activation_modules(model, layout)
    bad = [layer for layer in edits if not 0 <= layer < layout.n_layers]
    if bad:
        raise PairMismatchError(f"layers {bad} are out of range (the model has {layout.n_layers})")
    handles = []
    try:
        for layer, edit in edits.items():
            handles.append(modules[layer].register_forward_pre_hook(_pre_hook(layer, edit)))
        yield
    finally:
        for handle in handles:
            handle.remove()


# Which positions of each forward an activation edit writes: "every" position; the "last" one
# (with the KV cache in generation: the prompt's last token, then each new token; the authors'
# generation hooks wrote ``input[0][:, -1, idx]``); or the "first" one (position 0: the authors'
# perplexity hooks, a known problem of their code, reproduced only to report its figure beside).
Positions = Literal["every", "last", "first"]
POSITIONS: tuple[Positions, ...] = ("every", "last", "first")
_POSITION_INDEX: dict[str, slice] = {"every": slice(None), "last": slice(-1, None), "first": slice(0, 1)}


def edit_neurons(
    indices: torch.Tensor,
    values: torch.Tensor,
    write: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    positions: Positions = "every",
) -> NeuronEdit:
    """An edit that replaces neurons ``indices`` by ``write(their activation, values)`` at
    ``positions`` of each forward; ``indices`` and ``values`` follow the activation's device and
    dtype (moved once each)."""
    if positions not in _POSITION_INDEX:
        raise ValueError(f"positions must be one of {POSITIONS}, not {positions!r}")
    at = _POSITION_INDEX[positions]
    cache: dict[tuple[torch.device, torch.dtype], tuple[torch.Tensor, torch.Tensor]] = {}

    def edit(activation: torch.Tensor) -> torch.Tensor:  # [batch, seq, d_mlp]
        key = (activation.device, activation.dtype)
        if key not in cache:
            cache[key] = (
                indices.to(activation.device),
                values.to(device=activation.device, dtype=activation.dtype),
            )
        index, value = cache[key]
        activation = activation.clone()
        activation[:, at, index] = write(activation[:, at, index], value)
        return activation

    return edit


def set_neurons(indices: torch.Tensor, values: torch.Tensor, positions: Positions = "every") -> NeuronEdit:
    """An edit that sets neurons ``indices`` to ``values`` (one value each, or one for all)
    at ``positions`` of each forward."""
    return edit_neurons(indices, values, lambda current, value: value.expand_as(current), positions)


class LastPositionRecorder:
    """Per-prompt sums of each layer's neuron activation at the last position of every forward,
    skipping rows that have finished: the v1 capture convention during ``generate``.

    A row is finished once its input is ``eos_token_id`` in a decoding step (a one-token
    forward), so the step that *emits* EOS is still counted, as in :mod:`dpoclaims.measure.capture`.

    Cost: a decoding step does no tensor work at all, neither per layer nor per step; the
    hooks only keep references to the step's input ids and to each layer's activation
    (``[batch, 1, d_mlp]``; the prompt step keeps a one-position copy instead of its
    ``[batch, seq, d_mlp]``). Every ``fold_every`` steps, and when the sums are read, the kept
    values are reduced into float64 sums on their device with one ``einsum`` per layer.
    That equals a float64 running sum of the same float32 values.

    Use::

        recorder = LastPositionRecorder(layout, batch_size, eos_token_id)
        with recorder.attached(model):
            model.generate(...)
        sums, counts = recorder.sums(), recorder.counts()  # CPU float64
    """

    def __init__(
        self, layout: MLPLayout, batch_size: int, eos_token_id: int | None, fold_every: int = 32
    ) -> None:
        if fold_every < 1:
            raise ValueError(f"fold_every must be >= 1, not {fold_every}")
        self.layout = layout
        self.batch_size = batch_size
        self.eos_token_id = eos_token_id
        self.fold_every = fold_every
        self._activations: list[list[torch.Tensor]] = [
            [] for _ in range(layout.n_layers)
        ]  # [batch, 1, d_mlp]
        self._step_inputs: list[torch.Tensor] = []  # per forward, its input ids [batch, seq]
        self._finished: torch.Tensor | None = None  # [batch] bool: rows done before the kept steps
        self._sums: torch.Tensor | None = None  # [batch, n_layers, d_mlp] float64, on the device
        self._counts: torch.Tensor | None = None  # [batch] float64

    def _before_model_forward(
        self, module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> None:
        step_ids = kwargs.get("input_ids", args[0] if args else None)
        if step_ids is None:
            raise PairMismatchError(
                "LastPositionRecorder needs input_ids (generation from embeddings is not supported)"
            )
        if step_ids.shape[0] != self.batch_size:
            raise PairMismatchError(
                f"a recorder made for {self.batch_size} rows saw a batch of {step_ids.shape[0]}"
            )
        if len(self._step_inputs) >= self.fold_every:
            self._fold()
        self._step_inputs.append(step_ids)

    def _record(self, layer: int) -> NeuronEdit:
        kept = self._activations[layer]

        def edit(activation: torch.Tensor) -> None:
            # A decoding step's activation is kept as it is; a view into the prompt step's
            # [batch, seq, d_mlp] would keep all of it alive, so that one is copied.
            kept.append(activation if activation.shape[1] == 1 else activation[:, -1:].clone())

        return edit

    def _counted_steps(self) -> torch.Tensor:
        """``[batch, steps]`` bool: True where a kept step counts (its row not yet finished)."""
        finished = self._finished
        if finished is None:
            finished = torch.zeros(self.batch_size, dtype=torch.bool, device=self._step_inputs[0].device)
        if self.eos_token_id is None:
            finished_at = finished[:, None].expand(-1, len(self._step_inputs))  # [batch, steps]
        else:
            # A decoding step fed EOS finishes its row; a multi-token (prompt) step never does.
            fed_eos = torch.stack(
                [
                    ids[:, 0] == self.eos_token_id if ids.shape[1] == 1 else torch.zeros_like(finished)
                    for ids in self._step_inputs
                ],
                dim=1,
            )  # [batch, steps]
            finished_at = finished[:, None] | (fed_eos.cumsum(dim=1) > 0)
        self._finished = finished_at[:, -1]
        return ~finished_at

    def _fold(self) -> None:
        if not self._step_inputs:
            return
        if any(len(kept) != len(self._step_inputs) for kept in self._activations):
            raise PairMismatchError(
                "the neuron hooks did not fire once per layer per forward: is the recorder attached "
                "to the model that runs?"
            )
        counted = self._counted_steps()  # [batch, steps]
        layer_sums = []
        for kept in self._activations:
            values = torch.cat(kept, dim=1)  # [batch, steps, d_mlp], the activations' dtype
            # x * 1 and x * 0 are exact in any dtype, and the sum accumulates in float64: the
            # same as a float64 running sum, without a float64 copy of the values.
            values.mul_(counted[:, :, None].to(values.dtype))
            layer_sums.append(values.sum(dim=1, dtype=torch.float64))  # [batch, d_mlp]
        folded = torch.stack(layer_sums, dim=1)  # [batch, n_layers, d_mlp]
        counts = counted.sum(dim=1, dtype=torch.float64)  # [batch]
        self._sums = folded if self._sums is None else self._sums + folded
        self._counts = counts if self._counts is None else self._counts + counts
        for kept in self._activations:
            kept.clear()
        self._step_inputs.clear()

    @contextmanager
    def attached(self, model: torch.nn.Module) -> Iterator[LastPositionRecorder]:
        """Record every forward of ``model`` (a plain HF model) inside the block."""
        handle = model.register_forward_pre_hook(self._before_model_forward, with_kwargs=True)
        try:
            edits = {layer: self._record(layer) for layer in range(self.layout.n_layers)}
            with neuron_hooks(model, self.layout, edits):
                yield self
        finally:
            handle.remove()

    def sums(self) -> torch.Tensor:
        """``[batch, n_layers, d_mlp]`` float64 on the CPU."""
        self._fold()
        if self._sums is None:
            return torch.zeros(self.batch_size, self.layout.n_layers, self.layout.d_mlp, dtype=torch.float64)
        return self._sums.cpu()

    def counts(self) -> torch.Tensor:
        """``[batch]`` float64 on the CPU: the number of positions summed per row."""
        self._fold()
        if self._counts is None:
            return torch.zeros(self.batch_size, dtype=torch.float64)
        return self._counts.cpu()

    def means(self) -> torch.Tensor:
        """``[batch, n_layers, d_mlp]`` float32 on the CPU: per-row mean over counted positions."""
        return (self.sums() / self.counts().clamp(min=1)[:, None, None]).float()
