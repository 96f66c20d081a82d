"""Everything the claims measure on one pair, computed lazily, cached on disk and kept in
memory once read.

Each measurement (a capture, an evaluation, a perplexity, a continuation F1) is addressed by what it depends on:
the pair's fingerprint, the side, the intervention's id, the prompt or text set and the
settings; never by the device that made it (a GPU and a CPU measurement of the same pair share
an entry; their numbers agree within float rounding, and the first one written is kept). Each
is an :class:`~dpoclaims.measure.artifact.Artifact` (it saves and loads itself), and one helper
(:meth:`Measurements.measure`) serves all of them. A read-only cache (``Cache.reader()``)
computes nothing: a missing entry raises :class:`dpoclaims.cache.NotCached`.

One generation pass per (side, intervention): where activations are recorded, the evaluation
scores the capture's continuations. They are recorded without intervention (both sides: the
decomposition) and on the passes the caller declares (``recorded_passes``: the claims say which
of their interventions they capture); this module knows nothing of the claims.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import numpy as np

from dpoclaims.cache import Cache, stable_hash
from dpoclaims.errors import ContextWindowError, DpoclaimsError
from dpoclaims.hooks.interventions import Intervention
from dpoclaims.measure.artifact import Artifact, ArtifactT
from dpoclaims.measure.capture import Capture, Convention, capture
from dpoclaims.measure.decomposition import Decomposition, NeuronSample, decompose, half_split, neuron_sample
from dpoclaims.measure.evaluation import (
    Evaluation,
    PerplexityRows,
    evaluate,
    intervened_f1,
    intervened_perplexity,
    score_continuations,
)
from dpoclaims.measure.generation import GenerationSettings
from dpoclaims.measure.metrics import PERPLEXITY_MAX_TOKENS, ContinuationF1, F1Settings, perplexity_from_rows
from dpoclaims.measure.prompts import (
    MissingPromptSet,
    UnusablePromptSet,
    challenge_texts,
    pair_texts,
    select_prompts,
)
from dpoclaims.models.pairs import ModelPair, PairSide
from dpoclaims.versions import measurement_versions

NO_INTERVENTION = Intervention()
# The intervened passes whose activations a caller records (captures) in any case, given the
# pair's decomposition: their evaluations then score the captures' continuations (one generation
# per pass, not two). The claims declare theirs (dpoclaims.claims.checks.recorded_passes).
RecordedPasses = Callable[[Decomposition], Iterable[tuple[PairSide, Intervention]]]


PerplexityScope = Literal["claims", "all"]  # which passes get a held-out perplexity


@dataclass(frozen=True)
class MeasurementSettings:
    max_prompts: int | None = None
    generation: GenerationSettings = field(default_factory=GenerationSettings)
    convention: Convention = "v1"
    scorer: str = "lexicon"
    seed: int = 0
    perplexity: PerplexityScope = "claims"  # "all": also for every intervention (paper Table 1)


def spec_perplexity_window(pair: ModelPair) -> int | None:
    """The pair spec's ``perplexity_window`` (tokens per window; checked when the spec was read)."""
    value = pair.spec.extras.get("perplexity_window")
    return int(value) if value else None


def check_context_window(pair: ModelPair, prompts: Sequence[str], generation: GenerationSettings) -> None:
    """A :class:`~dpoclaims.errors.ContextWindowError` when the models' positions cannot hold the
    longest of ``prompts`` (as generation cuts it) and its continuation, or the spec's
    perplexity window: said when the measurements are set up, before any generation."""
    positions = pair.positions
    if positions is None:
        return
    if prompts:
        lengths = pair.tokenizer(list(prompts), add_special_tokens=False, verbose=False)["input_ids"]
        longest = min(max(len(ids) for ids in lengths), generation.max_prompt_tokens)
        if longest + generation.max_new_tokens > positions:
            raise ContextWindowError(
                f"the models of pair {pair.name!r} have {positions} positions, but the longest challenge prompt is "
                f"{longest} tokens and each continuation adds {generation.max_new_tokens}: generation would run past "
                f"the last position. Use a model with at least {longest + generation.max_new_tokens} positions, or "
                "shorter prompts"
            )
    window = spec_perplexity_window(pair)
    if window is not None and window > positions:
        raise ContextWindowError(
            f"the spec's perplexity_window {window} exceeds the {positions} positions of the models of pair "
            f"{pair.name!r}; set it to {positions} or less"
        )


