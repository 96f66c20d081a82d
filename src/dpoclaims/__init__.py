"""dpoclaims: the mechanistic claims of Yang et al. 2024 as executable tests.

The library works without pytest: pairs (:mod:`dpoclaims.models.pairs`), the toy organism
(:mod:`dpoclaims.train.organism`), the probe, generation, scoring and the cache.
"""

__version__ = "0.1.0"
