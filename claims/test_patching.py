"""C3, C10: patching neuron activations to their DPO levels, at the authors' positions.

Generated from the paper table (dpoclaims.claims.paper): each entry of family ``patching`` is one
test here, parametrized, marked and documented from its entry. One file per claim family, so that
under ``pytest -n N --dist loadfile`` the families' generation passes run on different workers."""

from dpoclaims.plugin.claim_tests import family_tests

globals().update(family_tests(__name__))
