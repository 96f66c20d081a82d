"""The statistical core: one resampling scheme, verdicts, p-values, Holm, paired differences, F1."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from scipy import stats as scipy_stats

from dpoclaims import stats
from dpoclaims.measure.metrics import normalize_answer, overlap_f1, token_f1
from dpoclaims.stats import (
    CONFIDENCE,
    N_RESAMPLES,
    ONE_SIDED_ALPHA,
    Criterion,
    Estimate,
    Resampler,
    StatsError,
    bootstrap,
    bootstrap_difference,
    bootstrap_fraction,
    difference,
    mean_difference,
    p_value,
    pearson_with_ci,
    ratio_of_means,
    recovered_share,
    verdict,
)


def mean(x: np.ndarray, axis: int = 0) -> np.ndarray:
    return np.mean(x, axis=axis)


def peak_layer(per_layer: np.ndarray, axis: int = 0) -> np.ndarray:
    """[prompts, layers] -> the layer with the largest mean over prompts."""
    return np.argmax(np.mean(per_layer, axis=axis), axis=-1)


finite_unit = st.floats(0, 1, allow_nan=False)
samples_strategy = st.lists(finite_unit, min_size=5, max_size=60)


# ------------------------------------------------------------------------- the resampling scheme


def test_intervals_are_those_scipy_gave():
    """The index draw and quantile rule are scipy's paired percentile bootstrap: switching to
    the shared Resampler did not change any interval."""
    rng = np.random.default_rng(3)
    for n in (5, 40, 300):
        base, dpo, other = rng.random(n), rng.random(n) * 0.5, rng.random(n) * 0.8
        for statistic, samples in (
            (mean_difference, (base, dpo)),
            (ratio_of_means, (base + 1, dpo + 1)),
            (recovered_share, (base + 0.5, dpo, other)),
        ):
            ours = bootstrap(statistic, *samples, seed=7)
            theirs = scipy_stats.bootstrap(
                samples,
                statistic,
                paired=True,
                vectorized=True,
                axis=0,
                n_resamples=N_RESAMPLES,
                confidence_level=CONFIDENCE,
                method="percentile",
                rng=np.random.default_rng(7),
            )
            np.testing.assert_array_equal(ours.resampled, theirs.bootstrap_distribution)
            assert ours.low == pytest.approx(theirs.confidence_interval.low, abs=1e-12)
            assert ours.high == pytest.approx(theirs.confidence_interval.high, abs=1e-12)


@settings(max_examples=30, deadline=None)
@given(half=st.lists(st.floats(-5, 5, allow_nan=False), min_size=2, max_size=40), seed=st.integers(0, 10**6))
def test_interval_contains_the_point_for_symmetric_data(half, seed):
    centre = 1.25
    data = np.array(half + [2 * centre - x for x in half])  # symmetric about centre: mean == centre
    estimate = bootstrap(mean, data, seed=seed)
    assert estimate.value == pytest.approx(centre)
    assert estimate.low - 1e-9 <= estimate.value <= estimate.high + 1e-9


@settings(max_examples=20, deadline=None)
@given(data=samples_strategy, seed=st.integers(0, 10**6))
def test_same_seed_same_result_other_seed_other_indices(data, seed):
    x = np.array(data)
    first, second = bootstrap(mean, x, seed=seed), bootstrap(mean, x, seed=seed)
    assert (first.value, first.low, first.high) == (second.value, second.low, second.high)
    np.testing.assert_array_equal(first.resampled, second.resampled)
    np.testing.assert_array_equal(Resampler(len(x), seed).indices, Resampler(len(x), seed).indices)
    assert not np.array_equal(Resampler(len(x), seed).indices, Resampler(len(x), seed + 1).indices)


@settings(max_examples=20, deadline=None)
@given(
    data=st.lists(st.tuples(finite_unit, finite_unit, finite_unit), min_size=5, max_size=60),
    seed=st.integers(0, 10**6),
)
def test_statistics_over_the_same_prompts_share_indices(data, seed):
    base, dpo, ablated = (np.array(column) for column in zip(*data))
    scaled = bootstrap(mean, 3 * base + 1, seed=seed)
    plain = bootstrap(mean, base, seed=seed)
    np.testing.assert_allclose(scaled.resampled, 3 * plain.resampled + 1)  # resample by resample
    assert scaled.scheme == plain.scheme == (len(base), seed, N_RESAMPLES)
    # a Resampler's estimates and bootstrap()'s with the same seed are the same draws
    resampler = Resampler(len(base), seed)
    np.testing.assert_array_equal(resampler.estimate(mean, base).resampled, plain.resampled)
    # a paired difference is the difference of the paired resampled statistics
    share = bootstrap(recovered_share, base + 2, dpo, ablated, seed=seed)
    np.testing.assert_allclose(
        difference(share, plain).resampled, share.resampled - plain.resampled, equal_nan=True
    )
    joint = bootstrap(mean_difference, base, dpo, seed=seed)
    separate = bootstrap_difference(mean, (base,), mean, (dpo,), seed=seed)
    np.testing.assert_allclose(separate.resampled, joint.resampled, atol=1e-12)
    assert separate.value == pytest.approx(joint.value)


def test_paired_difference_is_narrower_than_either_interval():
    """Two shares over the same prompts move together; their paired difference is tight."""
    rng = np.random.default_rng(0)
    n = 200
    base = rng.uniform(0.3, 0.9, n)
    dpo = base * 0.4
    plain = base - 0.10 * (base - dpo) + rng.normal(0, 0.02, n)
    positive = plain - 0.05 * (base - dpo)  # recovers 5 points more, prompt by prompt
    resampler = Resampler(n, seed=4)
    share_plain = resampler.estimate(recovered_share, base, dpo, plain)
    share_positive = resampler.estimate(recovered_share, base, dpo, positive)
    gain = resampler.difference(recovered_share, (base, dpo, positive), recovered_share, (base, dpo, plain))
    assert gain.value == pytest.approx(share_positive.value - share_plain.value)
    assert gain.high - gain.low < 0.25 * (share_plain.high - share_plain.low)
    assert verdict(gain, Criterion(threshold=0.0, paper_side="above")) == "replicates"
    assert p_value(gain, Criterion(threshold=0.0, paper_side="above")) == pytest.approx(1 / (1 + N_RESAMPLES))
    with pytest.raises(StatsError, match="same indices"):
        difference(share_positive, Resampler(n, seed=5).estimate(recovered_share, base, dpo, plain))
    with pytest.raises(StatsError, match="bootstrap estimates"):
        difference(share_positive, Estimate.exact_value(0.1))


def test_resampling_in_blocks_changes_nothing(monkeypatch):
    rng = np.random.default_rng(1)
    per_layer = rng.random((50, 6))
    whole = bootstrap(peak_layer, per_layer, seed=2)
    monkeypatch.setattr(stats, "_BLOCK_ELEMENTS", 7 * 50 * 6)  # 7 resamples per block
    blocked = stats.Resampler(50, 2).estimate(peak_layer, per_layer)
    np.testing.assert_array_equal(blocked.resampled, whole.resampled)


def test_fraction_of_resamples_with_the_peak_in_the_last_third():
    rng = np.random.default_rng(0)
    n_layers, late = 12, 8
    clear = rng.normal(0, 1, (80, n_layers))
    clear[:, 10] += 3.0  # every prompt peaks at layer 10
    in_last_third = lambda peak: peak >= late  # noqa: E731
    assert bootstrap_fraction(peak_layer, clear, predicate=in_last_third, seed=0) == 1.0
    flat = rng.normal(0, 1, (80, n_layers))
    flat[:, 3] += 0.15
    flat[:, 10] += 0.15  # two near-equal peaks, one early and one late
    fraction = bootstrap_fraction(peak_layer, flat, predicate=in_last_third, seed=0)
    assert 0.05 < fraction < 0.95
    # the same figure through a criterion: the peak layer lies above late - 0.5
    estimate = bootstrap(peak_layer, flat, seed=0)
    criterion = Criterion(threshold=late - 0.5, paper_side="above")
    assert p_value(estimate, criterion) == pytest.approx(
        (1 + (1 - fraction) * N_RESAMPLES) / (1 + N_RESAMPLES)
    )
    assert math.isnan(bootstrap_fraction(peak_layer, clear[:1], predicate=in_last_third))  # one prompt


def test_bad_samples_and_statistics_get_clear_errors():
    with pytest.raises(StatsError, match="one row per prompt"):
        bootstrap(mean_difference, np.ones(5), np.ones(6))
    with pytest.raises(StatsError, match="one number"):
        bootstrap(lambda x, axis: np.mean(x, axis=axis), np.ones((5, 3)))  # [3] per sample
    with pytest.raises(StatsError, match="one number per resample"):
        bootstrap(lambda x, axis: np.mean(x), np.ones(5))  # ignores axis: one number for all resamples
    with pytest.raises(StatsError, match="scalar"):
        bootstrap(mean, np.float64(1.0))
    with pytest.raises(StatsError, match="at least one"):
        bootstrap(mean)


# ------------------------------------------------------------------------- undefined figures


@pytest.mark.parametrize("n", [0, 1])
def test_fewer_than_two_prompts_is_not_measurable(n):
    estimate = bootstrap(mean, np.full(n, 0.3))
    criterion = Criterion(threshold=0.8, paper_side="below")
    assert not estimate.measurable
    assert math.isnan(estimate.low) and math.isnan(estimate.high)
    assert verdict(estimate, criterion) == "not measurable"
    assert math.isnan(p_value(estimate, criterion))
    assert math.isnan(difference(estimate, bootstrap(mean, np.full(n, 0.1))).low)


def test_undefined_values_and_resamples_are_not_measurable():
    criterion = Criterion(threshold=0.5, paper_side="above")
    undefined = bootstrap(ratio_of_means, np.ones(4), np.zeros(4))  # 1/0 on the full sample
    assert not math.isfinite(undefined.value)
    assert verdict(undefined, criterion) == "not measurable"
    # defined on the full sample, 0/0 on the resamples that draw only the zero-denominator prompts
    partly = bootstrap(ratio_of_means, np.array([0.0, 0.0, 1.0]), np.array([0.0, 0.0, 1.0]), seed=0)
    assert partly.value == 1.0 and np.isnan(partly.resampled).any()
    assert verdict(partly, criterion) == "not measurable"
    assert math.isnan(p_value(partly, criterion))
    assert verdict(Estimate(float("nan"), 0.0, 1.0), criterion) == "not measurable"
    assert verdict(pearson_with_ci(np.arange(3.0), np.arange(3.0)), Criterion.inside(-0.1, 0.1)) == (
        "not measurable"
    )


# ------------------------------------------------------------------------- exact figures


def test_exact_figures_are_decided_by_their_value():
    cosine = Estimate.exact_value(0.995)
    assert cosine.exact and cosine.low == cosine.high == cosine.value == 0.995
    assert cosine.exact is True
    above, below = (
        Criterion(threshold=0.99, paper_side="above"),
        Criterion(threshold=0.999, paper_side="above"),
    )
    assert (verdict(cosine, above), p_value(cosine, above)) == ("replicates", 0.0)
    assert (verdict(cosine, below), p_value(cosine, below)) == ("contradicts", 1.0)
    assert verdict(Estimate.exact_value(0.99), above) == "contradicts"  # the threshold is H0's
    assert verdict(Estimate.exact_value(float("nan")), above) == "not measurable"
    with pytest.raises(StatsError, match="no bootstrap distribution"):
        p_value(Estimate(0.5, 0.4, 0.6), above)  # an interval made by hand carries no distribution


# ------------------------------------------------------------------------- criteria and verdicts


def test_criteria_validate_and_state_their_hypotheses():
    assert Criterion(threshold=0.8, paper_side="below").hypotheses("share") == ("share ≥ 0.8", "share < 0.8")
    assert Criterion(threshold=0.5, paper_side="below", inclusive=True).hypotheses("r") == (
        "r > 0.5",
        "r ≤ 0.5",
    )
    assert Criterion(threshold=0.05, paper_side="above", inclusive=True).hypotheses("s") == (
        "s < 0.05",
        "s ≥ 0.05",
    )
    assert Criterion(threshold=0, paper_side="above").hypotheses() == ("θ ≤ 0", "θ > 0")
    assert Criterion.inside(-0.1, 0.1).hypotheses("r") == ("r ≤ -0.1 or r ≥ 0.1", "-0.1 < r < 0.1")
    with pytest.raises(StatsError, match="finite threshold"):
        Criterion(paper_side="below")
    with pytest.raises(StatsError, match="finite threshold"):
        Criterion(threshold=float("nan"), paper_side="above")
    with pytest.raises(StatsError, match="low < high"):
        Criterion.inside(0.1, -0.1)
    with pytest.raises(StatsError, match="Criterion.inside"):
        Criterion(threshold=0.1, paper_side="inside")
    with pytest.raises(StatsError, match="paper_side"):
        Criterion(threshold=0.1, paper_side="sideways")  # type: ignore[arg-type]


criteria = st.one_of(
    st.builds(Criterion, threshold=st.floats(-2, 2), paper_side=st.sampled_from(["below", "above"])),
    st.tuples(st.floats(-2, 2), st.floats(0.01, 2)).map(lambda t: Criterion.inside(t[0], t[0] + t[1])),
)


def _paper_region(criterion: Criterion) -> tuple[float, float]:
    """The paper's side as an open interval (a, b)."""
    if criterion.paper_side == "below":
        return (-math.inf, criterion.threshold)
    if criterion.paper_side == "above":
        return (criterion.threshold, math.inf)
    return criterion.bounds


