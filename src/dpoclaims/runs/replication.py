"""The replication matrix: claims (rows) by the cells of a sweep (columns).

A sweep (:mod:`dpoclaims.runs.sweep`; ``dpoclaims sweep``, or ``dpoclaims replicate`` for seeds alone)
runs the claims suite once per cell of a grid of pairs x toy seeds x position conventions x
scorers, with no declared expectations, so each cell holds the raw verdicts. This module reads the
cells' ``claims.json`` and writes ``replication.json`` (with the sweep's manifest), ``replication.md``,
the page ``replication.html`` and a figure of claims by cells coloured by verdict
(``figures/replication.png``). A cell that produced no report (its run
failed, or was cancelled) is *missing*: never a verdict, and no claim is stable across a sweep with
a missing cell.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from dpoclaims.claims.results import NOT_MEASURED, ClaimRecord
from dpoclaims.errors import DpoclaimsError, OptionError, ReportError
from dpoclaims.files import atomic_write_text, ensure_writable_dir

# MISSING (a cell whose claims run produced no report: not a verdict) and the verdicts' colours
# are the report pages' too.
from dpoclaims.report.manifest import manifest_lines
from dpoclaims.report.page import MISSING, VERDICT_COLORS, matrix_page
from dpoclaims.stats import VERDICTS

REPORTS_REMEDY = "pass --reports-dir with a writable directory"
#: The files a sweep wrote into its reports directory (with digests): the only ones it writes over.
REPLICATION_MANIFEST = ".dpoclaims-replication.json"
#: The matrix's own files in the reports directory (each cell's reports go under replication/).
REPLICATION_FILES = ("replication.json", "replication.md", "replication.html", "figures/replication.png")


class ReplicationError(DpoclaimsError):
    """A cell's claims report that cannot be read."""


# ------------------------------------------------------------------------- reading the cells' reports


def _finite(value: Any) -> float | None:
    """A number for strict JSON: NaN and infinities (an undefined figure) become None."""
    if isinstance(value, (int, float)) and math.isfinite(value):
        return float(value)
    return None


def replication_matrix(
    claims_files: Mapping[Any, Path],
    columns: Sequence[Any] | None = None,
    missing: Mapping[Any, str] | None = None,
) -> dict[str, Any]:
    """``{columns, claims, matrix, stable, unstable, missing}`` from each cell's ``claims.json``.

    ``columns`` orders the cells (default: the sorted keys of ``claims_files``); a column without
    a claims file is a missing cell, with its reason from ``missing``. ``matrix[claim][column]``
    holds the verdict, the measured figure, its interval and the test outcome; a claim a cell did
    not run is "not measured" there, and every claim of a missing cell is "missing". A claim is
    ``stable`` when every cell gives it the same verdict and that verdict is a measured one.
    """
    columns = [str(c) for c in (columns if columns is not None else sorted(claims_files))]
    files = {str(c): Path(p) for c, p in claims_files.items()}
    reasons = {str(c): r for c, r in (missing or {}).items()}
    per_cell: dict[str, dict[str, dict[str, Any]]] = {}
    order: dict[str, tuple[int, int]] = {}
    for column in columns:
        if column not in files:
            reasons.setdefault(column, "no claims report")
            continue
        path = files[column]
        try:
            records = [ClaimRecord.from_json(r) for r in json.loads(path.read_text())["claims"]]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ReplicationError(f"cell {column}: cannot read its claims report {path}: {exc}") from exc
        per_cell[column] = {}
        for record in records:
            claim_id, claim = str(record.id), record.result
            per_cell[column][claim_id] = {
                "verdict": record.verdict,
                "measured": _finite(claim.measured) if claim else None,
                "ci": [_finite(x) for x in claim.ci] if claim and claim.ci else None,
                "outcome": record.outcome,
            }
            order.setdefault(claim_id, record.sort_key)
    claims = sorted(order, key=lambda c: (order[c], c))
    not_run = {"verdict": NOT_MEASURED, "measured": None, "ci": None, "outcome": "not run"}
    matrix = {
        c: {
            col: (
                per_cell[col].get(c, not_run)
                if col in per_cell
                else {"verdict": MISSING, "measured": None, "ci": None, "outcome": MISSING}
            )
            for col in columns
        }
        for c in claims
    }
    # claim by claim, how many cells gave each verdict (VERDICTS' order, then the cells with none)
    counts = {
        c: {
            v: n
            for v in (*VERDICTS, NOT_MEASURED, MISSING)
            if (n := sum(cell["verdict"] == v for cell in matrix[c].values()))
        }
        for c in claims
    }
    stable: list[str] = []
    unstable: list[str] = []
    for claim_id in claims:
        verdicts = {cell["verdict"] for cell in matrix[claim_id].values()}
        measured = verdicts.isdisjoint({NOT_MEASURED, "not measurable", MISSING})
        (stable if len(verdicts) == 1 and measured else unstable).append(claim_id)
    return {
        "columns": columns,
        "claims": claims,
        "matrix": matrix,
        "counts": counts,
        "stable": stable,
        "unstable": unstable,
        "missing": {c: reasons[c] for c in columns if c not in per_cell},
    }


