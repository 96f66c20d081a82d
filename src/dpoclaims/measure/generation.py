"""Greedy generation with left padding, as in the paper's evaluation.

Prompts are cut to ``max_prompt_tokens`` (keeping their beginning), left-padded so that every
prompt ends at the same position, and continued greedily for ``max_new_tokens`` tokens with
the attention mask set, so padding never influences a continuation. Every setting that
decides which token comes next is passed explicitly (:data:`GREEDY`), so a model's own
``generation_config.json`` (a repetition penalty, say) or a library's changed default cannot
change a continuation.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any, Protocol, cast

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from dpoclaims.devices import module_device
from dpoclaims.errors import ContextWindowError
from dpoclaims.models.loading import model_positions
from dpoclaims.phases import phase
from dpoclaims.progress import track_progress


@dataclass(frozen=True)
class GenerationSettings:
    max_prompt_tokens: int = 32
    max_new_tokens: int = 20
    batch_size: int = 32


# Plain greedy decoding with the KV cache, every knob that acts in greedy decoding at its neutral value
# (None: none of those tokens; sampling knobs do not act when do_sample is False).
GREEDY: dict[str, Any] = {
    "do_sample": False,
    "num_beams": 1,
    "use_cache": True,
    "repetition_penalty": 1.0,
    "no_repeat_ngram_size": 0,
    "min_new_tokens": 0,
    "bad_words_ids": None,
    "suppress_tokens": None,
    "begin_suppress_tokens": None,
    "forced_bos_token_id": None,
    "forced_eos_token_id": None,
}


@dataclass
class Generations:
    prompts: list[str]
    continuations: list[str]
    continuation_ids: list[list[int]]


def encode_prompts(
    tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str], max_prompt_tokens: int
) -> dict[str, torch.Tensor]:
    """Left-padded, front-kept prompt batch with its attention mask."""
    tokenizer.padding_side = "left"
    tokenizer.truncation_side = "right"
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer(
        list(prompts),
        return_tensors="pt",
        padding=True,
        truncation=True,
        max_length=max_prompt_tokens,
        add_special_tokens=False,
    )


def check_fits(model: PreTrainedModel, prompt_tokens: int, new_tokens: int) -> None:
    """A :class:`~dpoclaims.errors.ContextWindowError` when a prompt of ``prompt_tokens`` tokens
    and ``new_tokens`` generated after it do not fit the model's positions (the embedding of a
    position past the last would fail deep inside the model)."""
    config = getattr(model, "config", None)  # (a stand-in model in a test may have none)
    positions = model_positions(config) if config is not None else None
    if positions is not None and prompt_tokens + new_tokens > positions:
        raise ContextWindowError(
            f"generation of {new_tokens} tokens after a prompt of {prompt_tokens} tokens needs "
            f"{prompt_tokens + new_tokens} positions; the model has {positions}. Use shorter prompts or fewer new "
            "tokens (GenerationSettings), or a model with more positions"
        )


class BatchObserver(Protocol):
    """Watches :func:`greedy_generate` batch by batch (e.g. to record activations)."""

    def generating(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> AbstractContextManager[Any]:
        """A context that is active while the batch ``[batch, prompt_len]`` generates."""
        ...

    def generated(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, continuation_ids: list[list[int]]
    ) -> None:
        """Called after the batch with its continuations (EOS and what follows removed)."""
        ...


def model_input_device(model: PreTrainedModel) -> torch.device:
    """Where a model's inputs go (see :func:`dpoclaims.devices.module_device`: its input
    embedding's execution device under a device map, else its parameters' device)."""
    return module_device(model)


@torch.no_grad()
def _new_tokens(output: torch.Tensor, prompt_len: int, eos: int | None) -> list[list[int]]:
    """Each row's generated ids (``output`` ``[rows, prompt_len + new]``), cut before its first EOS."""
    return [row[: row.index(eos)] if eos in row else row for row in output[:, prompt_len:].tolist()]


def _decode(tokenizer: PreTrainedTokenizerBase, rows: list[list[int]]) -> list[str]:
    # cast: decode returns one str for one row of ids (a list of them only for a batch of rows),
    # which its annotation (str | list[str]) does not tell apart.
    return [cast(str, tokenizer.decode(row, skip_special_tokens=True)) for row in rows]


