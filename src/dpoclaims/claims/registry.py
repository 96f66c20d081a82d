"""The claim functions, bound to their paper-table entries, and the one driver that runs a claim.

A claim function measures a pair and returns its figures (:class:`Measured`); it never decides:
:func:`run_claim` reads the entry's criterion (:mod:`dpoclaims.claims.paper`), applies the one
decision rule (:mod:`dpoclaims.claims.decision`) and builds the :class:`ClaimResult`, whose id is
the entry's, so a result's id is always its test's. A function is bound to its entry by
``@claim("C5")``; adding a claim touches the table and one function. The functions register when
their modules are imported (:data:`CLAIM_MODULES`, imported by :func:`claim_function`).
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from dpoclaims.claims import paper
from dpoclaims.claims.decision import Figure, Outcome, evaluate, verdict
from dpoclaims.claims.results import ClaimResult
from dpoclaims.errors import DpoclaimsError
from dpoclaims.phases import phase
from dpoclaims.stats import Estimate, Verdict, bootstrap, mean_difference

if TYPE_CHECKING:
    from dpoclaims.measure.measurements import Measurements

ClaimFunction = TypeVar("ClaimFunction", bound=Callable[..., Any])
_REGISTRY: dict[str, Callable[..., Any]] = {}
#: The modules whose import registers every claim function.
CLAIM_MODULES = ("dpoclaims.claims.checks", "dpoclaims.claims.search_spaces")
NULL_LEVEL = 0.95  # the null control's interval: the central 95% of its draws
NULL_MIN_DEFINED = 0.95  # ... read only where the figure is defined on at least 95% of the draws


class ClaimNotApplicable(DpoclaimsError):
    """The claim is not tested on this pair, for the stated reason (the claims suite skips it)."""


@dataclass
class Measured:
    """What a claim function measured: its figures by name (the entry's criterion reads them),
    the details the reports show, and, for claims with a null control, the null draws of the
    entry's main figure. A search decides over many points itself: its ``outcome``."""

    figures: dict[str, Figure]
    details: dict[str, Any] = field(default_factory=dict)
    null: np.ndarray | None = None  # [draws] the main figure under the null (NaN: undefined there)
    finding: str = ""
    outcome: Outcome | None = None  # a search's own p-values (else the entry's criterion decides)


def claim(key: str) -> Callable[[ClaimFunction], ClaimFunction]:
    """Bind the function that measures paper-table entry ``key`` (``"C5"``, ``"C6[increasing]"``)."""
    if key not in paper.TABLE:
        raise KeyError(
            f"no entry {key!r} in the paper table (dpoclaims.claims.paper); known: {sorted(paper.TABLE)}"
        )

    def register(function: ClaimFunction) -> ClaimFunction:
        existing = _REGISTRY.get(key)
        if existing is not None and existing.__qualname__ != function.__qualname__:
            raise ValueError(
                f"claim {key!r} is registered twice: {existing.__qualname__} and {function.__qualname__}"
            )
        _REGISTRY[key] = function
        return function

    return register


def registered() -> dict[str, Callable[..., Any]]:
    """Every claim function, by key (importing the modules that register them)."""
    for module in CLAIM_MODULES:
        importlib.import_module(module)
    return dict(_REGISTRY)


def claim_function(key: str) -> Callable[..., Any]:
    functions = registered()
    if key not in functions:
        raise KeyError(f"no claim function is bound to {key!r}: decorate one with @claim({key!r})")
    return functions[key]


def null_summary(draws: np.ndarray, value: float) -> dict[str, Any]:
    """The null control's figures: its central interval where the figure is defined on enough
    draws, and whether the measured ``value`` lies inside it."""
    defined = draws[np.isfinite(draws)]
    share = len(defined) / max(len(draws), 1)
    summary: dict[str, Any] = {"draws": len(draws), "defined": share}
    if share < NULL_MIN_DEFINED:
        summary |= {"interval": None, "contains": False}
        return summary
    tail = (1 - NULL_LEVEL) / 2
    low, high = (float(q) for q in np.quantile(defined, [tail, 1 - tail]))
    summary |= {
        "interval": [low, high],
        "median": float(np.median(defined)),
        "contains": bool(math.isfinite(value) and low <= value <= high),
    }
    return summary


def run_claim(key: str, m: Measurements, param: Any = None, **options: Any) -> ClaimResult:
    """Measure claim ``key`` (with its parameter) on ``m`` and decide it by its paper-table entry.
    ``options`` go to the claim function (e.g. a search's ``max_examples``)."""
    entry = paper.entry(key)
    if entry.guaranteed_by_band and entry.guaranteed_by_band in m.pair.spec.guarantees:
        raise ClaimNotApplicable(
            f"{key} is not tested on pair {m.pair.name!r}: its build bands require {entry.guaranteed_by_band} "
            "to meet this criterion, so the claim cannot fail here"
        )
    function = claim_function(key)
    with phase("statistics"):  # a claim's own work; its generations and searches are charged to theirs
        measured: Measured = function(m, param, **options) if entry.param_name else function(m, **options)
        if entry.describes_the_drop:
            measured = defined_where_dpo_lowered_toxicity(m, measured)
        return decide(
            entry, param, measured, n_layers=m.pair.layout.n_layers, n_neurons=m.pair.layout.n_neurons
        )


def dpo_drop(m: Measurements, rows: np.ndarray | None = None) -> Estimate:
    """DPO's toxicity drop (base minus DPO) on the pair's prompts (or the prompts ``rows``)."""
    base, dpo = m.scores("base"), m.scores("dpo")
    if rows is not None:
        base, dpo = base[rows], dpo[rows]
    return bootstrap(mean_difference, base, dpo, seed=m.settings.seed)


def defined_where_dpo_lowered_toxicity(m: Measurements, measured: Measured) -> Measured:
    """``measured`` with every figure defined only where DPO's toxicity drop is shown positive
    (:attr:`dpoclaims.claims.paper.ClaimEntry.describes_the_drop`)."""
    drop = ("DPO's toxicity drop", dpo_drop(m))
    figures = {
        name: replace(figure, positive=(drop, *figure.positive)) for name, figure in measured.figures.items()
    }
    return replace(measured, figures=figures)


def decide(
    entry: paper.ClaimEntry, param: Any, measured: Measured, *, n_layers: int, n_neurons: int
) -> ClaimResult:
    """The claim's result from what was measured: the entry's criterion at the family's level
    (:data:`dpoclaims.claims.paper.SIDE_ALPHA`), the null control's rule, the texts."""
    alpha = paper.SIDE_ALPHA
    rules = entry.rules_for(n_layers, n_neurons) if entry.scaled else None
    outcome = measured.outcome or evaluate(entry.decision_for(param), measured.figures, alpha, rules)
    decided: Verdict = verdict(outcome, alpha)
    main = measured.figures[entry.figure].estimate
    details: dict[str, Any] = {**measured.details, "parts": outcome.parts, "level": alpha}
    findings = [measured.finding] if measured.finding else []
    if outcome.problem:
        findings.append(f"not measurable: {outcome.problem}")
    if measured.null is not None:
        null = null_summary(measured.null, main.value)
        details["null"] = null
        if null["contains"] and decided == "replicates":
            decided = "inconclusive"
            low, high = null["interval"]
            findings.append(
                f"inside the null control's 95% interval [{low:.4g}, {high:.4g}]: noise alone (base and DPO "
                "swapped at random within prompts) gives such a figure, so it cannot replicate"
            )
    measurable = decided != "not measurable"
    ci = main.interval(alpha) if measurable and not main.exact else None
    claim_id = entry.claim_id(param)
    return ClaimResult(
        claim=claim_id.claim,
        param=claim_id.param,
        statement=entry.text(entry.statement, param),
        criterion=entry.criterion_for(param),
        measured=main.value,
        ci=ci,
        exact=main.exact,
        p_value=outcome.p_holds if measurable else math.nan,
        p_against=outcome.p_fails if measurable else math.nan,
        verdict=decided,
        paper=entry.figure_of(param),
        hypothesis=entry.hypothesis,
        details=details,
        finding="; ".join(findings),
        level=alpha,
    )


def figure_estimates(measured: Measured) -> Mapping[str, Any]:
    """Each figure's value (for tests and tables)."""
    return {name: figure.estimate.value for name, figure in measured.figures.items()}
