"""The claims suite's pytest plugin, registered through the ``pytest11`` entry point (so any
``pytest`` run where dpoclaims is installed has it; ``-p no:dpoclaims`` turns it off).

- :mod:`~dpoclaims.plugin.options`: the suite's command-line options, parsed once into a
  frozen :class:`~dpoclaims.plugin.options.SuiteOptions`.
- :mod:`~dpoclaims.plugin.resources`: the fixtures (the pair, its base and DPO models, the
  cached captures and measurements) and building the toy before the first test.
- :mod:`~dpoclaims.plugin.reporting`: verdicts, expected failures, reports and badges.
- :mod:`~dpoclaims.plugin.claim_tests`: the claims tests, generated from the paper table
  (``family_tests``): parametrization, markers and docstring from each entry.

Everything here acts only on a run that uses the suite: one that selects ``claims/`` under its
root directory, or collects a test marked ``claim`` or asking for one of the suite's fixtures.
Elsewhere the plugin adds its options and markers and nothing else: loading it imports nothing
heavy (no torch, no numpy; ``tests/test_plugin_lightness.py``), and it reads no option and no
``DPOCLAIMS_*`` variable (``benchmarks/bench_plugin.py`` measures what it costs such a run).
"""

pytest_plugins = ["dpoclaims.plugin.options", "dpoclaims.plugin.resources", "dpoclaims.plugin.reporting"]
