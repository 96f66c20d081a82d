"""Root conftest of a dpoclaims checkout.

The suite's pytest plugin (options, fixtures, reports) lives in the package, :mod:`dpoclaims.plugin`,
and is registered by installing it (its ``pytest11`` entry point): ``pip install -e .``. This file
only checks that the dpoclaims pytest imports is this checkout's, so that an edit here is what runs.
"""

from __future__ import annotations

from pathlib import Path

import pytest


def pytest_configure(config: pytest.Config) -> None:
    if not config.pluginmanager.has_plugin("dpoclaims"):
        raise pytest.UsageError(
            "the dpoclaims pytest plugin is not registered: install this checkout with `pip install -e .` "
            "(or remove `-p no:dpoclaims`)"
        )
    import dpoclaims

    here = Path(__file__).resolve().parent / "src" / "dpoclaims"
    installed = Path(dpoclaims.__file__).resolve().parent
    if installed != here:
        raise pytest.UsageError(
            f"pytest imports dpoclaims from {installed}, not from this checkout ({here}): "
            "install this checkout with `pip install -e .`"
        )