@given(bounds=st.tuples(st.floats(-3, 3), st.floats(-3, 3)).map(sorted), criterion=criteria)
def test_verdict_is_where_the_interval_lies(bounds, criterion):
    low, high = bounds
    estimate = Estimate((low + high) / 2, low, high)
    a, b = _paper_region(criterion)
    wholly_paper = a < low and high < b
    wholly_other = high <= a or low >= b  # [low, high] misses (a, b)
    expected = "replicates" if wholly_paper else "contradicts" if wholly_other else "inconclusive"
    assert verdict(estimate, criterion) == expected
    assert verdict(Estimate.exact_value(low), criterion) == (
        "replicates" if criterion.holds(low) else "contradicts"
    )


@settings(max_examples=40, deadline=None)
@given(
    data=st.lists(st.floats(-1, 1, allow_nan=False), min_size=8, max_size=60),
    threshold=st.floats(-0.5, 0.5),
    side=st.sampled_from(["below", "above"]),
    seed=st.integers(0, 10**6),
)
def test_bootstrap_p_value_agrees_with_the_verdict(data, threshold, side, seed):
    """p inverts the percentile interval, up to the quantile's interpolation between two
    resamples: replicates => p <= alpha + 2 / (1 + B), contradicts => p >= 1 - alpha - 2 / (1 + B),
    and p < alpha - 2 / (1 + B) => replicates (alpha = 2.5%, B resamples)."""
    estimate = bootstrap(mean, np.array(data), seed=seed)
    criterion = Criterion(threshold=threshold, paper_side=side)
    p, decided = p_value(estimate, criterion), verdict(estimate, criterion)
    slack = 2 / (1 + N_RESAMPLES)
    assert 1 / (1 + N_RESAMPLES) <= p <= 1
    if decided == "replicates":
        assert p <= ONE_SIDED_ALPHA + slack
    if decided == "contradicts":
        assert p >= 1 - ONE_SIDED_ALPHA - slack
    if p < ONE_SIDED_ALPHA - slack:
        assert decided == "replicates"


