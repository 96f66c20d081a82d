"""Bootstrap confidence intervals over prompts (paired resampling)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import stats

CONFIDENCE = 0.95
N_RESAMPLES = 2000


@dataclass(frozen=True)
class Estimate:
    value: float
    low: float
    high: float


def bootstrap(
    statistic: Callable[..., np.ndarray | float],
    *samples: np.ndarray,
    seed: int = 0,
    n_resamples: int = N_RESAMPLES,
) -> Estimate:
    """Percentile bootstrap of ``statistic(*samples)``, resampling prompts jointly.

    Each sample has prompts on axis 0; ``statistic`` must accept an ``axis`` keyword
    (scipy's vectorised form) and reduce over it.
    """
    arrays = [np.asarray(s, dtype=np.float64) for s in samples]
    value = float(statistic(*arrays, axis=0))
    if len(arrays[0]) < 2 or not np.isfinite(value):
        return Estimate(value, float("nan"), float("nan"))
    result = stats.bootstrap(
        arrays,
        statistic,
        paired=True,
        vectorized=True,
        axis=0,
        n_resamples=n_resamples,
        confidence_level=CONFIDENCE,
        method="percentile",
        rng=np.random.default_rng(seed),
    )
    low, high = float(result.confidence_interval.low), float(result.confidence_interval.high)
    return Estimate(value, low, high)


def ratio_of_means(numerator: np.ndarray, denominator: np.ndarray, axis: int = 0) -> np.ndarray:
    return np.mean(numerator, axis=axis) / np.mean(denominator, axis=axis)


def recovered_share(base: np.ndarray, dpo: np.ndarray, intervened: np.ndarray, axis: int = 0) -> np.ndarray:
    """Share of DPO's toxicity drop that an intervention on the base reproduces."""
    drop = np.mean(base, axis=axis) - np.mean(dpo, axis=axis)
    return (np.mean(base, axis=axis) - np.mean(intervened, axis=axis)) / drop


def mean_difference(a: np.ndarray, b: np.ndarray, axis: int = 0) -> np.ndarray:
    return np.mean(a, axis=axis) - np.mean(b, axis=axis)


def pearson_with_ci(x: np.ndarray, y: np.ndarray) -> Estimate:
    """Pearson r with a Fisher-z 95% interval (n = number of pairs)."""
    r = float(np.corrcoef(x, y)[0, 1])
    n = len(x)
    if n < 4 or not np.isfinite(r):
        return Estimate(r, float("nan"), float("nan"))
    z, se = np.arctanh(np.clip(r, -0.999999, 0.999999)), 1 / np.sqrt(n - 3)
    q = stats.norm.ppf(0.5 + CONFIDENCE / 2)
    return Estimate(r, float(np.tanh(z - q * se)), float(np.tanh(z + q * se)))
