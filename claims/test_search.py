"""C1[search], C2[search]: Hypothesis searches for an ablation that does emulate DPO.

The paper's title is a universal claim: no ablation of toxic neurons recovers DPO's toxicity
drop. Hypothesis draws ablations (the number of neurons and how they are chosen), steers toward
the largest recovered share with ``target()``, and shrinks any counterexample it finds; see
:mod:`dpoclaims.search`. The test asserts the paper's claim. Its summary (the best ablation
found, any counterexample, every measured ablation) is attached to the report as the
``dpoclaims_search`` user property. ``--search-examples`` sets how many ablations are drawn
(0 skips the searches). Every drawn ablation is a cached measurement: a warm rerun generates
nothing.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from dpoclaims import search
from dpoclaims.claims import ClaimNotHeld, ClaimVerdictUnexpected
from dpoclaims.decomposition import Decomposition
from dpoclaims.measurements import Measurements
from fixtures.options import DECLARED_KEY
from fixtures.resources import record_pair


def _search(
    request: pytest.FixtureRequest,
    measurements: Measurements,
    examples: int,
    space: Callable[[Decomposition], search.SearchSpace],
) -> None:
    if examples == 0:
        pytest.skip("the counterexample searches are off (--search-examples 0)")
    result = search.search_ablations(measurements, space(measurements.decomposition), max_examples=examples)
    request.node.user_properties.append((search.SEARCH_PROPERTY, result.summary()))
    record_pair(request, request.node)  # the report's header, also when only the searches run
    declared = request.node.stash.get(DECLARED_KEY, None)  # the pair's table, as for every claim
    if declared in ("inconclusive", "not measurable"):
        if result.verdict != declared:
            raise ClaimVerdictUnexpected(f"declared {declared}, but the search gives: {result.describe()}")
    elif result.verdict == "contradicts":
        raise ClaimNotHeld(result.describe())
    elif result.verdict != "replicates":
        raise ClaimVerdictUnexpected(f"{result.describe()} (not declared for this pair)")


@pytest.mark.ablation
@pytest.mark.search
@pytest.mark.claim("C1", param="search")
def test_C1_no_ablation_of_toxic_neurons_matches_dpo(request, measurements, suite_options):
    """No ablation of toxic neurons (any number, chosen by cosine, by positive activation or at
    random) recovers >= 80% of DPO's toxicity drop (Yang et al. 2024, title and Table 1)."""
    _search(request, measurements, suite_options.search_examples, search.c1_space)


@pytest.mark.ablation
@pytest.mark.search
@pytest.mark.claim("C2", param="search")
def test_C2_no_ablation_of_positively_activated_toxic_neurons_matches_dpo(
    request, measurements, suite_options
):
    """No ablation of positively-activated toxic neurons (up to all of them) recovers >= 80% of
    DPO's toxicity drop (Yang et al. 2024 v1, Table 1)."""
    _search(request, measurements, suite_options.search_examples, search.c2_space)