def column_labels(result: Mapping[str, Any]) -> dict[str, str]:
    """Short column headings: the cell's values along the grid's axes that vary (``seed 1``,
    ``seed 1 · emnlp``), else the column id."""
    cells = {cell["id"]: cell for cell in result.get("cells") or ()}
    columns = result["columns"]
    if set(cells) != set(columns):
        return {c: c for c in columns}
    axes = [axis for axis in ("pair", "convention", "scorer") if len({cells[c][axis] for c in columns}) > 1]
    all_toy_seeds = all(cells[c].get("seed") is not None for c in columns)
    labels = {}
    for column in columns:
        cell = cells[column]
        parts = []
        for axis in axes or ["pair"]:
            if axis == "pair" and all_toy_seeds:
                parts.append(f"seed {cell['seed']}")
            else:
                parts.append(str(cell[axis] or "default scorer"))
        labels[column] = " · ".join(parts)
    return labels


def _cell_text(cell: Mapping[str, Any]) -> str:
    measured = cell.get("measured")
    if isinstance(measured, (int, float)):
        return f"{cell['verdict']} ({measured:.3g})"
    return str(cell["verdict"])


def _counts_text(result: Mapping[str, Any], claim_id: str) -> str:
    """``3 replicates, 1 contradicts, 1 inconclusive``: how many cells gave each verdict (counted
    from the matrix when the result predates its ``counts``)."""
    counts = (result.get("counts") or {}).get(claim_id)
    if counts is None:
        counts = {}
        for cell in result["matrix"][claim_id].values():
            counts[cell["verdict"]] = counts.get(cell["verdict"], 0) + 1
    return ", ".join(f"{n} {verdict}" for verdict, n in counts.items())


