"""C3, C10: patching neuron activations to their DPO levels."""

from dpoclaims.claims import checks as claims
from dpoclaims.plugin.claim_tests import claim_test


@claim_test("C3")
def test_C3_patching_dampened_toxic_neurons_recovers_part(measurements, check_claim):
    check_claim(claims.c3_patch_dampened(measurements))


@claim_test("C10")
def test_C10_patching_all_four_groups_replicates_dpo(measurements, check_claim):
    check_claim(claims.c10_patch_all_groups(measurements))
