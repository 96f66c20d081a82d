"""Typed claim records, from the claim function to the reports.

- :class:`ClaimId`: ``C1[N=100]``, ``C6[increasing]``, ``C9``; parsed and formatted here only.
- :class:`ClaimResult`: what a claim function measured: the figure, its interval, p-value and
  verdict (the vocabulary is :data:`dpoclaims.stats.VERDICTS`).
- :class:`Expectation`: what a claim test asserts on a pair: the paper's finding, the opposite of
  a refuted hypothesis, or the verdict the pair's expectations table declares (with its reason).
- :class:`ClaimRecord`: one claim test's outcome, as the reports show it.

Records cross process boundaries (pytest-xdist workers, ``claims.json``) as JSON: ``to_json`` and
``from_json`` are inverses, and the JSON layout is the one ``claims.json`` has always had.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any

from dpoclaims.stats import VERDICTS, Verdict

#: Verdicts a pair's expectations table may declare (``replicates`` is what every test asserts
#: unless declared otherwise).
DECLARABLE: tuple[Verdict, ...] = tuple(v for v in VERDICTS if v != "replicates")
#: Declared verdicts a test asserts as they are (no xfail): neither the finding nor its opposite.
UNDECIDED: tuple[Verdict, ...] = ("inconclusive", "not measurable")
#: A claim that was skipped, or crashed before measuring: the reports' fifth state.
NOT_MEASURED = "not measured"
_CLAIM_ID = re.compile(r"^(C(\d+))(?:\[([^\[\]]+)\])?$")


@dataclass(frozen=True)
class ClaimId:
    """A claim test's id: the claim (``C1``) and its parameter (``N=100``), if any."""

    claim: str
    param: str = ""

    @classmethod
    def parse(cls, text: str) -> ClaimId:
        match = _CLAIM_ID.match(text)
        if match is None:
            raise ValueError(f"claim id {text!r} is not of the form C<n> or C<n>[param]")
        return cls(match.group(1), match.group(3) or "")

    def __post_init__(self) -> None:
        if not re.fullmatch(r"C\d+", self.claim) or any(c in self.param for c in "[]"):
            raise ValueError(f"claim id parts {self.claim!r}, {self.param!r} do not form C<n>[param]")

    def __str__(self) -> str:
        return f"{self.claim}[{self.param}]" if self.param else self.claim

    @property
    def number(self) -> int:
        return int(self.claim[1:])


class ClaimNotHeld(AssertionError):
    """The claim's verdict is the definite opposite of what its test asserts: the only failure a
    declared claim (or the refuted hypothesis) may expect."""


class ClaimVerdictUnexpected(Exception):
    """The claim came out inconclusive or not measurable, and the pair's table does not declare
    that: never an expected failure."""


@dataclass(frozen=True)
class ClaimResult:
    """What a claim measured on a pair, and its verdict against the paper's criterion
    (:func:`dpoclaims.claims.registry.decide`)."""

    claim: str  # e.g. "C1"
    param: str  # e.g. "N=100"
    statement: str
    criterion: str
    measured: float
    ci: tuple[float, float] | None  # the interval at the verdict's level; None when exact or not measurable
    exact: bool  # the figure has no sampling error (shown as "exact")
    p_value: float  # one-sided p of H0 "the paper's finding does not hold" (NaN: not measurable)
    verdict: Verdict  # replicates when p_value <= level, contradicts when p_against <= level
    paper: float | None
    hypothesis: bool = False  # the test asserts a hypothesis the paper refutes
    details: dict[str, Any] = field(default_factory=dict)
    finding: str = ""  # what decided the verdict, in words, when the figure alone does not say
    p_against: float = float("nan")  # one-sided p of H0 "the paper's finding holds"
    level: float = float("nan")  # the one-sided level both p-values are read at (the family's)

    def __post_init__(self) -> None:
        if self.verdict not in VERDICTS:
            raise ValueError(f"{self.id}: verdict {self.verdict!r} is not one of {VERDICTS}")

    @property
    def id(self) -> ClaimId:
        return ClaimId(self.claim, self.param)

    @property
    def replicates(self) -> bool:
        return self.verdict == "replicates"

    @property
    def distance_to_paper(self) -> float | None:
        return None if self.paper is None else self.measured - self.paper

    def describe(self) -> str:
        """One line: the id, figure, interval, p-values, criterion and finding."""
        ci = self.ci
        figure = f"measured {self.measured:.4g}" + (
            " (exact)" if self.exact else f" [{ci[0]:.4g}, {ci[1]:.4g}]" if ci else ""
        )
        text = (
            f"{self.id}: {figure}, p = {self.p_value:.3g} (against: {self.p_against:.3g}; level "
            f"{self.level:.3g}); criterion: {self.criterion}"
        )
        return f"{text}; {self.finding}" if self.finding else text

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["id"] = str(self.id)
        data["replicates"] = self.replicates
        data["distance_to_paper"] = self.distance_to_paper
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ClaimResult:
        ci = data.get("ci")
        return cls(
            claim=data["claim"],
            param=data.get("param", ""),
            statement=data["statement"],
            criterion=data["criterion"],
            measured=_float(data["measured"]),
            ci=None if ci is None else (_float(ci[0]), _float(ci[1])),
            exact=bool(data.get("exact", False)),
            p_value=_float(data["p_value"]),
            verdict=data["verdict"],
            paper=data.get("paper"),
            hypothesis=bool(data.get("hypothesis", False)),
            details=dict(data.get("details") or {}),
            finding=data.get("finding", ""),
            p_against=_float(data.get("p_against")),
            level=_float(data.get("level")),
        )


