"""C4-C9: the per-neuron probe-projection decomposition (Yang et al. 2024 v1)."""

from dpoclaims.claims import checks as claims
from dpoclaims.plugin.claim_tests import claim_test


@claim_test("C4")
def test_C4_dampened_toxic_neurons_explain_a_minority(measurements, check_claim, denominator):
    check_claim(claims.c4_dampened_share(measurements, denominator))


@claim_test("C5")
def test_C5_every_group_contributes(measurements, check_claim, group):
    check_claim(claims.c5_group_share(measurements, group))


@claim_test("C5[anti-toxic]")
def test_C5_anti_toxic_groups_contribute_a_large_share(measurements, check_claim):
    check_claim(claims.c5_anti_toxic_share(measurements))


@claim_test("C6[increasing]")
def test_C6_many_neurons_increase_toxicity(measurements, check_claim):
    check_claim(claims.c6_fraction_increasing(measurements))


@claim_test("C6[net-over-gross]")
def test_C6_net_reduction_is_a_small_part_of_gross(measurements, check_claim):
    check_claim(claims.c6_net_over_gross(measurements))


@claim_test("C7[top-toxic]")
def test_C7_top_toxic_neurons_carry_a_minority(measurements, check_claim):
    check_claim(claims.c7_top_toxic_share(measurements))


@claim_test("C7[rank-to-net]")
def test_C7_reaching_the_net_takes_thousands_of_neurons(measurements, check_claim):
    check_claim(claims.c7_neurons_to_net(measurements))


@claim_test("C8[peak]")
def test_C8_later_layers_carry_the_largest_reductions(measurements, check_claim):
    check_claim(claims.c8_peak_layer(measurements))


@claim_test("C8[late-groups]")
def test_C8_late_reduction_is_driven_by_TP_and_AN(measurements, check_claim):
    check_claim(claims.c8_late_groups(measurements))


@claim_test("C9")
def test_C9_activation_change_uncorrelated_with_cosine(measurements, check_claim):
    check_claim(claims.c9_correlation(measurements))
