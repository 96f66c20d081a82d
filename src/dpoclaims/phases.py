"""Where a run's time goes, phase by phase, for the benchmarks (``benchmarks/bench_claims.py``).

The phases are the library's own steps: ``generation`` (every generate call: evaluations,
captures, samples), ``perplexity`` (every held-out scoring pass), ``searches`` (a search's own
work: Hypothesis, choosing, confirming), ``statistics`` (a claim's figures and decision: the
bootstraps, the decomposition) and ``reports``. Phases nest; each is charged its *own* time (a
generation inside a search counts as generation, not as search), so the phases add up to the
time spent inside any of them. A model phase also counts the tokens it ran through the model
(rows x positions, padding included: the work done), so a benchmark can set its speed against
the machine's matmul limit.

Switched off unless ``$DPOCLAIMS_PHASES`` names a directory: :func:`phase` is then a bare
``yield``. Switched on, each process writes its totals there when it exits (or on
:func:`write`), one JSON file per process (``phases-<pid>.json``); :func:`read` sums them.
"""

from __future__ import annotations

import atexit
import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ENV = "DPOCLAIMS_PHASES"
PHASES = ("generation", "perplexity", "searches", "statistics", "reports")

_totals: dict[str, dict[str, float]] = {}
_children: list[float] = []  # per open phase: the seconds its nested phases took
_registered = False


def directory() -> Path | None:
    """Where this process writes its totals, or None (the accounting is off)."""
    value = os.environ.get(ENV, "").strip()
    return Path(value) if value else None


@contextmanager
def phase(name: str, tokens: int = 0) -> Iterator[dict[str, int]]:
    """Charge the time inside to ``name`` (less its nested phases'). Yields a dict whose
    ``tokens`` the caller may set once it knows them (a generation's output length). Also a
    decorator (``@phase("searches")``): each call of the function is charged."""
    counted = {"tokens": tokens}
    if directory() is None:
        yield counted
        return
    _register()
    start = time.perf_counter()
    _children.append(0.0)
    try:
        yield counted
    finally:
        elapsed = time.perf_counter() - start
        nested = _children.pop()
        if _children:
            _children[-1] += elapsed
        total = _totals.setdefault(name, {"seconds": 0.0, "calls": 0, "tokens": 0})
        total["seconds"] += elapsed - nested
        total["calls"] += 1
        total["tokens"] += counted["tokens"]


def _register() -> None:
    global _registered
    if not _registered:
        atexit.register(write)
        _registered = True


def write() -> None:
    """Write this process's totals into ``$DPOCLAIMS_PHASES`` (atomically; again on each call)."""
    where = directory()
    if where is None or not _totals:
        return
    where.mkdir(parents=True, exist_ok=True)
    target = where / f"phases-{os.getpid()}.json"
    partial = target.with_suffix(".tmp")
    partial.write_text(json.dumps(_totals))
    partial.replace(target)


def read(where: Path) -> dict[str, dict[str, float]]:
    """Every process's totals in ``where``, summed per phase."""
    summed: dict[str, dict[str, float]] = {}
    for path in sorted(where.glob("phases-*.json")):
        for name, total in json.loads(path.read_text()).items():
            into = summed.setdefault(name, {"seconds": 0.0, "calls": 0, "tokens": 0})
            for key, value in total.items():
                into[key] += value
    return summed


def reset() -> None:
    """Forget this process's totals (for a test)."""
    _totals.clear()
    _children.clear()


def totals() -> dict[str, Any]:
    """This process's totals so far (a copy)."""
    return {name: dict(total) for name, total in _totals.items()}
