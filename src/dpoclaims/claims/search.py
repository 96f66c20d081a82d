"""One search driver for the claims about a whole space of interventions: C1[search], C2[search]
("no top-N ablation matches DPO") and C13[search] ("some activation edit beats DPO").

A search space (:class:`SearchSpace`, built in :mod:`dpoclaims.claims.search_spaces`) says only
what it draws and how one candidate is measured; this module does the rest, the same way for
every search:

1. **Discovery.** The prompts and the held-out texts are split in two seeded halves
   (:meth:`dpoclaims.measure.measurements.Measurements.fold_a`). On the first half, the space's
   stated candidates are measured, then Hypothesis draws ``max_examples`` more, steering with
   ``target()`` toward the candidate that comes closest to the opposite of what the paper says
   of the space (a counterexample for "every", an example for "some"). A candidate that reaches
   it on the discovery half at the nominal one-sided 2.5% is a *hit*: Hypothesis shrinks it to
   the smallest hit (fewest neurons, smallest constants).
2. **Confirmation**, on the other half, which discovery never read: the hit (else the best
   candidate by the target) is tested there as one test, and so is every candidate discovery
   measured.

The claim's two p-values come from the confirmation half only, so they are valid however the
candidates were chosen:

- "every" (C1[search], C2[search]: every candidate satisfies the criterion): ``p`` is the largest
  of the measured candidates' p-values on the confirmation half (an intersection-union test:
  each must hold); ``p_against`` is the chosen candidate's p-value against the criterion there
  (one test: a counterexample confirmed).
- "some" (C13[search]): the mirror image: ``p`` is the chosen candidate's, ``p_against`` the
  largest of every measured candidate's against.

What it costs: each half has half the prompts, so a confirmation interval is about 1.4 times as
wide as one over all prompts; in return no multiplicity correction over the candidates is needed,
and the verdict cannot depend on what an earlier run found.

**Deferred figures.** A candidate's held-out perplexity costs a pass over the held-out text, as
its toxicity costs a generation pass, and most candidates are decided by their toxicity alone (an
ablation shown to recover less than 80% of DPO's drop fails to match DPO whatever its perplexity;
an edit shown to leave more toxicity than DPO does not beat it). So a space names figures it
measures only where they can matter (``SearchSpace.deferred``): on a half, a candidate is first
measured without them, and the decision is evaluated with them at their worst case (both p-values
1) and at their best (both 0). Both p-values of a decision are monotone in its parts', so the two
bound what measuring them could give; where the bounds agree on what the half decides (discovery:
whether the candidate is a hit; confirmation: whether each p-value is within the claim's level),
the figures are not measured and their tests stay at the worst case. Else, and always for the
chosen candidate and for one already measured on the discovery half (its pass is done), they are.
The target, which steers Hypothesis and chooses the best candidate when there is no hit, takes
the other figures' part alone where one is unmeasured (an upper bound of what it would be); on
discovery a candidate whose bound reaches the highest target so far (of the candidates measured,
and of those Hypothesis was given) is measured in full, so the highest target, the one Hypothesis
climbs from and the best candidate, is always an exact one. What is left is Hypothesis's mutator,
which compares a fresh example's target with a mutant's: where both are bounds their order may
differ from their exact values', and the draws after it with it. So the candidates drawn can
differ from a run that measures every perplexity; the verdict stays valid either way (it is read
on the confirmation half), no verdict differs from the one measuring every figure of the same
candidates would give, and every p-value reported is at least that one's (equal wherever the
other figure decides the candidate's p-values, as it does for a candidate far from DPO on
toxicity and near the base on perplexity).

History does not enter. Hypothesis runs with no example database and a fixed seed (the
measurement seed, through ``hypothesis.seed``), so the candidates it draws depend only on the
seed, ``max_examples``, the space and the measured figures: a cold run, a warm rerun and a run on
another machine draw, choose and confirm the same candidates, and give the same verdict and
p-values. Nor does the machine's speed: Hypothesis's wall-clock limit on shrinking is lifted
(:func:`_shrinking_without_a_clock`), so a slow cold run shrinks as far as a fast warm one. Every measurement is cached, so a warm rerun generates nothing. Hypothesis is a test
dependency: it is imported only when a search runs.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, Protocol, TypeVar

from dpoclaims.claims import paper
from dpoclaims.claims.decision import Figure, Outcome, evaluate
from dpoclaims.claims.registry import Measured
from dpoclaims.errors import DpoclaimsError, OptionError
from dpoclaims.phases import phase
from dpoclaims.stats import ONE_SIDED_ALPHA

DEFAULT_EXAMPLES = 16  # Hypothesis steers by target() only after 10 examples: 16 leaves it 6
Fold = Literal["discovery", "confirmation"]


class SearchError(DpoclaimsError):
    """A search that cannot run (nothing to draw, Hypothesis missing, bad options)."""


class Candidate(Hashable, Protocol):
    """What a search draws (an ablation, an edit): hashable and described."""

    @property
    def label(self) -> str: ...

    def to_json(self) -> dict[str, Any]: ...


C = TypeVar("C", bound=Candidate)


@dataclass(frozen=True)
class Evaluated:
    """One candidate on one half: its figures, the claim's criterion on them, and what the
    reports show of it."""

    figures: dict[str, Figure]
    outcome: Outcome
    details: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        figures = {
            name: {"unmeasured": f.unmeasured}
            if f.unmeasured
            else {"value": f.estimate.value, "ci": list(f.estimate.interval(paper.SIDE_ALPHA))}
            for name, f in self.figures.items()
        }
        return {
            **figures,
            "p": self.outcome.p_holds,
            "p_against": self.outcome.p_fails,
            "problem": self.outcome.problem,
            **self.details,
        }


@dataclass(frozen=True)
class SearchSpace(Generic[C]):
    """A space of candidates: how to draw one, which to measure first, how to measure one on a
    half, and how close a measurement comes to the opposite of the paper's claim (``target``:
    positive once it gets there)."""

    entry: paper.ClaimEntry  # the search's claim: its quantifier and per-candidate criterion
    draw: Callable[[Any], Any]  # strategies module -> a Hypothesis strategy of candidates
    stated: tuple[C, ...]
    # A candidate on a half, the figures named in the set left unmeasured (unmeasured_figure).
    measure: Callable[[C, Fold, frozenset[str]], Evaluated]
    # How close it comes to the opposite of the claim; where a deferred figure is unmeasured, an
    # upper bound (the other figures' part alone).
    target: Callable[[Evaluated], float]
    size: Callable[[C], int]  # how many neurons a candidate touches (ties prefer fewer)
    description: dict[str, Any] = field(default_factory=dict)  # the space, for the report
    # Figures measured only where they can matter (module docstring, 'Deferred figures').
    deferred: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        if self.entry.quantifier is None:
            raise OptionError(f"{self.entry.key} is not a claim about a space of candidates")


@dataclass
class SearchResult(Generic[C]):
    space: SearchSpace[C]
    discovery: dict[C, Evaluated]  # every candidate measured, in order of measurement
    confirmation: dict[C, Evaluated]
    chosen: C | None
    hit: bool  # the chosen one reached the opposite of the claim on the discovery half
    max_examples: int
    seed: int

    @property
    def quantifier(self) -> str:
        assert self.space.entry.quantifier is not None
        return self.space.entry.quantifier

    def outcome(self) -> Outcome:
        """The claim's two p-values, from the confirmation half (module docstring)."""
        if self.chosen is None:
            return Outcome(math.nan, math.nan, "no candidate was measured")
        chosen = self.confirmation[self.chosen].outcome
        if not chosen.measurable:
            return Outcome(math.nan, math.nan, f"on the confirmation half: {chosen.problem}", chosen.parts)
        measured = [e.outcome for e in self.confirmation.values() if e.outcome.measurable]
        if self.quantifier == "every":
            return Outcome(max(o.p_holds for o in measured), chosen.p_fails, "", chosen.parts)
        return Outcome(chosen.p_holds, max(o.p_fails for o in measured), "", chosen.parts)

    def describe(self) -> str:
        """One line: what was chosen, and how it fared on each half."""
        if self.chosen is None:
            return "no candidate was measured"
        found = "found" if self.hit else "best"
        opposite = "matches DPO" if self.quantifier == "every" else "beats DPO"
        first, second = self.discovery[self.chosen], self.confirmation[self.chosen]
        return (
            f"{len(self.discovery)} candidates measured on the discovery half; the {found} one ({'it ' + opposite if self.hit else 'none ' + opposite + ' there'}): "
            f"{self.chosen.label} ({self.space.size(self.chosen)} neurons): discovery {_figures_text(first)}; "
            f"confirmation {_figures_text(second)}"
        )

    def measured(self) -> Measured:
        """The search as its claim's measurement: the chosen candidate's confirmation figures,
        the search's own p-values, and every candidate in the details."""
        nan_figures = {leaf: Figure(_nan_estimate()) for leaf in _figure_names(self.space.entry)}
        figures = self.confirmation[self.chosen].figures if self.chosen is not None else nan_figures
        details = {
            "search": self.space.entry.key,
            "quantifier": self.quantifier,
            "space": self.space.description,
            "max_examples": self.max_examples,
            "seed": self.seed,
            "n_measured": len(self.discovery),
            "chosen": None
            if self.chosen is None
            else {
                **self.chosen.to_json(),
                "label": self.chosen.label,
                "size": self.space.size(self.chosen),
                "hit": self.hit,
                "discovery": self.discovery[self.chosen].to_json(),
                "confirmation": self.confirmation[self.chosen].to_json(),
            },
            "measured": [
                {
                    **c.to_json(),
                    "label": c.label,
                    "size": self.space.size(c),
                    "discovery": self.discovery[c].to_json(),
                    "confirmation": self.confirmation[c].to_json(),
                }
                for c in self.discovery
            ],
        }
        return Measured(figures, details, finding=self.describe(), outcome=self.outcome())


