"""C1: ablating the top toxic neurons does not emulate DPO (Yang et al. 2024 v1, Table 1).

Generated from the paper table (dpoclaims.claims.paper): each entry of family ``ablation`` is one
test here, parametrized, marked and documented from its entry. One file per claim family, so that
under ``pytest -n N --dist loadfile`` the families' generation passes run on different workers."""

from dpoclaims.plugin.claim_tests import family_tests

globals().update(family_tests(__name__))
