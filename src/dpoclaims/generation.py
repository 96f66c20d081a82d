"""Greedy generation with left padding, as in the paper's evaluation.

Prompts are cut to ``max_prompt_tokens`` (keeping their beginning), left-padded so that every
prompt ends at the same position, and continued greedily for ``max_new_tokens`` tokens with
the attention mask set, so padding never influences a continuation. Works on a raw Hugging
Face model or on the ``original_model`` of a TransformerBridge, whose hooks then fire.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase


@dataclass(frozen=True)
class GenerationSettings:
    max_prompt_tokens: int = 32
    max_new_tokens: int = 20
    batch_size: int = 32


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


@torch.no_grad()
def greedy_generate(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    settings: GenerationSettings = GenerationSettings(),
    *,
    progress: bool = True,
    desc: str = "generate",
) -> Generations:
    continuations: list[str] = []
    continuation_ids: list[list[int]] = []
    model.eval()
    batches = range(0, len(prompts), settings.batch_size)
    for start in tqdm(batches, desc=desc, disable=not progress or len(batches) < 2, leave=False):
        batch = encode_prompts(
            tokenizer, prompts[start : start + settings.batch_size], settings.max_prompt_tokens
        )
        device = next(model.parameters()).device
        output = model.generate(
            input_ids=batch["input_ids"].to(device),
            attention_mask=batch["attention_mask"].to(device),
            max_new_tokens=settings.max_new_tokens,
            do_sample=False,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
        new_tokens = output[:, batch["input_ids"].shape[1] :].tolist()
        for row in new_tokens:
            if tokenizer.eos_token_id in row:
                row = row[: row.index(tokenizer.eos_token_id)]
            continuation_ids.append(row)
            continuations.append(tokenizer.decode(row, skip_special_tokens=True))
    return Generations(list(prompts), continuations, continuation_ids)
