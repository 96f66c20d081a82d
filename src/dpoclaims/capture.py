"""Capture per-prompt mean MLP neuron activations while generating.

Two position conventions:

- ``v1`` (Yang et al. v1): the last position at each of the generation steps, i.e. the
  positions whose outputs choose the new tokens. Steps after a row has emitted EOS are
  excluded.
- ``emnlp`` (the EMNLP version): the last ``max_new_tokens`` positions of prompt +
  continuation, read in a second forward pass over the finished text.

Activations are reduced while streaming: for each batch only a running sum per
``(prompt, layer, neuron)`` is kept, never prompts x positions x neurons.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from dpoclaims.cache import Cache, stable_hash
from dpoclaims.generation import GenerationSettings, encode_prompts
from dpoclaims.pairs import MLPLayout, ModelPair

Convention = Literal["v1", "emnlp"]
CONVENTIONS: tuple[str, ...] = ("v1", "emnlp")
CAPTURE_FORMAT = 2  # part of every cache key: bump when what a capture stores changes


@dataclass
class Capture:
    """What one model did on one prompt set."""

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
    """Hooks that add activations at selected positions into per-prompt sums."""

    def __init__(self, layout: MLPLayout, batch: int) -> None:
        self.layout = layout
        self.sums = torch.zeros(batch, layout.n_layers, layout.d_mlp, dtype=torch.float64)
        self.counts = torch.zeros(batch, dtype=torch.float64)
        self.weights: torch.Tensor | None = None  # [batch, seq] weights of the current forward

    def hooks(self) -> list[tuple[str, Any]]:
        def make(layer: int) -> Any:
            def hook(activation: torch.Tensor, hook: Any) -> torch.Tensor:
                assert self.weights is not None
                w = self.weights.to(activation.dtype)
                self.sums[:, layer] += torch.einsum("bs,bsn->bn", w, activation.detach()).double()
                return activation

            return hook

        return [(self.layout.hook_name(layer), make(layer)) for layer in range(self.layout.n_layers)]


@torch.no_grad()
def capture(
    pair: ModelPair,
    side: Literal["base", "dpo"],
    prompts: Sequence[str],
    settings: GenerationSettings = GenerationSettings(),
    *,
    convention: Convention = "v1",
    extra_hooks: Sequence[tuple[str, Any]] = (),
    progress: bool = True,
) -> Capture:
    """Generate greedily from ``prompts`` with one side of the pair and record activations.

    ``extra_hooks`` (e.g. an ablation) stay on during generation and, for ``emnlp``, the
    second pass; they run before the recording hooks, so recorded values are post-intervention.
    """
    if convention not in CONVENTIONS:
        from dpoclaims.errors import OptionError

        raise OptionError(f"unknown position convention {convention!r}; choose from {CONVENTIONS}")
    bridge = pair.model(side)
    model = bridge.original_model
    tokenizer = pair.tokenizer
    eos = tokenizer.eos_token_id
    means, counts, continuations, continuation_ids = [], [], [], []
    batches = range(0, len(prompts), settings.batch_size)
    for start in tqdm(batches, desc=f"capture {side} ({convention})", disable=not progress, leave=False):
        batch = encode_prompts(
            tokenizer, prompts[start : start + settings.batch_size], settings.max_prompt_tokens
        )
        ids, mask = batch["input_ids"], batch["attention_mask"]
        acc = _Accumulator(pair.layout, len(ids))
        finished = torch.zeros(len(ids), dtype=torch.bool)

        def before_forward(module: Any, args: Any, kwargs: dict[str, Any]) -> None:
            step_ids = kwargs.get("input_ids", args[0] if args else None)
            seq = step_ids.shape[1]
            weights = torch.zeros(len(step_ids), seq)
            if convention == "v1":
                if seq == 1:  # a decoding step: its input is the previous new token
                    finished.logical_or_(step_ids[:, 0] == eos)
                weights[:, -1] = (~finished).float()
            acc.weights = weights
            acc.counts += weights.sum(1).double()

        handle = (
            model.register_forward_pre_hook(before_forward, with_kwargs=True) if convention == "v1" else None
        )
        recording = acc.hooks() if convention == "v1" else []
        try:
            with bridge.hooks(fwd_hooks=list(extra_hooks) + recording):
                output = model.generate(
                    input_ids=ids,
                    attention_mask=mask,
                    max_new_tokens=settings.max_new_tokens,
                    do_sample=False,
                    pad_token_id=tokenizer.pad_token_id,
                    eos_token_id=eos,
                )
        finally:
            if handle is not None:
                handle.remove()
        new_tokens = output[:, ids.shape[1] :]
        rows = []
        for row in new_tokens.tolist():
            if eos in row:
                row = row[: row.index(eos)]
            rows.append(row)
            continuation_ids.append(row)
            continuations.append(tokenizer.decode(row, skip_special_tokens=True))
        if convention == "emnlp":
            _emnlp_pass(pair, bridge, ids, mask, rows, settings.max_new_tokens, acc, extra_hooks)
        means.append((acc.sums / acc.counts.clamp(min=1)[:, None, None]).float())
        counts.append(acc.counts.float())
    return Capture(torch.cat(means), torch.cat(counts), continuations, continuation_ids)


def _emnlp_pass(
    pair: ModelPair,
    bridge: Any,
    ids: torch.Tensor,
    mask: torch.Tensor,
    rows: list[list[int]],
    n_last: int,
    acc: _Accumulator,
    extra_hooks: Sequence[tuple[str, Any]],
) -> None:
    """Forward prompt + continuation (left-padded) and record the last ``n_last`` positions."""
    pad = pair.tokenizer.pad_token_id
    sequences = [ids[i][mask[i].bool()].tolist() + rows[i] for i in range(len(rows))]
    width = max(len(s) for s in sequences)
    full = torch.full((len(sequences), width), pad, dtype=torch.long)
    full_mask = torch.zeros_like(full)
    for i, seq in enumerate(sequences):
        full[i, width - len(seq) :] = torch.tensor(seq)
        full_mask[i, width - len(seq) :] = 1
    weights = torch.zeros(full.shape)
    weights[:, -n_last:] = 1.0
    weights *= full_mask
    acc.weights = weights
    acc.counts += weights.sum(1).double()
    position_ids = (full_mask.cumsum(-1) - 1).clamp(min=0)
    with bridge.hooks(fwd_hooks=list(extra_hooks) + acc.hooks()):
        bridge.original_model(input_ids=full, attention_mask=full_mask, position_ids=position_ids)


def cached_capture(
    cache: Cache,
    pair: ModelPair,
    side: Literal["base", "dpo"],
    prompts: Sequence[str],
    settings: GenerationSettings,
    *,
    convention: Convention = "v1",
    extra_hooks: Sequence[tuple[str, Any]] = (),
    intervention_id: str = "none",
    progress: bool = True,
) -> Capture:
    """:func:`capture`, cached by (pair fingerprint, side, prompts, settings, convention,
    intervention). ``intervention_id`` must identify ``extra_hooks`` uniquely."""
    key = stable_hash(
        {
            "format": CAPTURE_FORMAT,
            "pair": pair.fingerprint,
            "side": side,
            "prompts": stable_hash(list(prompts)),
            "settings": asdict(settings),
            "convention": convention,
            "intervention": intervention_id,
        }
    )

    def build(tmp: Path) -> dict[str, Any]:
        capture(
            pair, side, prompts, settings, convention=convention, extra_hooks=extra_hooks, progress=progress
        ).save(tmp)
        return {
            "pair": pair.fingerprint,
            "side": side,
            "convention": convention,
            "intervention": intervention_id,
        }

    return Capture.load(cache.get_or_build("capture", key, build))
