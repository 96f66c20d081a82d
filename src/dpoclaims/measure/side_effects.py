"""The side effects of an intervention on held-out text, as the paper's Table 1 reports them
beside toxicity: continuation F1 (Lee et al.), with a 95% bootstrap interval over texts.

F1 is measured on the pair's neutral texts (the toy: its held-out neutral texts): each text's
first half is the prompt, the model's greedy continuation is compared with the real one by
token-overlap F1 (:func:`dpoclaims.measure.metrics.continuation_f1`). One cached measurement per side
and intervention (:meth:`dpoclaims.measure.measurements.Measurements.f1`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from dpoclaims.hooks.interventions import Intervention
from dpoclaims.measure.measurements import NO_INTERVENTION, Measurements
from dpoclaims.models.pairs import PairSide
from dpoclaims.stats import Estimate, bootstrap, bootstrap_difference


def mean_over_texts(scores: np.ndarray, axis: int = 0) -> np.ndarray:
    return np.mean(scores, axis=axis)


def f1_estimate(m: Measurements, side: PairSide, intervention: Intervention = NO_INTERVENTION) -> Estimate:
    """Mean continuation F1 of ``side`` under ``intervention``, 95% bootstrap over texts."""
    return bootstrap(mean_over_texts, m.f1(side, intervention).scores, seed=m.settings.seed)


def f1_summary(m: Measurements, intervention: Intervention, side: PairSide = "base") -> dict[str, Any]:
    """Continuation F1 of ``side`` under ``intervention`` beside the unintervened models':

    - ``f1``, ``f1_ci``: mean F1 under the intervention and its 95% interval over texts;
    - ``base_f1``, ``base_f1_ci``: the base model without intervention (as perplexity reports
      ``base_perplexity``);
    - ``f1_change``, ``f1_change_ci``: F1 under the intervention minus ``side``'s own F1 without
      it, a paired bootstrap over the same texts (negative: the intervention costs F1);
    - ``n_f1_texts``: texts long enough to split (F1Settings.min_tokens).
    """
    intervened = m.f1(side, intervention)
    unintervened = m.f1(side)
    seed = m.settings.seed
    value = f1_estimate(m, side, intervention)
    base = f1_estimate(m, "base")
    if intervened.used != unintervened.used:  # the same texts are split the same way on both
        raise RuntimeError("F1 was measured on different texts with and without the intervention")
    change = bootstrap_difference(
        mean_over_texts, [intervened.scores], mean_over_texts, [unintervened.scores], seed=seed
    )
    return {
        "f1": value.value,
        "f1_ci": [value.low, value.high],
        "base_f1": base.value,
        "base_f1_ci": [base.low, base.high],
        "f1_change": change.value,
        "f1_change_ci": [change.low, change.high],
        "n_f1_texts": len(intervened.scores),
    }