@settings(max_examples=25, deadline=None)
@given(distance=st.floats(0.3, 5), seed=st.integers(0, 10**6))
def test_p_value_is_small_far_on_the_paper_side_and_large_far_on_the_other(distance, seed):
    noise = np.random.default_rng(seed).normal(0, 0.1, 60)
    noise -= noise.mean()
    threshold = 0.8
    criterion = Criterion(threshold=threshold, paper_side="below")
    paper = bootstrap(mean, threshold - distance + noise, seed=seed)
    other = bootstrap(mean, threshold + distance + noise, seed=seed)
    assert p_value(paper, criterion) == pytest.approx(1 / (1 + N_RESAMPLES))
    assert p_value(other, criterion) == 1.0
    assert (verdict(paper, criterion), verdict(other, criterion)) == ("replicates", "contradicts")
    flipped = Criterion(threshold=threshold, paper_side="above")
    assert p_value(paper, flipped) == 1.0 and p_value(other, flipped) < 0.001


def test_equivalence_p_value_is_the_larger_one_sided_p_value():
    rng = np.random.default_rng(0)
    near_zero = rng.normal(0.0, 0.05, 200)
    estimate = bootstrap(mean, near_zero, seed=1)
    criterion = Criterion.inside(-0.1, 0.1)
    tost = p_value(estimate, criterion)
    one_sided = (
        p_value(estimate, Criterion(threshold=-0.1, paper_side="above")),
        p_value(estimate, Criterion(threshold=0.1, paper_side="below")),
    )
    assert tost == max(one_sided)
    assert tost < 0.01 and verdict(estimate, criterion) == "replicates"
    shifted = bootstrap(mean, near_zero + 0.1, seed=1)  # centred on the bound
    assert 0.2 < p_value(shifted, criterion) < 0.8 and verdict(shifted, criterion) == "inconclusive"