def _figure_names(entry: paper.ClaimEntry) -> list[str]:
    from dpoclaims.claims.decision import leaves

    return [leaf.figure for leaf in leaves(entry.decision)]


def _nan_estimate() -> Any:
    from dpoclaims.stats import Estimate

    nan = float("nan")
    return Estimate(nan, nan, nan)


def _figures_text(evaluated: Evaluated) -> str:
    parts = []
    for name, figure in evaluated.figures.items():
        if figure.unmeasured:
            parts.append(f"{name} not measured (not needed)")
            continue
        low, high = figure.estimate.interval(paper.SIDE_ALPHA)
        parts.append(f"{name} {figure.estimate.value:.4g} [{low:.4g}, {high:.4g}]")
    return ", ".join(parts)


class _Hit(Exception):
    def __init__(self, candidate: Any) -> None:
        super().__init__(getattr(candidate, "label", repr(candidate)))
        self.candidate = candidate


def _is_hit(outcome: Outcome, quantifier: str) -> bool:
    """The opposite of the claim at the nominal one-sided 2.5% on the discovery half."""
    if not outcome.measurable:
        return False
    p = outcome.p_fails if quantifier == "every" else outcome.p_holds
    return p <= ONE_SIDED_ALPHA


@phase("searches")
def run_search(
    space: SearchSpace[C], *, max_examples: int = DEFAULT_EXAMPLES, seed: int = 0
) -> SearchResult[C]:
    """Discovery with Hypothesis on the first half, confirmation on the second (module docstring)."""
    if max_examples < 1:
        raise OptionError(f"a search needs at least 1 example, not {max_examples}")
    try:
        from hypothesis import HealthCheck, Phase, Verbosity, given, settings, target
        from hypothesis import seed as hypothesis_seed
        from hypothesis import strategies as st
    except ImportError as exc:  # a test dependency: the rest of the library runs without it
        raise SearchError(
            "the searches need Hypothesis: pip install 'dpoclaims[test]' (or hypothesis)"
        ) from exc
    quantifier = space.entry.quantifier
    assert quantifier is not None
    discovery: dict[C, Evaluated] = {}
    # The highest target so far: of every candidate measured, and of those Hypothesis was given.
    highest = {"measured": -math.inf, "given": -math.inf}

    def measured(candidate: C, highest_so_far: float) -> Evaluated:
        """The candidate on discovery, its deferred figures measured where they decide the hit or
        where its target (a bound without them) reaches ``highest_so_far``."""
        evaluated = discovery.get(candidate)
        if evaluated is None:
            evaluated = _measure(
                space, candidate, "discovery", lambda o: _is_hit(o, quantifier), steers_from=highest_so_far
            )
        elif not _complete(evaluated) and _steers(space, evaluated, highest_so_far):
            evaluated = space.measure(candidate, "discovery", frozenset())
        discovery[candidate] = evaluated  # (a key keeps its place in the order of measurement)
        if evaluated.outcome.measurable:
            highest["measured"] = max(highest["measured"], space.target(evaluated))
        return evaluated

    for candidate in space.stated:
        measured(candidate, highest["measured"])

    # The order matters: @seed fixes the examples drawn; the settings after it keep no database
    # (so nothing an earlier run stored can change what this one draws or chooses).
    @given(candidate=space.draw(st))
    @settings(
        database=None,
        max_examples=max_examples,
        deadline=None,
        derandomize=False,
        phases=(Phase.generate, Phase.target, Phase.shrink),
        report_multiple_bugs=False,
        print_blob=False,
        verbosity=Verbosity.quiet,
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.filter_too_much,
        ],  # an example is a generation pass
    )
    @hypothesis_seed(seed)
    def look_for_the_opposite(candidate: C) -> None:
        evaluated = measured(candidate, highest["given"])
        if evaluated.outcome.measurable:
            score = space.target(evaluated)
            highest["given"] = max(highest["given"], score)
            target(score, label="toward the opposite of the claim")
        if _is_hit(evaluated.outcome, quantifier):
            raise _Hit(candidate)

    chosen: C | None = None
    hit = False
    try:
        with _shrinking_without_a_clock():
            look_for_the_opposite()
    except _Hit as found:
        chosen, hit = found.candidate, True
    if chosen is None:  # a stated candidate may be a hit Hypothesis never drew: the smallest one
        hits = [c for c, e in discovery.items() if _is_hit(e.outcome, quantifier)]
        if hits:
            order = list(discovery)
            chosen, hit = min(hits, key=lambda c: (space.size(c), order.index(c))), True
    if chosen is None:
        chosen = _best(space, discovery)
    if chosen is not None and not _complete(discovery[chosen]):
        # (where no candidate was measurable on discovery, the first is chosen unmeasured): its
        # perplexity pass is made for the confirmation half anyway, so its record is made whole
        discovery[chosen] = space.measure(chosen, "discovery", frozenset())
    confirmation = {
        c: _measure(
            space, c, "confirmation", _at_the_claims_level, always=c == chosen or _complete(discovery[c])
        )
        for c in discovery
    }
    return SearchResult(space, discovery, confirmation, chosen, hit, max_examples, seed)


