"""C1, C2: ablating toxic neurons does not emulate DPO (Yang et al. 2024 v1, Table 1)."""

from dpoclaims import claims
from fixtures.registry import claim_test


@claim_test("C1")
def test_C1_ablating_top_toxic_neurons_matches_dpo(measurements, record_claim, paper_n):
    record_claim(claims.c1_ablation_matches_dpo(measurements, paper_n))


@claim_test("C2")
def test_C2_ablating_positively_activated_toxic_neurons(measurements, record_claim, paper_n):
    record_claim(claims.c2_positive_ablation(measurements, paper_n))


@claim_test("C2[perplexity]")
def test_C2_ablation_costs_perplexity(measurements, record_claim):
    record_claim(claims.c2_ablation_costs_perplexity(measurements))
