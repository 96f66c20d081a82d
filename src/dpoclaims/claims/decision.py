"""How a claim's figures become its verdict: one rule for every claim of the paper table.

A claim's criterion is a small tree (:data:`Node`) over named figures:

- :class:`Leaf`: one figure against one :class:`~dpoclaims.stats.Criterion` ("the share of DPO's
  drop is below 80%");
- :class:`All`: every part must hold ("... and the perplexity stays within DPO's plus the margin");
- :class:`Either`: one part suffices ("... below 80%, or the perplexity rises beyond the margin").

Each node gives two one-sided p-values from the figures' bootstrap distributions: ``p_holds``
(H0: the paper's finding does not hold) and ``p_fails`` (H0: it holds). A leaf's come from
:func:`dpoclaims.stats.p_value` and :func:`dpoclaims.stats.p_fails`. An :class:`All` holds when
every part does, an intersection-union test: ``p_holds`` is the largest of the parts', and it
fails when some part fails, a union of alternatives: ``p_fails`` is the smallest times the number
of parts (Bonferroni). :class:`Either` is the mirror image. Parts measured on different samples
(prompts, held-out texts) need no joint distribution for either bound.

The family
----------
Every definite verdict of a run, in both directions, is read at one family-wise level:
:data:`FAMILY_ALPHA` (5%) over every claim test of the paper table
(:data:`dpoclaims.claims.paper.FAMILY_SIZE`), so each claim is decided at
``FAMILY_ALPHA / FAMILY_SIZE`` a side (:data:`dpoclaims.claims.paper.SIDE_ALPHA`). At most one of a
claim's two nulls is true, so the chance of any wrong definite verdict in a run is at most 5%.
The family is the whole table, fixed before anything is measured: a verdict does not depend on
which claims a run selects (``-k``), on their order or on their outcomes (Holm's step-down would
need every p-value of the run before deciding any). The intervals the reports show are read at
the same level (:meth:`dpoclaims.stats.Estimate.interval`), so a claim that replicates has its
interval on the paper's side, up to the bootstrap's percentile interpolation.

Domains
-------
A ratio is defined only where its denominator is positive: a :class:`Figure` may carry its
denominator, and the figure is *not measurable* unless the denominator is positive at the
claim's level (its bootstrap distribution above zero in all but ``side_alpha`` of resamples).
So a share of a drop that DPO does not make, or a net/gross ratio of a net that is not a
reduction, is never a "replicates".
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from dpoclaims.stats import Criterion, Estimate, Verdict, decide, p_fails, p_value

FAMILY_ALPHA = 0.05  # the family-wise rate of wrong definite verdicts in a run (ours, the usual 5%)


_POSITIVE = Criterion(threshold=0.0, paper_side="above")


@dataclass(frozen=True)
class Figure:
    """A measured figure: its estimate and the quantities that must be positive for it to be
    defined (a ratio's denominator; for net/gross, the net too), each with its name in words."""

    estimate: Estimate
    positive: tuple[tuple[str, Estimate], ...] = ()
    # Not measured, and why: the figure's test is then taken at its worst or best case (see
    # evaluate's ``unmeasured``), for a search that measures a figure only where it can matter.
    unmeasured: str = ""

    def domain_problem(self, side_alpha: float) -> str:
        """Why the figure is outside its domain at this level ('' when it is inside)."""
        for what, value in self.positive:
            if not (value.measurable and value.value > 0):
                return f"{what} is not positive ({value.value:.4g}), so the figure is undefined"
            if p_value(value, _POSITIVE) > side_alpha:
                low, _ = value.interval(side_alpha)
                return (
                    f"{what} ({value.value:.4g}) is not shown to be positive (its lower bound at the claim's "
                    f"level is {low:.4g}), so the figure is undefined on some resamples"
                )
        if not self.estimate.measurable:
            return "the figure or its interval is undefined"
        return ""


@dataclass(frozen=True)
class Leaf:
    """One figure against one criterion."""

    figure: str  # the figure's name (a key of the claim's figures and of the record's details)
    quantity: str  # the figure in words
    rule: Criterion
    fmt: str = "g"  # how the threshold is written ("%": a percentage)
    params: tuple[Any, ...] | None = None  # the parameters it applies to (None: every one)
    # A threshold stated for GPT-2 medium and resolved on each pair (ClaimEntry.rules_for).
    scaled: Literal["neurons", "layers"] | None = None
    # A rule per parameter, where it differs by parameter (``rule`` is then the first's).
    rules: Mapping[Any, Criterion] | None = field(default=None, hash=False, compare=False)


@dataclass(frozen=True)
class All:
    """Every part must hold."""

    parts: tuple[Node, ...]


@dataclass(frozen=True)
class Either:
    """One part suffices."""

    parts: tuple[Node, ...]


Node = Leaf | All | Either


def leaves(node: Node) -> list[Leaf]:
    if isinstance(node, Leaf):
        return [node]
    return [leaf for part in node.parts for leaf in leaves(part)]


def for_param(node: Node, param: Any) -> Node | None:
    """The tree with the leaves that do not apply to ``param`` removed (None if nothing is left)."""
    if isinstance(node, Leaf):
        if node.params is not None and param not in node.params:
            return None
        return (
            replace(node, rule=node.rules.get(param, node.rule), rules=None)
            if node.rules is not None
            else node
        )
    kept = tuple(p for p in (for_param(part, param) for part in node.parts) if p is not None)
    if not kept:
        return None
    return kept[0] if len(kept) == 1 else type(node)(kept)


@dataclass(frozen=True)
class Outcome:
    """A node's two p-values and whether its figures are measurable."""

    p_holds: float
    p_fails: float
    problem: str = ""  # why it is not measurable ('' when it is)
    parts: dict[str, dict[str, Any]] = field(default_factory=dict)  # each leaf's figure and p-values

    @property
    def measurable(self) -> bool:
        return not self.problem


def evaluate(
    node: Node,
    figures: Mapping[str, Figure],
    side_alpha: float,
    rules: Mapping[str, Criterion] | None = None,
    unmeasured: Literal["worst", "best"] = "worst",
) -> Outcome:
    """The two p-values of ``node`` on ``figures`` (``rules``: a leaf's rule resolved on the
    pair, by figure name, where it differs from the leaf's own). A figure not measured counts at
    its ``worst`` (both p-values 1: neither direction shown) or ``best`` case (both 0): both
    p-values of every node are monotone in its parts', so the two bound what measuring it could give."""
    if isinstance(node, Leaf):
        if node.figure not in figures:
            raise KeyError(f"the claim measured no figure {node.figure!r} (it measured {sorted(figures)})")
        figure = figures[node.figure]
        if figure.unmeasured:
            bound = 1.0 if unmeasured == "worst" else 0.0
            return Outcome(bound, bound, "", {node.figure: {"unmeasured": figure.unmeasured}})
        rule = (rules or {}).get(node.figure, node.rule)
        problem = figure.domain_problem(side_alpha)
        estimate = figure.estimate
        low, high = estimate.interval(side_alpha)
        record = {"value": estimate.value, "ci": [low, high], "exact": estimate.exact}
        if problem:
            return Outcome(math.nan, math.nan, f"{node.quantity}: {problem}", {node.figure: record})
        holds, fails = p_value(estimate, rule), p_fails(estimate, rule)
        record |= {"p_holds": holds, "p_fails": fails, "verdict": decide(holds, fails, side_alpha)}
        return Outcome(holds, fails, "", {node.figure: record})
    outcomes = [evaluate(part, figures, side_alpha, rules, unmeasured) for part in node.parts]
    parts = {name: record for o in outcomes for name, record in o.parts.items()}
    problems = [o.problem for o in outcomes if o.problem]
    if problems:
        return Outcome(math.nan, math.nan, "; ".join(problems), parts)
    k = len(outcomes)
    if isinstance(node, All):  # intersection-union for "holds", Bonferroni for "fails"
        holds = max(o.p_holds for o in outcomes)
        fails = min(1.0, k * min(o.p_fails for o in outcomes))
    else:  # Either: the mirror image
        holds = min(1.0, k * min(o.p_holds for o in outcomes))
        fails = max(o.p_fails for o in outcomes)
    return Outcome(holds, fails, "", parts)


def verdict(outcome: Outcome, side_alpha: float) -> Verdict:
    if not outcome.measurable:
        return "not measurable"
    return decide(outcome.p_holds, outcome.p_fails, side_alpha)


def phrase(node: Node, negated: bool = False, nested: bool = False) -> str:
    """``node`` in words (its negation, H0, when ``negated``): "A, and B" / "either A or B"."""
    if isinstance(node, Leaf):
        words = node.rule.negated_phrase(node.fmt) if negated else node.rule.phrase(node.fmt)
        return f"{node.quantity} {words}"
    conjunctive = isinstance(node, All) != negated  # De Morgan
    texts = [phrase(part, negated, nested=True) for part in node.parts]
    if conjunctive:
        text = ", and ".join(texts)
        return f"both {text}" if nested and len(texts) == 2 else text
    text = ", or ".join(texts)
    return f"either {text}" if nested else text