def unmeasured_figure(why: str) -> Figure:
    """A figure left unmeasured (``why``): its test counts at its worst case (both p-values 1)."""
    return Figure(_nan_estimate(), unmeasured=why)


def _complete(evaluated: Evaluated) -> bool:
    return not any(f.unmeasured for f in evaluated.figures.values())


def _at_the_claims_level(outcome: Outcome) -> tuple[bool, bool]:
    """What a candidate's outcome on the confirmation half decides: whether each of its p-values is
    within the claim's level (the claim's p-values are the largest or the chosen candidate's)."""
    return outcome.p_holds <= paper.SIDE_ALPHA, outcome.p_fails <= paper.SIDE_ALPHA


def _steers(space: SearchSpace[C], evaluated: Evaluated, highest_so_far: float) -> bool:
    """Whether a candidate's target (a bound while a deferred figure is unmeasured) reaches the
    highest so far: only then can its exact value change what the search steers toward or chooses."""
    return evaluated.outcome.measurable and space.target(evaluated) >= highest_so_far


def _measure(
    space: SearchSpace[C],
    candidate: C,
    fold: Fold,
    decides: Callable[[Outcome], Hashable],
    *,
    always: bool = False,
    steers_from: float = math.inf,
) -> Evaluated:
    """``candidate`` on ``fold``, its deferred figures measured only when ``always``, when they
    can change what the half decides (``decides``: the hit on discovery, the comparisons at the
    claim's level on confirmation: the outcome with them at their worst case and at their best
    differ), or when its target's bound reaches ``steers_from`` (discovery's highest so far).
    Otherwise their tests stay at the worst case, so every p-value reported is at least what
    measuring them would give, and no verdict differs from the one measuring would give."""
    if space.deferred and not always:
        partial = space.measure(candidate, fold, space.deferred)
        worst = evaluate(space.entry.decision, partial.figures, paper.SIDE_ALPHA, unmeasured="worst")
        best = evaluate(space.entry.decision, partial.figures, paper.SIDE_ALPHA, unmeasured="best")
        if decides(worst) == decides(best) and not _steers(space, partial, steers_from):
            return partial
    return space.measure(candidate, fold, frozenset())


