"""The run manifest: what produced a report, so that a figure can be read with its versions.

A claims run's ``claims.json`` and a sweep's ``replication.json`` carry one (``"manifest"``), and
their markdown headers show it (:func:`manifest_lines`). It holds, in four groups:

- ``versions``: dpoclaims's version, the git commit of the code that ran (with a dirty flag),
  Python, and the version of every library that keys the cache (:func:`dpoclaims.versions.build_versions`);
- ``machine``: the OS, the CPU model and core count, and the device, dtype and thread count the
  figures were computed with;
- ``settings``: what the caller says shaped the figures (for a claims run: the pair and its
  fingerprint, max-prompts, convention, scorer, seed, search examples, the expectations table);
- ``time``: the start (UTC), the total wall time and each part's (each claim's test call, or each
  cell of a sweep).

:func:`manifest_differences` says in which of the first three groups two manifests differ, which
is why two reports' figures differ before any figure is compared (``scripts/compare_claims.py``).
Everything here is plain JSON (strings, numbers, booleans, None, lists and dicts).
"""

from __future__ import annotations

import math
import os
import platform
import subprocess
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import dpoclaims
from dpoclaims.versions import build_versions

MANIFEST_FORMAT = 1
#: The groups of a manifest that explain a difference between two reports, in the order said.
EXPLAINING_GROUPS = ("versions", "settings", "machine")
_GIT_TIMEOUT_S = 10


def run_manifest(
    settings: Mapping[str, Any],
    *,
    device: str | None,
    dtype: str | None,
    threads: int | None,
    started: float,
    wall_s: float,
    durations: Mapping[str, Mapping[str, float]] | None = None,
) -> dict[str, Any]:
    """The manifest of a run that started at ``started`` (seconds since the epoch) and took
    ``wall_s`` seconds. ``device``, ``dtype`` and ``threads`` are those the figures were computed
    with (None: not known, e.g. a sweep, whose cells each say theirs); ``settings`` must be plain
    JSON values; ``durations`` adds named per-part wall times to ``time`` (``{"claims_s": {id: s}}``)."""
    manifest = {
        "format": MANIFEST_FORMAT,
        "versions": {
            "dpoclaims": dpoclaims.__version__,
            **source_revision(Path(dpoclaims.__file__).resolve().parent),
            "python": f"{platform.python_implementation()} {platform.python_version()}",
            "libraries": build_versions(),  # every library whose version keys the cache
        },
        "machine": {
            "os": platform.platform(),
            "cpu": cpu_model(),
            "cpu_count": os.cpu_count(),
            "device": device,
            "dtype": dtype,
            "threads": threads,
        },
        "settings": dict(settings),
        "time": {
            "started": datetime.fromtimestamp(started, timezone.utc).isoformat(timespec="seconds"),
            "wall_s": _seconds(wall_s),
            **{
                name: {key: _seconds(value) for key, value in parts.items()}
                for name, parts in (durations or {}).items()
            },
        },
    }
    return manifest


def _seconds(value: float) -> float | None:
    return round(float(value), 3) if math.isfinite(value) else None


