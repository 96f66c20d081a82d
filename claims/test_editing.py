"""C13, C13[search]: editing the base's activations, with no weight update, against DPO (v3, EMNLP).

C13 measures the edit with the authors' repository's constants; C13[search] lets Hypothesis look
for an edit that reaches DPO's toxicity without exceeding DPO's perplexity (see
:mod:`dpoclaims.claims.editing` and :mod:`dpoclaims.claims.edit_search`). ``--search-examples`` sets how many
edits the search draws (0 skips it); every edit is a cached measurement.
"""

from __future__ import annotations

import pytest

from dpoclaims.claims import checks as claims
from dpoclaims.claims import edit_search
from dpoclaims.plugin.claim_tests import claim_test


@claim_test("C13")
def test_C13_editing_activations_beats_dpo(measurements, check_claim, constants):
    check_claim(claims.c13_editing_beats_dpo(measurements, constants))


@pytest.mark.search
@claim_test("C13[search]")
def test_C13_some_activation_edit_beats_dpo(measurements, check_claim, suite_options):
    if suite_options.search_examples == 0:
        pytest.skip("the searches are off (--search-examples 0)")
    check_claim(edit_search.c13_some_edit_beats_dpo(measurements, max_examples=suite_options.search_examples))
