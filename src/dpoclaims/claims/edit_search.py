"""C13[search]: Hypothesis looks for an activation edit that reaches DPO's toxicity without
exceeding DPO's perplexity (the v3 paper's "outperforms DPO ... while preserving perplexity").

An example is an edit (:class:`dpoclaims.claims.editing.EditSpec`): alpha on a geometric grid
(:data:`ALPHAS`), beta in steps of 0.05 (:data:`BETAS`), the direction (probe, or the
unembedding direction where the pair's tokenizer has the words) and the selection rule
(repository, highest). Its measurement is C13's (:func:`dpoclaims.claims.checks.compare_with_dpo`):
one cached generation pass and one cached perplexity pass of the edited base, compared with
DPO by paired intervals. ``target()`` steers toward the edit whose worse margin (toxicity
relative to DPO's, perplexity relative to DPO's) is smallest. An edit whose two parts both
replicate is what the search looks for: Hypothesis then shrinks it, toward the smallest beta
(the fewest neurons), the smallest alpha, the probe and the repository's rule. The two stated
edits (C13's constants) and the strongest edits of earlier runs (``strongest.json``) are
measured before Hypothesis draws, so a warm rerun never reports a weaker best edit.

The claim and its test
----------------------
H0: every edit of the space has toxicity >= DPO's or perplexity >= DPO's. H1 (the paper): some
edit has both below. The search tests H0 over the k edits it measured with a Bonferroni
union-intersection test: p = min(1, k x the smallest per-edit p-value), a per-edit p-value
being C13's (the larger of its two one-sided p-values). Verdict: **replicates** when some
measured edit replicates C13's criterion *and* the adjusted p is below 0.025 (the search picked
the edit from many: its own interval alone would overstate the evidence); **contradicts** when
every measured edit contradicts C13's criterion; else **inconclusive**. It covers what was
measured, not the whole space. Reproducibility and the example database work as in
:mod:`dpoclaims.claims.search` (failing examples only; the Pareto front of ``target()`` left out).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from dpoclaims.cache import stable_hash
from dpoclaims.claims import checks as claims
from dpoclaims.claims import editing, paper, selection
from dpoclaims.claims.checks import EditComparison, claim_result
from dpoclaims.claims.editing import EditSpec
from dpoclaims.claims.registry import claim
from dpoclaims.claims.results import ClaimResult
from dpoclaims.claims.search import DEFAULT_EXAMPLES, SearchError, failures_database
from dpoclaims.errors import OptionError
from dpoclaims.files import atomic_write_text
from dpoclaims.measure.measurements import Measurements
from dpoclaims.stats import ONE_SIDED_ALPHA, Estimate, Verdict

ALPHAS = (0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)
BETAS = tuple(round(0.05 * k, 2) for k in range(1, 21))  # 0.05 ... 1.0
KEEP_STRONGEST = 5
SEARCH_FORMAT = 1  # part of the database directory's key: bump when the drawn space changes
# The C1/C2 ablations the front figure shows beside the edits (paper N, scaled to the pair).
REFERENCE_ABLATIONS: tuple[tuple[int, bool], ...] = (
    (100, False),
    (200, False),
    (1000, False),
    (100, True),
    (200, True),
    (1000, True),
    (2000, True),
)


def stated_edits() -> list[EditSpec]:
    """C13's edits: the repository's constants, probe direction, repository selection."""
    return [EditSpec(alpha, beta) for alpha, beta in paper.EDIT_CONSTANTS]


@dataclass(frozen=True)
class EditPoint:
    """A measured edit: C13's comparison with DPO, and its own toxicity and perplexity."""

    spec: EditSpec
    intervention_id: str
    n_neurons: int
    comparison: EditComparison
    row: dict[str, Any]  # claims.toxicity_and_perplexity of the edited base
    dpo_toxicity: float

    @property
    def verdict(self) -> Verdict:
        return self.comparison.verdict

    @property
    def p_value(self) -> float:
        return self.comparison.p_value

    @property
    def measurable(self) -> bool:
        return self.comparison.toxicity.measurable and self.comparison.perplexity.measurable

    @property
    def score(self) -> float:
        """What ``target()`` maximises: minus the worse of the two relative margins (toxicity over
        DPO's minus 1, perplexity over DPO's minus 1); positive when both are below DPO's."""
        toxicity = self.comparison.toxicity.value / max(self.dpo_toxicity, 1e-9)
        return -max(toxicity, self.comparison.perplexity.value)

    def to_json(self) -> dict[str, Any]:
        return {
            **self.spec.to_json(),
            "label": self.spec.label,
            "intervention": self.intervention_id,
            "n_neurons": self.n_neurons,
            **self.comparison.to_json(),
            "toxicity": self.row["toxicity"],
            "toxicity_ci": self.row["toxicity_ci"],
            "perplexity": self.row["perplexity"],
            "perplexity_ci": self.row["perplexity_ci"],
        }


