"""C1: ablating the top toxic neurons does not emulate DPO (Yang et al. 2024 v1, Table 1).

One file per claim family, so that under ``pytest -n N --dist loadfile`` the families' generation
passes (one per intervention) run on different workers."""

from dpoclaims.claims import checks as claims
from dpoclaims.plugin.claim_tests import claim_test


@claim_test("C1")
def test_C1_ablating_top_toxic_neurons_matches_dpo(measurements, check_claim, paper_n):
    check_claim(claims.c1_ablation_matches_dpo(measurements, paper_n))
