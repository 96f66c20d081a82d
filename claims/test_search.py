"""C1[search], C2[search]: Hypothesis searches for an ablation that does emulate DPO.

The paper's title is a universal claim: no ablation of toxic neurons recovers DPO's toxicity
drop. Hypothesis draws ablations (the number of neurons and how they are chosen), steers toward
the largest recovered share with ``target()``, and shrinks any counterexample it finds; see
:mod:`dpoclaims.claims.search`. The test asserts the paper's claim; its record's details (the best
ablation found, any counterexample, every measured ablation) go to the report.
``--search-examples`` sets how many ablations are drawn (0 skips the searches). Every drawn
ablation is a cached measurement: a warm rerun generates nothing.
"""

from __future__ import annotations

import pytest

from dpoclaims.claims import search
from dpoclaims.plugin.claim_tests import claim_test


def _search(claim_search, measurements, check_claim, examples: int) -> None:
    if examples == 0:
        pytest.skip("the counterexample searches are off (--search-examples 0)")
    check_claim(claim_search(measurements, max_examples=examples))


@pytest.mark.search
@claim_test("C1[search]")
def test_C1_no_ablation_of_toxic_neurons_matches_dpo(measurements, check_claim, suite_options):
    _search(search.c1_no_ablation_matches_dpo, measurements, check_claim, suite_options.search_examples)


@pytest.mark.search
@claim_test("C2[search]")
def test_C2_no_ablation_of_positively_activated_toxic_neurons_matches_dpo(
    measurements, check_claim, suite_options
):
    _search(
        search.c2_no_positive_ablation_matches_dpo, measurements, check_claim, suite_options.search_examples
    )
