"""Claims across organism seeds: is a verdict a property of the setting or of one DPO run?

``dpoclaims replicate --seeds 0 1 2`` builds the toy organism at each seed (or reuses it from
the cache), runs the whole claims suite on each (``pytest claims/ --pair toy-seedN`` in a
subprocess, with an empty expectations table so every outcome is the raw verdict; the pair
``toy-seed0`` is the default toy, so its measurements come from the same cache entries), and
gathers the seeds'
``claims.json`` into ``replication.json``, ``replication.md`` and a figure of claims by seeds
coloured by verdict (``figures/replication.png``). Each seed's full reports stay under
``replication/seed-N/``.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from dpoclaims.cache import Cache
from dpoclaims.errors import DpoclaimsError, OptionError, ReportError
from dpoclaims.files import atomic_write_text, ensure_writable_dir

#: A checkout's root (src layout): the claims suite and its conftest live there.
CHECKOUT = Path(__file__).resolve().parents[2]
VERDICT_COLORS = {
    "replicates": "#2ca02c",
    "contradicts": "#d62728",
    "inconclusive": "#f2c744",
    "not measurable": "#ff7f0e",
    "not measured": "#bdbdbd",
}
NOT_MEASURED = "not measured"
REPORTS_REMEDY = "pass --reports-dir with a writable directory"


class ReplicationError(DpoclaimsError):
    """A seed's claims run that produced no report (a crash, a usage error, no claims)."""


@dataclass(frozen=True)
class SeedRun:
    """One seed: its toy, how long the build and the claims took, and where the reports are."""

    seed: int
    toy_dir: str
    toy_built: bool  # built in this run (False: reused from the cache)
    build_s: float
    claims_s: float
    pytest_exit: int
    reports_dir: str


# ------------------------------------------------------------------------- reading the seeds' reports


def verdict_of(record: Mapping[str, Any]) -> str:
    """A claim record's verdict: ``claim["verdict"]`` (three-state reports), else from
    ``claim["replicates"]``; a record without a claim (skipped, errored) is "not measured"."""
    claim = record.get("claim")
    if not claim:
        return NOT_MEASURED
    if claim.get("verdict"):
        return str(claim["verdict"])
    if claim.get("replicates") is None:
        return NOT_MEASURED
    return "replicates" if claim["replicates"] else "contradicts"


def _finite(value: Any) -> float | None:
    """A number for strict JSON: NaN and infinities (an undefined figure) become None."""
    if isinstance(value, (int, float)) and math.isfinite(value):
        return float(value)
    return None


def _claim_order(claim_id: str) -> tuple[int, str]:
    number = claim_id[1:].split("[")[0]
    return (int(number) if number.isdigit() else 10**6, claim_id)


