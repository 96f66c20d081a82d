"""The bands of a pair's setting: the ranges a built pair's measurements must lie in for its
claims to be measured, recorded in its build report and read back the same way for every pair."""

from __future__ import annotations

from typing import Any


def failed_bands(report: dict[str, Any]) -> list[str]:
    """The bands a built pair's report fails, each as ``name = value (band [low, high])``."""
    return [
        f"{name} = {band['value']:.4f} (band [{band['band'][0]}, {band['band'][1]}])"
        for name, band in report["bands"].items()
        if not band["ok"]
    ]


def band_checks(
    measured: dict[str, float], bands: dict[str, tuple[float, float]]
) -> dict[str, dict[str, Any]]:
    """Each band of ``bands`` with the measured value and whether it lies inside (a report's
    ``bands``, which :func:`failed_bands` reads)."""
    return {
        name: {"value": measured[name], "band": [low, high], "ok": low <= measured[name] <= high}
        for name, (low, high) in bands.items()
    }
