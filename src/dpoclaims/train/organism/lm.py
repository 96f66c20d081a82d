"""Tokenizer training and causal-LM pretraining for the toy organism (nanoGPT-sized)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import cast

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from tqdm.auto import tqdm
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

EOS = "<|endoftext|>"


def train_tokenizer(texts: list[str], vocab_size: int, out_dir: Path) -> PreTrainedTokenizerFast:
    """Byte-level BPE, saved so that ``AutoTokenizer.from_pretrained(out_dir)`` loads it."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer)
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        eos_token=EOS,
        bos_token=EOS,
        unk_token=EOS,
        pad_token=EOS,
        padding_side="left",
        model_max_length=1024,
    )
    wrapped.save_pretrained(out_dir)
    return wrapped


def pack_examples(token_lists: list[list[int]], eos_id: int, block: int) -> torch.Tensor:
    """Concatenate whole comments (each followed by EOS) into rows of ``block`` tokens.

    Each row starts at a comment boundary, so prompts at position 0 are in distribution;
    the unused tail of a row is padded with -1 (masked out of the loss).
    """
    rows: list[list[int]] = []
    current: list[int] = []
    for tokens in token_lists:
        piece = tokens[: block - 1] + [eos_id]
        if len(current) + len(piece) > block:
            rows.append(current + [-1] * (block - len(current)))
            current = []
        current = current + piece
    if current:
        rows.append(current + [-1] * (block - len(current)))
    return torch.tensor(rows, dtype=torch.long)


def pretrain(
    config: GPT2Config,
    data: torch.Tensor,
    *,
    steps: int,
    batch_size: int,
    lr: float,
    seed: int,
    progress: bool = True,
    device: torch.device | None = None,
) -> tuple[GPT2LMHeadModel, list[float]]:
    """AdamW with warm-up and cosine decay on packed rows; returns the model (on ``device``,
    default the CPU) and its losses. The model is initialised and the rows drawn on the CPU,
    so only the training arithmetic depends on the device."""
    torch.manual_seed(seed)
    model = GPT2LMHeadModel(config)
    if device is not None:
        # cast: transformers wraps PreTrainedModel.to in functools.wraps(Module.to), which type
        # checkers read as an unbound Module.to; the call is the model's own .to (returning the model)
        cast(torch.nn.Module, model).to(device)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01, betas=(0.9, 0.95))
    warmup = max(1, steps // 20)
    generator = torch.Generator().manual_seed(seed)
    losses: list[float] = []
    bar = tqdm(range(steps), desc="pretrain toy LM", disable=not progress, leave=False)
    for step in bar:
        scale = (
            (step + 1) / warmup
            if step < warmup
            else 0.5 * (1 + math.cos(math.pi * (step - warmup) / (steps - warmup)))
        )
        for group in optimizer.param_groups:
            group["lr"] = lr * scale
        rows = data[torch.randint(len(data), (batch_size,), generator=generator)]
        if device is not None:
            rows = rows.to(device)
        mask = rows >= 0
        inputs = rows.clamp(min=0)
        labels = rows.masked_fill(~mask, -100)
        loss = model(input_ids=inputs, attention_mask=mask.long(), labels=labels).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        losses.append(loss.item())
        if step % 50 == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}")
    model.eval()
    return model, losses