def measure_edit(m: Measurements, spec: EditSpec) -> EditPoint:
    """C13's measurement of ``spec`` on the pair's base (cached passes)."""
    intervention = claims.activation_edit(m, spec)
    return EditPoint(
        spec,
        intervention.id,
        len(intervention.neurons),
        claims.compare_with_dpo(m, intervention),
        claims.toxicity_and_perplexity(m, "base", intervention),
        m.evaluation("dpo").mean_toxicity(m.settings.scorer),
    )


@dataclass(frozen=True)
class EditSpace:
    """What the search draws: the directions this pair has (the unembedding one needs its words
    to be single tokens) and the selection rules; alpha and beta from the module's grids."""

    directions: tuple[editing.Direction, ...]
    selections: tuple[editing.Selection, ...] = editing.SELECTIONS
    unavailable: str = ""  # why a direction is missing, if one is

    def __post_init__(self) -> None:
        if not self.directions or not self.selections:
            raise OptionError("an edit search needs at least one direction and one selection rule")

    def key(self) -> dict[str, Any]:
        return {
            "directions": list(self.directions),
            "selections": list(self.selections),
            "alphas": list(ALPHAS),
            "betas": list(BETAS),
        }

    def holds(self, spec: EditSpec) -> bool:
        return (
            spec.direction in self.directions
            and spec.selection in self.selections
            and spec.alpha in ALPHAS
            and spec.beta in BETAS
            and spec.mode == "overwrite"
        )


def c13_space(m: Measurements) -> EditSpace:
    """Both directions where the pair's tokenizer has the unembedding words, else the probe
    alone, with the reason recorded."""
    try:
        claims.edit_cosines(m, "unembedding")
    except OptionError as exc:
        return EditSpace(("probe",), unavailable=str(exc))
    return EditSpace(editing.DIRECTIONS)


@dataclass
class EditSearchResult:
    space: EditSpace
    points: dict[EditSpec, EditPoint]
    found: EditPoint | None  # an edit whose C13 parts both replicate (Hypothesis's shrunk one if it ran)
    shrunk: bool
    max_examples: int
    seed: int
    database: Path | None
    references: list[dict[str, Any]]  # base, DPO and the C1/C2 ablations: toxicity and perplexity

    @property
    def measurable(self) -> list[EditPoint]:
        return [p for p in self.points.values() if p.measurable]

    @property
    def best(self) -> EditPoint | None:
        """The edit with the largest score (ties: fewer neurons, then the smaller spec)."""
        points = self.measurable
        if not points:
            return None
        return max(points, key=lambda p: (p.score, -p.n_neurons, _negated(p.spec)))

    @property
    def p_value(self) -> float:
        """Bonferroni over the measured edits: min(1, k x the smallest p-value)."""
        points = self.measurable
        if not points:
            return float("nan")
        return min(1.0, len(points) * min(p.p_value for p in points))

    @property
    def verdict(self) -> Verdict:
        points = self.measurable
        if not points:
            return "not measurable"
        if any(p.verdict == "replicates" for p in points) and self.p_value < ONE_SIDED_ALPHA:
            return "replicates"
        if all(p.verdict == "contradicts" for p in points):
            return "contradicts"
        return "inconclusive"

    @property
    def decisive(self) -> EditPoint | None:
        """The edit the verdict speaks of: the one found, else the best measured."""
        return self.found or self.best

    def describe(self) -> str:
        claim = "C13[search]: some edit reaches DPO's toxicity without exceeding DPO's perplexity"
        point = self.decisive
        if point is None:
            return f"{claim}: not measurable ({len(self.points)} edits measured, none with intervals)"
        what = "edit found" if point is self.found else "best edit"
        return (
            f"{claim}: {self.verdict} over {len(self.points)} measured edits (Bonferroni p = {self.p_value:.3g}); "
            f"{what}: {point.spec.label}, {point.n_neurons} neurons: {point.comparison.describe()}"
        )

    def claim_result(self, key: str = "C13[search]") -> ClaimResult:
        point = self.decisive
        nan = float("nan")
        result = claim_result(
            key,
            estimate=point.comparison.toxicity if point else Estimate(nan, nan, nan),
            details=self.summary(),
            verdict_override=self.verdict,
            p_override=self.p_value,
        )
        return replace(result, finding=self.describe())

    def summary(self) -> dict[str, Any]:
        best = self.best
        return {
            "edit_search": "C13",
            "directions": list(self.space.directions),
            "selections": list(self.space.selections),
            "unavailable": self.space.unavailable,
            "max_examples": self.max_examples,
            "n_measured": len(self.points),
            "seed": self.seed,
            "database": str(self.database) if self.database else None,
            "verdict": self.verdict,
            "p_value": self.p_value,
            "best": best.to_json() if best else None,
            "found": {**self.found.to_json(), "shrunk": self.shrunk} if self.found else None,
            "stated": [self.points[s].to_json() for s in stated_edits() if s in self.points],
            "measured": [p.to_json() for p in sorted(self.points.values(), key=lambda p: p.spec)],
            "references": self.references,
            "table": table_rows(self),
        }


