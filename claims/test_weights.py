"""C11, C12: Lee et al.'s findings on weights, activations and key vectors."""

import pytest

from dpoclaims import claims


@pytest.mark.weights
@pytest.mark.claim("C11")
@pytest.mark.parametrize("what", ["cosine", "toxic-activation"])
def test_C11_dpo_changes_weights_little_and_dampens_toxic_neurons(claim_context, record_claim, what):
    """Every weight matrix keeps cosine > 0.99 with the base; the mean activation of the top-128
    toxic neurons drops after DPO (95% interval above 0)."""
    result = record_claim(claims.c11_weights(claim_context, what))
    assert result.test_passes, f"{what} = {result.measured:.4f}"


@pytest.mark.scaling
@pytest.mark.claim("C12")
@pytest.mark.parametrize("factor", [2, 5, 10], ids=lambda f: f"x{f}")
def test_C12_scaling_toxic_key_vectors_reintroduces_toxicity(claim_context, record_claim, factor):
    """Multiplying the key vectors of the top-7 toxic neurons in the DPO model raises its
    toxicity (95% interval of the rise above 0). Paper: 0.208 -> 0.487 / 0.555 / 0.458."""
    result = record_claim(claims.c12_scale_keys(claim_context, factor))
    assert result.test_passes, f"toxicity rise {result.measured:+.3f}"
