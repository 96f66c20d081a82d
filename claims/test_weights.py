"""C11: Lee et al.'s findings on weights and activations."""

from dpoclaims.claims import checks as claims
from dpoclaims.plugin.claim_tests import claim_test


@claim_test("C11[cosine]")
def test_C11_dpo_changes_weights_little(measurements, check_claim):
    check_claim(claims.c11_weight_cosines(measurements))


@claim_test("C11[toxic-activation]")
def test_C11_top_toxic_neuron_activations_drop(measurements, check_claim):
    check_claim(claims.c11_toxic_activation_drop(measurements))
