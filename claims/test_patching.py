"""C3, C10: patching neuron activations to their DPO levels."""

import pytest

from dpoclaims import claims


@pytest.mark.patching
@pytest.mark.claim("C3")
def test_C3_patching_dampened_toxic_neurons_recovers_part(claim_context, record_claim):
    """Setting every TP- neuron to its mean DPO activation in the base model recovers some but
    less than 80% of DPO's toxicity drop. Paper: 48.2%."""
    result = record_claim(claims.c3_patch_dampened(claim_context))
    assert result.test_passes, f"patching TP- recovers {result.measured:.1%}"


@pytest.mark.patching
@pytest.mark.claim("C10")
def test_C10_patching_all_four_groups_replicates_dpo(claim_context, record_claim):
    """Setting every neuron of the four reducing groups to its mean DPO activation recovers at
    least 80% of DPO's toxicity drop (v3 / EMNLP)."""
    result = record_claim(claims.c10_patch_all_groups(claim_context))
    assert result.test_passes, f"patching all groups recovers {result.measured:.1%}"