def _negated(spec: EditSpec) -> tuple[float, float]:
    return (-spec.beta, -spec.alpha)


class _Found(Exception):
    def __init__(self, point: EditPoint) -> None:
        super().__init__(f"{point.spec.label}: {point.comparison.describe()}")
        self.point = point


def database_dir(m: Measurements, space: EditSpace) -> Path:
    """``<cache>/hypothesis/C13-<key>``: one example database per pair, settings and space."""
    key = {
        "format": SEARCH_FORMAT,
        "pair": m.pair.fingerprint,
        "prompts": stable_hash(list(m.prompts)),
        "texts": stable_hash(list(m.neutral_texts)),
        "scorer": m.settings.scorer,
        "generation": asdict(m.settings.generation),
        "convention": m.settings.convention,  # m_i comes from the base capture
        "space": space.key(),
    }
    return m.cache.root / "hypothesis" / f"C13-{stable_hash(key)}"


def run_edit_search(
    space: EditSpace,
    measure: Callable[[EditSpec], EditPoint],
    *,
    max_examples: int = DEFAULT_EXAMPLES,
    seed: int = 0,
    database: Path | None = None,
    read_only: bool = False,
    references: list[dict[str, Any]] | None = None,
) -> EditSearchResult:
    """Search ``space`` with Hypothesis: the stated edits and earlier runs' strongest first, then
    ``max_examples`` drawn edits (plus shrinking when one replicates C13's criterion)."""
    if max_examples < 1:
        raise OptionError(f"a search needs at least 1 example, not {max_examples}")
    try:
        from hypothesis import HealthCheck, Verbosity, given, settings, target
        from hypothesis import seed as hypothesis_seed
        from hypothesis import strategies as st
    except ImportError as exc:
        raise SearchError(
            "the edit search needs Hypothesis: pip install 'dpoclaims[test]' (or hypothesis)"
        ) from exc

    points: dict[EditSpec, EditPoint] = {}

    def measured(spec: EditSpec) -> EditPoint:
        if spec not in points:
            points[spec] = measure(spec)
        return points[spec]

    for spec in [s for s in stated_edits() if space.holds(s)] + _read_strongest(database, space):
        measured(spec)

    @st.composite
    def specs(draw: Callable[[Any], Any]) -> EditSpec:
        # beta first: shrinking it moves toward the fewest edited neurons
        beta = BETAS[draw(st.integers(0, len(BETAS) - 1))]
        alpha = ALPHAS[draw(st.integers(0, len(ALPHAS) - 1))]
        direction = draw(st.sampled_from(space.directions))
        rule = draw(st.sampled_from(space.selections))
        return EditSpec(alpha, beta, direction, rule)

    @given(spec=specs())
    @settings(
        database=failures_database(database, read_only),
        max_examples=max_examples,
        deadline=None,
        derandomize=False,
        report_multiple_bugs=False,
        print_blob=False,
        verbosity=Verbosity.quiet,
        suppress_health_check=[HealthCheck.too_slow],  # an example is a generation pass
    )
    @hypothesis_seed(seed)
    def no_edit_beats_dpo(spec: EditSpec) -> None:
        point = measured(spec)
        if point.measurable:
            target(point.score, label="worse margin to DPO")
        if point.verdict == "replicates":
            raise _Found(point)

    found, shrunk = None, False
    try:
        no_edit_beats_dpo()
    except _Found as exc:
        found, shrunk = exc.point, True
    if found is None:  # e.g. a stated edit or an earlier run's: the fewest neurons among them
        found = min(
            (p for p in points.values() if p.verdict == "replicates"),
            key=lambda p: (p.n_neurons, p.spec),
            default=None,
        )
    result = EditSearchResult(space, points, found, shrunk, max_examples, seed, database, references or [])
    if database is not None and not read_only:
        _write_strongest(database, result)
    return result


