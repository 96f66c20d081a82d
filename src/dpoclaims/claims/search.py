"""A counterexample search for the paper's universal claim "ablation is not enough".

C1 and C2 test ablation at a few neuron counts. The title's claim is stronger: *no* ablation of
toxic neurons recovers DPO's toxicity drop. This module searches for one that does. A search
draws an ablation (how many neurons, chosen by which rule), measures the share of DPO's drop it
recovers with its 95% interval (one cached generation pass, :func:`dpoclaims.claims.checks.recovered`),
and steers toward the largest share with Hypothesis's ``target()``. Hypothesis is a test
dependency: it is imported only when a search runs.

Selection rules (every candidate neuron is toxic: cos(v_i, w) > 0 on the base weights):

- ``cosine``: the top-n by cosine (the paper's C1 ablation);
- ``positive``: the top-n positively-activated toxic neurons (mean base activation > 0; C2);
- ``random``: the first n of a random order of all toxic neurons, drawn from a
  ``torch.Generator`` seeded with the search's seed (so random subsets are nested in n).

n runs from 1 to the rule's pool on a geometric grid (:func:`n_grid`, steps of about 10%).
Each rule's largest ablation, its whole pool, is measured before Hypothesis draws anything
(:func:`largest_ablations`), so every run, cold or warm, covers it.

The claim and its test
----------------------
H0: some ablation in the search space recovers >= ``paper.MATCH_SHARE`` of DPO's drop.
H1 (the paper): every one recovers less. An ablation is a counterexample when its 95% interval
does not lie wholly below the threshold (its own verdict is "contradicts" or "inconclusive").
The search's verdict is an intersection-union test over the ablations it measured: it
replicates only if every measured ablation replicates, and its p-value is the largest of their
one-sided p-values (valid without a multiplicity adjustment). It covers what was measured, not
the whole space: a search of a few examples is a search, not a proof.

Reproducibility and cost: Hypothesis draws from a fixed seed (the measurement seed, through
``hypothesis.seed``), so a run's examples depend only on that seed, ``max_examples``, the
search space and the example database; every example is a cached measurement, so a rerun costs
no generation. The example database (``<cache>/hypothesis/<search>-<key>``, one per pair,
measurement settings and space) keeps failing examples only: a rerun replays the stored, shrunk
counterexample first and stops there. Hypothesis's other store, the Pareto front of
``target()``, is left out: replaying it shifts the examples a rerun draws, so each rerun would
draw (and generate) new ones. Instead the strongest ablations measured so far are kept in
``strongest.json`` beside the database and measured first on a rerun (from the cache), so the
best ablation a report names never regresses between runs. The search sets its own
seed; under ``pytest --hypothesis-seed`` Hypothesis also leaves the example database unused.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import torch

from dpoclaims.cache import stable_hash
from dpoclaims.claims import paper, selection
from dpoclaims.claims.checks import claim_result, recovered
from dpoclaims.claims.registry import claim
from dpoclaims.claims.results import ClaimResult
from dpoclaims.errors import DpoclaimsError, OptionError
from dpoclaims.files import atomic_write_text
from dpoclaims.hooks.interventions import Intervention
from dpoclaims.measure.decomposition import Decomposition
from dpoclaims.measure.measurements import Measurements
from dpoclaims.stats import Estimate, Verdict, p_value, verdict

Rule = Literal["cosine", "positive", "random"]
RULES: tuple[Rule, ...] = ("cosine", "positive", "random")
GRID_RATIO = 1.1  # n is drawn from a geometric grid: successive counts differ by about 10%
DEFAULT_EXAMPLES = 16  # Hypothesis steers by target() only after 10 examples: 16 leaves it 6
KEEP_STRONGEST = 5  # candidates kept in strongest.json
SEARCH_FORMAT = 1  # part of the database directory's key: bump when the drawn space changes

#: The paper's side of the universal claim: every ablation recovers less than this share.
CRITERION = paper.MATCH_RULE  # the search's claims' rule (C1[search], C2[search] in the paper table)


class SearchError(DpoclaimsError):
    """A search that cannot run (no toxic neuron to ablate, Hypothesis missing, bad options)."""


# ------------------------------------------------------------------------- the search space


@dataclass(frozen=True, order=True)
class Candidate:
    """One ablation the search can draw."""

    rule: Rule
    n: int
    subset_seed: int = 0  # the random rule only

    def to_json(self) -> dict[str, Any]:
        return {"rule": self.rule, "n": self.n, "subset_seed": self.subset_seed}


def _toxic(d: Decomposition) -> torch.Tensor:
    """``[L * d_mlp]`` bool: cos(v_i, w) > 0."""
    return d.cosines.flatten() > 0


def _positive_toxic(d: Decomposition) -> torch.Tensor:
    return _toxic(d) & (d.mean_base.flatten() > 0)


def pool_size(d: Decomposition, rule: Rule) -> int:
    """How many neurons ``rule`` can choose from: the toxic neurons (cos > 0), or for
    ``positive`` the positively-activated ones among them."""
    _check_rule(rule)
    mask = _positive_toxic(d) if rule == "positive" else _toxic(d)
    return int(mask.sum())


def max_n(d: Decomposition) -> int:
    """The largest ablation the search draws: every toxic neuron (cos > 0)."""
    return pool_size(d, "cosine")


def n_grid(largest: int, ratio: float = GRID_RATIO) -> tuple[int, ...]:
    """The counts a search draws: 1 to ``largest`` on a geometric grid (every count up to
    about 1 / (ratio - 1), then steps of ``ratio``), always including ``largest``.

    A count spanning three orders of magnitude is searched by ratio: Hypothesis's shrinking
    and ``target()`` then move n by factors, and neighbouring counts on the grid remove nearly
    the same neurons."""
    if largest < 1:
        return ()
    counts = {largest}
    value = 1.0
    while value < largest:
        counts.add(int(round(value)))
        value = max(value * ratio, value + 1)
    return tuple(sorted(c for c in counts if 1 <= c <= largest))


def _check_rule(rule: str) -> None:
    if rule not in RULES:
        raise OptionError(f"unknown neuron selection rule {rule!r}; use one of {RULES}")


def select_neurons(d: Decomposition, n: int, rule: Rule, seed: int = 0) -> tuple[int, ...]:
    """Flat ids of the ``n`` neurons ``rule`` ablates (see the module docstring). The
    ``cosine`` and ``positive`` rules give the ids in the order :mod:`dpoclaims.claims.selection`
    does, so an ablation the claims measured is the same cached measurement here."""
    available = pool_size(d, rule)
    if not 1 <= n <= available:
        raise OptionError(f"rule {rule!r} can ablate 1 to {available} neurons on this pair, not {n}")
    if rule == "cosine":
        ids = selection.top_toxic(d.cosines, n)
    elif rule == "positive":
        ids = selection.top_toxic(d.cosines, n, mean_base_activation=d.mean_base)
    else:
        toxic = torch.nonzero(_toxic(d)).flatten()  # [pool]
        generator = torch.Generator().manual_seed(int(seed))
        ids = torch.sort(toxic[torch.randperm(len(toxic), generator=generator)[:n]]).values
    return tuple(int(i) for i in ids)


def ablation_for(d: Decomposition, n: int, rule: Rule, seed: int = 0) -> Intervention:
    """The ablation of ``n`` neurons chosen by ``rule`` (``seed``: the random rule's subset)."""
    neurons = select_neurons(d, n, rule, seed)
    what = {"cosine": "top toxic", "positive": "top positively-activated toxic", "random": "random toxic"}[
        rule
    ]
    label = f"ablate {n} {what}" + (f" (subset seed {seed})" if rule == "random" else "")
    return Intervention("ablate", neurons, label=label)


# ------------------------------------------------------------------------- measured ablations


@dataclass(frozen=True)
class AblationPoint:
    """A measured ablation: the share of DPO's drop it recovers, with its 95% interval."""

    candidate: Candidate
    intervention_id: str
    label: str
    share: Estimate

    @property
    def verdict(self) -> Verdict:
        """Of the paper's claim for this ablation (it recovers < ``paper.MATCH_SHARE``)."""
        return verdict(self.share, CRITERION)

    @property
    def p_value(self) -> float:
        return p_value(self.share, CRITERION)

    @property
    def is_counterexample(self) -> bool:
        """Its interval does not lie wholly below the threshold."""
        return self.verdict in ("contradicts", "inconclusive")

    def to_json(self) -> dict[str, Any]:
        return {
            **self.candidate.to_json(),
            "share": self.share.value,
            "ci": [self.share.low, self.share.high],
            "verdict": self.verdict,
            "p_value": self.p_value,
            "intervention": self.intervention_id,
            "label": self.label,
        }


def measure_ablation(m: Measurements, candidate: Candidate) -> AblationPoint:
    """The recovered share of ``candidate``'s ablation on the base (one cached generation pass)."""
    intervention = ablation_for(m.decomposition, candidate.n, candidate.rule, candidate.subset_seed)
    return AblationPoint(candidate, intervention.id, intervention.label, recovered(m, intervention))


# ------------------------------------------------------------------------- the search


@dataclass(frozen=True)
class SearchSpace:
    """What a search draws from: the rules and, per rule, the largest n."""

    name: str  # e.g. "C1": names the database directory
    rules: tuple[Rule, ...]
    max_n: dict[str, int] = field(hash=False)

    def __post_init__(self) -> None:
        if not self.rules:
            raise OptionError("a search needs at least one selection rule")
        for rule in self.rules:
            _check_rule(rule)
            if self.max_n.get(rule, 0) < 1:
                raise SearchError(
                    f"search {self.name}: rule {rule!r} has no neuron to ablate on this pair "
                    f"(largest n {self.max_n.get(rule, 0)})"
                )

    def key(self) -> dict[str, Any]:
        return {"name": self.name, "rules": list(self.rules), "max_n": {r: self.max_n[r] for r in self.rules}}


def largest_ablations(space: SearchSpace, seed: int = 0) -> list[Candidate]:
    """Each rule's largest ablation (every neuron in its pool), measured before Hypothesis draws.

    The obvious candidate against "ablation is not enough" is to ablate everything the rule can
    choose; a search that leaves it to chance may miss it cold and find it on a warm rerun,
    so the verdict would depend on the example database. Measured first, it is in every run.
    ``random`` at its full pool is the same set as ``cosine`` at its full pool and is skipped
    when both rules are searched."""
    rules = [r for r in space.rules if not (r == "random" and "cosine" in space.rules)]
    return [Candidate(rule, space.max_n[rule], seed if rule == "random" else 0) for rule in rules]


def c1_space(d: Decomposition) -> SearchSpace:
    """C1[search]: every rule, n from 1 to every toxic neuron the rule can choose from (the
    positive rule's pool is smaller)."""
    return SearchSpace("C1", RULES, {rule: pool_size(d, rule) for rule in RULES})


def c2_space(d: Decomposition) -> SearchSpace:
    """C2[search]: positively-activated toxic neurons only, n up to all of them."""
    return SearchSpace("C2", ("positive",), {"positive": pool_size(d, "positive")})


@dataclass
class SearchResult:
    """What a search measured, its counterexample (shrunk by Hypothesis) if any, and its verdict."""

    space: SearchSpace
    points: dict[Candidate, AblationPoint]  # every ablation measured in this run
    counterexample: AblationPoint | None
    shrunk: bool  # the counterexample is Hypothesis's shrunk one (else one measured before its draws)
    max_examples: int
    seed: int
    database: Path | None

    @property
    def measurable(self) -> list[AblationPoint]:
        return [p for p in self.points.values() if p.share.measurable]

    @property
    def best(self) -> AblationPoint | None:
        """The ablation with the largest recovered share (ties: the smaller n, then rule order)."""
        points = self.measurable
        if not points:
            return None
        return max(points, key=lambda p: (p.share.value, -p.candidate.n, -RULES.index(p.candidate.rule)))

    @property
    def verdict(self) -> Verdict:
        """replicates only if every measured ablation does; contradicts if one contradicts."""
        verdicts = {p.verdict for p in self.measurable}
        if not verdicts:
            return "not measurable"
        for state in ("contradicts", "inconclusive"):
            if state in verdicts:
                return state  # type: ignore[return-value]
        return "replicates"

    @property
    def p_value(self) -> float:
        """Intersection-union p-value: the largest p-value of the measured ablations."""
        values = [p.p_value for p in self.measurable]
        return max(values) if values else float("nan")

    def describe(self) -> str:
        """One line for a test failure or a terminal: the verdict and the ablation behind it."""
        claim = (
            f"{self.space.name}[search]: every ablation recovers < {CRITERION.threshold:.0%} of DPO's drop"
        )
        point = self.counterexample if self.verdict != "replicates" else self.best
        if point is None:
            return f"{claim}: not measurable ({len(self.points)} ablations measured, none with an interval)"
        what = "counterexample" if point is self.counterexample else "best ablation"
        return (
            f"{claim}: {self.verdict} over {len(self.points)} measured ablations; {what}: {point.label} "
            f"(rule {point.candidate.rule}, n = {point.candidate.n}) recovers {point.share.value:.3f} "
            f"[{point.share.low:.3f}, {point.share.high:.3f}]"
        )

    def claim_result(self, key: str) -> ClaimResult:
        """The search as its claim (``C1[search]``, ``C2[search]``; texts from the paper table):
        the figure is the best ablation found, the verdict and p-value are the search's, and
        :meth:`summary` is its details."""
        best = self.best
        nan = float("nan")
        result = claim_result(
            key,
            estimate=best.share if best else Estimate(nan, nan, nan),
            details=self.summary(),
            verdict_override=self.verdict,
            p_override=self.p_value,
        )
        return replace(result, finding=self.describe())

    def summary(self) -> dict[str, Any]:
        """The search as the reports show it: the details of its claim record (:meth:`claim_result`)."""
        best = self.best
        return {
            "search": self.space.name,
            "rules": list(self.space.rules),
            "max_n": {rule: self.space.max_n[rule] for rule in self.space.rules},
            "threshold": CRITERION.threshold,
            "max_examples": self.max_examples,
            "n_measured": len(self.points),
            "seed": self.seed,
            "database": str(self.database) if self.database else None,
            "verdict": self.verdict,
            "p_value": self.p_value,
            "best": best.to_json() if best else None,
            "counterexample": (
                {**self.counterexample.to_json(), "shrunk": self.shrunk} if self.counterexample else None
            ),
            "measured": [p.to_json() for p in sorted(self.points.values(), key=lambda p: p.candidate)],
        }


class _Counterexample(Exception):
    def __init__(self, point: AblationPoint) -> None:
        super().__init__(f"{point.label}: share {point.share.value:.4g} ({point.verdict})")
        self.point = point


def database_dir(m: Measurements, space: SearchSpace) -> Path:
    """``<cache>/hypothesis/<name>-<key>``: one example database per pair, measurement
    settings and search space (so examples never replay on a space they were not drawn from)."""
    key = {
        "format": SEARCH_FORMAT,
        "pair": m.pair.fingerprint,
        "prompts": stable_hash(list(m.prompts)),
        "scorer": m.settings.scorer,
        "generation": asdict(m.settings.generation),
        "convention": m.settings.convention,  # the positive rule reads mean activations
        "space": space.key(),
    }
    return m.cache.root / "hypothesis" / f"{space.name}-{stable_hash(key)}"


def run_search(
    space: SearchSpace,
    measure: Callable[[Candidate], AblationPoint],
    *,
    max_examples: int = DEFAULT_EXAMPLES,
    seed: int = 0,
    database: Path | None = None,
    read_only: bool = False,
) -> SearchResult:
    """Search ``space`` for a counterexample with Hypothesis: ``max_examples`` drawn ablations
    (plus, when one is a counterexample, Hypothesis's shrinking); ``measure`` measures one.

    ``database``: a directory for Hypothesis's example database and ``strongest.json``; None
    runs without either. ``read_only``: replay from it, write nothing. Reproducibility: see the
    module docstring; the drawn examples depend only on ``seed``, ``max_examples`` and the space.
    """
    if max_examples < 1:
        raise OptionError(f"a search needs at least 1 example, not {max_examples}")
    try:
        from hypothesis import HealthCheck, Verbosity, given, settings, target
        from hypothesis import seed as hypothesis_seed
        from hypothesis import strategies as st
    except ImportError as exc:  # a test dependency: the rest of the library runs without it
        raise SearchError(
            "the counterexample search needs Hypothesis: pip install 'dpoclaims[test]' (or hypothesis)"
        ) from exc

    points: dict[Candidate, AblationPoint] = {}

    def measured(candidate: Candidate) -> AblationPoint:
        if candidate not in points:
            points[candidate] = measure(candidate)
        return points[candidate]

    for candidate in largest_ablations(space, seed):
        measured(candidate)
    for candidate in _valid(space, _read_strongest(database), seed):  # earlier runs' strongest: cached
        measured(candidate)

    @st.composite
    def candidates(draw: Callable[[Any], Any]) -> Candidate:
        rule = draw(st.sampled_from(space.rules))
        grid = n_grid(space.max_n[rule])
        n = grid[draw(st.integers(0, len(grid) - 1))]
        return Candidate(rule, n, seed if rule == "random" else 0)

    # The order matters: @seed fixes the examples drawn (and sets database=None); the settings
    # applied after it put the database back.
    @given(candidate=candidates())
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
    def no_ablation_matches_dpo(candidate: Candidate) -> None:
        point = measured(candidate)
        if point.share.measurable:
            target(point.share.value, label="recovered share")
        if point.is_counterexample:
            raise _Counterexample(point)

    counterexample, shrunk = None, False
    try:
        no_ablation_matches_dpo()
    except _Counterexample as found:
        counterexample, shrunk = found.point, True
    if counterexample is None:  # e.g. a rule's largest or an earlier run's strongest: report it, unshrunk
        counterexample = min(
            (p for p in points.values() if p.is_counterexample),
            key=lambda p: (p.candidate.n, RULES.index(p.candidate.rule)),
            default=None,
        )
    result = SearchResult(space, points, counterexample, shrunk, max_examples, seed, database)
    if database is not None and not read_only:
        _write_strongest(database, result)
    return result


def failures_database(directory: Path | None, read_only: bool) -> Any:
    """Hypothesis's directory database in ``directory``, keeping failing examples only.

    Hypothesis also stores the Pareto front of ``target()`` and replays part of it, which makes
    a rerun draw new examples (each a new generation pass) and breaks reproducibility. Without
    it, a rerun draws the same examples (all cached) or replays the stored counterexample."""
    if directory is None:
        return None
    from hypothesis.database import DirectoryBasedExampleDatabase, ExampleDatabase, ReadOnlyDatabase

    class FailuresOnly(ExampleDatabase):
        def __init__(self, inner: ExampleDatabase) -> None:
            super().__init__()
            self.inner = inner

        def __repr__(self) -> str:
            return f"FailuresOnly({self.inner!r})"

        def __eq__(self, other: object) -> bool:
            return isinstance(other, FailuresOnly) and self.inner == other.inner

        def save(self, key: bytes, value: bytes) -> None:
            if not key.endswith(b".pareto"):
                self.inner.save(key, value)

        def fetch(self, key: bytes) -> Any:
            return iter(()) if key.endswith(b".pareto") else self.inner.fetch(key)

        def delete(self, key: bytes, value: bytes) -> None:
            self.inner.delete(key, value)

        def move(self, src: bytes, dest: bytes, value: bytes) -> None:
            self.inner.move(src, dest, value)

    inner: ExampleDatabase = DirectoryBasedExampleDatabase(directory)
    return FailuresOnly(ReadOnlyDatabase(inner) if read_only else inner)


def _valid(space: SearchSpace, found: Sequence[Candidate], seed: int) -> list[Candidate]:
    return [
        c
        for c in found
        if c.rule in space.rules
        and c.n in n_grid(space.max_n[c.rule])
        and c.subset_seed == (seed if c.rule == "random" else 0)
    ]


def _read_strongest(database: Path | None) -> list[Candidate]:
    path = None if database is None else database / "strongest.json"
    if path is None or not path.is_file():
        return []
    try:
        rows = json.loads(path.read_text())
        return [Candidate(str(r["rule"]), int(r["n"]), int(r["subset_seed"])) for r in rows]  # type: ignore[arg-type]
    except (ValueError, KeyError, TypeError):  # a damaged file only loses hints: the search still runs
        return []


def _write_strongest(database: Path, result: SearchResult) -> None:
    ranked = sorted(result.measurable, key=lambda p: -p.share.value)[:KEEP_STRONGEST]
    database.mkdir(parents=True, exist_ok=True)
    atomic_write_text(database / "strongest.json", json.dumps([p.candidate.to_json() for p in ranked]))


def search_ablations(
    m: Measurements,
    space: SearchSpace,
    *,
    max_examples: int = DEFAULT_EXAMPLES,
) -> SearchResult:
    """Run the search for ``space`` on a pair's measurements, with its example database in
    the cache (read-only when the cache is)."""
    return run_search(
        space,
        lambda candidate: measure_ablation(m, candidate),
        max_examples=max_examples,
        seed=m.settings.seed,
        database=database_dir(m, space),
        read_only=m.cache.read_only,
    )


@claim("C1[search]")
def c1_no_ablation_matches_dpo(m: Measurements, max_examples: int = DEFAULT_EXAMPLES) -> ClaimResult:
    """C1[search]: the search over the top-N by cosine, positively-activated and random rules."""
    return search_ablations(m, c1_space(m.decomposition), max_examples=max_examples).claim_result(
        "C1[search]"
    )


@claim("C2[search]")
def c2_no_positive_ablation_matches_dpo(m: Measurements, max_examples: int = DEFAULT_EXAMPLES) -> ClaimResult:
    """C2[search]: the search over the top-N positively-activated toxic neurons."""
    return search_ablations(m, c2_space(m.decomposition), max_examples=max_examples).claim_result(
        "C2[search]"
    )
