"""The toy model organism: a small GPT-2-architecture LM, a toxicity probe and a DPO model,
built offline from a synthetic corpus (see :mod:`dpoclaims.train.organism.build`)."""

#: The seed of the default toy (the pair ``toy``; ``toy-seedN`` is the toy at seed N). Seed 2 is
#: the first seed and DPO length whose float64 build meets every band of the setting, judged on
#: the bands alone, no claim measured (docs/history.md, "The toy", gives every build tried).
DEFAULT_SEED = 2
