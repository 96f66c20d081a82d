"""The counterexample search (dpoclaims.claims.search): neuron selection rules, and the Hypothesis
search itself on a synthetic share function (no model, no generation)."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from dpoclaims.claims import paper, search, selection
from dpoclaims.claims.results import ClaimNotHeld, ClaimRecord, ClaimVerdictUnexpected, Expectation
from dpoclaims.errors import OptionError
from dpoclaims.measure.decomposition import Decomposition
from dpoclaims.report import render as report
from dpoclaims.stats import bootstrap

NOISE = np.random.default_rng(0).normal(0.0, 0.2, 400)  # per-prompt spread: intervals about +-0.02


def decomposition() -> Decomposition:
    """3 layers x 8 neurons with known cosines and mean activations."""
    generator = torch.Generator().manual_seed(0)
    cosines = torch.randn(3, 8, generator=generator)
    mean_base = torch.randn(3, 8, generator=generator)
    return Decomposition(
        cosines=cosines,
        mean_base=mean_base,
        mean_dpo=mean_base - 0.1,
        contribution_per_prompt=torch.zeros(2, 3, 8),
        groups={},
    )


def test_the_rules_choose_toxic_neurons_as_stated():
    d = decomposition()
    flat_cos, flat_mean = d.cosines.flatten(), d.mean_base.flatten()
    toxic = set(torch.nonzero(flat_cos > 0).flatten().tolist())
    positive = {i for i in toxic if flat_mean[i] > 0}
    assert search.max_n(d) == len(toxic) == search.pool_size(d, "random")
    assert search.pool_size(d, "positive") == len(positive)

    top = search.select_neurons(d, 3, "cosine")
    assert list(top) == sorted(toxic, key=lambda i: -flat_cos[i])[:3]
    assert set(search.select_neurons(d, len(positive), "positive")) == positive
    everything = search.select_neurons(d, len(toxic), "random", seed=0)
    assert set(everything) == toxic

    small = search.select_neurons(d, 3, "random", seed=0)
    assert set(small) <= toxic and len(set(small)) == 3
    assert small == search.select_neurons(d, 3, "random", seed=0)  # seeded
    assert set(small) <= set(search.select_neurons(d, 5, "random", seed=0))  # nested in n
    assert any(search.select_neurons(d, 3, "random", seed=s) != small for s in range(1, 6))


def test_the_cosine_and_positive_rules_share_the_claims_cached_ablations():
    d = decomposition()
    for positive, rule in ((False, "cosine"), (True, "positive")):
        claimed = selection.ablation(d, 8192, positive=positive)  # scaled to 2 of the pair's 24 neurons
        assert len(claimed.neurons) == 2
        assert search.ablation_for(d, 2, rule).id == claimed.id


@pytest.mark.parametrize(("n", "rule"), [(0, "cosine"), (999, "random"), (1, "magic")])
def test_an_ablation_outside_the_rule_s_pool_is_an_option_error(n, rule):
    with pytest.raises(OptionError, match="rule"):
        search.ablation_for(decomposition(), n, rule)


def test_the_n_grid_covers_one_to_the_largest_by_ratio():
    grid = search.n_grid(1073)
    assert grid[:10] == tuple(range(1, 11)) and grid[-1] == 1073
    ratios = np.array(grid[10:]) / np.array(grid[9:-1])
    assert ratios.max() < 1.2 and len(set(grid)) == len(grid)
    assert search.n_grid(1) == (1,) and search.n_grid(0) == ()


SPACE = search.SearchSpace("C1", search.RULES, {"cosine": 1000, "positive": 400, "random": 1000})
WEIGHT = {"cosine": 1.0, "random": 0.7, "positive": 0.5}


def synthetic(top_share: float, calls: list[search.Candidate] | None = None):
    """A share that grows with n (``top_share`` at cosine n=1000), measured with an interval."""

    def measure(candidate: search.Candidate) -> search.AblationPoint:
        if calls is not None:
            calls.append(candidate)
        value = candidate.n / 1000 * WEIGHT[candidate.rule] * top_share
        share = bootstrap(lambda x, axis: np.mean(x, axis=axis), NOISE + value)
        return search.AblationPoint(candidate, f"id-{candidate}", f"ablate {candidate}", share)

    return measure


def test_a_search_without_counterexample_replicates_and_names_its_best_ablation(tmp_path):
    result = search.run_search(SPACE, synthetic(0.5), max_examples=12, seed=0, database=tmp_path)
    assert result.verdict == "replicates" and result.counterexample is None
    assert len(result.points) >= 12
    best = result.best
    assert best.share.value == max(p.share.value for p in result.points.values())
    assert result.p_value == max(p.p_value for p in result.points.values())  # intersection-union
    summary = json.loads(json.dumps(result.summary()))  # what the reports receive: plain JSON
    assert summary["best"]["n"] == best.candidate.n and summary["verdict"] == "replicates"
    assert summary["counterexample"] is None and len(summary["measured"]) == len(result.points)
    assert "replicates" in result.describe() and "best ablation" in result.describe()


def test_a_counterexample_is_shrunk_to_the_fewest_neurons_and_replayed_first(tmp_path):
    calls: list[search.Candidate] = []
    # counterexamples: cosine n >= about 770 (interval reaches 0.8); the search must find one
    space = search.SearchSpace("C1", ("cosine",), {"cosine": 1000})
    result = search.run_search(space, synthetic(1.0, calls), max_examples=30, seed=0, database=tmp_path)
    assert result.counterexample is not None and result.shrunk
    found = result.counterexample.candidate
    grid = search.n_grid(1000)
    smaller = grid[grid.index(found.n) - 1]
    assert result.points[found].is_counterexample
    assert not synthetic(1.0)(search.Candidate("cosine", smaller)).is_counterexample  # minimal on the grid
    assert result.verdict in ("contradicts", "inconclusive")
    assert "counterexample" in result.describe()
    summary = result.summary()
    assert summary["counterexample"]["n"] == found.n and summary["counterexample"]["shrunk"] is True

    again: list[search.Candidate] = []
    rerun = search.run_search(space, synthetic(1.0, again), max_examples=30, seed=0, database=tmp_path)
    assert rerun.counterexample.candidate == found
    assert set(again) <= set(calls)  # nothing new to measure
    assert len(again) <= search.KEEP_STRONGEST + 1  # the strongest, then the stored counterexample


def test_a_rerun_draws_the_same_examples_so_a_warm_cache_generates_nothing(tmp_path):
    first: list[search.Candidate] = []
    search.run_search(SPACE, synthetic(0.5, first), max_examples=12, seed=3, database=tmp_path)
    second: list[search.Candidate] = []
    search.run_search(SPACE, synthetic(0.5, second), max_examples=12, seed=3, database=tmp_path)
    assert set(second) == set(first)
    other_seed: list[search.Candidate] = []
    search.run_search(SPACE, synthetic(0.5, other_seed), max_examples=12, seed=4, database=tmp_path / "x")
    assert set(other_seed) != set(first)


def test_the_strongest_ablations_of_earlier_runs_are_measured_again(tmp_path):
    first = search.run_search(SPACE, synthetic(0.5), max_examples=12, seed=0, database=tmp_path)
    stored = json.loads((tmp_path / "strongest.json").read_text())
    assert stored[0] == first.best.candidate.to_json()
    fewer = search.run_search(SPACE, synthetic(0.5), max_examples=1, seed=0, database=tmp_path)
    assert fewer.best.candidate == first.best.candidate
    read_only = tmp_path / "read-only"
    search.run_search(SPACE, synthetic(0.5), max_examples=2, seed=0, database=read_only, read_only=True)
    assert not read_only.exists()


def test_a_search_needs_an_example_and_a_neuron():
    with pytest.raises(OptionError, match="at least 1 example"):
        search.run_search(SPACE, synthetic(0.5), max_examples=0)
    with pytest.raises(search.SearchError, match="no neuron"):
        search.SearchSpace("C2", ("positive",), {"positive": 0})


def test_every_run_measures_each_rule_s_largest_ablation_before_it_draws():
    calls: list[search.Candidate] = []
    search.run_search(SPACE, synthetic(0.5, calls), max_examples=1, seed=0, database=None)
    # random over its whole pool is cosine's whole pool: measured once, as cosine
    assert calls[:2] == [search.Candidate("cosine", 1000), search.Candidate("positive", 400)]
    only_random = search.SearchSpace("R", ("random",), {"random": 50})
    assert search.largest_ablations(only_random, seed=7) == [search.Candidate("random", 50, 7)]


def test_the_claims_table_names_the_best_ablation_and_the_counterexample_with_intervals(tmp_path):
    space = search.SearchSpace("C1", ("cosine",), {"cosine": 1000})
    result = search.run_search(space, synthetic(1.0), max_examples=30, seed=0, database=tmp_path)
    record = ClaimRecord.from_json(
        {
            "id": "C1[search]",
            "keyword": "ablation",
            "expected": "replicates",
            "outcome": "failed",
            "claim": json.loads(json.dumps(result.claim_result("C1[search]").to_json())),  # as recorded
        }
    )
    header = {"pair": "p", "fingerprint": "f", "n_prompts": 400, "convention": "v1", "scorer": "lexicon"}
    text = report.report_markdown([record], header)
    best, counter = result.best, result.counterexample
    line = next(line for line in text.splitlines() if line.startswith("- **C1[search]**"))
    assert f"best: {best.candidate.n} neurons by rule `cosine` recover {best.share.value:.3f}" in line
    assert f"[{counter.share.low:.3f}, {counter.share.high:.3f}]" in line
    assert "counterexample (shrunk by Hypothesis)" in line


def test_a_search_is_checked_as_a_claim_and_its_failure_names_the_counterexample(tmp_path):
    space = search.SearchSpace("C1", ("cosine",), {"cosine": 1000})
    result = search.run_search(space, synthetic(1.0), max_examples=30, seed=0, database=tmp_path)
    claim = result.claim_result("C1[search]")
    assert (claim.verdict, claim.p_value, claim.measured) == (
        result.verdict,
        result.p_value,
        result.best.share.value,
    )
    assert claim.criterion == paper.entry("C1[search]").criterion and claim.details == result.summary()
    assert claim.verdict == "contradicts"  # cosine 1000 recovers 1.0 +- 0.02: wholly above 80%
    with pytest.raises(ClaimNotHeld, match="counterexample: ablate"):
        Expectation().check(claim)
    undecided = replace(claim, verdict="inconclusive")
    with pytest.raises(ClaimVerdictUnexpected, match="counterexample: ablate"):
        Expectation().check(undecided)
    assert Expectation("inconclusive").check(undecided) is undecided
    calm = search.run_search(SPACE, synthetic(0.5), max_examples=12, seed=0, database=None)
    assert Expectation().check(calm.claim_result("C1[search]")).verdict == "replicates"


def test_a_counterexample_measured_before_hypothesis_draws_is_reported_as_not_shrunk(tmp_path):
    space = search.SearchSpace("C1", ("cosine",), {"cosine": 1000})

    def only_the_whole_pool(candidate: search.Candidate) -> search.AblationPoint:
        value = 0.95 if candidate.n == 1000 else 0.05  # only ablating all 1,000 clears 80%
        share = bootstrap(lambda x, axis: np.mean(x, axis=axis), NOISE + value)
        return search.AblationPoint(candidate, f"id-{candidate}", f"ablate {candidate}", share)

    result = search.run_search(space, only_the_whole_pool, max_examples=1, seed=0, database=None)
    assert result.counterexample is not None and result.counterexample.candidate.n == 1000
    assert not result.shrunk  # the rule's largest ablation, measured before Hypothesis draws
    record = ClaimRecord.from_json(
        {
            "id": "C1[search]",
            "keyword": "ablation",
            "expected": "replicates",
            "outcome": "failed",
            "claim": json.loads(json.dumps(result.claim_result("C1[search]").to_json())),
        }
    )
    header = {"pair": "p", "fingerprint": "f", "n_prompts": 400, "convention": "v1", "scorer": "lexicon"}
    line = next(
        line
        for line in report.report_markdown([record], header).splitlines()
        if line.startswith("- **C1[search]**")
    )
    assert "measured before Hypothesis's draws" in line and "shrunk by Hypothesis" not in line
