"""The one decision rule (dpoclaims.claims.decision, dpoclaims.claims.registry.decide) and the
decomposition's resampled statistics (cross-fitting, the null control) on numbers whose truth is
known: no model."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from dpoclaims.claims import paper
from dpoclaims.claims.checks import DecompositionStatistics
from dpoclaims.claims.decision import All, Either, Figure, Leaf, evaluate, verdict
from dpoclaims.claims.registry import Measured, decide, null_summary
from dpoclaims.measure.decomposition import Decomposition, NeuronSample, half_split
from dpoclaims.stats import N_RESAMPLES, Criterion, Estimate, bootstrap, p_fails, p_value

ALPHA = paper.SIDE_ALPHA
BELOW = Criterion(threshold=0.8, paper_side="below")


def mean(x: np.ndarray, axis: int = 0) -> np.ndarray:
    return np.mean(x, axis=axis)


def around(value: float, spread: float = 0.05, n: int = 300, seed: int = 0) -> Estimate:
    noise = np.random.default_rng(seed).normal(0, spread, n)
    return bootstrap(mean, value + noise - noise.mean(), seed=seed)


def test_the_family_is_every_claim_test_of_the_table():
    from dpoclaims.plugin.claim_tests import family_tests

    ids = [cid for entry in paper.ENTRIES for cid in entry.claim_ids()]
    assert paper.FAMILY_SIZE == len(ids) == len(set(ids))
    assert paper.SIDE_ALPHA == pytest.approx(0.05 / paper.FAMILY_SIZE)
    families = {entry.family for entry in paper.ENTRIES}
    tests = [t for f in families for t in family_tests(f"test_{f}").values()]
    n_generated = sum(
        len(getattr(t, "pytestmark", [None])[0].args[1]) if t.__code__.co_argcount == 4 else 1 for t in tests
    )
    assert n_generated == paper.FAMILY_SIZE


def test_a_leaf_replicates_far_on_the_paper_side_and_contradicts_far_on_the_other():
    for value, expected in ((0.5, "replicates"), (1.1, "contradicts"), (0.8, "inconclusive")):
        outcome = evaluate(Leaf("x", "x", BELOW), {"x": Figure(around(value))}, ALPHA)
        assert verdict(outcome, ALPHA) == expected, value
    far = around(0.5)
    assert p_value(far, BELOW) == pytest.approx(1 / (1 + N_RESAMPLES))
    assert p_fails(far, BELOW) == pytest.approx(1.0)


def test_a_zero_width_interval_gives_a_definite_verdict():
    """Every resample the same figure (C12 on the toy: one neuron scaled changes no prompt's toxicity)."""
    zero = bootstrap(mean, np.zeros(50))
    rise = Criterion(threshold=0.0, paper_side="above")
    assert (zero.low, zero.high) == (0.0, 0.0)
    assert (
        verdict(evaluate(Leaf("rise", "rise", rise), {"rise": Figure(zero)}, ALPHA), ALPHA) == "contradicts"
    )
    at_most = Criterion(threshold=0.0, paper_side="below", inclusive=True)
    assert verdict(evaluate(Leaf("x", "x", at_most), {"x": Figure(zero)}, ALPHA), ALPHA) == "replicates"


def test_all_is_an_intersection_union_and_either_its_mirror():
    figures = {"a": Figure(around(0.5, seed=1)), "b": Figure(around(0.76, spread=0.5, seed=2))}
    a, b = Leaf("a", "a", BELOW), Leaf("b", "b", BELOW)
    one_a, one_b = evaluate(a, figures, ALPHA), evaluate(b, figures, ALPHA)
    both, either = evaluate(All((a, b)), figures, ALPHA), evaluate(Either((a, b)), figures, ALPHA)
    assert both.p_holds == max(one_a.p_holds, one_b.p_holds)
    assert both.p_fails == min(1.0, 2 * min(one_a.p_fails, one_b.p_fails))
    assert either.p_holds == min(1.0, 2 * min(one_a.p_holds, one_b.p_holds))
    assert either.p_fails == max(one_a.p_fails, one_b.p_fails)
    assert verdict(both, ALPHA) == "inconclusive" and verdict(either, ALPHA) == "replicates"


def test_a_ratio_whose_denominator_is_not_shown_positive_is_not_measurable():
    share = around(0.5)
    for denominator, measurable in ((around(1.0), True), (around(0.0), False), (around(-1.0), False)):
        figure = Figure(share, (("DPO's drop", denominator),))
        outcome = evaluate(Leaf("share", "share", BELOW), {"share": figure}, ALPHA)
        assert outcome.measurable == measurable
        assert (verdict(outcome, ALPHA) == "not measurable") != measurable
        if not measurable:
            assert "DPO's drop" in outcome.problem and math.isnan(outcome.p_holds)


def test_a_figure_inside_the_null_s_interval_cannot_replicate():
    entry = paper.entry("C6[increasing]")
    figure = Figure(around(0.5, spread=0.02))  # a large fraction: >= 25%, decisively
    inside = decide(
        entry,
        None,
        Measured({"fraction": figure}, null=np.linspace(0.45, 0.55, 1000)),
        n_layers=1,
        n_neurons=1,
    )
    assert inside.verdict == "inconclusive" and "null control" in inside.finding
    assert inside.details["null"]["contains"] and inside.p_value <= ALPHA  # the test alone would replicate
    outside = decide(
        entry, None, Measured({"fraction": figure}, null=np.linspace(0.6, 0.7, 1000)), n_layers=1, n_neurons=1
    )
    assert outside.verdict == "replicates" and not outside.details["null"]["contains"]
    undefined = null_summary(np.where(np.arange(1000) % 2 == 0, np.nan, 0.5), 0.5)
    assert (
        undefined["interval"] is None and not undefined["contains"]
    )  # defined on half the draws: no interval


# ------------------------------------------------------------------------- cross-fitting and the null


N_PROMPTS, N_LAYERS, D_MLP = 200, 2, 200


def synthetic_sample(change: np.ndarray, noise: float, seed: int = 0) -> tuple[NeuronSample, Decomposition]:
    """Per-prompt activations of base and DPO for N_LAYERS x D_MLP neurons; DPO's activation is the
    base's minus ``change`` (``[N]``) plus noise; each neuron writes its cosine onto the probe, so
    D_i(p) = (m_base - m_dpo) * cos_i."""
    rng = np.random.default_rng(seed)
    n_neurons = N_LAYERS * D_MLP
    cosines = rng.uniform(-1, 1, n_neurons)
    mean_base = rng.normal(0, 1, n_neurons)
    base = mean_base + rng.normal(0, 0.3, (N_PROMPTS, n_neurons))
    dpo = base - change + rng.normal(0, noise, (N_PROMPTS, n_neurons))
    contribution = (base - dpo) * cosines
    data = np.stack([contribution, base, dpo], axis=1)
    shape = (N_LAYERS, D_MLP)
    t = lambda a: torch.tensor(a, dtype=torch.float32).reshape(shape)  # noqa: E731
    d = Decomposition(
        t(cosines), t(base.mean(0)), t(dpo.mean(0)), torch.tensor(contribution).reshape(N_PROMPTS, *shape), {}
    )
    return NeuronSample(data, half_split(N_PROMPTS, 0)), d


def test_under_pure_noise_the_cross_fitted_reduction_is_not_shown_positive():
    """DPO changes nothing systematic: the in-sample four groups' total is positive by selection
    (noise picked for its sign), the cross-fitted one is not, and the null's fraction of
    neurons increasing the projection is one half."""
    sample, d = synthetic_sample(np.zeros(N_LAYERS * D_MLP), noise=0.2)
    statistics = DecompositionStatistics(d)
    estimates = sample.bootstrap(statistics, seed=0)
    in_sample = estimates["reducing"]  # cross-fitted
    naive = float((d.contribution_per_prompt.mean(0).flatten().clamp(min=0)).sum())
    assert naive > 0
    assert p_value(in_sample, Criterion(threshold=0.0, paper_side="above")) > ALPHA
    null = sample.null(statistics, seed=0)
    assert abs(np.median(null["fraction increasing"]) - 0.5) < 0.02


def test_with_a_planted_change_cross_fitting_recovers_the_groups_shares():
    """A change planted in known neurons: the cross-fitted TP- share is the planted one."""
    n_neurons = N_LAYERS * D_MLP
    sample, d = synthetic_sample(np.zeros(n_neurons), noise=0.0)
    cos, base = d.cosines.flatten().numpy(), d.mean_base.flatten().numpy()
    change = np.zeros(n_neurons)
    tp = (cos > 0.3) & (base > 0.3)  # toxic, positive: dampened -> TP-
    an = (cos < -0.3) & (base < -0.3)  # anti-toxic, negative: less negative -> AN-
    change[tp], change[an] = 0.5, -0.5
    sample, d = synthetic_sample(change, noise=0.05)
    truth = {g: float(np.sum(np.abs(change[m] * cos[m]))) for g, m in (("TP-", tp), ("AN-", an))}
    share = truth["TP-"] / (truth["TP-"] + truth["AN-"])
    estimates = sample.bootstrap(DecompositionStatistics(d), seed=0)
    measured = estimates["TP-"].value / estimates["reducing"].value
    assert measured == pytest.approx(share, abs=0.02)
    assert estimates["net"].value == pytest.approx(sum(truth.values()), rel=0.05)


def test_the_folds_are_a_seeded_half():
    a = half_split(11, 3)
    assert a.sum() == 6 and np.array_equal(a, half_split(11, 3)) and not np.array_equal(a, half_split(11, 4))