def _float(value: Any) -> float:
    return float("nan") if value is None else float(value)


@dataclass(frozen=True)
class Expectation:
    """What a claim test asserts on a pair: ``declared`` is the verdict the pair's expectations
    table declares (with the measured ``reason``), or None (the paper's finding replicates)."""

    declared: Verdict | None = None
    reason: str = ""
    hypothesis: bool = False  # the claim is a hypothesis the paper refutes

    def __post_init__(self) -> None:
        if self.declared is not None and self.declared not in DECLARABLE:
            raise ValueError(f"a declared verdict is one of {DECLARABLE}, not {self.declared!r}")

    @property
    def label(self) -> str:
        """As the reports show it: ``replicates`` or ``contradicts (declared)``."""
        return f"{self.declared} (declared)" if self.declared else "replicates"

    @classmethod
    def from_label(cls, label: str, hypothesis: bool = False) -> Expectation:
        declared = label.removesuffix(" (declared)") if label.endswith(" (declared)") else None
        return cls(declared, hypothesis=hypothesis)  # type: ignore[arg-type]  # checked in __post_init__

    def xfail_reason(self, pair: str) -> str | None:
        """Why the test is an expected failure (its assertion, ClaimNotHeld, is expected), or
        None. A declared "inconclusive" or "not measurable" is no xfail: the test asserts that
        verdict. A declared "contradicts" on a refuted hypothesis cancels out."""
        if self.declared in UNDECIDED:
            return None
        if self.hypothesis and not self.declared:
            return "a hypothesis the paper refutes"
        if self.declared and not self.hypothesis:
            return f"declared not to replicate on {pair}: {self.reason}"
        return None

    def check(self, result: ClaimResult) -> ClaimResult:
        """Assert what the test asserts: the paper's finding (``replicates``), or for a refuted
        hypothesis its opposite (``contradicts``), or the declared ``inconclusive`` / ``not
        measurable``. A declared ``contradicts`` is asserted like an undeclared claim and
        inverted by its xfail."""
        where = result.describe()
        if self.declared in UNDECIDED:
            if result.verdict != self.declared:
                raise ClaimVerdictUnexpected(
                    f"declared {self.declared}, but the verdict is {result.verdict}: {where}"
                )
            return result
        wanted, opposite = (
            ("contradicts", "replicates") if result.hypothesis else ("replicates", "contradicts")
        )
        if result.verdict == wanted:
            return result
        if result.verdict == opposite:
            what = (
                "the refuted hypothesis does not hold"
                if result.hypothesis
                else "the paper's finding does not hold"
            )
            raise ClaimNotHeld(f"{what}: {where}")
        raise ClaimVerdictUnexpected(
            f"{result.verdict} (not declared for this pair): {where}. Declare it in the expectations table "
            "with the measured reason if that is what this pair shows"
        )


@dataclass(frozen=True)
class ClaimRecord:
    """One claim test's outcome on a pair: the reports are built from these alone."""

    id: ClaimId
    order: int  # collection order, within a claim
    keyword: str  # the marker that selects it (ablation, patching, ...)
    expectation: Expectation
    outcome: str  # passed, failed, xfailed, xpassed, skipped, error
    node_id: str
    result: ClaimResult | None  # None: skipped, or crashed before measuring
    skip_reason: str = ""
    pair_fingerprint: str = ""

    @property
    def verdict(self) -> str:
        """The claim's verdict, or :data:`NOT_MEASURED`."""
        return self.result.verdict if self.result is not None else NOT_MEASURED

    @property
    def sort_key(self) -> tuple[int, int]:
        return (self.id.number, self.order)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": str(self.id),
            "order": self.order,
            "keyword": self.keyword,
            "expected": self.expectation.label,
            "outcome": self.outcome,
            "node_id": self.node_id,
            "claim": None if self.result is None else self.result.to_json(),
            "skip_reason": self.skip_reason,
            "pair_fingerprint": self.pair_fingerprint,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ClaimRecord:
        result = ClaimResult.from_json(data["claim"]) if data.get("claim") else None
        hypothesis = bool(result.hypothesis) if result else False
        return cls(
            id=ClaimId.parse(data["id"]),
            order=int(data.get("order", 0)),
            keyword=data.get("keyword", ""),
            expectation=Expectation.from_label(data.get("expected", "replicates"), hypothesis),
            outcome=data["outcome"],
            node_id=data.get("node_id", ""),
            result=result,
            skip_reason=data.get("skip_reason", ""),
            pair_fingerprint=data.get("pair_fingerprint", ""),
        )