class Measurements:
    """The measurement cache of one pair under one set of settings."""

    def __init__(
        self,
        pair: ModelPair,
        cache: Cache,
        settings: MeasurementSettings = MeasurementSettings(),
        *,
        recorded_passes: RecordedPasses | None = None,
        progress: bool = True,
    ) -> None:
        """``recorded_passes``: the intervened passes the caller captures in any case (see
        :data:`RecordedPasses`); without it, only the passes without intervention are recorded
        (and those already captured)."""
        self.pair = pair
        self.cache = cache
        self.settings = settings
        self._declaration = recorded_passes
        self.progress = progress
        self.prompts = pair_texts(pair, "challenge_prompts", settings.max_prompts)
        check_context_window(pair, self.prompts, settings.generation)
        # What usable_prompts dropped from the file (empty or invisible, repeats), and why: the
        # report says it.
        selection = select_prompts(challenge_texts(pair), settings.max_prompts)
        self.prompts_dropped = selection.dropped
        self.prompts_note = selection.note(pair.extra_path("challenge_prompts").name)
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
        """The spec's ``perplexity_window`` (tokens per window), checked when the spec was read
        and against the models' positions (:func:`check_context_window`)."""
        return spec_perplexity_window(self.pair)

    @cached_property
    def perplexity_cut(self) -> int | None:
        """Without windows each held-out text is scored on its first
        :data:`~dpoclaims.measure.metrics.PERPLEXITY_MAX_TOKENS` tokens, or on as many as the
        models have positions when they have fewer: that count when it cuts some text shorter
        than the default would (it is then part of the cache key), else None."""
        positions = self.pair.positions
        if self.perplexity_window is not None or positions is None or positions >= PERPLEXITY_MAX_TOKENS:
            return None
        lengths = self.pair.tokenizer(list(self.neutral_texts), add_special_tokens=False, verbose=False)
        return positions if any(len(ids) > positions for ids in lengths["input_ids"]) else None

    def measure(
        self,
        artifact: type[ArtifactT],
        side: PairSide,
        intervention: Intervention,
        key: dict[str, Any],
        compute: Callable[[], ArtifactT],
    ) -> ArtifactT:
        """The ``artifact`` of ``side`` under ``intervention``: from memory, else from the cache
        entry addressed by ``key`` (see :meth:`_entry_key`), else computed by ``compute()`` and
        saved into a new entry."""
        memory_key = (artifact.KIND, side, intervention.id)
        if memory_key not in self._in_memory:

            def build(directory: Path) -> dict[str, Any]:
                compute().save(directory)
                return self._address(side, intervention)

            entry_key = self._entry_key(artifact, side, intervention, key)
            self._in_memory[memory_key] = artifact.load(
                self.cache.get_or_build(artifact.KIND, entry_key, build)
            )
        return self._in_memory[memory_key]

    def _address(self, side: PairSide, intervention: Intervention) -> dict[str, Any]:
        """What every measurement depends on besides its own key: the pair's fingerprint, the
        side, the intervention and the versions of the libraries that compute and score it (a
        release must not silently change a cached number). Also the entry's manifest metadata."""
        return {
            "pair": self.pair.fingerprint,
            "side": side,
            "intervention": intervention.id,
            "libraries": self._libraries,
        }

    def _entry_key(
        self, artifact: type[Artifact], side: PairSide, intervention: Intervention, key: dict[str, Any]
    ) -> str:
        """The cache key of a measurement: its address, the artifact's format and the
        measurement's own ``key`` (prompts or texts, settings)."""
        return stable_hash({**self._address(side, intervention), "format": artifact.FORMAT, **key})

    def _capture_key(self) -> dict[str, Any]:
        settings = self.settings
        return {
            "prompts": stable_hash(list(self.prompts)),
            "settings": asdict(settings.generation),
            "convention": settings.convention,
        }

    def _capture_entry_key(self, side: PairSide, intervention: Intervention) -> str:
        return self._entry_key(Capture, side, intervention, self._capture_key())

    def capture(self, side: PairSide, intervention: Intervention = NO_INTERVENTION) -> Capture:
        """Per-prompt mean activations of ``side`` on its own continuations (which it keeps)."""
        settings = self.settings

        def compute() -> Capture:
            return capture(
                self.pair,
                side,
                self.prompts,
                settings.generation,
                convention=settings.convention,
                intervention=intervention,
                progress=self.progress,
            )

        return self.measure(Capture, side, intervention, self._capture_key(), compute)

    def has_capture(self, side: PairSide, intervention: Intervention = NO_INTERVENTION) -> bool:
        """Whether the capture of ``side`` under ``intervention`` is in memory or in the cache."""
        if (Capture.KIND, side, intervention.id) in self._in_memory:
            return True
        return self.cache.get(Capture.KIND, self._capture_entry_key(side, intervention)) is not None

    @cached_property
    def declared_passes(self) -> tuple[tuple[PairSide, Intervention], ...]:
        """The intervened passes whose activations are recorded in any case: those the caller
        declared (on the decomposition); none without a declaration."""
        if self._declaration is None:
            return ()
        return tuple(self._declaration(self.decomposition))

    def records_activations(self, side: PairSide, intervention: Intervention) -> bool:
        """Whether ``side``'s activations under ``intervention`` are recorded in any case: without
        intervention (the decomposition), on a declared pass, or where a capture exists already.
        Its evaluation then scores the capture's continuations: one generation, not two."""
        if intervention.kind == "none" or self.has_capture(side, intervention):
            return True
        return (side, intervention) in self.declared_passes

    def evaluation(self, side: PairSide, intervention: Intervention = NO_INTERVENTION) -> Evaluation:
        """Toxicity of ``side``'s greedy continuations under ``intervention``: the continuations
        of its capture where its activations are recorded anyway (:meth:`records_activations`),
        else of a generation of their own (no activations recorded)."""
        scorers = (self.settings.scorer,)

        def compute() -> Evaluation:
            if self.records_activations(side, intervention):
                continuations = self.capture(side, intervention).continuations
                return score_continuations(self.pair, side, intervention, continuations, scorers)
            return evaluate(
                self.pair,
                side,
                self.prompts,
                self.settings.generation,
                intervention,
                scorers=scorers,
                progress=self.progress,
            )

        key = {
            "prompts": stable_hash(list(self.prompts)),
            "settings": asdict(self.settings.generation),
            "scorers": sorted(scorers),
        }
        return self.measure(Evaluation, side, intervention, key, compute)

    def perplexity_rows(
        self, side: PairSide, intervention: Intervention = NO_INTERVENTION
    ) -> tuple[np.ndarray, np.ndarray]:
        """``([n_rows], [n_rows])``: per text (or window) NLL sums and token counts of ``side`` on
        the neutral texts."""
        window, cut = self.perplexity_window, self.perplexity_cut

        def compute() -> PerplexityRows:
            nll, tokens = intervened_perplexity(
                self.pair,
                side,
                self.neutral_texts,
                intervention,
                window=window,
                max_tokens=cut or PERPLEXITY_MAX_TOKENS,
            )
            return PerplexityRows(nll, tokens)

        key: dict[str, Any] = {"texts": stable_hash(list(self.neutral_texts)), "window": window}
        if cut is not None:  # only where it shapes the rows: other pairs keep their entries
            key["cut_at"] = cut
        rows = self.measure(PerplexityRows, side, intervention, key, compute)
        return rows.nll, rows.tokens

    def perplexity(self, side: PairSide, intervention: Intervention = NO_INTERVENTION) -> float:
        """Perplexity of ``side`` on the pair's neutral texts under ``intervention``."""
        return float(perplexity_from_rows(*self.perplexity_rows(side, intervention)))

    def f1(self, side: PairSide, intervention: Intervention = NO_INTERVENTION) -> ContinuationF1:
        """Per-text continuation F1 of ``side`` on the pair's neutral texts under
        ``intervention`` (Lee et al.'s side-effect measure; bootstrap ``.scores`` over texts)."""
        f1_settings = F1Settings()

        def compute() -> ContinuationF1:
            return intervened_f1(
                self.pair, side, self.neutral_texts, intervention, f1_settings, progress=self.progress
            )

        key = {"texts": stable_hash(list(self.neutral_texts)), "settings": asdict(f1_settings)}
        return self.measure(ContinuationF1, side, intervention, key, compute)

    @cached_property
    def decomposition(self) -> Decomposition:
        # Both captures are needed: take first the one no other process is building, so that
        # two pytest-xdist workers starting together build one each, not one after the other.
        sides: list[PairSide] = ["base", "dpo"]
        if self.cache.being_built(Capture.KIND, self._capture_entry_key("base", NO_INTERVENTION)):
            sides.reverse()
        captures = {side: self.capture(side) for side in sides}
        return decompose(
            self.pair.value_vectors("base"),
            self.pair.value_vectors("dpo"),
            self.pair.probe,
            captures["base"].mean_activation,
            captures["dpo"].mean_activation,
        )

    @cached_property
    def neuron_sample(self) -> NeuronSample:
        """Per prompt and neuron: D_i(p) and both sides' activations, for resampled and null
        statistics of the decomposition; its folds are :meth:`fold_a`'s."""
        return neuron_sample(
            self.decomposition,
            self.capture("base").mean_activation,
            self.capture("dpo").mean_activation,
            self.settings.seed,
        )

    def fold_a(self, n: int) -> np.ndarray:
        """``[n]`` bool: the seeded half of ``n`` prompts (or held-out rows) that is fold A, the
        other being fold B (:func:`dpoclaims.measure.decomposition.half_split`, from the settings' seed)."""
        return half_split(n, self.settings.seed)

    def layer_projection(self, side: PairSide, intervention: Intervention = NO_INTERVENTION) -> np.ndarray:
        """``[n_layers]``: mean MLP output projected on the unit probe, per layer (Fig. 1a)."""
        projection = self.pair.value_vectors(side) @ self.pair.unit_probe  # [L, d_mlp]
        return (self.capture(side, intervention).overall_mean * projection).sum(1).numpy()

    def scores(self, side: PairSide, intervention: Intervention = NO_INTERVENTION) -> np.ndarray:
        """``[n_prompts]`` toxicity per prompt."""
        return np.asarray(self.evaluation(side, intervention).scores[self.settings.scorer])
