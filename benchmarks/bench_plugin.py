"""Benchmark: what the dpoclaims pytest plugin costs a pytest run that has no claims.

A throwaway project of one unrelated test is run by pytest in a fresh process, with the plugin
(as installed: the ``pytest11`` entry point) and with ``-p no:dpoclaims``, the two interleaved
``--repeats`` times each so that a busy machine slows both alike. Each run's wall time and peak
resident memory (the child's own ``ru_maxrss``, from ``os.wait4``) are measured; the medians and
their difference are printed.

Targets (issue "What a user sees", item 1): the plugin adds at most 0.3 s and 30 MB.

    python benchmarks/bench_plugin.py [--repeats 7] [--json reports/bench_plugin.json]

Exit status 1 when a difference is over its target. Linux only (``ru_maxrss`` in KiB).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TIME_TARGET_S = 0.3
MEMORY_TARGET_MB = 30.0
UNRELATED_TEST = "def test_arithmetic():\n    assert 1 + 1 == 2\n"


def make_project(root: Path) -> Path:
    """A project of one test that has nothing to do with dpoclaims (its own rootdir)."""
    (root / "pyproject.toml").write_text("[tool.pytest.ini_options]\n")
    (root / "test_unrelated.py").write_text(UNRELATED_TEST)
    return root


def run_once(project: Path, with_plugin: bool) -> tuple[float, float]:
    """One pytest run in a fresh interpreter: (wall seconds, peak RSS in MB)."""
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
    if not with_plugin:
        command += ["-p", "no:dpoclaims"]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DPOCLAIMS_", "PYTEST_"))}
    start = time.perf_counter()
    child = subprocess.Popen(command, cwd=project, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert child.stdout is not None
    output = child.stdout.read()
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - start
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        raise SystemExit(
            f"pytest failed ({child.returncode}) in {project}:\n{output.decode(errors='replace')}"
        )
    return wall, usage.ru_maxrss / 1024  # KiB -> MiB


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--repeats", type=int, default=7, help="runs of each variant, interleaved (default 7)"
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    runs: dict[str, list[tuple[float, float]]] = {"with plugin": [], "-p no:dpoclaims": []}
    with tempfile.TemporaryDirectory(prefix="dpoclaims-bench-plugin-") as tmp:
        project = make_project(Path(tmp))
        run_once(project, True)  # warm the file cache (bytecode, site-packages) for both variants
        for _ in range(args.repeats):
            runs["with plugin"].append(run_once(project, True))
            runs["-p no:dpoclaims"].append(run_once(project, False))
    medians = {
        name: (statistics.median(w for w, _ in values), statistics.median(m for _, m in values))
        for name, values in runs.items()
    }
    extra_s = medians["with plugin"][0] - medians["-p no:dpoclaims"][0]
    extra_mb = medians["with plugin"][1] - medians["-p no:dpoclaims"][1]
    result = {
        "repeats": args.repeats,
        "cpu_count": os.cpu_count(),
        "wall_s": {name: [round(w, 3) for w, _ in values] for name, values in runs.items()},
        "peak_rss_mb": {name: [round(m, 1) for _, m in values] for name, values in runs.items()},
        "median_wall_s": {name: round(w, 3) for name, (w, _) in medians.items()},
        "median_peak_rss_mb": {name: round(m, 1) for name, (_, m) in medians.items()},
        "plugin_extra_s": round(extra_s, 3),
        "plugin_extra_mb": round(extra_mb, 1),
        "targets": {"extra_s": TIME_TARGET_S, "extra_mb": MEMORY_TARGET_MB},
    }
    print(json.dumps(result, indent=1))
    for name, (wall, rss) in medians.items():
        print(f"{name:>16}: {wall:.3f} s, {rss:.1f} MB peak RSS (median of {args.repeats})")
    time_ok, memory_ok = extra_s <= TIME_TARGET_S, extra_mb <= MEMORY_TARGET_MB
    print(f"plugin adds {extra_s:+.3f} s (target <= {TIME_TARGET_S} s): {'ok' if time_ok else 'OVER'}")
    print(
        f"plugin adds {extra_mb:+.1f} MB (target <= {MEMORY_TARGET_MB:.0f} MB): {'ok' if memory_ok else 'OVER'}"
    )
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    return 0 if time_ok and memory_ok else 1


if __name__ == "__main__":
    sys.exit(main())
