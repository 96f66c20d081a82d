"""The toy model organism: a small GPT-2-architecture LM, a toxicity probe and a DPO model,
built offline from a synthetic corpus (see :mod:`dpoclaims.train.organism.build`)."""
