"""Model-level measurements: perplexity and weight similarity."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase


@torch.no_grad()
def perplexity(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    *,
    batch_size: int = 32,
    max_tokens: int = 1024,
    window: int | None = None,
) -> float:
    """Token-level perplexity over ``texts`` (right padding, masked).

    Without ``window`` each text is scored on its own (cut to ``max_tokens``); with it, the
    texts are joined and cut into consecutive ``window``-token windows (the paper's
    Wikitext-2 set-up), each scored on its own.
    """
    tokenizer.padding_side = "right"
    total_nll, total_tokens = 0.0, 0
    model.eval()
    if window is not None:
        from dpoclaims.data import perplexity_windows

        rows = perplexity_windows(tokenizer, texts, window)
    else:
        rows = tokenizer(list(texts), truncation=True, max_length=max_tokens, add_special_tokens=False)[
            "input_ids"
        ]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    device = model.get_input_embeddings().weight.device
    for start in range(0, len(rows), batch_size):
        chunk = rows[start : start + batch_size]
        width = max(len(r) for r in chunk)
        ids = torch.tensor([r + [pad] * (width - len(r)) for r in chunk])
        mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in chunk])
        ids, mask = ids.to(device), mask.to(device)  # [batch, width]
        logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
        targets, target_mask = ids[:, 1:], mask[:, 1:].bool()
        nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), targets, reduction="none")
        total_nll += float(nll[target_mask].sum())
        total_tokens += int(target_mask.sum())
    return math.exp(total_nll / max(total_tokens, 1))


@torch.no_grad()
def weight_cosines(base: torch.nn.Module, tuned: torch.nn.Module) -> dict[str, float]:
    """Cosine between each weight matrix (parameters with 2+ dimensions) of two models."""
    tuned_params = dict(tuned.named_parameters())
    cosines = {}
    for name, weight in base.named_parameters():
        if weight.ndim < 2:
            continue
        other = tuned_params[name]
        cosines[name] = float(
            torch.nn.functional.cosine_similarity(weight.flatten().float(), other.flatten().float(), dim=0)
        )
    return cosines