def greedy_generate(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    settings: GenerationSettings = GenerationSettings(),
    *,
    progress: bool = True,
    desc: str = "generate",
    observer: BatchObserver | None = None,
) -> Generations:
    """Greedy continuations of ``prompts``, batch by batch, inputs on the model's device."""
    continuations: list[str] = []
    continuation_ids: list[list[int]] = []
    model.eval()
    device = model_input_device(model)
    eos = tokenizer.eos_token_id
    batches = range(0, len(prompts), settings.batch_size)
    # cast: PreTrainedModel declares no generate (GenerationMixin gives it to causal LMs, and types
    # its self as a Protocol that mypy finds no model class meets). Without return_dict_in_generate
    # (GREEDY) it returns the token ids [batch, prompt_len + new].
    generate = cast(Callable[..., torch.Tensor], model.generate)
    for start in track_progress(batches, desc=desc, enabled=progress and len(batches) >= 2):
        batch = encode_prompts(
            tokenizer, prompts[start : start + settings.batch_size], settings.max_prompt_tokens
        )
        input_ids = batch["input_ids"].to(device)  # [batch, prompt_len]
        attention_mask = batch["attention_mask"].to(device)
        check_fits(model, input_ids.shape[1], settings.max_new_tokens)
        with (
            observer.generating(input_ids, attention_mask) if observer else nullcontext(),
            phase("generation") as counted,
        ):
            output = generate(
                input_ids=input_ids,
                attention_mask=attention_mask,
                max_new_tokens=settings.max_new_tokens,
                pad_token_id=tokenizer.pad_token_id,
                **GREEDY,
                eos_token_id=eos,
            )  # [batch, prompt_len + steps]
            counted["tokens"] = output.numel()
        rows = _new_tokens(output, input_ids.shape[1], eos)
        if observer:
            observer.generated(input_ids, attention_mask, rows)
        continuation_ids.extend(rows)
        continuations.extend(_decode(tokenizer, rows))
    return Generations(list(prompts), continuations, continuation_ids)


@dataclass(frozen=True)
class SamplingSettings:
    """Ancestral sampling: ``n_samples`` continuations per prompt at ``temperature``, every other
    sampling knob at its neutral value (no top-k, no nucleus cut), so a release's default cannot
    change what is drawn. Batch ``b`` of prompts draws under ``torch.manual_seed(seed + b)``."""

    n_samples: int = 4
    temperature: float = 1.0
    seed: int = 0


def sample_generate(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    settings: GenerationSettings,
    sampling: SamplingSettings,
    *,
    progress: bool = True,
    desc: str = "sample",
) -> list[list[str]]:
    """``sampling.n_samples`` sampled continuations of each prompt (``[len(prompts)][n_samples]``),
    ``settings.batch_size`` prompts at a time, each seeded (see :class:`SamplingSettings`), so the
    same seed gives the same samples whatever came before the call."""
    model.eval()
    device = model_input_device(model)
    eos = tokenizer.eos_token_id
    generate = cast(Callable[..., torch.Tensor], model.generate)  # as in greedy_generate
    samples: list[list[str]] = []
    batches = range(0, len(prompts), settings.batch_size)
    for number, start in enumerate(
        track_progress(batches, desc=desc, enabled=progress and len(batches) >= 2)
    ):
        batch = encode_prompts(
            tokenizer, prompts[start : start + settings.batch_size], settings.max_prompt_tokens
        )
        input_ids = batch["input_ids"].to(device)  # [batch, prompt_len]
        check_fits(model, input_ids.shape[1], settings.max_new_tokens)
        torch.manual_seed(sampling.seed + number)
        with phase("generation") as counted:
            output = generate(
                input_ids=input_ids,
                attention_mask=batch["attention_mask"].to(device),
                max_new_tokens=settings.max_new_tokens,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=eos,
                do_sample=True,
                temperature=sampling.temperature,
                top_k=0,
                top_p=1.0,
                min_p=None,
                typical_p=1.0,
                repetition_penalty=1.0,
                num_beams=1,
                num_return_sequences=sampling.n_samples,
                use_cache=True,
            )  # [batch * n_samples, prompt_len + new], a prompt's samples adjacent
            counted["tokens"] = output.numel()
        texts = _decode(tokenizer, _new_tokens(output, input_ids.shape[1], eos))
        samples.extend(texts[i : i + sampling.n_samples] for i in range(0, len(texts), sampling.n_samples))
    return samples
