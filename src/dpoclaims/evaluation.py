"""Behavioural evaluation of one side of a pair under an intervention: toxicity of greedy
continuations, and perplexity on held-out text (measured separately, since only some claims
need it and it dominates a large pair's run)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from dpoclaims.generation import GenerationSettings, greedy_generate
from dpoclaims.interventions import Intervention
from dpoclaims.metrics import perplexity_rows
from dpoclaims.pairs import ModelPair
from dpoclaims.scoring import get_scorer

EVALUATION_FORMAT = 2  # part of every cache key: bump when what an evaluation stores changes


@dataclass
class Evaluation:
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


def evaluate(
    pair: ModelPair,
    side: Literal["base", "dpo"],
    prompts: Sequence[str],
    settings: GenerationSettings,
    intervention: Intervention = Intervention(),
    *,
    scorers: Sequence[str] = ("lexicon",),
    progress: bool = True,
) -> Evaluation:
    """Greedy continuations of ``prompts`` under ``intervention``, scored for toxicity."""
    model = pair.model(side).original_model
    with intervention.applied(pair.model(side), pair.layout):
        generations = greedy_generate(
            model,
            pair.tokenizer,
            prompts,
            settings,
            progress=progress,
            desc=f"generate {side} [{intervention.label or intervention.id}]",
        )
    scores = {
        name: get_scorer(name, lexicon=pair.spec.lexicon).score(generations.continuations) for name in scorers
    }
    return Evaluation(side, intervention.id, scores, generations.continuations)


PERPLEXITY_FORMAT = 3  # per-row NLL and token counts (3), not only the total


@torch.no_grad()
def intervened_perplexity(
    pair: ModelPair,
    side: Literal["base", "dpo"],
    texts: Sequence[str],
    intervention: Intervention = Intervention(),
    *,
    window: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-row (text or window) NLL sums and token counts of one side on ``texts`` under
    ``intervention`` (at every position); see :func:`dpoclaims.metrics.perplexity_rows`.

    ``window``: score the joined texts in consecutive windows of that many tokens (the
    paper's Wikitext-2 set-up); otherwise each text on its own.
    """
    with intervention.applied(pair.model(side), pair.layout):
        return perplexity_rows(
            pair.model(side).original_model,
            pair.tokenizer,
            texts,
            window=window,
            batch_size=4 if window else 32,
        )
