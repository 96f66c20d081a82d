"""Calibration: the claims' verdicts checked against pairs whose truth is known by construction.

- :mod:`dpoclaims.calibration.organisms`: the planted organisms (``planted-ablation``,
  ``planted-diffuse``, ``planted-null``, ``planted-edit``), each a weight edit of the toy's base,
  one class per kind, with its truth table (which claims the construction determines, and the
  right verdict) written beside the construction, before anything is measured.
- :mod:`dpoclaims.calibration.run`: ``dpoclaims calibrate``: every claim on every organism over
  replications (planting seeds and prompt subsets), in worker processes.
- :mod:`dpoclaims.calibration.report`: the cells (claim x organism: truth, verdict counts, wrong
  rate) as ``calibration.json``, ``calibration.md`` and a figure.
"""

# The calibration's defaults, in one place (light: the command line reads them for its help). They
# fit 4 organisms x 20 replications in 20 minutes on 2 CPU cores (benchmarks/bench_calibrate.py).
DEFAULT_REPLICATIONS = 20  # replications per organism: 0 wrong of 20 bounds a cell's rate at 13.9%
DEFAULT_PROMPTS = 40  # distinct challenge prompts per replication (of the toy's 184)
DEFAULT_TEXTS = 100  # held-out texts per replication (of the toy's 400)
DEFAULT_SEARCH_EXAMPLES = 10  # drawn per search, after its stated candidates (the suite's default is 16)
