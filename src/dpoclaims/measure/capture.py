"""Capture per-prompt mean MLP neuron activations while generating.

Two position conventions:

- ``v1`` (Yang et al. v1): the last position at each of the generation steps, i.e. the
  positions whose outputs choose the new tokens. Steps after a row has emitted EOS are
  excluded.
- ``emnlp`` (the EMNLP version): the last ``max_new_tokens`` positions of prompt +
  continuation, read in a second forward pass over the finished text.

Activations are reduced while streaming: for each batch only a running float64 sum per
``(prompt, layer, neuron)`` is kept, on the activations' device, never prompts x positions x
neurons. The result comes back to the CPU as float32, so it does not depend on the device that
made it. The model that generates is the side's plain Hugging Face model, recorded and
intervened on through plain PyTorch hooks (:mod:`dpoclaims.hooks.neurons`).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch
from safetensors.torch import load_file, save_file

from dpoclaims.errors import OptionError
from dpoclaims.hooks.interventions import Intervention
from dpoclaims.hooks.neurons import LastPositionRecorder, NeuronEdit, neuron_hooks
from dpoclaims.measure.conventions import CONVENTIONS, Convention
from dpoclaims.measure.generation import GenerationSettings, greedy_generate
from dpoclaims.models.loading import MLPLayout
from dpoclaims.models.pairs import ModelPair, PairSide


@dataclass
class Capture:
    """What one model did on one prompt set (an :class:`~dpoclaims.measure.artifact.Artifact`)."""

    KIND: ClassVar[str] = "capture"
    FORMAT: ClassVar[int] = 2  # part of every cache key: bump when what a capture stores changes

    mean_activation: torch.Tensor  # [n_prompts, n_layers, d_mlp], per-prompt mean over positions
    n_positions: torch.Tensor  # [n_prompts]
    continuations: list[str]
    continuation_ids: list[list[int]]

    @property
    def overall_mean(self) -> torch.Tensor:
        """``[n_layers, d_mlp]`` mean over prompts of the per-prompt means."""
        return self.mean_activation.mean(0)

    def save(self, directory: Path) -> None:
        save_file(
            {"mean_activation": self.mean_activation.contiguous(), "n_positions": self.n_positions},
            str(directory / "capture.safetensors"),
        )
        (directory / "continuations.json").write_text(
            json.dumps({"text": self.continuations, "ids": self.continuation_ids})
        )

    @classmethod
    def load(cls, directory: Path) -> Capture:
        tensors = load_file(str(directory / "capture.safetensors"))
        continuations = json.loads((directory / "continuations.json").read_text())
        return cls(
            tensors["mean_activation"], tensors["n_positions"], continuations["text"], continuations["ids"]
        )


class _Accumulator:
    """Adds activations at selected positions into per-prompt float64 sums, on the activations'
    device, as recording edits (:meth:`edits`)."""

    def __init__(self, layout: MLPLayout, batch: int, device: torch.device) -> None:
        self.layout = layout
        self.sums = torch.zeros(batch, layout.n_layers, layout.d_mlp, dtype=torch.float64, device=device)
        self.counts = torch.zeros(batch, dtype=torch.float64, device=device)
        self.position_weights: torch.Tensor | None = None  # [batch, seq]: 1 where the current forward records

    def set_positions(self, position_weights: torch.Tensor) -> None:
        self.position_weights = position_weights
        self.counts += position_weights.sum(1).double()

    def add(self, layer: int, activation: torch.Tensor) -> None:
        """Add ``activation`` ``[batch, seq, d_mlp]`` at the current positions to layer ``layer``'s sums.
        In float32 at least: a bfloat16 model's activations are summed exactly."""
        assert self.position_weights is not None
        dtype = torch.promote_types(activation.dtype, torch.float32)
        weights = self.position_weights.to(activation.device, dtype)
        per_prompt = torch.einsum("bs,bsn->bn", weights, activation.detach().to(dtype))  # [batch, d_mlp]
        self.sums[:, layer] += per_prompt.to(self.sums.device, torch.float64)

    def edits(self) -> dict[int, NeuronEdit]:
        def make(layer: int) -> NeuronEdit:
            def edit(activation: torch.Tensor) -> None:
                self.add(layer, activation)

            return edit

        return {layer: make(layer) for layer in range(self.layout.n_layers)}

    def means(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-prompt means ``[batch, n_layers, d_mlp]`` and counts ``[batch]``, float32 on the CPU."""
        means = (self.sums / self.counts.clamp(min=1)[:, None, None]).float()
        return means.cpu(), self.counts.float().cpu()


def _second_pass_inputs(
    input_ids: torch.Tensor, attention_mask: torch.Tensor, rows: list[list[int]], pad: int, n_last: int
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Prompt + continuation of each row, left-padded (model inputs on the prompts' device), and
    position weights ``[batch, width]`` selecting the last ``n_last`` real positions."""
    sequences = [input_ids[i][attention_mask[i].bool()].tolist() + rows[i] for i in range(len(rows))]
    width = max(len(s) for s in sequences)
    full = torch.full((len(sequences), width), pad, dtype=torch.long)  # [batch, width]
    full_mask = torch.zeros_like(full)
    for i, seq in enumerate(sequences):
        full[i, width - len(seq) :] = torch.tensor(seq)
        full_mask[i, width - len(seq) :] = 1
    position_weights = torch.zeros(full.shape)
    position_weights[:, -n_last:] = 1.0
    position_weights *= full_mask
    position_ids = (full_mask.cumsum(-1) - 1).clamp(min=0)
    device = input_ids.device
    inputs = {
        "input_ids": full.to(device),
        "attention_mask": full_mask.to(device),
        "position_ids": position_ids.to(device),
    }
    return inputs, position_weights.to(device)


class _Recorder:
    """A :class:`dpoclaims.measure.generation.BatchObserver` that records one side's activations through
    plain hooks on its HF model ``model``, which runs under the intervention already."""

    def __init__(self, pair: ModelPair, model: torch.nn.Module, convention: Convention, n_last: int):
        self.pair, self.model, self.convention, self.n_last = pair, model, convention, n_last
        self.means: list[torch.Tensor] = []
        self.counts: list[torch.Tensor] = []
        self.recorder: LastPositionRecorder | None = None

    @contextmanager
    def generating(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> Iterator[None]:
        if self.convention != "v1":
            yield
            return
        self.recorder = LastPositionRecorder(
            self.pair.layout, len(input_ids), self.pair.tokenizer.eos_token_id
        )
        with self.recorder.attached(self.model):
            yield

    def generated(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, rows: list[list[int]]) -> None:
        if self.convention == "v1":
            assert self.recorder is not None
            means, counts = self.recorder.means(), self.recorder.counts().float()
        else:
            acc = _Accumulator(self.pair.layout, len(input_ids), input_ids.device)
            inputs, position_weights = _second_pass_inputs(
                input_ids, attention_mask, rows, self.pair.tokenizer.pad_token_id, self.n_last
            )
            acc.set_positions(position_weights)
            with neuron_hooks(self.model, self.pair.layout, acc.edits()):
                self.model(**inputs)
            means, counts = acc.means()
        self.means.append(means)
        self.counts.append(counts)


@torch.no_grad()
def capture(
    pair: ModelPair,
    side: PairSide,
    prompts: Sequence[str],
    settings: GenerationSettings = GenerationSettings(),
    *,
    convention: Convention = "v1",
    intervention: Intervention = Intervention(),
    progress: bool = True,
) -> Capture:
    """Generate greedily from ``prompts`` with one side of the pair, under ``intervention``,
    and record activations (post-intervention) at the convention's positions."""
    if convention not in CONVENTIONS:
        raise OptionError(f"unknown position convention {convention!r}; choose from {CONVENTIONS}")
    desc = f"capture {side} ({convention})"
    with intervention.applied(pair.model(side), pair.layout) as model:
        observer = _Recorder(pair, model, convention, settings.max_new_tokens)
        generations = greedy_generate(
            model, pair.tokenizer, prompts, settings, progress=progress, desc=desc, observer=observer
        )
    return Capture(
        torch.cat(observer.means),
        torch.cat(observer.counts),
        generations.continuations,
        generations.continuation_ids,
    )
