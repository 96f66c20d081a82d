"""Intervals, verdicts and p-values: one bootstrap over prompts, shared by every statistic.

The resampling scheme
---------------------
For ``n`` prompts, a seed and ``n_resamples``, a :class:`Resampler` draws the bootstrap index
matrix once, ``[n_resamples, n]`` (row ``b`` lists the prompts of resample ``b``), from
``numpy.random.default_rng(seed).integers(0, n, (n_resamples, n))``. Every statistic over the
same prompts is evaluated on the same rows, so the resampled values of two statistics are
paired: their difference, or any other function of both, has a valid bootstrap distribution.
``bootstrap(..., seed=s)`` builds the same matrix for the same ``(n, s, n_resamples)``, so
estimates from separate ``bootstrap`` calls over the same prompts share indices too. The draw
is the one ``scipy.stats.bootstrap(paired=True, vectorized=True, rng=default_rng(seed))``
makes, and intervals are percentiles with the same (linear) quantile rule: the bootstrap
distributions are identical to the ones this module got when it called scipy, and the intervals
equal up to float rounding (about 1e-16).

Statistics take the per-prompt samples (prompts on axis 0) and an ``axis`` keyword: the prompt
axis they must reduce. The point estimate calls ``statistic(*samples, axis=0)``; the resamples
call it on ``[rows, n, ...]`` arrays with ``axis=1``. A statistic may go on to reduce trailing
axes (``axis=-1``), never leading ones, and must return one number per resample.

Verdicts and p-values
---------------------
A claim's criterion is a :class:`Criterion`: a threshold and the side the paper puts the
statistic on (``below``, ``above``), or an interval for equivalence claims (``inside``).
:func:`verdict` reads the 95% interval against it; :func:`p_value` gives the one-sided p-value
of H0 "the paper's claim does not hold" from the same bootstrap distribution. The p-value
inverts the percentile interval: p = (1 + #resamples on the null side, ties included)
/ (1 + n_resamples), the smallest one-sided level at which a percentile bound would exclude the
threshold (the +1 keeps a Monte Carlo p-value valid and never 0). It is therefore consistent
with the verdict: "replicates" means the 2.5% percentile bound lies on the paper's side, and so
p <= about 0.025 (:data:`ONE_SIDED_ALPHA`); "contradicts" means p >= about 0.975. Equivalence
criteria use two one-sided tests (TOST): p is the larger of the two one-sided p-values.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from scipy import stats

from dpoclaims.errors import DpoclaimsError

CONFIDENCE = 0.95
# 10,000 resamples: a verdict is read at a family-wise level (dpoclaims.claims.decision: 0.05 over
# every claim test, about 0.0015 a side), so the tails must hold enough resamples to place it; the
# smallest p-value a bootstrap can give is 1 / (1 + N_RESAMPLES).
N_RESAMPLES = 10_000
ONE_SIDED_ALPHA = (1 - CONFIDENCE) / 2  # the one-sided level a 95% two-sided interval decides at
MIN_PROMPTS = 2  # fewer prompts than this: no interval, the figure is "not measurable"
MIN_PEARSON_PAIRS = 4  # the Fisher-z standard error 1/sqrt(n - 3) needs n >= 4
# Elements of one block of resampled data ([rows, n, ...] float64): bounds memory on large n.
_BLOCK_ELEMENTS = 1 << 22

PaperSide = Literal["below", "above", "inside"]  # where the paper puts a statistic
Verdict = Literal["replicates", "contradicts", "inconclusive", "not measurable"]
VERDICTS: tuple[Verdict, ...] = ("replicates", "contradicts", "inconclusive", "not measurable")
Method = Literal["bootstrap", "fisher_z", "exact"]


class StatsError(DpoclaimsError):
    """A criterion, sample or estimate the statistics cannot work with."""


# ------------------------------------------------------------------------- estimates


@dataclass(frozen=True)
class Estimate:
    """A figure with its 95% interval.

    ``method`` says where the interval comes from: ``bootstrap`` (percentile interval;
    ``resampled`` holds the statistic on every resample, ``[n_resamples]``), ``fisher_z``
    (Pearson r; ``n`` pairs) or ``exact`` (no sampling error: ``low == high == value``, shown
    as "exact"). ``scheme`` is ``(n, seed, n_resamples)`` of the resampler that made a bootstrap
    estimate: estimates with the same scheme were resampled on the same indices.
    """

    value: float
    low: float
    high: float
    exact: bool = False
    method: Method = "bootstrap"
    n: int | None = None
    resampled: np.ndarray | None = field(default=None, repr=False, compare=False)
    scheme: tuple[int, int, int] | None = field(default=None, compare=False)

    @classmethod
    def exact_value(cls, value: float) -> Estimate:
        """A figure without sampling error (e.g. a weight cosine): its interval is the point."""
        value = float(value)
        return cls(value, value, value, exact=True, method="exact")

    @property
    def measurable(self) -> bool:
        """The figure and its interval are defined (not NaN)."""
        if not math.isfinite(self.value):
            return False
        return self.exact or not (math.isnan(self.low) or math.isnan(self.high))

    def interval(self, side_alpha: float = ONE_SIDED_ALPHA) -> tuple[float, float]:
        """The two-sided interval with ``side_alpha`` in each tail: the percentiles of the bootstrap
        distribution (the Fisher-z interval for Pearson r; the point for an exact figure). At the
        default level it is ``(low, high)``; NaN where the figure is not measurable."""
        if not self.measurable:
            return (float("nan"), float("nan"))
        if self.exact:
            return (self.value, self.value)
        if self.method == "fisher_z":
            if self.n is None:
                raise StatsError("a Fisher-z estimate needs its number of pairs n for an interval")
            z, se = _fisher_z(self.value), 1 / math.sqrt(self.n - 3)
            q = float(stats.norm.ppf(1 - side_alpha))
            return (math.tanh(z - q * se), math.tanh(z + q * se))
        if self.resampled is None:
            return (self.low, self.high)
        low, high = np.quantile(self.resampled, [side_alpha, 1 - side_alpha])
        return (float(low), float(high))

    def fraction(self, predicate: Callable[[np.ndarray], np.ndarray]) -> float:
        """Fraction of resamples whose statistic satisfies ``predicate`` (vectorised, e.g.
        ``lambda peak: peak >= 8``). NaN for an estimate with no bootstrap distribution."""
        if self.resampled is None:
            return float("nan")
        return float(np.mean(np.asarray(predicate(self.resampled), dtype=bool)))


def _undefined(value: float, n: int | None, method: Method = "bootstrap") -> Estimate:
    nan = float("nan")
    return Estimate(value, nan, nan, method=method, n=n)


# ------------------------------------------------------------------------- resampling


@dataclass(frozen=True)
class Resampler:
    """The bootstrap index matrix for ``n`` prompts, drawn once from ``seed``.

    Use one per prompt set: every estimate it makes resamples the same prompts in the same
    rows, so any two of them can be compared with :func:`difference`.
    """

    n: int
    seed: int = 0
    n_resamples: int = N_RESAMPLES
    indices: np.ndarray = field(init=False, repr=False, compare=False)  # [n_resamples, n]

    def __post_init__(self) -> None:
        if self.n < 0 or self.n_resamples < 1:
            raise StatsError(f"a resampler needs n >= 0 prompts and n_resamples >= 1, got {self}")
        rng = np.random.default_rng(self.seed)
        indices = rng.integers(0, max(self.n, 1), (self.n_resamples, self.n), dtype=np.int64)
        indices.setflags(write=False)
        object.__setattr__(self, "indices", indices)

    @property
    def scheme(self) -> tuple[int, int, int]:
        return (self.n, self.seed, self.n_resamples)

    def _arrays(self, samples: Sequence[np.ndarray]) -> list[np.ndarray]:
        if not samples:
            raise StatsError("a bootstrap needs at least one per-prompt sample")
        arrays = [np.asarray(s, dtype=np.float64) for s in samples]
        lengths = {a.shape[0] if a.ndim else None for a in arrays}
        if lengths != {self.n}:
            shapes = [a.shape for a in arrays]
            raise StatsError(
                f"every sample must have one row per prompt ({self.n}) on axis 0; got shapes {shapes}"
            )
        return arrays

    def resample(self, statistic: Callable[..., np.ndarray | float], *samples: np.ndarray) -> np.ndarray:
        """``statistic`` on every resample: ``[n_resamples]`` (see the module docstring)."""
        arrays = self._arrays(samples)
        per_row = max(1, max(a[0].size if self.n else 1 for a in arrays) * self.n)
        rows = max(1, _BLOCK_ELEMENTS // per_row)
        blocks = []
        with np.errstate(divide="ignore", invalid="ignore"):
            for start in range(0, self.n_resamples, rows):
                block = self.indices[start : start + rows]  # [rows, n]
                values = np.asarray(statistic(*(a[block] for a in arrays), axis=1), dtype=np.float64)
                if values.shape != (len(block),):
                    raise StatsError(
                        f"the statistic returned shape {values.shape} on {len(block)} resamples; it must "
                        "reduce the prompt axis it is given (axis=1 here) and any trailing axes to one "
                        "number per resample"
                    )
                blocks.append(values)
        return np.concatenate(blocks)

    def estimate(self, statistic: Callable[..., np.ndarray | float], *samples: np.ndarray) -> Estimate:
        """Point value and 95% percentile interval of ``statistic(*samples)``."""
        arrays = self._arrays(samples)
        if self.n == 0:
            return _undefined(float("nan"), 0)
        with np.errstate(divide="ignore", invalid="ignore"):
            point = np.asarray(statistic(*arrays, axis=0), dtype=np.float64)
        if point.shape != ():
            raise StatsError(
                f"the statistic returned shape {point.shape} on the full sample; it must reduce the "
                "prompt axis (axis=0 here) and any trailing axes to one number"
            )
        value = float(point)
        if self.n < MIN_PROMPTS or not math.isfinite(value):
            return _undefined(value, self.n)
        return _from_resampled(value, self.resample(statistic, *arrays), self.scheme)

    def difference(
        self,
        statistic_a: Callable[..., np.ndarray | float],
        samples_a: Sequence[np.ndarray],
        statistic_b: Callable[..., np.ndarray | float],
        samples_b: Sequence[np.ndarray],
    ) -> Estimate:
        """``statistic_a(*samples_a) - statistic_b(*samples_b)`` on the same resampled prompts."""
        return difference(self.estimate(statistic_a, *samples_a), self.estimate(statistic_b, *samples_b))

    def fraction(
        self,
        statistic: Callable[..., np.ndarray | float],
        *samples: np.ndarray,
        predicate: Callable[[np.ndarray], np.ndarray],
    ) -> float:
        """Fraction of resamples whose ``statistic`` satisfies ``predicate`` (vectorised)."""
        return self.estimate(statistic, *samples).fraction(predicate)


def estimate_from_resampled(value: float, resampled: np.ndarray, scheme: tuple[int, int, int]) -> Estimate:
    """An estimate from a statistic's value and its bootstrap distribution ``[n_resamples]`` made on
    the resampler with ``scheme`` (for statistics computed outside :class:`Resampler`)."""
    return _from_resampled(value, np.asarray(resampled, dtype=np.float64), scheme)


def _from_resampled(value: float, resampled: np.ndarray, scheme: tuple[int, int, int]) -> Estimate:
    """The percentile interval of a bootstrap distribution ``[n_resamples]``."""
    resampled.setflags(write=False)
    n = scheme[0]
    if np.isnan(resampled).any():
        # The statistic is undefined on some resamples (e.g. a ratio over a zero drop): no
        # honest interval, and no p-value, can be read from them.
        nan = float("nan")
        return Estimate(value, nan, nan, n=n, resampled=resampled, scheme=scheme)
    low, high = np.quantile(resampled, [ONE_SIDED_ALPHA, 1 - ONE_SIDED_ALPHA])
    return Estimate(value, float(low), float(high), n=n, resampled=resampled, scheme=scheme)


@functools.lru_cache(maxsize=8)
def resampler(n: int, seed: int = 0, n_resamples: int = N_RESAMPLES) -> Resampler:
    """The (cached) resampler for ``n`` prompts: the same object for the same arguments."""
    return Resampler(n, seed, n_resamples)


def _prompt_count(samples: Sequence[np.ndarray]) -> int:
    if not samples:
        raise StatsError("a bootstrap needs at least one per-prompt sample")
    first = np.asarray(samples[0])
    if first.ndim == 0:
        raise StatsError("a per-prompt sample must be an array with prompts on axis 0, not a scalar")
    return int(first.shape[0])


def bootstrap(
    statistic: Callable[..., np.ndarray | float],
    *samples: np.ndarray,
    seed: int = 0,
    n_resamples: int = N_RESAMPLES,
) -> Estimate:
    """Percentile bootstrap of ``statistic(*samples)``, resampling prompts jointly.

    Each sample has prompts on axis 0; ``statistic`` must accept an ``axis`` keyword and
    reduce over it. Calls with the same prompt count, seed and ``n_resamples`` share indices.
    Fewer than :data:`MIN_PROMPTS` prompts, or an undefined value: NaN interval.
    """
    return resampler(_prompt_count(samples), seed, n_resamples).estimate(statistic, *samples)


def difference(a: Estimate, b: Estimate) -> Estimate:
    """The paired bootstrap estimate of ``a - b``; both must come from the same resampler."""
    value = a.value - b.value
    if a.resampled is None or b.resampled is None:
        if a.method == b.method == "bootstrap" and not (a.measurable and b.measurable):
            return _undefined(value, a.n)  # too few prompts or an undefined figure: nothing resampled
        raise StatsError(
            "a paired difference needs two bootstrap estimates with their resampled values "
            f"(got methods {a.method!r} and {b.method!r}); make both with bootstrap() or one Resampler"
        )
    if a.scheme != b.scheme:
        raise StatsError(
            f"a paired difference needs estimates resampled on the same indices; schemes (n, seed, "
            f"n_resamples) differ: {a.scheme} vs {b.scheme}. Use one Resampler (or the same seed) for both."
        )
    assert a.scheme is not None  # a bootstrap estimate with resampled values always has its scheme
    return _from_resampled(value, a.resampled - b.resampled, a.scheme)


def ratio(numerator: Estimate, denominator: Estimate) -> Estimate:
    """The paired bootstrap estimate of ``numerator / denominator`` (both from the same resampler).
    Where the denominator is not positive the ratio has no meaning; the caller states the domain
    (dpoclaims.claims.decision.Figure), this only divides."""
    if numerator.resampled is None or denominator.resampled is None:
        raise StatsError("a ratio of estimates needs both bootstrap distributions")
    if numerator.scheme != denominator.scheme:
        raise StatsError(
            f"a paired ratio needs one resampler; schemes differ: {numerator.scheme} vs {denominator.scheme}"
        )
    assert numerator.scheme is not None
    with np.errstate(divide="ignore", invalid="ignore"):
        value = numerator.value / denominator.value if denominator.value != 0 else math.nan
        resampled = numerator.resampled / denominator.resampled
    resampled = np.where(np.isfinite(resampled), resampled, np.nan)
    if not math.isfinite(value):
        return _undefined(value, numerator.n)
    return _from_resampled(value, resampled, numerator.scheme)


def bootstrap_difference(
    statistic_a: Callable[..., np.ndarray | float],
    samples_a: Sequence[np.ndarray],
    statistic_b: Callable[..., np.ndarray | float],
    samples_b: Sequence[np.ndarray],
    *,
    seed: int = 0,
    n_resamples: int = N_RESAMPLES,
) -> Estimate:
    """Interval of ``statistic_a(*samples_a) - statistic_b(*samples_b)`` under the same
    resampled prompts (every sample has the same prompts on axis 0)."""
    n = _prompt_count(samples_a)
    return resampler(n, seed, n_resamples).difference(statistic_a, samples_a, statistic_b, samples_b)


def bootstrap_fraction(
    statistic: Callable[..., np.ndarray | float],
    *samples: np.ndarray,
    predicate: Callable[[np.ndarray], np.ndarray],
    seed: int = 0,
    n_resamples: int = N_RESAMPLES,
) -> float:
    """Fraction of resamples whose statistic satisfies ``predicate`` (e.g. C8: the peak layer
    lies in the last third). NaN with fewer than :data:`MIN_PROMPTS` prompts."""
    return bootstrap(statistic, *samples, seed=seed, n_resamples=n_resamples).fraction(predicate)


# ------------------------------------------------------------------------- statistics


def bootstrap_of_means(
    statistic: Callable[[np.ndarray], np.ndarray],
    per_prompt: np.ndarray,
    *,
    seed: int = 0,
    n_resamples: int = N_RESAMPLES,
    chunk: int = 50,
) -> Estimate:
    """Percentile bootstrap of a statistic of the mean over prompts, for wide per-prompt data.

    ``per_prompt`` is ``[n, ...]`` (e.g. every neuron's contribution per prompt);
    ``statistic(means)`` maps ``[k, ...]`` means to ``[k]`` numbers. Resampled means are
    computed as (resample counts / n) @ per_prompt, ``chunk`` resamples at a time, with the
    same index matrix as :func:`bootstrap` for the same ``(n, seed, n_resamples)``, so the
    memory is ``chunk`` means at once, never ``n_resamples x n x ...``.
    """
    data = np.asarray(per_prompt, dtype=np.float64)
    n = int(data.shape[0])
    flat = data.reshape(n, -1)  # [n, features]
    with np.errstate(divide="ignore", invalid="ignore"):
        value = float(np.asarray(statistic(flat.mean(0).reshape(1, *data.shape[1:])))[0])
    if n < MIN_PROMPTS or not math.isfinite(value):
        return _undefined(value, n)
    sampler = resampler(n, seed, n_resamples)
    values = []
    for start in range(0, n_resamples, chunk):
        rows = sampler.indices[start : start + chunk]  # [k, n]
        weights = np.zeros((len(rows), n))
        np.add.at(weights, (np.arange(len(rows))[:, None], rows), 1.0 / n)
        means = (weights @ flat).reshape(len(rows), *data.shape[1:])  # [k, ...]
        with np.errstate(divide="ignore", invalid="ignore"):
            values.append(np.asarray(statistic(means), dtype=np.float64))
    return _from_resampled(value, np.concatenate(values), sampler.scheme)


def ratio_of_means(numerator: np.ndarray, denominator: np.ndarray, axis: int = 0) -> np.ndarray:
    return np.mean(numerator, axis=axis) / np.mean(denominator, axis=axis)


def recovered_share(base: np.ndarray, dpo: np.ndarray, intervened: np.ndarray, axis: int = 0) -> np.ndarray:
    """Share of DPO's toxicity drop that an intervention on the base reproduces."""
    drop = np.mean(base, axis=axis) - np.mean(dpo, axis=axis)
    return (np.mean(base, axis=axis) - np.mean(intervened, axis=axis)) / drop


def mean_difference(a: np.ndarray, b: np.ndarray, axis: int = 0) -> np.ndarray:
    return np.mean(a, axis=axis) - np.mean(b, axis=axis)


def pearson_with_ci(x: np.ndarray, y: np.ndarray) -> Estimate:
    """Pearson r with a Fisher-z 95% interval (n = number of pairs); see :func:`p_value`."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    n = len(x)
    if n < 2:
        return _undefined(float("nan"), n, "fisher_z")
    with np.errstate(divide="ignore", invalid="ignore"):
        r = float(np.corrcoef(x, y)[0, 1])
    if n < MIN_PEARSON_PAIRS or not math.isfinite(r):
        return _undefined(r, n, "fisher_z")
    z, se = _fisher_z(r), 1 / math.sqrt(n - 3)
    q = stats.norm.ppf(1 - ONE_SIDED_ALPHA)
    return Estimate(r, math.tanh(z - q * se), math.tanh(z + q * se), method="fisher_z", n=n)


def _fisher_z(r: float) -> float:
    return float(np.arctanh(np.clip(r, -0.999999, 0.999999)))


# ------------------------------------------------------------------------- criteria and verdicts


@dataclass(frozen=True)
class Criterion:
    """Where the paper puts a statistic: ``below`` / ``above`` a threshold, or ``inside`` an open
    interval (equivalence claims, e.g. |r| < 0.1: ``Criterion.inside(-0.1, 0.1)``).

    The claim is the alternative hypothesis H1; H0 is its complement. A tie (the statistic equal
    to the threshold) belongs to H0 ("below" and "above" are strict), unless ``inclusive``: then
    the claim reads "at most" / "at least" and a tie belongs to H1, as the claim's prose says.
    """

    threshold: float | None = None
    paper_side: PaperSide = "below"
    bounds: tuple[float, float] | None = None
    inclusive: bool = False

    def __post_init__(self) -> None:
        if self.paper_side in ("below", "above"):
            if self.threshold is None or not math.isfinite(self.threshold) or self.bounds is not None:
                raise StatsError(
                    f"a {self.paper_side!r} criterion needs a finite threshold and no bounds, got {self}"
                )
        elif self.paper_side == "inside":
            if self.inclusive:
                raise StatsError("an equivalence criterion is an open interval; it cannot be inclusive")
            if self.bounds is None or self.threshold is not None:
                raise StatsError(f"use Criterion.inside(low, high) for an equivalence criterion, got {self}")
            low, high = self.bounds
            if not (math.isfinite(low) and math.isfinite(high) and low < high):
                raise StatsError(
                    f"an equivalence criterion needs finite bounds low < high, got {self.bounds}"
                )
        else:
            raise StatsError(f"paper_side must be 'below', 'above' or 'inside', not {self.paper_side!r}")

    @classmethod
    def inside(cls, low: float, high: float) -> Criterion:
        return cls(paper_side="inside", bounds=(float(low), float(high)))

    @property
    def limit(self) -> float:
        """The threshold of a ``below`` / ``above`` criterion."""
        if self.threshold is None:
            raise StatsError(f"an equivalence criterion has bounds, not a threshold: {self}")
        return self.threshold

    @property
    def interval(self) -> tuple[float, float]:
        """The open interval of an ``inside`` criterion."""
        if self.bounds is None:
            raise StatsError(f"a {self.paper_side!r} criterion has a threshold, not bounds: {self}")
        return self.bounds

    def holds(self, value: float) -> bool:
        """Whether ``value`` lies on the paper's side."""
        if self.paper_side == "below":
            return value <= self.limit if self.inclusive else value < self.limit
        if self.paper_side == "above":
            return value >= self.limit if self.inclusive else value > self.limit
        low, high = self.interval
        return low < value < high

    def phrase(self, fmt: str = "g") -> str:
        """The paper's side in words, e.g. "is below 80%", "is at least 5%", "lies strictly
        between -0.1 and 0.1"; ``fmt`` formats the threshold (``"%"``: a percentage)."""
        if self.paper_side == "inside":
            low, high = (_format(b, fmt) for b in self.interval)
            return f"lies strictly between {low} and {high}"
        words = {
            ("below", False): "is below",
            ("below", True): "is at most",
            ("above", False): "is above",
            ("above", True): "is at least",
        }[(self.paper_side, self.inclusive)]
        return f"{words} {_format(self.limit, fmt)}"

    def negated_phrase(self, fmt: str = "g") -> str:
        """H0 in words: the complement of :meth:`phrase` (a tie goes where ``inclusive`` says)."""
        if self.paper_side == "inside":
            low, high = (_format(b, fmt) for b in self.interval)
            return f"is at most {low} or at least {high}"
        flipped = Criterion(
            threshold=self.threshold,
            paper_side="above" if self.paper_side == "below" else "below",
            inclusive=not self.inclusive,
        )
        return flipped.phrase(fmt)

    def hypotheses(self, name: str = "θ") -> tuple[str, str]:
        """The null and alternative hypotheses in words, e.g. ("θ ≥ 0.8", "θ < 0.8")."""
        t = f"{self.threshold:g}" if self.threshold is not None else ""
        if self.paper_side == "below":
            return (
                (f"{name} > {t}", f"{name} ≤ {t}") if self.inclusive else (f"{name} ≥ {t}", f"{name} < {t}")
            )
        if self.paper_side == "above":
            return (
                (f"{name} < {t}", f"{name} ≥ {t}") if self.inclusive else (f"{name} ≤ {t}", f"{name} > {t}")
            )
        low, high = self.interval
        return f"{name} ≤ {low:g} or {name} ≥ {high:g}", f"{low:g} < {name} < {high:g}"


def _format(value: float, fmt: str) -> str:
    return f"{value:.0%}" if fmt == "%" else f"{value:{fmt}}"


def combined_verdict(verdicts: Sequence[Verdict]) -> Verdict:
    """The verdict of a claim made of parts that must all hold (an intersection-union test):
    not measurable if any part is, else contradicts if any part contradicts, else replicates
    only if every part replicates, else inconclusive. Its p-value is the largest of the parts'."""
    if not verdicts:
        raise StatsError("a combined verdict needs at least one part")
    if "not measurable" in verdicts:
        return "not measurable"
    if "contradicts" in verdicts:
        return "contradicts"
    return "replicates" if all(v == "replicates" for v in verdicts) else "inconclusive"


def verdict(estimate: Estimate, criterion: Criterion) -> Verdict:
    """replicates / contradicts / inconclusive from the 95% interval (an exact figure: from
    its value); "not measurable" when the figure or its interval is undefined."""
    if not estimate.measurable:
        return "not measurable"
    if estimate.exact:
        return "replicates" if criterion.holds(estimate.value) else "contradicts"
    low, high = estimate.low, estimate.high
    if criterion.paper_side in ("below", "above"):
        # The paper's side of the interval's far end, the other side of its near end; an
        # inclusive criterion puts the threshold itself on the paper's side.
        far, near = (high, low) if criterion.paper_side == "below" else (low, high)
        paper, other = criterion.holds(far), not criterion.holds(near)
    else:
        bound_low, bound_high = criterion.interval
        paper = bound_low < low and high < bound_high
        other = high <= bound_low or low >= bound_high
    return "replicates" if paper else "contradicts" if other else "inconclusive"


def p_value(estimate: Estimate, criterion: Criterion) -> float:
    """One-sided p-value of H0 "the paper's claim does not hold" against H1 "it holds".

    - ``bootstrap``: (1 + #resamples on H0's side, ties included) / (1 + n_resamples), the
      inversion of the percentile interval (module docstring);
    - ``fisher_z``: the normal test on z = atanh(r) with standard error 1/sqrt(n - 3);
    - ``exact``: 0 when the value lies on the paper's side, else 1 (no sampling error);
    - ``inside`` criteria: TOST, the larger of the two one-sided p-values.

    NaN when the estimate is not measurable.
    """
    if not estimate.measurable:
        return float("nan")
    if estimate.exact:
        return 0.0 if criterion.holds(estimate.value) else 1.0
    if criterion.paper_side == "inside":
        low, high = criterion.interval
        return max(
            _one_sided(estimate, low, "above"),
            _one_sided(estimate, high, "below"),
        )
    return _one_sided(estimate, criterion.limit, criterion.paper_side, criterion.inclusive)


def p_fails(estimate: Estimate, criterion: Criterion) -> float:
    """One-sided p-value of H0 "the criterion holds" against H1 "it does not" (the other side of
    the threshold, the threshold itself included unless ``inclusive``): the test that a
    "contradicts" verdict reads. ``inside`` criteria: H1 is "at or beyond one of the bounds", a
    union of two one-sided alternatives, so p is twice the smaller of their p-values (Bonferroni,
    capped at 1). NaN when the estimate is not measurable."""
    if not estimate.measurable:
        return float("nan")
    if estimate.exact:
        return 1.0 if criterion.holds(estimate.value) else 0.0
    if criterion.paper_side == "inside":
        low, high = criterion.interval
        below = _one_sided(estimate, low, "below", inclusive=True)  # H1: at or below the lower bound
        above = _one_sided(estimate, high, "above", inclusive=True)
        return min(1.0, 2 * min(below, above))
    flipped: Literal["below", "above"] = "above" if criterion.paper_side == "below" else "below"
    return _one_sided(estimate, criterion.limit, flipped, inclusive=not criterion.inclusive)


def decide(p_holds: float, p_fails: float, side_alpha: float = ONE_SIDED_ALPHA) -> Verdict:
    """The verdict from the two one-sided p-values of a claim: "replicates" when H0 "it does not
    hold" is rejected at ``side_alpha``, "contradicts" when H0 "it holds" is, "inconclusive"
    otherwise, "not measurable" when either is NaN. At most one of the two nulls is true, so a
    wrong definite verdict has probability at most ``side_alpha``."""
    if math.isnan(p_holds) or math.isnan(p_fails):
        return "not measurable"
    if p_holds <= side_alpha:
        return "replicates"
    if p_fails <= side_alpha:
        return "contradicts"
    return "inconclusive"


def _one_sided(
    estimate: Estimate, threshold: float, paper_side: Literal["below", "above"], inclusive: bool = False
) -> float:
    if estimate.method == "fisher_z":
        if estimate.n is None:
            raise StatsError("a Fisher-z estimate needs its number of pairs n for a p-value")
        with np.errstate(divide="ignore"):
            z_threshold = float(np.arctanh(np.clip(threshold, -1.0, 1.0)))
        score = (_fisher_z(estimate.value) - z_threshold) * math.sqrt(estimate.n - 3)
        return float(stats.norm.cdf(score) if paper_side == "below" else stats.norm.sf(score))
    if estimate.resampled is None:
        raise StatsError(
            "this estimate carries no bootstrap distribution (it was not made by bootstrap/Resampler), "
            "so no p-value can be computed from it"
        )
    resampled = estimate.resampled
    if paper_side == "below":  # H0: at or above the threshold (above it, when inclusive)
        on_null_side = resampled > threshold if inclusive else resampled >= threshold
    else:
        on_null_side = resampled < threshold if inclusive else resampled <= threshold
    return float((1 + np.count_nonzero(on_null_side)) / (1 + len(resampled)))
