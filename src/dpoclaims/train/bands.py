"""The bands of a pair's setting: the ranges a built pair's measurements must lie in for its
claims to be measured, recorded in its build report and read back the same way for every pair."""

from __future__ import annotations

from typing import Any

from dpoclaims.errors import BrokenOrganismError


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


def check_bands(report: dict[str, Any], *, organism: str, advice: str) -> None:
    """A :class:`BrokenOrganismError` when the build ``report`` of ``organism`` (e.g. "the toy
    organism in <directory>") fails a band of its setting: the suite never measures claims on it
    (its verdicts would be about a broken organism). The message names each failed band and the
    library versions the report records, then the pair's own ``advice`` (causes, where its bands
    are documented)."""
    failed = failed_bands(report)
    if not failed:
        return
    built_with = report.get("libraries") or {}
    raise BrokenOrganismError(
        f"{organism} is outside the bands of its setting: {'; '.join(failed)}. It was built with "
        f"{', '.join(f'{k} {v}' for k, v in sorted(built_with.items())) or 'unrecorded versions'}. "
        f"Its claims would be about a broken organism, so none are run. {advice}"
    )
