"""C2: ablating positively-activated toxic neurons does not emulate DPO either, and costs
perplexity (Yang et al. 2024 v1, Table 1)."""

from dpoclaims.claims import checks as claims
from dpoclaims.plugin.claim_tests import claim_test


@claim_test("C2")
def test_C2_ablating_positively_activated_toxic_neurons(measurements, check_claim, paper_n):
    check_claim(claims.c2_positive_ablation(measurements, paper_n))


@claim_test("C2[perplexity]")
def test_C2_ablation_costs_perplexity(measurements, check_claim):
    check_claim(claims.c2_ablation_costs_perplexity(measurements))
