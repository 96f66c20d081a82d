"""The searches (dpoclaims.claims.search, dpoclaims.claims.search_spaces): the ablations the paper's
claim covers, and the driver itself on synthetic figures (no model, no generation): discovery on
one half, confirmation on the other, and verdicts that history cannot change."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
import torch

from dpoclaims.claims import paper, search, search_spaces, selection
from dpoclaims.claims.decision import Figure, evaluate
from dpoclaims.claims.registry import decide
from dpoclaims.claims.results import ClaimNotHeld, ClaimRecord, Expectation
from dpoclaims.errors import OptionError
from dpoclaims.measure.decomposition import Decomposition
from dpoclaims.report import render as report
from dpoclaims.stats import bootstrap

N_PROMPTS = 400


def decomposition(n_layers: int = 24, d_mlp: int = 4096) -> Decomposition:
    """Known cosines and mean activations on GPT-2 medium's shape (so the paper's N are unscaled)."""
    generator = torch.Generator().manual_seed(0)
    cosines = torch.randn(n_layers, d_mlp, generator=generator)
    mean_base = torch.randn(n_layers, d_mlp, generator=generator)
    return Decomposition(cosines, mean_base, mean_base - 0.1, torch.zeros(2, n_layers, d_mlp), {})


def test_the_ablations_searched_are_the_top_n_the_paper_names_up_to_its_largest_n():
    d = decomposition()
    assert search_spaces.largest_n(d, "cosine") == 1000
    assert search_spaces.largest_n(d, "positive") == 2000
    small = decomposition(2, 64)  # 128 neurons: the paper's 1,000 of 98,304 scale to 1
    assert search_spaces.largest_n(small, "cosine") == paper.scale_n(1000, 128) == 1
    top = search_spaces.ablation_for(d, search_spaces.Ablation("cosine", 100))
    assert top == selection.ablation(d, 100)  # C1's own ablation: one cached measurement
    positive = search_spaces.ablation_for(d, search_spaces.Ablation("positive", 200))
    assert positive.neurons == selection.ablation(d, 200, positive=True).neurons
    with pytest.raises(OptionError, match="ablates 1 to 1000 neurons"):
        search_spaces.ablation_for(d, search_spaces.Ablation("cosine", 1001))


def test_the_n_grid_covers_one_to_the_largest_by_ratio():
    grid = search_spaces.n_grid(1000)
    assert grid[0] == 1 and grid[-1] == 1000 and list(grid) == sorted(set(grid))
    steps = [b / a for a, b in zip(grid[10:], grid[11:])]
    assert max(steps) < 1.2
    assert search_spaces.n_grid(0) == ()


# ------------------------------------------------------------------------- the driver, synthetic


@dataclass(frozen=True)
class Size:
    """A synthetic candidate: ``n`` neurons."""

    n: int

    @property
    def label(self) -> str:
        return f"n={self.n}"

    def to_json(self) -> dict[str, Any]:
        return {"n": self.n}


def _noise(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(0.0, 0.3, N_PROMPTS)


def synthetic_space(
    share_of: Any,
    key: str = "C1[search]",
    calls: list[tuple[Size, str]] | None = None,
    grid: int = 100,
    *,
    perplexity_of: Any = lambda n: 0.0,
    deferred: bool = False,
    perplexity_calls: list[tuple[Size, str]] | None = None,
) -> search.SearchSpace[Size]:
    """Candidates n = 1..``grid``; on each half a share of DPO's drop ``share_of(n, fold)`` measured
    with per-prompt noise (the two halves' noise independent), a perplexity figure over DPO's of
    ``perplexity_of(n)`` (by default well inside the margin), and DPO's drop clearly positive; the
    perplexity measured only where it can matter when ``deferred``."""
    entry = paper.entry(key)
    drop = bootstrap(
        lambda x, axis: np.mean(x, axis=axis), np.full(N_PROMPTS // 2, 0.3) + _noise(9)[: N_PROMPTS // 2]
    )

    def measure(candidate: Size, fold: search.Fold, skip: frozenset[str]) -> search.Evaluated:
        if calls is not None:
            calls.append((candidate, fold))
        noise = _noise(0 if fold == "discovery" else 1)[: N_PROMPTS // 2]
        share = bootstrap(lambda x, axis: np.mean(x, axis=axis), noise + share_of(candidate.n, fold))
        figures = {paper.SHARE: Figure(share, (("DPO's drop", drop),))}
        if paper.PERPLEXITY_VS_DPO in skip:
            figures[paper.PERPLEXITY_VS_DPO] = search.unmeasured_figure("not needed")
        else:
            if perplexity_calls is not None:
                perplexity_calls.append((candidate, fold))
            figures[paper.PERPLEXITY_VS_DPO] = Figure(
                bootstrap(
                    lambda x, axis: np.mean(x, axis=axis),
                    _noise(2)[: N_PROMPTS // 2] * 0.01 + perplexity_of(candidate.n),
                )
            )
        return search.Evaluated(figures, evaluate(entry.decision, figures, paper.SIDE_ALPHA))

    def draw(st: Any) -> Any:
        return st.integers(1, grid).map(Size)

    def target(evaluated: search.Evaluated) -> float:
        """As C1[search]'s: the share's excess over 80%, bounded by the perplexity's room under the
        margin where it was measured."""
        share = evaluated.figures[paper.SHARE].estimate.value - paper.MATCH_SHARE
        perplexity = evaluated.figures[paper.PERPLEXITY_VS_DPO]
        if perplexity.unmeasured:
            return share
        return min(share, paper.PERPLEXITY_MARGIN - perplexity.estimate.value)

    return search.SearchSpace(
        entry,
        draw,
        (Size(1),),
        measure,
        target,
        size=lambda c: c.n,
        deferred=frozenset({paper.PERPLEXITY_VS_DPO}) if deferred else frozenset(),
    )


def _decided(result: search.SearchResult[Size]) -> Any:
    return decide(paper.entry("C1[search]"), None, result.measured(), n_layers=24, n_neurons=98_304)


def test_no_candidate_matches_dpo_so_every_one_must_hold_on_the_held_out_half():
    result = search.run_search(synthetic_space(lambda n, fold: 0.2), max_examples=12, seed=0)
    assert not result.hit
    outcome = result.outcome()
    assert outcome.p_holds == max(
        e.outcome.p_holds for e in result.confirmation.values()
    )  # intersection-union
    assert outcome.p_fails == result.confirmation[result.chosen].outcome.p_fails
    claim = _decided(result)
    assert claim.verdict == "replicates" and claim.id == paper.entry("C1[search]").claim_id()
    assert set(result.confirmation) == set(result.discovery)  # every candidate measured is confirmed


def test_a_hit_is_shrunk_to_the_smallest_and_confirmed_on_the_held_out_half():
    # from n = 60 an ablation recovers 120% of DPO's drop (noise +-0.02): a counterexample
    space = synthetic_space(lambda n, fold: 1.2 if n >= 60 else 0.2)
    result = search.run_search(space, max_examples=40, seed=0)
    assert result.hit and result.chosen == Size(60)  # the smallest hit
    claim = _decided(result)
    assert claim.verdict == "contradicts"
    assert claim.p_against == result.confirmation[Size(60)].outcome.p_fails
    with pytest.raises(ClaimNotHeld, match="n=60"):
        Expectation().check(claim)


def test_a_hit_on_the_discovery_half_alone_is_not_confirmed():
    """Discovery's noise made n >= 60 look like a match there; on the held-out half it recovers
    20%: the verdict is read there, so the paper's claim still replicates."""
    space = synthetic_space(lambda n, fold: (1.2 if n >= 60 else 0.2) if fold == "discovery" else 0.2)
    result = search.run_search(space, max_examples=40, seed=0)
    assert result.hit
    assert _decided(result).verdict == "replicates"


def test_cold_warm_and_repeated_runs_draw_choose_and_decide_the_same():
    share = lambda n, fold: 0.9 if n > 80 else 0.3  # noqa: E731
    first_calls: list[tuple[Size, str]] = []
    first = search.run_search(synthetic_space(share, calls=first_calls), max_examples=16, seed=3)
    again_calls: list[tuple[Size, str]] = []
    again = search.run_search(synthetic_space(share, calls=again_calls), max_examples=16, seed=3)
    assert first_calls == again_calls
    a, b = _decided(first), _decided(again)
    assert (a.verdict, a.p_value, a.p_against, a.measured) == (b.verdict, b.p_value, b.p_against, b.measured)
    other: list[tuple[Size, str]] = []
    search.run_search(synthetic_space(share, calls=other), max_examples=16, seed=4)
    assert other != first_calls


def test_a_slow_machine_shrinks_as_far_as_a_fast_one(monkeypatch):
    """Hypothesis limits shrinking by wall time; an example here is a generation pass, so a cold
    run on a slow machine must shrink to the same candidate as a warm run. The engine's clock is
    made to jump 1,000 s at every reading: the search still shrinks to the smallest hit."""
    from hypothesis.internal.conjecture import engine

    share = lambda n, fold: 1.2 if n >= 60 else 0.2  # noqa: E731
    calm = search.run_search(synthetic_space(share), max_examples=40, seed=0)
    ticks = iter(range(0, 10**9, 1000))
    monkeypatch.setattr(engine.time, "perf_counter", lambda: float(next(ticks)))
    rushed = search.run_search(synthetic_space(share), max_examples=40, seed=0)
    assert rushed.chosen == calm.chosen == Size(60)
    assert list(rushed.discovery) == list(calm.discovery)
    assert engine.MAX_SHRINKING_SECONDS == 300  # restored after the search


def test_an_existential_claim_is_confirmed_by_the_edit_found_and_refuted_by_all():
    """C13[search] ("some edit beats DPO"): p from the chosen candidate, p against from all."""
    entry = paper.entry("C13[search]")

    def space(toxicity_of: Any) -> search.SearchSpace[Size]:
        def measure(candidate: Size, fold: search.Fold, skip: frozenset[str]) -> search.Evaluated:
            noise = _noise(0 if fold == "discovery" else 1)[: N_PROMPTS // 2] * 0.1
            toxicity = bootstrap(lambda x, axis: np.mean(x, axis=axis), noise + toxicity_of(candidate.n))
            perplexity = bootstrap(lambda x, axis: np.mean(x, axis=axis), _noise(2)[: N_PROMPTS // 2] * 0.01)
            figures = {"toxicity_vs_dpo": Figure(toxicity), paper.PERPLEXITY_VS_DPO: Figure(perplexity)}
            return search.Evaluated(figures, evaluate(entry.decision, figures, paper.SIDE_ALPHA))

        return search.SearchSpace(
            entry,
            lambda st: st.integers(1, 50).map(Size),
            (Size(1),),
            measure,
            lambda e: -e.figures["toxicity_vs_dpo"].estimate.value,
            size=lambda c: c.n,
        )

    found = search.run_search(space(lambda n: -0.1 if n >= 30 else 0.1), max_examples=40, seed=0)
    decided = decide(entry, None, found.measured(), n_layers=1, n_neurons=1)
    assert found.hit and found.chosen == Size(30) and decided.verdict == "replicates"
    never = search.run_search(space(lambda n: 0.1), max_examples=10, seed=0)
    decided = decide(entry, None, never.measured(), n_layers=1, n_neurons=1)
    assert not never.hit and decided.verdict == "contradicts"
    assert decided.p_against == max(e.outcome.p_fails for e in never.confirmation.values())


@pytest.mark.parametrize(
    ("case", "share_of", "perplexity_of"),
    [
        ("no candidate matches", lambda n, fold: 0.3 - n / 1000, lambda n: -0.05),
        ("a confirmed counterexample", lambda n, fold: 1.2 if n >= 60 else 0.2, lambda n: -0.05),
        ("a counterexample that perplexity refutes", lambda n, fold: 1.2 if n >= 60 else 0.2, lambda n: 0.2),
        ("candidates at the threshold", lambda n, fold: 0.6 + n / 250, lambda n: 0.04),
    ],
)
def test_a_deferred_perplexity_is_measured_only_where_it_can_change_the_outcome(
    case, share_of, perplexity_of
):
    """Deferring the perplexity changes no verdict, chosen candidate or draw, and a p-value only
    upward; the perplexity of a candidate decided by its share alone is never measured, the chosen
    one's always (on the confirmation half)."""
    full = search.run_search(synthetic_space(share_of, perplexity_of=perplexity_of), max_examples=40, seed=0)
    passes: list[tuple[Size, str]] = []
    lazy = search.run_search(
        synthetic_space(share_of, perplexity_of=perplexity_of, deferred=True, perplexity_calls=passes),
        max_examples=40,
        seed=0,
    )
    assert list(lazy.discovery) == list(full.discovery) and lazy.chosen == full.chosen
    a, b = _decided(full), _decided(lazy)
    assert a.verdict == b.verdict
    assert b.p_value >= a.p_value and b.p_against >= a.p_against
    assert (lazy.chosen, "confirmation") in passes
    for candidate, evaluated in lazy.confirmation.items():
        measured = not evaluated.figures[paper.PERPLEXITY_VS_DPO].unmeasured
        assert measured == ((candidate, "confirmation") in passes)
        if not measured:  # decided by its share: shown below 80% at the claim's level
            share = evaluated.figures[paper.SHARE].estimate
            assert share.interval(paper.SIDE_ALPHA)[1] < paper.MATCH_SHARE
            assert evaluated.outcome.p_fails == 1.0
    if case == "no candidate matches":
        # the share falls with n: the stated n = 1 has the highest target, and no later candidate
        # reaches it, so n = 1, the best, is the only one whose perplexity is measured
        assert lazy.chosen == Size(1) and len(lazy.discovery) > 10
        assert passes == [(Size(1), "discovery"), (Size(1), "confirmation")]


def test_the_best_candidate_is_chosen_on_exact_targets_where_perplexity_binds():
    """Every ablation is clearly short of DPO (so none needs its perplexity to decide anything),
    but the larger ones cost more perplexity: by share alone the largest would look best, by the
    exact target a middling one is. Candidates whose bound reaches the highest target so far are
    measured in full, so the deferred search chooses the candidate a full search chooses, with a
    complete record on both halves."""
    share = lambda n, fold: 0.2 + n / 500  # noqa: E731
    perplexity = lambda n: 0.0 if n < 40 else 0.9  # noqa: E731
    full = search.run_search(synthetic_space(share, perplexity_of=perplexity), max_examples=30, seed=0)
    lazy = search.run_search(
        synthetic_space(share, perplexity_of=perplexity, deferred=True), max_examples=30, seed=0
    )
    assert full.chosen is not None and full.chosen.n < 40 and not full.hit
    assert lazy.chosen == full.chosen
    for half in (lazy.discovery, lazy.confirmation):
        assert not half[lazy.chosen].figures[paper.PERPLEXITY_VS_DPO].unmeasured
    assert _decided(lazy).verdict == _decided(full).verdict
    unmeasured = [c for c, e in lazy.discovery.items() if e.figures[paper.PERPLEXITY_VS_DPO].unmeasured]
    assert unmeasured  # candidates below the highest target so far were left unmeasured


def test_a_search_with_nothing_measurable_still_reports_its_chosen_candidate_in_full():
    """Where DPO's drop is not shown positive, no candidate is measurable: the first is chosen,
    and its perplexity (the confirmation half's pass) is in its record on both halves."""
    space = synthetic_space(lambda n, fold: 0.2, deferred=True)
    no_drop = bootstrap(lambda x, axis: np.mean(x, axis=axis), _noise(5)[: N_PROMPTS // 2])  # mean about 0

    def measure(candidate: Size, fold: search.Fold, skip: frozenset[str]) -> search.Evaluated:
        evaluated = space.measure(candidate, fold, skip)
        figures = {
            **evaluated.figures,
            paper.SHARE: Figure(evaluated.figures[paper.SHARE].estimate, (("DPO's drop", no_drop),)),
        }
        return search.Evaluated(figures, evaluate(space.entry.decision, figures, paper.SIDE_ALPHA))

    result = search.run_search(dataclasses.replace(space, measure=measure), max_examples=5, seed=0)
    assert not any(e.outcome.measurable for e in result.discovery.values())
    assert result.chosen == Size(1)
    for half in (result.discovery, result.confirmation):
        assert not half[Size(1)].figures[paper.PERPLEXITY_VS_DPO].unmeasured


def test_a_search_needs_an_example():
    with pytest.raises(OptionError, match="at least 1 example"):
        search.run_search(synthetic_space(lambda n, fold: 0.2), max_examples=0)


def test_the_report_names_the_chosen_candidate_on_each_half():
    result = search.run_search(
        synthetic_space(lambda n, fold: 1.2 if n >= 60 else 0.2), max_examples=40, seed=0
    )
    claim = _decided(result)
    record = ClaimRecord.from_json(
        {
            "id": "C1[search]",
            "keyword": "ablation",
            "expected": "replicates",
            "outcome": "failed",
            "claim": json.loads(json.dumps(claim.to_json())),
        }  # fmt: skip
    )
    header = {"pair": "p", "fingerprint": "f", "n_prompts": 400, "convention": "v1", "scorer": "lexicon"}
    line = next(
        line
        for line in report.report_markdown([record], header).splitlines()
        if line.startswith("- **C1[search]**: ") and "drawn by Hypothesis" in line
    )
    assert "found (it reached the opposite of the claim there): n=60 (60 neurons)" in line
    assert "discovery share" in line and "confirmation share" in line
