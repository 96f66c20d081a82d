"""Everything the claims measure on one pair, computed lazily, cached on disk and kept in
memory once read.

Each measurement (a capture, an evaluation, a perplexity, a continuation F1) is addressed by what it depends on:
the pair's fingerprint, the side, the intervention's id, the prompt or text set and the
settings; never by the device that made it (a GPU and a CPU measurement of the same pair share
an entry; their numbers agree within float rounding, and the first one written is kept). One
generation pass per (side, intervention): where activations are captured, the evaluation
scores the capture's continuations. One helper (:meth:`Measurements.measure`) serves
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
from dpoclaims.claims import selection
from dpoclaims.errors import DpoclaimsError
from dpoclaims.hooks.interventions import Intervention
from dpoclaims.measure.capture import CAPTURE_FORMAT, Capture, Convention, capture
from dpoclaims.measure.decomposition import Decomposition, decompose
from dpoclaims.measure.evaluation import (
    EVALUATION_FORMAT,
    F1_FORMAT,
    PERPLEXITY_FORMAT,
    Evaluation,
    evaluate,
    intervened_f1,
    intervened_perplexity,
    load_f1,
    save_f1,
    score_continuations,
)
from dpoclaims.measure.generation import GenerationSettings
from dpoclaims.measure.metrics import ContinuationF1, F1Settings, perplexity_from_rows
from dpoclaims.measure.prompts import (
    MissingPromptSet,
    UnusablePromptSet,
    challenge_texts,
    dropped_prompts,
    pair_texts,
)
from dpoclaims.models.pairs import ModelPair
from dpoclaims.versions import measurement_versions

Side = Literal["base", "dpo"]
Measured = TypeVar("Measured")
NO_INTERVENTION = Intervention()
# C1 draws the paper's Fig. 1a (layer-wise projection) for the base under the ablation of the
# top-N toxic neurons at this N (dpoclaims.claims.checks.c1_ablation_matches_dpo), so that ablation
# is captured in any case, and its toxicity is scored on the captured continuations.
FIGURE_1A_N = 100


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
        # What usable_prompts dropped from the file (empty or invisible, repeats): the report says it.
        self.prompts_dropped = dropped_prompts(challenge_texts(pair))
        self._in_memory: dict[tuple[str, str, str], Any] = {}
        self._libraries = measurement_versions()

    @cached_property
    def neutral_texts(self) -> list[str]:
        """The pair's held-out neutral texts, read when a measurement first needs them: a pair
        without them loses only the claims that read them (a
        :class:`~dpoclaims.measure.prompts.MissingPromptSet` there, which the claims suite turns into a skip)."""
        try:
            return pair_texts(self.pair, "neutral_texts")
        except MissingPromptSet:
            raise
        except DpoclaimsError as exc:
            raise UnusablePromptSet(
                f"the neutral texts of pair {self.pair.name!r} cannot be used: {exc}"
            ) from exc

    @cached_property
    def perplexity_window(self) -> int | None:
        """The spec's ``perplexity_window`` (tokens per window), checked when the spec was read."""
        value = self.pair.spec.extras.get("perplexity_window")
        return int(value) if value else None

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

            def build(directory: Path) -> dict[str, Any]:
                compute(directory)
                return {
                    "pair": self.pair.fingerprint,
                    "side": side,
                    "intervention": intervention.id,
                    "libraries": self._libraries,
                }

            entry = self.cache.get_or_build(kind, self._entry_key(side, intervention, key), build)
            self._in_memory[memory_key] = load(entry)
        return self._in_memory[memory_key]

    def _capture_key(self) -> dict[str, Any]:
        settings = self.settings
        return {
            "format": CAPTURE_FORMAT,
            "prompts": stable_hash(list(self.prompts)),
            "settings": asdict(settings.generation),
            "convention": settings.convention,
        }

    def capture(self, side: Side, intervention: Intervention = NO_INTERVENTION) -> Capture:
        """Per-prompt mean activations of ``side`` on its own continuations (which it keeps)."""
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

        return self.measure("capture", side, intervention, self._capture_key(), compute, Capture.load)

    def _entry_key(self, side: Side, intervention: Intervention, key: dict[str, Any]) -> str:
        """The cache key of a measurement: the pair's fingerprint, the side, the intervention,
        the versions of the libraries that compute and score it (a release must not silently
        change a cached number), and the measurement's own ``key`` (prompts, settings, format)."""
        return stable_hash(
            {
                "pair": self.pair.fingerprint,
                "side": side,
                "intervention": intervention.id,
                "libraries": self._libraries,
                **key,
            }
        )

    def has_capture(self, side: Side, intervention: Intervention = NO_INTERVENTION) -> bool:
        """Whether the capture of ``side`` under ``intervention`` is in memory or in the cache."""
        if ("capture", side, intervention.id) in self._in_memory:
            return True
        return self.cache.get("capture", self._entry_key(side, intervention, self._capture_key())) is not None

    def captured_anyway(self, side: Side, intervention: Intervention) -> bool:
        """Whether the claims capture ``side``'s activations under ``intervention`` in any case:
        both sides without intervention (the decomposition) and the base under C1's Fig. 1a
        ablation (the top-``FIGURE_1A_N`` toxic neurons), or a capture that exists already. Its
        evaluation then scores the capture's continuations: one generation, not two."""
        if intervention.kind == "none" or self.has_capture(side, intervention):
            return True
        if side != "base" or intervention.kind != "ablate":
            return False
        return intervention == selection.ablation(self.decomposition, FIGURE_1A_N)

    def evaluation(self, side: Side, intervention: Intervention = NO_INTERVENTION) -> Evaluation:
        """Toxicity of ``side``'s greedy continuations under ``intervention``: the continuations
        of its capture where the claims capture it anyway (:meth:`captured_anyway`), else of a
        generation of their own (no activations recorded)."""
        scorers = (self.settings.scorer,)

        def compute(directory: Path) -> None:
            if self.captured_anyway(side, intervention):
                continuations = self.capture(side, intervention).continuations
                score_continuations(self.pair, side, intervention, continuations, scorers).save(directory)
                return
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

    def perplexity_rows(
        self, side: Side, intervention: Intervention = NO_INTERVENTION
    ) -> tuple[np.ndarray, np.ndarray]:
        """Per text (or window) NLL sums and token counts of ``side`` on the neutral texts."""
        window = self.perplexity_window

        def compute(directory: Path) -> None:
            nll, tokens = intervened_perplexity(
                self.pair, side, self.neutral_texts, intervention, window=window
            )
            (directory / "perplexity.json").write_text(
                json.dumps({"nll": nll.tolist(), "tokens": tokens.tolist()})
            )

        def load(directory: Path) -> tuple[np.ndarray, np.ndarray]:
            rows = json.loads((directory / "perplexity.json").read_text())
            return np.asarray(rows["nll"], dtype=np.float64), np.asarray(rows["tokens"], dtype=np.float64)

        key = {"format": PERPLEXITY_FORMAT, "texts": stable_hash(list(self.neutral_texts)), "window": window}
        return self.measure("perplexity", side, intervention, key, compute, load)

    def perplexity(self, side: Side, intervention: Intervention = NO_INTERVENTION) -> float:
        """Perplexity of ``side`` on the pair's neutral texts under ``intervention``."""
        return float(perplexity_from_rows(*self.perplexity_rows(side, intervention)))

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
        # Both captures are needed: take first the one no other process is building, so that
        # two pytest-xdist workers starting together build one each, not one after the other.
        sides: list[Side] = ["base", "dpo"]
        if self.cache.being_built("capture", self._entry_key("base", NO_INTERVENTION, self._capture_key())):
            sides.reverse()
        captures = {side: self.capture(side) for side in sides}
        return decompose(
            self.pair.value_vectors("base"),
            self.pair.value_vectors("dpo"),
            self.pair.probe,
            captures["base"].mean_activation,
            captures["dpo"].mean_activation,
        )

    def layer_projection(self, side: Side, intervention: Intervention = NO_INTERVENTION) -> np.ndarray:
        """``[n_layers]``: mean MLP output projected on the unit probe, per layer (Fig. 1a)."""
        projection = self.pair.value_vectors(side) @ self.pair.unit_probe  # [L, d_mlp]
        return (self.capture(side, intervention).overall_mean * projection).sum(1).numpy()

    def scores(self, side: Side, intervention: Intervention = NO_INTERVENTION) -> np.ndarray:
        """``[n_prompts]`` toxicity per prompt."""
        return np.asarray(self.evaluation(side, intervention).scores[self.settings.scorer])