def _git(directory: Path, *args: str) -> str | None:
    """``git -C directory ARGS``'s output, or None when git is missing or says no."""
    try:
        done = subprocess.run(
            ["git", "-C", str(directory), *args],
            capture_output=True,
            text=True,
            timeout=_GIT_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 else None


def source_revision(package_dir: Path) -> dict[str, Any]:
    """``{"commit": sha, "dirty": bool}`` of the git checkout the package is imported from, or
    ``{"commit": None, "dirty": None}`` when it is not one (an installed wheel). A package merely
    lying inside some repository (a virtual environment in a checkout) is not that repository's:
    its ``__init__.py`` must be tracked there. Dirty: a tracked file is modified, or a file that
    is neither tracked nor ignored exists (a new claims file counts)."""
    unknown: dict[str, Any] = {"commit": None, "dirty": None}
    if _git(package_dir, "ls-files", "--error-unmatch", "__init__.py") is None:
        return unknown
    commit = _git(package_dir, "rev-parse", "HEAD")
    top = _git(package_dir, "rev-parse", "--show-toplevel")
    if commit is None or top is None:
        return unknown
    status = _git(Path(top.strip()), "status", "--porcelain")
    return {"commit": commit.strip(), "dirty": None if status is None else bool(status.strip())}


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux, ``sysctl`` on macOS), else what
    :func:`platform.processor` or :func:`platform.machine` says."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("model name", "Model", "Hardware") and value.strip():
                return value.strip()
    except OSError:
        pass
    if platform.system() == "Darwin":
        try:
            done = subprocess.run(
                ["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True, text=True, timeout=5
            )
            if done.returncode == 0 and done.stdout.strip():
                return done.stdout.strip()
        except (OSError, subprocess.SubprocessError):
            pass
    return platform.processor() or platform.machine() or "unknown"


def _flat(value: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts as ``a.b.c -> leaf`` (lists stay leaves)."""
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, item in value.items():
            out |= _flat(item, f"{prefix}.{key}" if prefix else str(key))
        return out
    return {prefix: value}


def manifest_differences(
    first: Mapping[str, Any] | None, second: Mapping[str, Any] | None
) -> dict[str, list[str]]:
    """What differs between two runs' manifests, by group (:data:`EXPLAINING_GROUPS`): each a list
    of ``key: first -> second``. Times always differ and are not compared. A report without a
    manifest (written before dpoclaims recorded one) gives the group ``manifest``, saying which."""
    missing = [name for name, m in (("first", first), ("second", second)) if not m]
    if missing:
        return {
            "manifest": [
                f"the {' and the '.join(missing)} report{'s have' if len(missing) == 2 else ' has'} no manifest "
                "(written before dpoclaims recorded one): versions, settings and machine cannot be compared"
            ]
        }
    assert first is not None and second is not None
    differences: dict[str, list[str]] = {}
    for group in EXPLAINING_GROUPS:
        a, b = _flat(first.get(group) or {}), _flat(second.get(group) or {})
        lines = [
            f"{key}: {_text(a.get(key))} -> {_text(b.get(key))}"
            for key in sorted(set(a) | set(b))
            if a.get(key) != b.get(key)
        ]
        if lines:
            differences[group] = lines
    return differences


def _text(value: Any) -> str:
    return "(none)" if value is None else str(value)


def manifest_lines(manifest: Mapping[str, Any] | None) -> list[str]:
    """The manifest as a few markdown lines, for a report's header."""
    if not manifest:
        return ["Run: no manifest was recorded."]
    versions, machine = manifest.get("versions") or {}, manifest.get("machine") or {}
    settings, timing = manifest.get("settings") or {}, manifest.get("time") or {}
    commit = versions.get("commit")
    source = (
        f"commit `{commit[:12]}`" + (" with uncommitted changes" if versions.get("dirty") else "")
        if commit
        else "not a git checkout"
    )
    libraries = ", ".join(f"{name} {version}" for name, version in (versions.get("libraries") or {}).items())
    device = ", ".join(
        part
        for part in (
            f"device {machine['device']}" if machine.get("device") else "",
            machine.get("dtype") or "",
            f"{machine['threads']} threads" if machine.get("threads") else "",
        )
        if part
    )
    setting_text = "; ".join(f"{key} {_setting_text(value)}" for key, value in settings.items())
    wall = timing.get("wall_s")
    return [
        f"Run: dpoclaims {versions.get('dpoclaims')} ({source}), {versions.get('python')}; {libraries}.",
        "",
        f"Machine: {machine.get('os')}; CPU {machine.get('cpu')} ({machine.get('cpu_count')} cores)"
        + (f"; {device}" if device else "")
        + ".",
        "",
        f"Settings: {setting_text}.",
        "",
        f"Started {timing.get('started')}; wall time {wall:.0f} s."
        if isinstance(wall, (int, float))
        else f"Started {timing.get('started')}.",
    ]


def _setting_text(value: Any) -> str:
    if isinstance(value, Mapping):
        return "(" + ", ".join(f"{k} {_setting_text(v)}" for k, v in value.items()) + ")"
    if isinstance(value, (list, tuple)):
        return ", ".join(_setting_text(v) for v in value) or "-"
    return "-" if value is None else f"`{value}`"
