"""What the searches draw and how one candidate is measured; the driver is
:mod:`dpoclaims.claims.search`.

- C1[search], C2[search]: top-N ablations the paper's claim covers. Rules: ``cosine``, the top-N
  toxic neurons by cos(v_i, w) (C1's ablation), N up to the paper's largest, 1,000, scaled to the
  pair; ``positive``, the top-N positively-activated toxic neurons (cos > 0 and mean base
  activation > 0; C2's), N up to 2,000 scaled. N runs on a geometric grid (:func:`n_grid`). The
  paper's own N are measured first. A candidate's figures: the share of DPO's drop it recovers
  and its held-out perplexity over DPO's, on the half in question.
- C13[search]: activation edits (:class:`dpoclaims.claims.editing.EditSpec`): alpha on a geometric
  grid, beta in steps of 0.05, the direction (the probe; the unembedding direction where the
  pair's tokenizer has its words), the selection rule and the mode; C13's stated edits first.
  Its figures: toxicity minus DPO's and perplexity over DPO's, on the half in question.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from dpoclaims.claims import checks, editing, paper, selection
from dpoclaims.claims.decision import Figure, Outcome, evaluate
from dpoclaims.claims.registry import Measured, claim
from dpoclaims.claims.search import (
    DEFAULT_EXAMPLES,
    Evaluated,
    Fold,
    SearchError,
    SearchSpace,
    run_search,
    unmeasured_figure,
)
from dpoclaims.errors import OptionError
from dpoclaims.hooks.interventions import Intervention
from dpoclaims.measure.decomposition import Decomposition
from dpoclaims.measure.measurements import Measurements

Rule = Literal["cosine", "positive"]
RULES: tuple[Rule, ...] = ("cosine", "positive")
#: The largest N the paper names for each rule (v1 Table 1), scaled to the pair like every count.
LARGEST_PAPER_N: dict[str, int] = {"cosine": 1000, "positive": 2000}
GRID_RATIO = 1.1  # n is drawn from a geometric grid: successive counts differ by about 10%
ALPHAS = (0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)
BETAS = tuple(round(0.05 * k, 2) for k in range(1, 21))  # 0.05 ... 1.0


def n_grid(largest: int, ratio: float = GRID_RATIO) -> tuple[int, ...]:
    """The counts a search draws: 1 to ``largest`` on a geometric grid (every count up to
    about 1 / (ratio - 1), then steps of ``ratio``), always including ``largest``."""
    if largest < 1:
        return ()
    counts = {largest}
    value = 1.0
    while value < largest:
        counts.add(int(round(value)))
        value = max(value * ratio, value + 1)
    return tuple(sorted(c for c in counts if 1 <= c <= largest))


def _rows(m: Measurements, fold: Fold, n: int) -> np.ndarray:
    fold_a = m.fold_a(n)
    return fold_a if fold == "discovery" else ~fold_a


#: The figure every search measures only where it can matter (dpoclaims.claims.search, 'Deferred
#: figures'): a candidate's perplexity costs a pass over the held-out text, as its toxicity costs a
#: generation pass.
DEFERRED = frozenset({paper.PERPLEXITY_VS_DPO})


def _capability(m: Measurements, intervention: Intervention, fold: Fold, skip: frozenset[str]) -> Figure:
    """The intervened base's held-out perplexity over DPO's on ``fold``'s texts, unless skipped."""
    if paper.PERPLEXITY_VS_DPO in skip:
        return unmeasured_figure("not needed: it could not change this half's outcome")
    return checks.capability(m, intervention, _rows(m, fold, len(m.perplexity_rows("dpo")[1])))


def _within_perplexity(evaluated: Evaluated, margin: float) -> float:
    """A search's target: the smaller of the candidate's own ``margin`` toward the claim's opposite
    and its perplexity's room under DPO's plus the allowed margin; ``margin`` alone (an upper
    bound: see :data:`DEFERRED`) while its perplexity is unmeasured."""
    perplexity = evaluated.figures[paper.PERPLEXITY_VS_DPO]
    if perplexity.unmeasured:
        return margin
    return min(margin, paper.PERPLEXITY_MARGIN - perplexity.estimate.value)


def _evaluated(
    m: Measurements, entry: paper.ClaimEntry, figures: dict[str, Any], details: dict[str, Any]
) -> Evaluated:
    outcome: Outcome = evaluate(entry.decision, figures, paper.SIDE_ALPHA)
    return Evaluated(figures, outcome, details)


# ------------------------------------------------------------------------- ablations (C1, C2)


@dataclass(frozen=True, order=True)
class Ablation:
    """A top-N ablation: the ``n`` toxic neurons ``rule`` ranks first."""

    rule: Rule
    n: int

    @property
    def label(self) -> str:
        what = {"cosine": "top toxic", "positive": "top positively-activated toxic"}[self.rule]
        return f"ablate {self.n} {what}"

    def to_json(self) -> dict[str, Any]:
        return {"rule": self.rule, "n": self.n}


