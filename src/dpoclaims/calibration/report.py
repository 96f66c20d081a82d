"""The calibration's cells and files: ``calibration.json``, ``calibration.md`` and
``calibration.png`` (claims x organisms: the right verdict and the rate of each verdict).

A cell is one claim on one organism over every replication: its truth (the verdict the
organism's construction determines, or None), the count of each verdict, and ``wrong_rate``, the
share of the replications whose verdict is definite and opposite to the truth (for a truth of
``inconclusive``: any definite verdict). With it, the one-sided 95% upper bound of that rate
(Clopper-Pearson): 0 wrong of 20 bounds the rate at 13.9%, no lower.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from scipy.stats import beta

from dpoclaims.calibration.organisms import C13_EVERY_POSITION, ORGANISMS, is_wrong
from dpoclaims.calibration.run import Replication, claim_ids
from dpoclaims.files import atomic_write_text

GOAL_WRONG_RATE = 0.05  # the goal: a definite wrong verdict in at most 5% of replications
VERDICTS = ("replicates", "contradicts", "inconclusive", "not measurable", "not tested", "error")


def wrong_rate_upper(wrong: int, n: int, level: float = 0.95) -> float:
    """The one-sided ``level`` upper confidence bound of a rate of ``wrong`` in ``n`` (Clopper-Pearson)."""
    return 1.0 if wrong >= n else float(beta.ppf(level, wrong + 1, n - wrong))


def cell_claims() -> list[str]:
    return [test_id for test_id, _, _ in claim_ids()] + [C13_EVERY_POSITION]


def cells(replications: Sequence[Replication], organisms: Sequence[str]) -> list[dict[str, Any]]:
    """One cell per (claim, organism), in table order."""
    out = []
    for claim in cell_claims():
        for name in organisms:
            runs = [r for r in replications if r.organism == name]
            determined = ORGANISMS[name].truth.get(claim)
            truth = determined.truth if determined else None
            verdicts = [r.verdicts.get(claim, "error") for r in runs]
            counts = {v: verdicts.count(v) for v in VERDICTS if verdicts.count(v)}
            wrong = sum(is_wrong(v, truth) for v in verdicts)
            right_definite = sum(v == truth for v in verdicts if v in ("replicates", "contradicts"))
            out.append(
                {
                    "claim": claim,
                    "organism": name,
                    "truth": truth,
                    "reason": determined.reason if determined else None,
                    "replications": len(runs),
                    "counts": counts,
                    "wrong": wrong,
                    "wrong_rate": wrong / len(runs) if runs else None,
                    "wrong_rate_upper95": wrong_rate_upper(wrong, len(runs)) if runs and truth else None,
                    # how often the right definite verdict came out (for a definite truth): the rule's power
                    "power": right_definite / len(runs)
                    if runs and truth in ("replicates", "contradicts")
                    else None,
                }
            )
    return out


def summary(table: Sequence[dict[str, Any]], replications: Sequence[Replication]) -> dict[str, Any]:
    determined = [c for c in table if c["truth"] is not None]
    worst = max(determined, key=lambda c: c["wrong_rate"] or 0.0, default=None)
    over = [c for c in determined if (c["wrong_rate"] or 0.0) > GOAL_WRONG_RATE]
    return {
        "determined_cells": len(determined),
        "cells_over_goal": [f"{c['claim']} on {c['organism']}" for c in over],
        "largest_wrong_rate": worst["wrong_rate"] if worst else None,
        "goal_wrong_rate": GOAL_WRONG_RATE,
        "met": not over and not any(r.error for r in replications),
        "errors": [f"{r.organism} replication {r.replication}: {r.error}" for r in replications if r.error],
    }


def _verdict_cell(cell: dict[str, Any]) -> str:
    c = cell["counts"]
    parts = [
        f"{c.get('replicates', 0)}R",
        f"{c.get('contradicts', 0)}C",
        f"{c.get('inconclusive', 0)}I",
        f"{c.get('not measurable', 0)}NM",
    ]
    extra = [f"{c[k]} {k}" for k in ("not tested", "error") if c.get(k)]
    text = " ".join(parts + extra)
    if cell["truth"] is None:
        return text
    mark = {"replicates": "R", "contradicts": "C", "inconclusive": "none"}[cell["truth"]]
    flag = " **over 5%**" if (cell["wrong_rate"] or 0) > GOAL_WRONG_RATE else ""
    return f"**{mark}**: {text}; wrong {cell['wrong']}/{cell['replications']}{flag}"


def markdown(
    table: Sequence[dict[str, Any]], replications: Sequence[Replication], facts: dict[str, Any]
) -> str:
    settings = facts["settings"]
    organisms = settings["organisms"]
    s = summary(table, replications)
    n = settings["replications"]
    upper = wrong_rate_upper(0, n)
    lines = [
        "# Calibration: the verdicts against a known truth",
        "",
        f"`dpoclaims calibrate`: every claim on {len(organisms)} planted organisms x {n} replications "
        f"({settings['prompts']} of the toy's distinct challenge prompts and {settings['texts']} of its held-out "
        f"texts per replication, drawn by the replication's seed with the planting; searches at "
        f"{settings['search_examples']} drawn examples after their stated candidates; seed {settings['seed']}). "
        f"{facts['seconds'] / 60:.1f} min on {facts['workers']} worker process(es). Rules of the suite as run: "
        "docs/claims.md. What each organism is and why its truths hold: docs/calibration.md.",
        "",
        f"**Goal: a definite wrong verdict in at most {GOAL_WRONG_RATE:.0%} of replications in every determined "
        f"cell. {'Met' if s['met'] else 'NOT met'}**: {s['determined_cells']} determined cells, largest wrong rate "
        f"{(s['largest_wrong_rate'] or 0):.1%}"
        + (f"; over the goal: {', '.join(s['cells_over_goal'])}" if s["cells_over_goal"] else "")
        + (f"; errors: {'; '.join(s['errors'])}" if s["errors"] else "")
        + f". With {n} replications, 0 wrong bounds a cell's rate at {upper:.1%} (one-sided 95%, Clopper-Pearson): "
        "the goal is met on what was observed, and the bound is what the replications can show.",
        "",
        "Each cell: the truth in bold where the construction determines it (R replicates, C contradicts, none: no "
        "definite verdict is right), then the count of each verdict (R, C, I inconclusive, NM not measurable) and "
        "the wrong ones. Inconclusive and not measurable are never wrong: they are the rule's lack of power.",
        "",
        "| claim | " + " | ".join(organisms) + " |",
        "|---|" + "---|" * len(organisms),
    ]
    by_key = {(c["claim"], c["organism"]): c for c in table}
    for claim in cell_claims():
        lines.append(
            f"| {claim} | " + " | ".join(_verdict_cell(by_key[(claim, o)]) for o in organisms) + " |"
        )
    lines += ["", "## Power where the truth is definite", ""]
    for c in table:
        if c["power"] is not None:
            lines.append(
                f"- {c['claim']} on {c['organism']} (truth {c['truth']}): right in {c['power']:.0%} of replications"
            )
    lines += ["", "## DPO's toxicity drop per organism (what the drop-gated claims need shown positive)", ""]
    for name in organisms:
        runs = [r for r in replications if r.organism == name and r.dpo_drop]
        shown = sum(r.dpo_drop["ci"][0] > 0 for r in runs)
        values = sorted(r.dpo_drop["value"] for r in runs)
        if values:
            lines.append(
                f"- {name}: median {values[len(values) // 2]:.4f} (range {values[0]:.4f} to {values[-1]:.4f}); shown "
                f"positive at the claims' level in {shown} of {len(runs)} replications"
            )
    lines += ["", "## The organisms and their truth tables", ""]
    for name in organisms:
        kind = ORGANISMS[name]
        lines += [f"### {name}", "", f"Construction: {kind.construction}.", ""]
        for claim, determined in kind.truth.items():
            lines.append(f"- **{claim}: {determined.truth}**. {determined.reason}.")
        lines += ["", f"Undetermined (every other claim): {kind.undetermined}.", ""]
    return "\n".join(lines) + "\n"


def figure(table: Sequence[dict[str, Any]], organisms: Sequence[str], path: Path) -> Path:
    """One panel per organism: per claim, the share of each verdict, the truth marked beside the claim."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {
        "replicates": "#2ca02c",
        "contradicts": "#d62728",
        "inconclusive": "#bbbbbb",
        "not measurable": "#eeeeee",
        "not tested": "#ffffff",
        "error": "#000000",
    }
    claims = cell_claims()
    by_key = {(c["claim"], c["organism"]): c for c in table}
    fig, axes = plt.subplots(
        1, len(organisms), figsize=(3.2 * len(organisms) + 2, 0.27 * len(claims) + 1.6), sharey=True
    )
    axes = [axes] if len(organisms) == 1 else list(axes)
    for ax, name in zip(axes, organisms):
        for row, claim in enumerate(claims):
            cell = by_key[(claim, name)]
            left = 0.0
            for verdict in VERDICTS:
                share = cell["counts"].get(verdict, 0) / max(cell["replications"], 1)
                if share:
                    ax.barh(row, share, left=left, color=colors[verdict], edgecolor="#888888", linewidth=0.3)
                    left += share
            if cell["truth"]:
                symbol = {"replicates": "R", "contradicts": "C", "inconclusive": "-"}[cell["truth"]]
                wrong = (cell["wrong_rate"] or 0) > GOAL_WRONG_RATE
                ax.text(
                    1.03,
                    row,
                    symbol,
                    va="center",
                    fontsize=8,
                    fontweight="bold",
                    color="#d62728" if wrong else "#000000",
                )
        ax.set_xlim(0, 1.12)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("share of replications")
    axes[0].set_yticks(range(len(claims)))
    axes[0].set_yticklabels(claims, fontsize=7)
    axes[0].invert_yaxis()
    handles = [plt.Rectangle((0, 0), 1, 1, color=colors[v]) for v in VERDICTS[:4]]
    fig.legend(handles, VERDICTS[:4], loc="lower center", ncol=4, fontsize=8, frameon=False)
    fig.suptitle("Verdicts on planted organisms (letter: the truth the construction determines)", fontsize=10)
    fig.tight_layout(rect=(0, 0.04, 1, 0.97))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_calibration(
    reports_dir: Path, replications: Sequence[Replication], facts: dict[str, Any]
) -> dict[str, Any]:
    """Write ``calibration.json``, ``calibration.md`` and ``calibration.png`` into ``reports_dir``;
    returns the summary."""
    organisms = facts["settings"]["organisms"]
    table = cells(replications, organisms)
    s = summary(table, replications)
    reports_dir.mkdir(parents=True, exist_ok=True)
    figure(table, organisms, reports_dir / "calibration.png")
    payload = {
        **facts,
        "summary": s,
        "organisms": {
            name: {
                "construction": ORGANISMS[name].construction,
                "truth": {
                    k: {"truth": d.truth, "reason": d.reason} for k, d in ORGANISMS[name].truth.items()
                },
                "undetermined": ORGANISMS[name].undetermined,
            }
            for name in organisms
        },
        "cells": table,
        "replications": [
            {
                "organism": r.organism,
                "replication": r.replication,
                "seed": r.seed,
                "seconds": r.seconds,
                "error": r.error,
                "dpo_drop": r.dpo_drop,
                "construction": r.construction,
                "verdicts": r.verdicts,
                "measured": r.measured,
            }
            for r in replications
        ],
    }
    atomic_write_text(reports_dir / "calibration.json", json.dumps(payload, indent=1) + "\n")
    atomic_write_text(reports_dir / "calibration.md", markdown(table, replications, facts))
    return s