def _read_strongest(database: Path | None, space: EditSpace) -> list[EditSpec]:
    path = None if database is None else database / "strongest.json"
    if path is None or not path.is_file():
        return []
    try:
        specs = [EditSpec(**row) for row in json.loads(path.read_text())]
    except (ValueError, TypeError, OptionError):  # a damaged file only loses hints
        return []
    return [spec for spec in specs if space.holds(spec)]


def _write_strongest(database: Path, result: EditSearchResult) -> None:
    ranked = sorted(result.measurable, key=lambda p: -p.score)[:KEEP_STRONGEST]
    database.mkdir(parents=True, exist_ok=True)
    atomic_write_text(database / "strongest.json", json.dumps([p.spec.to_json() for p in ranked]))


def reference_points(m: Measurements) -> list[dict[str, Any]]:
    """Base, DPO and the C1/C2 ablations at the paper's N: toxicity and perplexity with intervals
    (the generation passes are C1's and C2's; a perplexity pass each)."""
    rows = [
        {**claims.toxicity_and_perplexity(m, "base"), "kind": "base"},
        {**claims.toxicity_and_perplexity(m, "dpo"), "kind": "dpo"},
    ]
    seen = set()
    for paper_n, positive in REFERENCE_ABLATIONS:
        intervention = selection.ablation(m.decomposition, paper_n, positive=positive)
        if intervention.id in seen:  # on a small pair two paper counts can scale to one set
            continue
        seen.add(intervention.id)
        kind = "C2 ablation" if positive else "C1 ablation"
        rows.append({**claims.toxicity_and_perplexity(m, "base", intervention), "kind": kind})
    return rows


def search_edits(m: Measurements, *, max_examples: int = DEFAULT_EXAMPLES) -> EditSearchResult:
    """C13[search] on a pair's measurements, with its example database in the cache."""
    space = c13_space(m)
    return run_edit_search(
        space,
        lambda spec: measure_edit(m, spec),
        max_examples=max_examples,
        seed=m.settings.seed,
        database=database_dir(m, space),
        read_only=m.cache.read_only,
        references=reference_points(m),
    )


def table_rows(result: EditSearchResult) -> list[dict[str, Any]]:
    """The closing table: base, DPO, the stated edits and the best edit found (toxicity and
    perplexity with intervals)."""
    rows = [r for r in result.references if r["kind"] in ("base", "dpo")]
    stated: Sequence[EditSpec] = [s for s in stated_edits() if s in result.points]
    rows += [{**result.points[s].to_json(), "kind": "stated edit"} for s in stated]
    if result.best is not None:
        rows.append({**result.best.to_json(), "kind": "best edit"})
    return rows


@claim("C13[search]")
def c13_some_edit_beats_dpo(m: Measurements, max_examples: int = DEFAULT_EXAMPLES) -> ClaimResult:
    """C13[search]: the search over edits (alpha, beta, direction, selection rule)."""
    return search_edits(m, max_examples=max_examples).claim_result("C13[search]")
