"""C12: scaling the key vectors of toxic neurons reintroduces toxicity (Lee et al.)."""

from dpoclaims.claims import checks as claims
from dpoclaims.plugin.claim_tests import claim_test


@claim_test("C12")
def test_C12_scaling_toxic_key_vectors_reintroduces_toxicity(measurements, check_claim, factor):
    check_claim(claims.c12_scale_keys(measurements, factor))
