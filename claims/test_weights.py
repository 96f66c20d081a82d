"""C11, C12: Lee et al.'s findings on weights, activations and key vectors."""

from dpoclaims import claims
from fixtures.registry import claim_test


@claim_test("C11[cosine]")
def test_C11_dpo_changes_weights_little(measurements, record_claim):
    record_claim(claims.c11_weight_cosines(measurements))


@claim_test("C11[toxic-activation]")
def test_C11_top_toxic_neuron_activations_drop(measurements, record_claim):
    record_claim(claims.c11_toxic_activation_drop(measurements))


@claim_test("C12")
def test_C12_scaling_toxic_key_vectors_reintroduces_toxicity(measurements, record_claim, factor):
    record_claim(claims.c12_scale_keys(measurements, factor))