# ------------------------------------------------------------------------- Pearson r (Fisher z)


def test_pearson_p_values_follow_fisher_z():
    rng = np.random.default_rng(0)
    n = 3000
    x = rng.normal(size=n)
    y = 0.02 * x + rng.normal(size=n)
    r = pearson_with_ci(x, y)
    assert r.method == "fisher_z" and r.n == n
    assert r.value == pytest.approx(np.corrcoef(x, y)[0, 1])
    se = 1 / math.sqrt(n - 3)
    upper = scipy_stats.norm.cdf((math.atanh(r.value) - math.atanh(0.1)) / se)  # H0: rho >= 0.1
    lower = scipy_stats.norm.sf((math.atanh(r.value) - math.atanh(-0.1)) / se)  # H0: rho <= -0.1
    equivalence = Criterion.inside(-0.1, 0.1)
    assert p_value(r, equivalence) == pytest.approx(max(upper, lower))
    assert p_value(r, Criterion(threshold=0.1, paper_side="below")) == pytest.approx(upper)
    assert p_value(r, Criterion(threshold=-0.1, paper_side="above")) == pytest.approx(lower)
    assert p_value(r, equivalence) < ONE_SIDED_ALPHA and verdict(r, equivalence) == "replicates"
    strong = pearson_with_ci(x, x + 0.5 * rng.normal(size=n))
    assert p_value(strong, equivalence) > 0.999 and verdict(strong, equivalence) == "contradicts"
    assert p_value(strong, Criterion(threshold=0.5, paper_side="above")) < 1e-6


