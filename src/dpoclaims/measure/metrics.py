"""Model-level measurements: perplexity, continuation F1 and weight similarity."""

from __future__ import annotations

import json
import re
import string
from collections import Counter
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Literal, cast

import numpy as np
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from dpoclaims.errors import OptionError
from dpoclaims.measure.generation import GenerationSettings, greedy_generate, model_input_device
from dpoclaims.phases import phase

#: The most tokens of a held-out text scored on its own (without windows), as the paper's
#: models take: a model with fewer positions scores each text on as many as it has.
PERPLEXITY_MAX_TOKENS = 1024


@torch.no_grad()
def perplexity_rows(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    *,
    batch_size: int = 32,
    max_tokens: int = PERPLEXITY_MAX_TOKENS,
    window: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Per scored row (a text, or a window): the summed negative log-likelihood and the number
    of predicted tokens, ``([rows], [rows])`` as float64, so perplexity can be bootstrapped over
    texts or windows. Right padding, masked.

    Without ``window`` each text is scored on its own (cut to ``max_tokens``); with it, the
    texts are joined and cut into consecutive ``window``-token windows (the paper's
    Wikitext-2 set-up), each scored on its own.
    """
    tokenizer.padding_side = "right"
    model.eval()
    if window is not None:
        from dpoclaims.measure.data import perplexity_windows

        rows = perplexity_windows(tokenizer, texts, window)
    else:
        rows = tokenizer(list(texts), truncation=True, max_length=max_tokens, add_special_tokens=False)[
            "input_ids"
        ]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    device = model_input_device(model)
    nll_sums, token_counts = [], []
    for start in range(0, len(rows), batch_size):
        chunk = rows[start : start + batch_size]
        width = max(len(r) for r in chunk)
        ids = torch.tensor([r + [pad] * (width - len(r)) for r in chunk])
        mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in chunk])
        ids, mask = ids.to(device), mask.to(device)  # [batch, width]
        with phase("perplexity", tokens=ids.numel()):
            logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
        targets, target_mask = ids[:, 1:], mask[:, 1:].float()
        nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), targets, reduction="none")
        nll_sums.append((nll * target_mask).double().sum(1).cpu())  # [batch]
        token_counts.append(target_mask.double().sum(1).cpu())
    if not nll_sums:
        return np.zeros(0), np.zeros(0)
    return torch.cat(nll_sums).numpy(), torch.cat(token_counts).numpy()


def perplexity_from_rows(nll: np.ndarray, tokens: np.ndarray, axis: int = 0) -> np.ndarray:
    """exp(total NLL / total tokens) over the rows on ``axis`` (a bootstrap statistic)."""
    return np.exp(np.sum(nll, axis=axis) / np.maximum(np.sum(tokens, axis=axis), 1))


def perplexity(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    *,
    batch_size: int = 32,
    max_tokens: int = PERPLEXITY_MAX_TOKENS,
    window: int | None = None,
) -> float:
    """Token-level perplexity over ``texts`` (see :func:`perplexity_rows`)."""
    nll, tokens = perplexity_rows(
        model, tokenizer, texts, batch_size=batch_size, max_tokens=max_tokens, window=window
    )
    return float(perplexity_from_rows(nll, tokens))


@torch.no_grad()
def weight_cosines(base: torch.nn.Module, tuned: torch.nn.Module) -> dict[str, float]:
    """Cosine between each weight matrix (parameters with 2+ dimensions) of two models."""
    tuned_params = dict(tuned.named_parameters())
    cosines = {}
    for name, weight in base.named_parameters():
        if weight.ndim < 2:
            continue
        other = tuned_params[name].to(weight.device)  # the two models may sit on different devices
        cosines[name] = float(
            torch.nn.functional.cosine_similarity(weight.flatten().float(), other.flatten().float(), dim=0)
        )
    return cosines


# ------------------------------------------------------------------------- F1 of continuations

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = str.maketrans("", "", string.punctuation)


def normalize_answer(text: str) -> list[str]:
    """SQuAD normalisation: lowercase, drop punctuation and the articles a/an/the, split on
    whitespace."""
    text = text.lower().translate(_PUNCTUATION)
    return _ARTICLES.sub(" ", text).split()


def overlap_f1(prediction: Sequence[Hashable], reference: Sequence[Hashable]) -> float:
    """F1 of the multiset overlap of two token sequences; 1.0 when both are empty, 0.0 when
    only one is."""
    if not prediction or not reference:
        return float(len(prediction) == len(reference))
    shared = sum((Counter(prediction) & Counter(reference)).values())
    if shared == 0:
        return 0.0
    precision, recall = shared / len(prediction), shared / len(reference)
    return 2 * precision * recall / (precision + recall)


def token_f1(prediction: str, reference: str) -> float:
    """Token-overlap F1 of two texts after SQuAD normalisation (:func:`normalize_answer`)."""
    return overlap_f1(normalize_answer(prediction), normalize_answer(reference))


@dataclass(frozen=True)
class F1Settings:
    """How a held-out text is cut into a prompt and its real continuation (in tokens).

    The prefix is the first half of the text's tokens, at most ``max_prompt_tokens`` (the
    paper's prompt length), moved back to the start of the word the cut falls in (so no word is
    split between prompt and reference; with a tokenizer that gives no character offsets, or a
    first half that is one word, the cut stays where it is). The reference continuation is the
    next ``continuation_tokens`` tokens at most (the paper's generation length), and the model
    generates that many greedily. Texts under ``min_tokens`` tokens are skipped. ``unit``: ``words`` compares the decoded
    texts after SQuAD normalisation; ``token_ids`` compares token ids as multisets, as Lee et
    al.'s evaluation code does.
    """

    max_prompt_tokens: int = 32
    continuation_tokens: int = 20
    min_tokens: int = 4
    batch_size: int = 32
    unit: Literal["words", "token_ids"] = "words"

    def __post_init__(self) -> None:
        if self.unit not in ("words", "token_ids"):
            raise OptionError(f"F1Settings.unit must be 'words' or 'token_ids', not {self.unit!r}")
        if self.max_prompt_tokens < 1 or self.continuation_tokens < 1:
            raise OptionError(
                "F1Settings needs max_prompt_tokens >= 1 and continuation_tokens >= 1, got "
                f"{self.max_prompt_tokens} and {self.continuation_tokens}"
            )


@dataclass(frozen=True)
class ContinuationF1:
    """Per-text continuation F1 of one side (an :class:`~dpoclaims.measure.artifact.Artifact`)."""

    KIND: ClassVar[str] = "f1"
    FORMAT: ClassVar[int] = 1  # part of every cache key: bump when what ``save`` writes changes

    scores: np.ndarray  # [n_used] F1 per usable text, in the order of the texts
    used: tuple[int, ...]  # index (into the texts) of each score
    n_skipped: int  # texts under F1Settings.min_tokens tokens
    prompts: tuple[str, ...]
    references: tuple[str, ...]
    continuations: tuple[str, ...]

    @property
    def mean(self) -> float:
        return float(np.mean(self.scores)) if len(self.scores) else float("nan")

    def save(self, directory: Path) -> None:
        data = {
            "scores": [float(x) for x in self.scores],
            "used": list(self.used),
            "n_skipped": self.n_skipped,
            "prompts": list(self.prompts),
            "references": list(self.references),
            "continuations": list(self.continuations),
        }
        (directory / "f1.json").write_text(json.dumps(data))

    @classmethod
    def load(cls, directory: Path) -> ContinuationF1:
        data = json.loads((directory / "f1.json").read_text())
        return cls(
            np.asarray(data["scores"], dtype=np.float64),
            tuple(int(i) for i in data["used"]),
            int(data["n_skipped"]),
            tuple(data["prompts"]),
            tuple(data["references"]),
            tuple(data["continuations"]),
        )


def split_for_continuation(
    tokenizer: PreTrainedTokenizerBase, text: str, settings: F1Settings = F1Settings()
) -> tuple[list[int], list[int]] | None:
    """``(prefix ids, reference continuation ids)`` of ``text`` (see :class:`F1Settings`), or
    None when it is too short."""
    try:
        encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        offsets = encoded["offset_mapping"]
    except NotImplementedError:  # a slow (Python) tokenizer has no offsets
        encoded, offsets = tokenizer(text, add_special_tokens=False), None
    ids = encoded["input_ids"]
    if len(ids) < max(settings.min_tokens, 2):
        return None
    cut = min(len(ids) // 2, settings.max_prompt_tokens)
    if offsets is not None:
        word_starts = [k for k in range(1, cut + 1) if _starts_word(text, offsets[k][0])]
        if word_starts:
            cut = word_starts[-1]
    return ids[:cut], ids[cut : cut + settings.continuation_tokens]


def _starts_word(text: str, start: int) -> bool:
    """A token whose span begins at ``start`` begins a word (its span may include the space)."""
    return start == 0 or text[start].isspace() or text[start - 1].isspace()


def continuation_f1(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    settings: F1Settings = F1Settings(),
    *,
    progress: bool = False,
) -> ContinuationF1:
    """Per-text F1 of the model's greedy continuation of each text's prefix against the text's
    real continuation (see :class:`F1Settings`); the caller bootstraps ``scores`` over texts.

    The prefix is decoded and handed to :func:`greedy_generate` as text, which re-tokenizes
    it; the prompt limit is set loose enough that the prefix is never cut there.
    """
    used, prefixes, references = [], [], []
    for index, text in enumerate(texts):
        split = split_for_continuation(tokenizer, text, settings)
        if split is not None:
            used.append(index)
            prefixes.append(split[0])
            references.append(split[1])
    # decode of one row is one string (the stubs say str | list[str])
    prompts = [cast(str, tokenizer.decode(ids)) for ids in prefixes]
    generation = GenerationSettings(
        max_prompt_tokens=2 * settings.max_prompt_tokens + 8,
        max_new_tokens=settings.continuation_tokens,
        batch_size=settings.batch_size,
    )
    generations = greedy_generate(model, tokenizer, prompts, generation, progress=progress, desc="F1")
    reference_texts = [cast(str, tokenizer.decode(ids)) for ids in references]
    if settings.unit == "words":
        scores = [token_f1(p, r) for p, r in zip(generations.continuations, reference_texts)]
    else:
        scores = [overlap_f1(p, r) for p, r in zip(generations.continuation_ids, references)]
    return ContinuationF1(
        np.asarray(scores, dtype=np.float64),
        tuple(used),
        len(texts) - len(used),
        tuple(prompts),
        tuple(reference_texts),
        tuple(generations.continuations),
    )
