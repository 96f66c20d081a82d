"""C1, C2: ablating toxic neurons does not emulate DPO (Yang et al. 2024 v1, Table 1)."""

import pytest

from dpoclaims import claims


@pytest.mark.ablation
@pytest.mark.claim("C1", hypothesis=True)
@pytest.mark.parametrize("paper_n", [100, 200, 1000], ids=lambda n: f"N={n}")
def test_C1_ablating_top_toxic_neurons_matches_dpo(claim_context, record_claim, paper_n):
    """Hypothesis (refuted by the paper): zeroing the top-N toxic neurons (by cosine with the
    probe) recovers at least 80% of DPO's toxicity drop. Paper: 20.4%, 19.6%, 6.9%."""
    result = record_claim(claims.c1_ablation_matches_dpo(claim_context, paper_n))
    assert result.test_passes, f"ablation recovers {result.measured:.1%} of DPO's drop"


@pytest.mark.ablation
@pytest.mark.claim("C2")
@pytest.mark.parametrize("paper_n", [100, 200, 1000, 2000], ids=lambda n: f"N={n}")
def test_C2_ablating_positively_activated_toxic_neurons(claim_context, record_claim, paper_n):
    """Ablating the top-N positively-activated toxic neurons recovers more of DPO's drop than
    plain top-N ablation, but less than 80%. Paper: 28.2%, 35.5%, 54.3%, 54.7%."""
    result = record_claim(claims.c2_positive_ablation(claim_context, paper_n))
    assert result.test_passes, f"recovers {result.measured:.1%}; details {result.details}"


@pytest.mark.ablation
@pytest.mark.claim("C2", param="perplexity")
def test_C2_ablation_costs_perplexity(claim_context, record_claim):
    """Ablating the top-1000 positively-activated toxic neurons raises perplexity by more than
    5%. Paper: 21.70 -> 30.04 (+38%)."""
    result = record_claim(claims.c2_ablation_costs_perplexity(claim_context))
    assert result.test_passes, f"perplexity change {result.measured:+.1%}"
