"""Behavioural evaluation of one side of a pair under an intervention: toxicity of greedy
continuations, and the side effects on held-out text, perplexity and continuation F1 (measured
separately, since only some claims need them and they dominate a large pair's run)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch

from dpoclaims.hooks.interventions import Intervention
from dpoclaims.measure.generation import GenerationSettings, greedy_generate
from dpoclaims.measure.metrics import (
    PERPLEXITY_MAX_TOKENS,
    ContinuationF1,
    F1Settings,
    continuation_f1,
    perplexity_rows,
)
from dpoclaims.measure.scoring import get_scorer
from dpoclaims.models.pairs import ModelPair, PairSide


@dataclass
class Evaluation:
    """Toxicity of one side's greedy continuations (an :class:`~dpoclaims.measure.artifact.Artifact`)."""

    KIND: ClassVar[str] = "evaluation"
    FORMAT: ClassVar[int] = 2  # part of every cache key: bump when what an evaluation stores changes

    side: str
    intervention: str
    scores: dict[str, list[float]]  # scorer name -> per-prompt toxicity
    continuations: list[str]

    def mean_toxicity(self, scorer: str) -> float:
        values = self.scores[scorer]
        return sum(values) / len(values)

    def save(self, directory: Path) -> None:
        (directory / "evaluation.json").write_text(json.dumps(asdict(self)))

    @classmethod
    def load(cls, directory: Path) -> Evaluation:
        return cls(**json.loads((directory / "evaluation.json").read_text()))


def score_continuations(
    pair: ModelPair,
    side: PairSide,
    intervention: Intervention,
    continuations: Sequence[str],
    scorers: Sequence[str] = ("lexicon",),
) -> Evaluation:
    """The evaluation of continuations already generated (e.g. a capture's: the same greedy
    pass, so a capture and an evaluation of one (side, intervention) need one generation)."""
    scores = {
        name: get_scorer(name, lexicon=pair.spec.lexicon).score(list(continuations)) for name in scorers
    }
    return Evaluation(side, intervention.id, scores, list(continuations))


def evaluate(
    pair: ModelPair,
    side: PairSide,
    prompts: Sequence[str],
    settings: GenerationSettings,
    intervention: Intervention = Intervention(),
    *,
    scorers: Sequence[str] = ("lexicon",),
    progress: bool = True,
) -> Evaluation:
    """Greedy continuations of ``prompts`` under ``intervention``, scored for toxicity."""
    with intervention.applied(pair.model(side), pair.layout) as model:
        generations = greedy_generate(
            model,
            pair.tokenizer,
            prompts,
            settings,
            progress=progress,
            desc=f"generate {side} [{intervention.label or intervention.id}]",
        )
    return score_continuations(pair, side, intervention, generations.continuations, scorers)


@dataclass(frozen=True)
class PerplexityRows:
    """Per text (or window) NLL sums and token counts of one side on held-out texts (an
    :class:`~dpoclaims.measure.artifact.Artifact`); see :func:`intervened_perplexity`."""

    KIND: ClassVar[str] = "perplexity"
    FORMAT: ClassVar[int] = 3  # per-row NLL and token counts (3), not only the total

    nll: np.ndarray  # [n_rows] float64 NLL sum per row
    tokens: np.ndarray  # [n_rows] float64 tokens scored per row

    def save(self, directory: Path) -> None:
        (directory / "perplexity.json").write_text(
            json.dumps({"nll": self.nll.tolist(), "tokens": self.tokens.tolist()})
        )

    @classmethod
    def load(cls, directory: Path) -> PerplexityRows:
        rows = json.loads((directory / "perplexity.json").read_text())
        return cls(np.asarray(rows["nll"], dtype=np.float64), np.asarray(rows["tokens"], dtype=np.float64))


@torch.no_grad()
def intervened_perplexity(
    pair: ModelPair,
    side: PairSide,
    texts: Sequence[str],
    intervention: Intervention = Intervention(),
    *,
    window: int | None = None,
    max_tokens: int = PERPLEXITY_MAX_TOKENS,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-row (text or window) NLL sums and token counts of one side on ``texts`` under
    ``intervention`` (at every position); see :func:`dpoclaims.measure.metrics.perplexity_rows`.

    ``window``: score the joined texts in consecutive windows of that many tokens (the
    paper's Wikitext-2 set-up); otherwise each text on its own, on its first ``max_tokens``.
    """
    with intervention.applied(pair.model(side), pair.layout) as model:
        return perplexity_rows(
            model, pair.tokenizer, texts, window=window, max_tokens=max_tokens, batch_size=4 if window else 32
        )


@torch.no_grad()
def intervened_f1(
    pair: ModelPair,
    side: PairSide,
    texts: Sequence[str],
    intervention: Intervention = Intervention(),
    settings: F1Settings = F1Settings(),
    *,
    progress: bool = False,
) -> ContinuationF1:
    """Per-text F1 of one side's greedy continuations of ``texts``' prefixes against their real
    continuations, under ``intervention`` (Lee et al.'s F1; see :func:`continuation_f1`)."""
    with intervention.applied(pair.model(side), pair.layout) as model:
        return continuation_f1(model, pair.tokenizer, texts, settings, progress=progress)
