"""Everything the claims measure on one pair, computed lazily, cached on disk and kept in
memory once read.

Each measurement (a capture, an evaluation, a perplexity, a continuation F1) is addressed by what it depends on:
the pair's fingerprint, the side, the intervention's id, the prompt or text set and the
settings; never by the device that made it. One helper (:meth:`Measurements.measure`) serves
all of them. A read-only cache (``Cache.reader()``) computes nothing: a missing entry
raises :class:`dpoclaims.cache.NotCached`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Literal, TypeVar

import numpy as np

from dpoclaims.cache import Cache, stable_hash
from dpoclaims.capture import CAPTURE_FORMAT, Capture, Convention, capture
from dpoclaims.decomposition import Decomposition, decompose
from dpoclaims.evaluation import (
    EVALUATION_FORMAT,
    F1_FORMAT,
    Evaluation,
    evaluate,
    intervened_f1,
    intervened_perplexity,
    load_f1,
    save_f1,
)
from dpoclaims.generation import GenerationSettings
from dpoclaims.interventions import Intervention
from dpoclaims.metrics import ContinuationF1, F1Settings
from dpoclaims.pairs import ModelPair
from dpoclaims.prompts import pair_texts

Side = Literal["base", "dpo"]
Measured = TypeVar("Measured")
NO_INTERVENTION = Intervention()


@dataclass(frozen=True)
class MeasurementSettings:
    max_prompts: int | None = None
    generation: GenerationSettings = field(default_factory=GenerationSettings)
    convention: Convention = "v1"
    scorer: str = "lexicon"
    seed: int = 0
    perplexity: Literal["claims", "all"] = "claims"  # "all": also for every intervention (paper Table 1)


class Measurements:
    """The measurement cache of one pair under one set of settings."""

    def __init__(
        self,
        pair: ModelPair,
        cache: Cache,
        settings: MeasurementSettings = MeasurementSettings(),
        *,
        progress: bool = True,
    ) -> None:
        self.pair = pair
        self.cache = cache
        self.settings = settings
        self.progress = progress
        self.prompts = pair_texts(pair, "challenge_prompts", settings.max_prompts)
        self.neutral_texts = pair_texts(pair, "neutral_texts")
        self._in_memory: dict[tuple[str, str, str], Any] = {}

    def measure(
        self,
        kind: str,
        side: Side,
        intervention: Intervention,
        key: dict[str, Any],
        compute: Callable[[Path], None],
        load: Callable[[Path], Measured],
    ) -> Measured:
        """The measurement ``kind`` of ``side`` under ``intervention``: from memory, else from
        the cache entry addressed by ``key`` (plus pair, side and intervention), else computed
        by ``compute(directory)`` into a new entry."""
        memory_key = (kind, side, intervention.id)
        if memory_key not in self._in_memory:
            full_key = {"pair": self.pair.fingerprint, "side": side, "intervention": intervention.id, **key}

            def build(directory: Path) -> dict[str, Any]:
                compute(directory)
                return {"pair": self.pair.fingerprint, "side": side, "intervention": intervention.id}

            entry = self.cache.get_or_build(kind, stable_hash(full_key), build)
            self._in_memory[memory_key] = load(entry)
        return self._in_memory[memory_key]

    def capture(self, side: Side, intervention: Intervention = NO_INTERVENTION) -> Capture:
        """Per-prompt mean activations of ``side`` on its own continuations."""
        settings = self.settings

        def compute(directory: Path) -> None:
            capture(
                self.pair,
                side,
                self.prompts,
                settings.generation,
                convention=settings.convention,
                intervention=intervention,
                progress=self.progress,
            ).save(directory)

        key = {
            "format": CAPTURE_FORMAT,
            "prompts": stable_hash(list(self.prompts)),
            "settings": asdict(settings.generation),
            "convention": settings.convention,
        }
        return self.measure("capture", side, intervention, key, compute, Capture.load)

    def evaluation(self, side: Side, intervention: Intervention = NO_INTERVENTION) -> Evaluation:
        """Toxicity of ``side``'s greedy continuations under ``intervention``."""
        scorers = (self.settings.scorer,)

        def compute(directory: Path) -> None:
            evaluate(
                self.pair,
                side,
                self.prompts,
                self.settings.generation,
                intervention,
                scorers=scorers,
                progress=self.progress,
            ).save(directory)

        key = {
            "format": EVALUATION_FORMAT,
            "prompts": stable_hash(list(self.prompts)),
            "settings": asdict(self.settings.generation),
            "scorers": sorted(scorers),
        }
        return self.measure("evaluation", side, intervention, key, compute, Evaluation.load)

    def perplexity(self, side: Side, intervention: Intervention = NO_INTERVENTION) -> float:
        """Perplexity of ``side`` on the pair's neutral texts under ``intervention``."""
        window_value = self.pair.spec.extras.get("perplexity_window")
        window = int(window_value) if window_value else None

        def compute(directory: Path) -> None:
            value = intervened_perplexity(self.pair, side, self.neutral_texts, intervention, window=window)
            (directory / "perplexity.json").write_text(json.dumps({"perplexity": value}))

        def load(directory: Path) -> float:
            return float(json.loads((directory / "perplexity.json").read_text())["perplexity"])

        key = {"format": EVALUATION_FORMAT, "texts": stable_hash(list(self.neutral_texts)), "window": window}
        return self.measure("perplexity", side, intervention, key, compute, load)

    def f1(self, side: Side, intervention: Intervention = NO_INTERVENTION) -> ContinuationF1:
        """Per-text continuation F1 of ``side`` on the pair's neutral texts under
        ``intervention`` (Lee et al.'s side-effect measure; bootstrap ``.scores`` over texts)."""
        f1_settings = F1Settings()

        def compute(directory: Path) -> None:
            save_f1(
                intervened_f1(
                    self.pair, side, self.neutral_texts, intervention, f1_settings, progress=self.progress
                ),
                directory,
            )

        key = {
            "format": F1_FORMAT,
            "texts": stable_hash(list(self.neutral_texts)),
            "settings": asdict(f1_settings),
        }
        return self.measure("f1", side, intervention, key, compute, load_f1)

    @cached_property
    def decomposition(self) -> Decomposition:
        return decompose(
            self.pair.value_vectors("base"),
            self.pair.value_vectors("dpo"),
            self.pair.probe,
            self.capture("base").mean_activation,
            self.capture("dpo").mean_activation,
        )

    def layer_projection(self, side: Side, intervention: Intervention = NO_INTERVENTION) -> np.ndarray:
        """``[n_layers]``: mean MLP output projected on the unit probe, per layer (Fig. 1a)."""
        projection = self.pair.value_vectors(side) @ self.pair.unit_probe  # [L, d_mlp]
        return (self.capture(side, intervention).overall_mean * projection).sum(1).numpy()

    def scores(self, side: Side, intervention: Intervention = NO_INTERVENTION) -> np.ndarray:
        """``[n_prompts]`` toxicity per prompt."""
        return np.asarray(self.evaluation(side, intervention).scores[self.settings.scorer])