def pool_size(d: Decomposition, rule: Rule) -> int:
    """How many neurons ``rule`` can rank: the toxic ones (cos > 0), for ``positive`` those of
    them with a positive mean base activation."""
    toxic = d.cosines.flatten() > 0
    if rule == "positive":
        toxic &= d.mean_base.flatten() > 0
    return int(toxic.sum())


def largest_n(d: Decomposition, rule: Rule) -> int:
    """The largest ablation the paper's claim covers for ``rule`` (its largest N, scaled), at most the pool."""
    return min(paper.scale_n(LARGEST_PAPER_N[rule], d.cosines.numel()), pool_size(d, rule))


def ablation_for(d: Decomposition, candidate: Ablation) -> Intervention:
    """The intervention of ``candidate``: the neurons :mod:`dpoclaims.claims.selection` ranks first,
    so an ablation the claims measured (C1, C2 at the paper's N) is the same cached measurement."""
    if candidate.rule not in RULES:
        raise OptionError(f"unknown neuron selection rule {candidate.rule!r}; use one of {RULES}")
    available = largest_n(d, candidate.rule)
    if not 1 <= candidate.n <= available:
        raise OptionError(
            f"rule {candidate.rule!r} ablates 1 to {available} neurons on this pair, not {candidate.n}"
        )
    positive = candidate.rule == "positive"
    ids = selection.top_toxic(d.cosines, candidate.n, mean_base_activation=d.mean_base if positive else None)
    return Intervention("ablate", tuple(int(i) for i in ids), label=candidate.label)


def ablation_space(m: Measurements, key: str, rules: tuple[Rule, ...]) -> SearchSpace[Ablation]:
    d = m.decomposition
    entry = paper.entry(key)
    largest = {rule: largest_n(d, rule) for rule in rules}
    empty = [rule for rule in rules if largest[rule] < 1]
    if empty:
        raise SearchError(f"{key}: rule(s) {empty} have no neuron to ablate on this pair")
    grids = {rule: n_grid(largest[rule]) for rule in rules}

    def draw(st: Any) -> Any:
        @st.composite
        def ablations(draw_one: Callable[[Any], Any]) -> Ablation:
            rule = draw_one(st.sampled_from(rules))
            grid = grids[rule]
            return Ablation(rule, grid[draw_one(st.integers(0, len(grid) - 1))])

        return ablations()

    def measure(candidate: Ablation, fold: Fold, skip: frozenset[str]) -> Evaluated:
        intervention = ablation_for(d, candidate)
        prompts = _rows(m, fold, len(m.prompts))
        figures = {
            paper.SHARE: checks.recovered(m, intervention, prompts),
            paper.PERPLEXITY_VS_DPO: _capability(m, intervention, fold, skip),
        }
        return _evaluated(m, entry, figures, {"intervention": intervention.id})

    def target(evaluated: Evaluated) -> float:
        """How far the candidate goes toward matching DPO: the smaller of its share's excess over
        80% and its perplexity's room under DPO's plus the margin (positive: it matches); the
        share's excess alone where the perplexity was not measured (an upper bound)."""
        return _within_perplexity(
            evaluated, evaluated.figures[paper.SHARE].estimate.value - paper.MATCH_SHARE
        )

    # The paper's own N first (the claims' cached passes), then the rules' largest.
    stated = [
        Ablation(rule, n)
        for rule in rules
        for n in sorted(
            {paper.scale_n(p, d.cosines.numel()) for p in (100, 200, 1000, 2000)} | {largest[rule]}
        )
        if n <= largest[rule]
    ]
    return SearchSpace(
        entry=entry,
        draw=draw,
        stated=tuple(dict.fromkeys(stated)),
        measure=measure,
        target=target,
        size=lambda candidate: candidate.n,
        description={"rules": list(rules), "largest_n": largest, "grid_ratio": GRID_RATIO},
        deferred=DEFERRED,
    )


@claim("C1[search]")
def c1_no_ablation_matches_dpo(m: Measurements, max_examples: int = DEFAULT_EXAMPLES) -> Measured:
    """C1[search]: top-N ablations by cosine and positively-activated."""
    space = ablation_space(m, "C1[search]", RULES)
    return run_search(space, max_examples=max_examples, seed=m.settings.seed).measured()


@claim("C2[search]")
def c2_no_positive_ablation_matches_dpo(m: Measurements, max_examples: int = DEFAULT_EXAMPLES) -> Measured:
    """C2[search]: top-N positively-activated ablations."""
    space = ablation_space(m, "C2[search]", ("positive",))
    return run_search(space, max_examples=max_examples, seed=m.settings.seed).measured()


# ------------------------------------------------------------------------- edits (C13)


def stated_edits() -> list[editing.EditSpec]:
    """C13's edits: the repository's constants, probe direction, repository selection, overwrite."""
    return [editing.EditSpec(alpha, beta) for alpha, beta in paper.EDIT_CONSTANTS]