def replication_markdown(result: Mapping[str, Any]) -> str:
    columns = result["columns"]
    labels = column_labels(result)
    lines = [
        "# Claims across the cells of a sweep",
        "",
        "Every claim run on each cell (a pair, or the toy built at a seed, with a position convention and "
        "a scorer) with no declared expectations, so each entry is the raw verdict (and the measured "
        "figure). A claim is stable when every cell gives it the same measured verdict; a missing cell "
        "(its run failed or was cancelled) is no verdict.",
        "",
    ]
    if result.get("cells"):
        lines += ["| column | pair | convention | scorer |", "|---|---|---|---|"]
        for cell in result["cells"]:
            lines.append(
                f"| {labels[cell['id']]} | {cell['pair']} | {cell['convention']} | "
                f"{cell['scorer'] or 'default'} |"
            )
        lines.append("")
    if result.get("manifest"):
        lines += [*manifest_lines(result["manifest"]), ""]
    lines += [
        "| claim | " + " | ".join(labels[c] for c in columns) + " | cells by verdict | stable |",
        "|---|" + "---|" * len(columns) + "---|---|",
    ]
    for claim_id in result["claims"]:
        cells = [_cell_text(result["matrix"][claim_id][c]) for c in columns]
        stable = "yes" if claim_id in result["stable"] else "no"
        lines.append(
            f"| {claim_id} | " + " | ".join(cells) + f" | {_counts_text(result, claim_id)} | {stable} |"
        )
    lines += [
        "",
        f"Stable across the cells ({len(result['stable'])}): {', '.join(result['stable']) or 'none'}.",
        "",
        f"Not stable, or not measured in every cell ({len(result['unstable'])}): "
        f"{', '.join(result['unstable']) or 'none'}.",
    ]
    for column, reason in (result.get("missing") or {}).items():
        lines += ["", f"**Missing cell {labels[column]}** (`{column}`): {reason}"]
    runs = result.get("runs")
    if runs:
        lines += [
            "",
            "| cell | toy | DPO model | build (s) | claims (s) | pytest exit | node | attempts | error |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for run in runs:
            toy = {True: "built", False: "from cache", None: "-"}[run.get("toy_built")]
            error = (run.get("error") or "").splitlines()[0][:120] if run.get("error") else ""
            exit_code = "-" if run.get("pytest_exit") is None else run["pytest_exit"]
            lines.append(
                f"| {labels.get(run['cell'], run['cell'])} | {toy} | {run.get('dpo_model') or '-'} | "
                f"{run['build_s']:.0f} | "
                f"{run['claims_s']:.0f} | {exit_code} | {run.get('node') or '-'} | "
                f"{run.get('attempts') or '-'} | {error} |"
            )
    if result.get("wall_s") is not None:
        engine = f" (engine {result['engine']})" if result.get("engine") else ""
        lines += ["", f"Wall time: {result['wall_s']:.0f} s{engine}."]
    lines += ["", "![claims by cells](figures/replication.png)"]
    return "\n".join(lines) + "\n"


def replication_figure(result: Mapping[str, Any], path: Path) -> Path:
    """Claims (rows) by cells (columns), each entry coloured by its verdict."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import to_rgb
    from matplotlib.patches import Patch

    columns, claims = result["columns"], result["claims"]
    labels = column_labels(result)
    grid = [
        [
            to_rgb(VERDICT_COLORS.get(result["matrix"][c][col]["verdict"], VERDICT_COLORS[NOT_MEASURED]))
            for col in columns
        ]
        for c in claims
    ]
    fig, ax = plt.subplots(figsize=(2.2 + 1.3 * len(columns), 1.2 + 0.32 * max(len(claims), 1)))
    if claims:
        ax.imshow(grid, aspect="auto", interpolation="nearest")
    for row, claim_id in enumerate(claims):
        for col, column in enumerate(columns):
            entry = result["matrix"][claim_id][column]
            measured = entry.get("measured")
            if isinstance(measured, (int, float)):
                ax.text(col, row, f"{measured:.3g}", ha="center", va="center", fontsize=7)
            elif entry["verdict"] == MISSING:
                ax.text(col, row, MISSING, ha="center", va="center", fontsize=7, color="#555555")
    ax.set_xticks(range(len(columns)), [labels[c] for c in columns], rotation=30 if len(columns) > 6 else 0)
    ax.set_yticks(range(len(claims)), claims, fontsize=8)
    ax.set_xticks([x - 0.5 for x in range(1, len(columns))], minor=True)
    ax.set_yticks([y - 0.5 for y in range(1, len(claims))], minor=True)
    ax.grid(which="minor", color="#dddddd", linewidth=1.5)
    ax.tick_params(which="minor", length=0)
    ax.set_title("Claims across the cells of a sweep")
    legend = [
        Patch(facecolor=color, edgecolor="#999999", label=name) for name, color in VERDICT_COLORS.items()
    ]
    ax.legend(handles=legend, loc="upper left", bbox_to_anchor=(1.02, 1), fontsize=8, frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_replication(
    claims_files: Mapping[Any, Path],
    reports_dir: Path,
    *,
    columns: Sequence[Any] | None = None,
    cells: Sequence[Mapping[str, Any]] = (),
    missing: Mapping[Any, str] | None = None,
    runs: Sequence[Mapping[str, Any]] = (),
    wall_s: float | None = None,
    engine: str | None = None,
    manifest: Mapping[str, Any] | None = None,
) -> list[Path]:
    """Write ``replication.json``, ``replication.md``, ``figures/replication.png`` and the page
    ``replication.html``; ``manifest``: the sweep's (:func:`dpoclaims.report.manifest.run_manifest`)."""
    for directory in (reports_dir, reports_dir / "figures"):
        ensure_writable_dir(directory, "reports directory", REPORTS_REMEDY, ReportError)
    result = replication_matrix(claims_files, columns, missing)
    result["cells"] = [dict(cell) for cell in cells]
    result["runs"] = [dict(run) for run in runs]
    result["wall_s"] = wall_s
    result["engine"] = engine
    result["manifest"] = dict(manifest) if manifest else None
    paths = [reports_dir / "replication.json", reports_dir / "replication.md"]
    atomic_write_text(paths[0], json.dumps(result, indent=1, allow_nan=False))
    atomic_write_text(paths[1], replication_markdown(result))
    paths.append(replication_figure(result, reports_dir / "figures" / "replication.png"))
    figure = {"replication.png": paths[-1].read_bytes()}
    # replication.html, not index.html: a claims run may write its own page to the same directory
    paths.append(reports_dir / "replication.html")
    atomic_write_text(paths[-1], matrix_page(result, column_labels(result), figure))
    return paths


#: Options the sweep (and ``replicate``, the sweep over seeds) sets for each cell's run;
#: ``--pytest-args`` may not override them (a later ``--pair`` would measure that pair in every
#: cell and call each claim "stable").
OWN_OPTIONS = ("--pair", "--reports-dir", "--cache-dir")


def check_pytest_args(pytest_args: Sequence[str]) -> None:
    """An :class:`OptionError` when ``pytest_args`` set an option that the sweep sets itself."""
    clashes = [
        arg
        for arg in pytest_args
        if any(arg == option or arg.startswith(option + "=") for option in OWN_OPTIONS)
    ]
    if clashes:
        raise OptionError(
            f"--pytest-args may not set {', '.join(clashes)}: replicate sets {', '.join(OWN_OPTIONS)} for each "
            "cell itself (--pair toy-seedN or the cell's pair; --reports-dir and --cache-dir from its own "
            "options). Pass --reports-dir or --cache-dir to dpoclaims replicate (or sweep) instead"
        )