@contextmanager
def _shrinking_without_a_clock() -> Iterator[None]:
    """Hypothesis stops shrinking after a fixed number of seconds of wall time
    (``MAX_SHRINKING_SECONDS`` in its engine, 300 in the locked version). Each example here is a
    generation pass, so a cold run (every candidate generated) would stop shrinking sooner than a
    warm one (every measurement cached) and could choose another candidate: a verdict that
    depends on the machine's speed and the cache's history. Within this context the limit is
    lifted; shrinking stays bounded by Hypothesis's own count of shrink steps and by the finite
    space. If a Hypothesis release drops the constant, the search refuses to run rather than
    quietly depending on time again."""
    try:
        from hypothesis.internal.conjecture import engine
    except ImportError as exc:  # pragma: no cover - Hypothesis moved its engine
        raise SearchError(_CLOCK_UNKNOWN) from exc
    if not hasattr(engine, "MAX_SHRINKING_SECONDS"):
        raise SearchError(_CLOCK_UNKNOWN)
    saved = engine.MAX_SHRINKING_SECONDS
    engine.MAX_SHRINKING_SECONDS = math.inf  # type: ignore[assignment]
    try:
        yield
    finally:
        engine.MAX_SHRINKING_SECONDS = saved


_CLOCK_UNKNOWN = (
    "this Hypothesis release limits shrinking in a way the searches do not know, so their verdict "
    "could depend on the machine's speed; install the locked version (pip install -c "
    "requirements/lock.txt hypothesis)"
)


def _best(space: SearchSpace[C], discovery: dict[C, Evaluated]) -> C | None:
    """The candidate closest to the opposite of the claim on the discovery half (ties: fewer
    neurons, then the candidate's order)."""
    scored: Sequence[tuple[float, int, C]] = [
        (space.target(e), space.size(c), c) for c, e in discovery.items() if e.outcome.measurable
    ]
    if not scored:
        return next(iter(discovery), None)
    return max(scored, key=lambda item: (item[0], -item[1], _negated_order(item[2], discovery)))[2]


def _negated_order(candidate: Any, discovery: dict[Any, Evaluated]) -> int:
    return -list(discovery).index(candidate)
