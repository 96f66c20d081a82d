"""Claims reports: ``claims.json``, ``claims.md``, shields.io badges and figures."""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dpoclaims.errors import ReportError
from dpoclaims.files import atomic_write_text, ensure_writable_dir

log = logging.getLogger(__name__)

#: What to do when the reports directory cannot be written (pytest option and variable).
REPORTS_REMEDY = "set --reports-dir or $DPOCLAIMS_REPORTS to a writable directory"


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _short(text: str, limit: int = 90) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def verdict(record: dict[str, Any]) -> str:
    claim = record.get("claim")
    if claim is None:
        return "not measured"
    return "replicates" if claim["replicates"] else "does not replicate"


def badge(record: dict[str, Any]) -> dict[str, Any]:
    """A shields.io endpoint badge: label = claim id, message = verdict and figure."""
    claim = record.get("claim")
    message = verdict(record)
    if claim is not None:
        message += f" ({_fmt(claim['measured'], 2)})"
    if record["outcome"] in ("failed", "xpassed", "error"):
        color = "red"  # an outcome that differs from what is declared for this pair
    elif claim is not None and claim["replicates"]:
        color = "brightgreen"
    elif record["outcome"] == "skipped":
        color = "lightgrey"
    else:
        color = "orange"  # does not replicate, as declared
    return {"schemaVersion": 1, "label": record["id"], "message": message, "color": color}


def claims_markdown(records: Sequence[dict[str, Any]], header: dict[str, Any]) -> str:
    lines = [
        f"# Claims of Yang et al. 2024 on pair `{header['pair']}`",
        "",
        f"Pair fingerprint `{header['fingerprint']}`; {header['n_prompts']} prompts; position convention "
        f"`{header['convention']}`; scorer `{header['scorer']}`. Shares use the four reducing groups' total as denominator "
        "(v1) unless the id says `gross` (the gross reduction over all D_i > 0, EMNLP). Intervals are 95% bootstrap intervals over prompts "
        "(Fisher z for correlations). Neuron counts from the paper are scaled to this pair by the fraction of all MLP neurons.",
        "",
        "| id | keyword | claim | paper | measured | 95% CI | expected here | verdict | outcome |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in records:
        c = r.get("claim") or {}
        ci = c.get("ci")
        ci_text = f"[{_fmt(ci[0])}, {_fmt(ci[1])}]" if ci else "-"
        lines.append(
            f"| {r['id']} | {r['keyword']} | {c.get('statement') or _short(r.get('skip_reason', ''))} | {_fmt(c.get('paper'))} | "
            f"{_fmt(c.get('measured'))} | {ci_text} | {r['expected']} | {verdict(r)} | {r['outcome']} |"
        )
    reasons = sorted({r["skip_reason"] for r in records if r.get("skip_reason")})
    if reasons:
        lines += ["", "Skipped, because:", ""] + [f"- {reason}" for reason in reasons]
    lines += ["", "Criteria:", ""]
    for r in records:
        if r.get("claim"):
            lines.append(f"- **{r['id']}**: {r['claim']['criterion']}.")
    if header.get("figures"):
        lines += ["", "Figures:", ""] + [f"- ![{name}](figures/{name})" for name in header["figures"]]
    if header.get("figures_skipped"):
        lines += [
            "",
            f"Figures not drawn (their data was not computed in this run): {', '.join(header['figures_skipped'])}.",
        ]
    return "\n".join(lines) + "\n"


def write_reports(
    records: Sequence[dict[str, Any]],
    out_dir: Path,
    header: dict[str, Any],
    figure_data: dict[str, Any] | None = None,
) -> list[Path]:
    """Write every report file from the claim records and the figure data the tests recorded
    (``figure_data``: :meth:`dpoclaims.decomposition.Decomposition.figure_data`, or None).
    Nothing is measured here. A reports directory (or its ``figures``/``badges``) that is a
    file, cannot be created or is not writable is a :class:`ReportError` naming the path,
    before anything is written."""
    for directory in (out_dir, out_dir / "figures", out_dir / "badges"):
        ensure_writable_dir(directory, "reports directory", REPORTS_REMEDY, ReportError)
    records = sorted(records, key=lambda r: (int(r["id"][1:].split("[")[0]), r.get("order", 0)))
    figures, skipped = draw_figures(records, out_dir / "figures", header, figure_data)
    header = {**header, "figures": figures, "figures_skipped": skipped}
    atomic_write_text(
        out_dir / "claims.json", json.dumps({"header": header, "claims": records}, indent=1, default=str)
    )
    atomic_write_text(out_dir / "claims.md", claims_markdown(records, header))
    badge_dir = out_dir / "badges"
    badge_dir.mkdir(exist_ok=True)
    for stale in badge_dir.glob("*.json"):
        stale.unlink()
    for r in records:
        atomic_write_text(badge_dir / f"{r['id']}.json", json.dumps(badge(r)))
    return [out_dir / "claims.json", out_dir / "claims.md", badge_dir]


def draw_figures(
    records: Sequence[dict[str, Any]],
    fig_dir: Path,
    header: dict[str, Any],
    figure_data: dict[str, Any] | None,
) -> tuple[list[str], list[str]]:
    from dpoclaims import plots

    fig_dir.mkdir(parents=True, exist_ok=True)
    drawn, skipped = [], []
    title = f"{header['pair']}"
    c1 = next((r for r in records if r["id"] == "C1[N=100]" and r.get("claim")), None)
    if c1 and "layer_projection" in c1["claim"]["details"]:
        n = c1["claim"]["details"]["n_neurons_ablated"]
        plots.layer_projection(
            c1["claim"]["details"]["layer_projection"],
            f"base, top {n} toxic ablated",
            f"{title}: MLP projection onto the probe",
            fig_dir / "fig1a_layer_projection.png",
        )
        drawn.append("fig1a_layer_projection.png")
    else:
        skipped.append("fig1a_layer_projection.png")
    decomposition_figures = {
        "fig2_cumulative_contribution.png": plots.cumulative_contribution,
        "group_shares.png": plots.group_shares,
        "activation_change_vs_cosine.png": plots.change_vs_cosine,
        "fig3_per_layer_groups.png": plots.per_layer_groups,
    }
    for name, draw in decomposition_figures.items():
        if figure_data is None:
            skipped.append(name)
            continue
        draw(figure_data, title, fig_dir / name)
        drawn.append(name)
    return drawn, skipped
