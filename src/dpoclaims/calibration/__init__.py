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