def edit_directions(m: Measurements) -> tuple[tuple[editing.Direction, ...], str]:
    """Both directions where the pair's tokenizer has the unembedding words, else the probe
    alone, with the reason."""
    try:
        checks.edit_cosines(m, "unembedding")
    except OptionError as exc:
        return ("probe",), str(exc)
    return editing.DIRECTIONS, ""


def edit_space(m: Measurements) -> SearchSpace[editing.EditSpec]:
    entry = paper.entry("C13[search]")
    directions, unavailable = edit_directions(m)
    dpo_toxicity = m.evaluation("dpo").mean_toxicity(m.settings.scorer)
    sizes: dict[editing.EditSpec, int] = {}

    def draw(st: Any) -> Any:
        @st.composite
        def edits(draw_one: Callable[[Any], Any]) -> editing.EditSpec:
            # beta first: shrinking it moves toward the fewest edited neurons
            beta = BETAS[draw_one(st.integers(0, len(BETAS) - 1))]
            alpha = ALPHAS[draw_one(st.integers(0, len(ALPHAS) - 1))]
            direction = draw_one(st.sampled_from(directions))
            rule = draw_one(st.sampled_from(editing.SELECTIONS))
            mode = draw_one(st.sampled_from(editing.EDIT_MODES))
            return editing.EditSpec(alpha, beta, direction, rule, mode)

        return edits()

    def measure(spec: editing.EditSpec, fold: Fold, skip: frozenset[str]) -> Evaluated:
        intervention = checks.activation_edit(m, spec)
        sizes[spec] = len(intervention.neurons)
        prompts = _rows(m, fold, len(m.prompts))
        figures = {
            "toxicity_vs_dpo": Figure(checks.toxicity_vs_dpo(m, intervention, prompts)),
            paper.PERPLEXITY_VS_DPO: _capability(m, intervention, fold, skip),
        }
        return _evaluated(m, entry, figures, {"intervention": intervention.id})

    def target(evaluated: Evaluated) -> float:
        """Minus the worse of the two margins (toxicity relative to DPO's; perplexity over DPO's
        beyond the allowed margin): positive when the edit beats DPO on both; minus the toxicity
        margin alone where the perplexity was not measured (an upper bound)."""
        toxicity = evaluated.figures["toxicity_vs_dpo"].estimate.value / max(dpo_toxicity, 1e-9)
        return _within_perplexity(evaluated, -toxicity)

    def size(spec: editing.EditSpec) -> int:
        if spec not in sizes:
            sizes[spec] = len(checks.activation_edit(m, spec).neurons)
        return sizes[spec]

    return SearchSpace(
        entry=entry,
        draw=draw,
        stated=tuple(stated_edits()),
        measure=measure,
        target=target,
        size=size,
        description={
            "directions": list(directions),
            "unavailable": unavailable,
            "selections": list(editing.SELECTIONS),
            "modes": list(editing.EDIT_MODES),
            "alphas": list(ALPHAS),
            "betas": list(BETAS),
        },
        deferred=DEFERRED,
    )


REFERENCE_ABLATIONS: tuple[tuple[int, bool], ...] = (
    (100, False),
    (200, False),
    (1000, False),
    (100, True),
    (200, True),
    (1000, True),
    (2000, True),
)


def reference_points(m: Measurements) -> list[dict[str, Any]]:
    """Base, DPO and the C1/C2 ablations at the paper's N: toxicity and perplexity with intervals,
    for the figure of the edits against DPO (the passes are C1's and C2's)."""
    rows = [
        {**checks.toxicity_and_perplexity(m, "base"), "kind": "base"},
        {**checks.toxicity_and_perplexity(m, "dpo"), "kind": "dpo"},
    ]
    seen = set()
    for paper_n, positive in REFERENCE_ABLATIONS:
        intervention = selection.ablation(m.decomposition, paper_n, positive=positive)
        if intervention.id not in seen:  # on a small pair two paper counts can scale to one set
            seen.add(intervention.id)
            kind = "C2 ablation" if positive else "C1 ablation"
            rows.append({**checks.toxicity_and_perplexity(m, "base", intervention), "kind": kind})
    return rows


@claim("C13[search]")
def c13_some_edit_beats_dpo(m: Measurements, max_examples: int = DEFAULT_EXAMPLES) -> Measured:
    """C13[search]: the search over edits (alpha, beta, direction, selection rule, mode); the
    details also hold each edit's toxicity and perplexity on every prompt and text, and the
    references, for the figure of the edits against DPO."""
    measured = run_search(edit_space(m), max_examples=max_examples, seed=m.settings.seed).measured()
    for row in measured.details["measured"]:
        if all(
            "unmeasured" in row[fold].get(paper.PERPLEXITY_VS_DPO, {})
            for fold in ("discovery", "confirmation")
        ):
            continue  # its perplexity pass was never needed: not drawn in the figure, rather than measured for it
        spec = editing.EditSpec(row["alpha"], row["beta"], row["direction"], row["selection"], row["mode"])
        row |= checks.toxicity_and_perplexity(m, "base", checks.activation_edit(m, spec))
    measured.details["references"] = reference_points(m)
    return measured
