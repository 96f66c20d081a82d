"""Tokenizer training and causal-LM pretraining for the toy organism (nanoGPT-sized)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import cast

import numpy as np
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedModel, PreTrainedTokenizerFast

from dpoclaims.progress import track_progress

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


def move(model: PreTrainedModel, to: torch.dtype | torch.device) -> None:
    """``model.to(to)``: its parameters converted or moved in place (tied weights stay tied).

    The cast: transformers wraps PreTrainedModel.to in functools.wraps(Module.to), which type
    checkers read as an unbound Module.to; the call is the model's own .to."""
    cast(torch.nn.Module, model).to(to)


def initialise_gpt2(model: GPT2LMHeadModel, seed: int) -> None:
    """GPT-2's initialisation, drawn from numpy's generator: weights and embeddings
    normal(0, initializer_range), the residual output projections (``c_proj``) with that std
    divided by sqrt(2 n_layer), biases 0, layer norms' scales 1.

    Why not the model's own initialisation: torch's CPU ``normal_`` has one kernel per vector
    width, whose draws differ in the last bits from one CPU to another, so the same seed gave each
    machine another starting model. numpy's draws are the same on every machine."""
    rng = np.random.default_rng(seed)
    std = model.config.initializer_range
    with torch.no_grad():
        for name, param in model.named_parameters():  # a fixed order; the tied lm_head appears once
            if ".ln_" in name:  # ln_1, ln_2 and ln_f
                param.fill_(1.0 if name.endswith("weight") else 0.0)
            elif name.endswith("bias"):
                param.zero_()
            else:
                scale = std / math.sqrt(2 * model.config.n_layer) if name.endswith("c_proj.weight") else std
                draw = rng.standard_normal(tuple(param.shape)) * scale  # float64
                param.copy_(torch.from_numpy(draw).to(param.dtype))


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
    dtype: torch.dtype = torch.float32,
) -> tuple[GPT2LMHeadModel, list[float]]:
    """AdamW with warm-up and cosine decay on packed rows; returns the model (on ``device``,
    default the CPU, in ``dtype``) and its losses. The weights are drawn by :func:`initialise_gpt2`
    (numpy, float64, rounded into ``dtype``) and the rows on the CPU, so only the training
    arithmetic depends on the device and its kernels."""
    torch.manual_seed(seed)
    model = GPT2LMHeadModel(config)
    move(model, dtype)
    initialise_gpt2(model, seed)
    if device is not None:
        move(model, device)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01, betas=(0.9, 0.95))
    warmup = max(1, steps // 20)
    generator = torch.Generator().manual_seed(seed)
    losses: list[float] = []
    bar = track_progress(range(steps), desc="pretrain toy LM", enabled=progress)
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
        logits = model(input_ids=inputs, attention_mask=mask.long()).logits  # [batch, block, vocab]
        # Next-token cross-entropy in the model's own float type: the model's built-in loss casts
        # the logits to float32 first, which would put float32 rounding back into float64 training.
        loss = torch.nn.functional.cross_entropy(
            logits[:, :-1].flatten(0, 1), labels[:, 1:].flatten(), ignore_index=-100
        )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        losses.append(loss.item())
        if step % 50 == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}")
    model.eval()
    return model, losses