def replication_matrix(claims_files: Mapping[int, Path]) -> dict[str, Any]:
    """``{seeds, claims, matrix, stable, unstable}`` from each seed's ``claims.json``.

    ``matrix[claim][seed]`` holds the verdict, the measured figure, its interval and the test
    outcome; a claim a seed did not run is "not measured" there. A claim is ``stable`` when every
    seed gives it the same verdict and that verdict is a measured one.
    """
    seeds = sorted(claims_files)
    per_seed: dict[int, dict[str, dict[str, Any]]] = {}
    order: dict[str, tuple[int, int]] = {}
    for seed in seeds:
        path = Path(claims_files[seed])
        try:
            records = json.loads(path.read_text())["claims"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ReplicationError(f"seed {seed}: cannot read its claims report {path}: {exc}") from exc
        per_seed[seed] = {}
        for record in records:
            claim_id = record["id"]
            claim = record.get("claim") or {}
            per_seed[seed][claim_id] = {
                "verdict": verdict_of(record),
                "measured": _finite(claim.get("measured")),
                "ci": [_finite(x) for x in claim["ci"]] if claim.get("ci") else None,
                "outcome": record.get("outcome"),
            }
            number = _claim_order(claim_id)[0]
            order.setdefault(claim_id, (number, int(record.get("order", 0))))
    claims = sorted(order, key=lambda c: (order[c], c))
    missing = {"verdict": NOT_MEASURED, "measured": None, "ci": None, "outcome": "not run"}
    matrix = {c: {str(s): per_seed[s].get(c, missing) for s in seeds} for c in claims}
    stable, unstable = [], []
    for claim_id in claims:
        verdicts = {cell["verdict"] for cell in matrix[claim_id].values()}
        measured = verdicts.isdisjoint({NOT_MEASURED, "not measurable"})
        (stable if len(verdicts) == 1 and measured else unstable).append(claim_id)
    return {"seeds": seeds, "claims": claims, "matrix": matrix, "stable": stable, "unstable": unstable}


def _cell_text(cell: Mapping[str, Any]) -> str:
    measured = cell.get("measured")
    if isinstance(measured, (int, float)):
        return f"{cell['verdict']} ({measured:.3g})"
    return str(cell["verdict"])


def replication_markdown(result: Mapping[str, Any]) -> str:
    seeds = result["seeds"]
    lines = [
        "# Claims across organism seeds",
        "",
        f"The toy organism built at seeds {', '.join(map(str, seeds))}; every claim run on each with no "
        "declared expectations, so each cell is the raw verdict (and the measured figure). A claim is "
        "stable when every seed gives it the same measured verdict.",
        "",
        "| claim | " + " | ".join(f"seed {s}" for s in seeds) + " | stable |",
        "|---|" + "---|" * len(seeds) + "---|",
    ]
    for claim_id in result["claims"]:
        cells = [_cell_text(result["matrix"][claim_id][str(s)]) for s in seeds]
        stable = "yes" if claim_id in result["stable"] else "no"
        lines.append(f"| {claim_id} | " + " | ".join(cells) + f" | {stable} |")
    lines += [
        "",
        f"Stable across seeds ({len(result['stable'])}): {', '.join(result['stable']) or 'none'}.",
        "",
        f"Not stable ({len(result['unstable'])}): {', '.join(result['unstable']) or 'none'}.",
    ]
    runs = result.get("runs")
    if runs:
        lines += ["", "| seed | toy | build (s) | claims (s) | pytest exit |", "|---|---|---|---|---|"]
        for run in runs:
            toy = "built" if run["toy_built"] else "from cache"
            lines.append(
                f"| {run['seed']} | {toy} | {run['build_s']:.0f} | {run['claims_s']:.0f} | {run['pytest_exit']} |"
            )
    if result.get("wall_s") is not None:
        lines += ["", f"Wall time: {result['wall_s']:.0f} s."]
    lines += ["", "![claims by seeds](figures/replication.png)"]
    return "\n".join(lines) + "\n"


def replication_figure(result: Mapping[str, Any], path: Path) -> Path:
    """Claims (rows) by seeds (columns), each cell coloured by its verdict."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import to_rgb
    from matplotlib.patches import Patch

    seeds, claims = result["seeds"], result["claims"]
    grid = [
        [
            to_rgb(VERDICT_COLORS.get(result["matrix"][c][str(s)]["verdict"], VERDICT_COLORS[NOT_MEASURED]))
            for s in seeds
        ]
        for c in claims
    ]
    fig, ax = plt.subplots(figsize=(2.2 + 1.3 * len(seeds), 1.2 + 0.32 * max(len(claims), 1)))
    if claims:
        ax.imshow(grid, aspect="auto", interpolation="nearest")
    for row, claim_id in enumerate(claims):
        for col, seed in enumerate(seeds):
            measured = result["matrix"][claim_id][str(seed)].get("measured")
            if isinstance(measured, (int, float)):
                ax.text(col, row, f"{measured:.3g}", ha="center", va="center", fontsize=7)
    ax.set_xticks(range(len(seeds)), [f"seed {s}" for s in seeds])
    ax.set_yticks(range(len(claims)), claims, fontsize=8)
    ax.set_xticks([x - 0.5 for x in range(1, len(seeds))], minor=True)
    ax.set_yticks([y - 0.5 for y in range(1, len(claims))], minor=True)
    ax.grid(which="minor", color="white", linewidth=1.5)
    ax.tick_params(which="minor", length=0)
    ax.set_title("Claims across toy organism seeds")
    legend = [Patch(color=color, label=name) for name, color in VERDICT_COLORS.items()]
    ax.legend(handles=legend, loc="upper left", bbox_to_anchor=(1.02, 1), fontsize=8, frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_replication(
    claims_files: Mapping[int, Path],
    reports_dir: Path,
    runs: Sequence[SeedRun] = (),
    wall_s: float | None = None,
) -> list[Path]:
    """Write ``replication.json``, ``replication.md`` and ``figures/replication.png``."""
    for directory in (reports_dir, reports_dir / "figures"):
        ensure_writable_dir(directory, "reports directory", REPORTS_REMEDY, ReportError)
    result = replication_matrix(claims_files)
    result["runs"] = [asdict(run) for run in runs]
    result["wall_s"] = wall_s
    paths = [reports_dir / "replication.json", reports_dir / "replication.md"]
    atomic_write_text(paths[0], json.dumps(result, indent=1, allow_nan=False))
    atomic_write_text(paths[1], replication_markdown(result))
    paths.append(replication_figure(result, reports_dir / "figures" / "replication.png"))
    return paths


# ------------------------------------------------------------------------- running the seeds


def claims_command(
    claims_dir: Path, seed: int, reports_dir: Path, cache: Cache, pytest_args: Sequence[str] = ()
) -> list[str]:
    """``pytest claims/`` on the toy at ``seed``, named ``toy-seedN`` (not by its directory:
    a directory loads without the toy's lexicon, and the claims would be scored otherwise)."""
    return [
        sys.executable,
        "-m",
        "pytest",
        str(claims_dir),
        "-p",
        "no:cacheprovider",
        "-q",
        "--pair",
        f"toy-seed{seed}",
        "--reports-dir",
        str(reports_dir),
        "--cache-dir",
        str(cache.root),
        *pytest_args,
    ]


#: Options ``replicate`` sets for each seed's run; ``--pytest-args`` may not override them (a
#: later ``--pair`` would measure that pair for every seed and call each claim "stable").
OWN_OPTIONS = ("--pair", "--reports-dir", "--cache-dir")


def check_pytest_args(pytest_args: Sequence[str]) -> None:
    """An :class:`OptionError` when ``pytest_args`` set an option that ``replicate`` sets itself."""
    clashes = [
        arg
        for arg in pytest_args
        if any(arg == option or arg.startswith(option + "=") for option in OWN_OPTIONS)
    ]
    if clashes:
        raise OptionError(
            f"--pytest-args may not set {', '.join(clashes)}: replicate sets {', '.join(OWN_OPTIONS)} for each "
            "seed itself (--pair toy-seedN; --reports-dir and --cache-dir from its own options). Pass "
            "--reports-dir or --cache-dir to dpoclaims replicate instead"
        )


def replicate(
    seeds: Sequence[int],
    *,
    cache: Cache,
    reports_dir: Path,
    claims_dir: Path | None = None,
    pytest_args: Sequence[str] = (),
    progress: Callable[[str], None] = print,
    build_progress: bool = False,
) -> list[Path]:
    """Build (or reuse) the toy at each seed, run every claim on it and write the matrix.

    A seed whose claims run writes no ``claims.json`` is a :class:`ReplicationError` (with the
    tail of its pytest log); failing claims are verdicts, not errors.
    """
    from dpoclaims.organism.build import ToyConfig, ensure_toy

    if not seeds:
        raise OptionError("name at least one seed: dpoclaims replicate --seeds 0 1 2")
    if len(set(seeds)) != len(seeds):
        raise OptionError(f"each seed once, please: got {list(seeds)}")
    bad_seeds = [seed for seed in seeds if not 0 <= seed < 2**32]
    if bad_seeds:
        raise OptionError(f"seeds must be whole numbers from 0 to {2**32 - 1}, not {bad_seeds}")
    check_pytest_args(pytest_args)
    claims_dir = Path(claims_dir) if claims_dir else CHECKOUT / "claims"
    if not any(claims_dir.glob("test_*.py")):
        raise OptionError(
            f"no claims suite at {claims_dir}: run from a dpoclaims checkout or pass --claims-dir"
        )
    root = claims_dir.parent  # the checkout: its conftest registers the suite's plugins
    out = reports_dir / "replication"
    ensure_writable_dir(out, "reports directory", REPORTS_REMEDY, ReportError)
    expectations = out / "no-expectations.toml"
    atomic_write_text(expectations, "# empty: every claim's outcome is its raw verdict\n[pairs]\n")
    env = {
        **os.environ,
        "DPOCLAIMS_EXPECTATIONS": str(expectations),
        "PYTHONPATH": os.pathsep.join(
            [str(root), str(Path(__file__).resolve().parents[1])]
            + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else [])
        ),
    }
    start = time.perf_counter()
    runs, claims_files = [], {}
    for seed in seeds:
        config = replace(ToyConfig(), seed=seed)
        cached = cache.get("toy", config.key()) is not None
        progress(f"seed {seed}: {'toy from the cache' if cached else 'building the toy (a few minutes)'}")
        began = time.perf_counter()
        toy_dir = ensure_toy(config, cache=cache, progress=build_progress)
        build_s = time.perf_counter() - began
        seed_reports = out / f"seed-{seed}"
        seed_reports.mkdir(parents=True, exist_ok=True)
        stale = seed_reports / "claims.json"
        if stale.exists():
            stale.unlink()
        progress(f"seed {seed}: toy {toy_dir} ({build_s:.0f} s); running the claims")
        began = time.perf_counter()
        log = seed_reports / "pytest.log"
        with open(log, "w") as handle:
            exit_code = subprocess.run(
                claims_command(claims_dir, seed, seed_reports, cache, pytest_args),
                cwd=root,
                env=env,
                stdout=handle,
                stderr=subprocess.STDOUT,
                check=False,
            ).returncode
        claims_s = time.perf_counter() - began
        if not stale.is_file():
            tail = log.read_text()[-2000:]
            raise ReplicationError(
                f"seed {seed}: the claims run (pytest exit {exit_code}) wrote no claims.json; its log "
                f"{log} ends:\n{tail}"
            )
        claims_files[seed] = stale
        runs.append(SeedRun(seed, str(toy_dir), not cached, build_s, claims_s, exit_code, str(seed_reports)))
        verdicts = replication_matrix({seed: stale})
        counts: dict[str, int] = {}
        for claim_id in verdicts["claims"]:
            verdict = verdicts["matrix"][claim_id][str(seed)]["verdict"]
            counts[verdict] = counts.get(verdict, 0) + 1
        summary = ", ".join(f"{n} {v}" for v, n in sorted(counts.items()))
        progress(f"seed {seed}: {summary} ({claims_s:.0f} s; reports in {seed_reports})")
    paths = write_replication(claims_files, reports_dir, runs, time.perf_counter() - start)
    progress(f"replication: {paths[1]} (+ {paths[0].name}, {paths[2]})")
    return paths