@settings(max_examples=40, deadline=None)
@given(
    r=st.floats(-0.95, 0.95),
    n=st.integers(4, 2000),
    threshold=st.floats(-0.9, 0.9),
    side=st.sampled_from(["below", "above"]),
)
def test_fisher_z_p_value_and_interval_decide_alike(r, n, threshold, side):
    """For Fisher z the interval and the one-sided test are exact duals."""
    q = scipy_stats.norm.ppf(1 - ONE_SIDED_ALPHA)
    z, se = math.atanh(r), 1 / math.sqrt(n - 3)
    estimate = Estimate(r, math.tanh(z - q * se), math.tanh(z + q * se), method="fisher_z", n=n)
    criterion = Criterion(threshold=threshold, paper_side=side)
    p = p_value(estimate, criterion)
    assume(abs(p - ONE_SIDED_ALPHA) > 1e-9)
    assert (verdict(estimate, criterion) == "replicates") == (p < ONE_SIDED_ALPHA)
    assert (verdict(estimate, criterion) == "contradicts") == (p > 1 - ONE_SIDED_ALPHA)


# ------------------------------------------------------------------------- Holm


# ------------------------------------------------------------------------- token F1


@pytest.mark.parametrize(
    ("prediction", "reference", "expected"),
    [
        ("the cat sat", "the cat sat", 1.0),
        ("The Cat, sat!", "cat sat", 1.0),  # case, punctuation and articles do not count
        ("a cat sat on mat", "the cat sat", 2 * (2 / 4) * (2 / 2) / (2 / 4 + 2 / 2)),  # p=2/4, r=2/2
        ("dog dog", "dog", 2 * (1 / 2) * 1 / (1 / 2 + 1)),  # multiset overlap: one shared "dog"
        ("bird", "fish", 0.0),
        ("", "", 1.0),
        ("the a an", "...", 1.0),  # both normalise to nothing
        ("", "cat", 0.0),
        ("cat", "", 0.0),
        ("theater", "the ater", 0.0),  # articles go only as whole words
    ],
)
def test_token_f1_examples(prediction, reference, expected):
    assert token_f1(prediction, reference) == pytest.approx(expected)
    assert token_f1(reference, prediction) == pytest.approx(expected)  # symmetric


