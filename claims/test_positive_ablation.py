"""C2: ablating positively-activated toxic neurons does not emulate DPO either, and costs perplexity.

Generated from the paper table (dpoclaims.claims.paper): each entry of family ``positive_ablation`` is one
test here, parametrized, marked and documented from its entry. One file per claim family, so that
under ``pytest -n N --dist loadfile`` the families' generation passes run on different workers."""

from dpoclaims.plugin.claim_tests import family_tests

globals().update(family_tests(__name__))