def test_normalisation_and_id_overlap():
    assert normalize_answer("The  quick, brown FOX's den.") == ["quick", "brown", "foxs", "den"]
    assert overlap_f1([5, 6, 7], [7, 6, 5]) == 1.0  # order does not matter
    assert overlap_f1([5, 5, 9], [5, 8]) == pytest.approx(2 * (1 / 3) * (1 / 2) / (1 / 3 + 1 / 2))


@pytest.mark.parametrize("side", ["above", "below"])
def test_a_tie_with_the_threshold_belongs_to_the_papers_side_only_when_inclusive(side):
    # "at least 25%" (C6[increasing]): 512 of 2,048 neurons is exactly 25%, a reachable tie.
    t = 0.25
    resampled = np.array([t, t, t, t + 0.01] if side == "above" else [t, t, t, t - 0.01])
    low, high = float(resampled.min()), float(resampled.max())
    estimate = Estimate(t, low, high, resampled=resampled)
    strict, inclusive = Criterion(t, side), Criterion(t, side, inclusive=True)
    assert verdict(estimate, inclusive) == "replicates" and p_value(estimate, inclusive) == pytest.approx(
        1 / 5
    )
    assert verdict(estimate, strict) == "inconclusive" and p_value(estimate, strict) == pytest.approx(4 / 5)
    assert inclusive.holds(t) and not strict.holds(t)
    # an interval wholly on the other side contradicts both
    away = Estimate(t, t - 0.1, t - 0.05) if side == "above" else Estimate(t, t + 0.05, t + 0.1)
    assert verdict(away, strict) == verdict(away, inclusive) == "contradicts"


def test_an_equivalence_criterion_cannot_be_inclusive():
    with pytest.raises(StatsError, match="open interval"):
        Criterion(paper_side="inside", bounds=(-0.1, 0.1), inclusive=True)
