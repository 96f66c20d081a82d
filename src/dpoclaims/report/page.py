"""The report page: one self-contained HTML file per run (``index.html``) that fetches nothing.

Everything is inline: the style, a little script, the forest plot (SVG drawn here) and the
figures (PNG data URIs); a Content-Security-Policy forbids any fetch, so a page that tried one
would say so in the browser's console. :func:`claims_page` renders a claims run from its
``claims.json`` document alone; :func:`matrix_page` renders a sweep's replication matrix.

The claims page shows, top to bottom: the pair and the verdict counts; the forest plot (one row
per claim with a figure: its 95% interval, the paper's figure, the criterion as a line with the
paper's side shaded, coloured by verdict; each row on its own scale, since the claims' units
differ: shares, correlations, counts, ratios); every claim, whose statement, criterion, test node,
p-values and details open on a click (details rendered generically, so a key a claim adds shows
without a change here); the figures; the run's manifest.
"""

from __future__ import annotations

import base64
import html
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dpoclaims.claims import paper
from dpoclaims.claims.decision import leaves as decision_leaves
from dpoclaims.claims.results import NOT_MEASURED, ClaimId
from dpoclaims.stats import VERDICTS

#: A sweep's cell whose claims run produced no report (:mod:`dpoclaims.runs.replication`).
MISSING = "missing"
#: One colour per verdict (stats.VERDICTS, in order), then the two states that are none: the
#: page, the sweep's page and the sweep's figure use these.
VERDICT_COLORS: dict[str, str] = dict(
    zip(
        (*VERDICTS, NOT_MEASURED, MISSING), ("#2ca02c", "#d62728", "#f2c744", "#ff7f0e", "#bdbdbd", "#ffffff")
    )
)
_DARK_TEXT = frozenset({"inconclusive", NOT_MEASURED, MISSING})  # light colours: dark text on them
#: Nothing may be fetched: not a script, a style sheet, an image or a font (data: images only).
_POLICY = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'"
#: A list of more values than this shows its first ones, the rest one click away.
_LIST_PREVIEW = 12


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _num(value: Any) -> str:
    """A figure for reading: 3 significant digits (a float's full value is in its title), whole
    numbers whole, "–" for none or NaN."""
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
        return "–" if value is None else str(value)
    if not math.isfinite(value):
        return "–" if math.isnan(value) else ("∞" if value > 0 else "−∞")
    if float(value).is_integer() and abs(value) < 1e15:
        return f"{int(value):,}"
    if abs(value) >= 1e4:
        return f"{value:,.0f}"
    return f"{value:.3g}"


def _finite(value: Any) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def _slug(text: str) -> str:
    return "claim-" + re.sub(r"[^A-Za-z0-9_-]+", "-", text).strip("-")


def _chip(verdict: str) -> str:
    color = VERDICT_COLORS.get(verdict, VERDICT_COLORS[NOT_MEASURED])
    ink = "#111" if verdict in _DARK_TEXT else "#fff"
    return f'<span class="chip" style="background:{color};color:{ink}">{_e(verdict)}</span>'


#: The pages a reports directory may hold: a claims run's and a sweep's.
PAGE_NAMES = ("index.html", "replication.html")


def latest_page(reports_dir: Path) -> Path | None:
    """The most recently written report page in ``reports_dir`` (:data:`PAGE_NAMES`), or None."""
    pages = [reports_dir / name for name in PAGE_NAMES if (reports_dir / name).is_file()]
    return max(pages, key=lambda page: page.stat().st_mtime_ns, default=None)


# ------------------------------------------------------------------------- the forest plot


@dataclass(frozen=True)
class Criterion:
    """Where the paper puts a claim's figure, in the figure's units: ``below`` / ``above`` a
    threshold, or ``inside`` (low, high)."""

    side: str
    values: tuple[float, ...]
    parts: int = 0  # further parts the verdict needs too (not drawn: see the claim's details)


@dataclass(frozen=True)
class ForestRow:
    claim_id: str
    verdict: str
    measured: float
    interval: tuple[float, float] | None  # None: exact, or no interval
    paper: float | None
    criterion: Criterion | None
    text: str  # the criterion in words (the row's tooltip)


def criterion_of(claim: Mapping[str, Any], header: Mapping[str, Any]) -> Criterion | None:
    """The claim's decision rule from the paper table (a threshold stated for GPT-2 medium is
    resolved on the pair, whose size the header records), or None: a claim not in the table, or
    a scaled threshold without the pair's size (a report from before it was recorded)."""
    claim_id = ClaimId(claim["claim"], claim.get("param") or "")
    entry = paper.TABLE.get(str(claim_id)) or paper.TABLE.get(claim_id.claim)
    if entry is None:
        return None
    # the decision that applies to this parameter (a parametrized entry's ids are param_id.format(p));
    # the forest plot draws its first leaf, the figure the record's "measured" is
    param = next((p for p in entry.params if entry.param_id.format(p) == claim_id.param), None)
    leaves = decision_leaves(entry.decision_for(param))
    rule, parts = leaves[0].rule, len(leaves) - 1
    if entry.scaled:
        n_layers, n_neurons = header.get("n_layers"), header.get("n_neurons")
        if not (isinstance(n_layers, int) and isinstance(n_neurons, int)):
            return None
        rule = entry.rules_for(n_layers, n_neurons).get(leaves[0].figure, rule)
    if rule.paper_side == "inside" and rule.bounds is not None:
        return Criterion("inside", (float(rule.bounds[0]), float(rule.bounds[1])), parts)
    if rule.threshold is None:
        return None
    return Criterion(rule.paper_side, (float(rule.threshold),), parts)


def forest_rows(records: Sequence[Mapping[str, Any]], header: Mapping[str, Any]) -> list[ForestRow]:
    """One row per claim record of ``claims.json`` that has a finite figure, in report order."""
    rows = []
    for record in records:
        claim = record.get("claim")
        measured = _finite(claim.get("measured")) if claim else None
        if claim is None or measured is None:
            continue
        ci = claim.get("ci")
        interval = None
        if ci and not claim.get("exact"):
            low, high = _finite(ci[0]), _finite(ci[1])
            interval = (low, high) if low is not None and high is not None else None
        rows.append(
            ForestRow(
                claim_id=str(record["id"]),
                verdict=str(claim.get("verdict", NOT_MEASURED)),
                measured=measured,
                interval=interval,
                paper=_finite(claim.get("paper")),
                criterion=criterion_of(claim, header),
                text=str(claim.get("criterion", "")),
            )
        )
    return rows


_ROW_H, _PANEL_X, _PANEL_W, _WIDTH = 36, 160, 500, 1000  # the label left of the panel, the figure right


def forest_svg(rows: Sequence[ForestRow]) -> str:
    """The forest plot: one row (a ``g.forest-row``) per claim, each on its own scale."""
    height = _ROW_H * len(rows) + 8
    parts = [
        f'<svg id="forest" class="forest" viewBox="0 0 {_WIDTH} {height}" width="{_WIDTH}" height="{height}" '
        'role="img" aria-label="forest plot: each claim\'s figure with its 95% interval, the paper\'s figure '
        'and the criterion">'
    ]
    for index, row in enumerate(rows):
        parts.append(_forest_row(row, index * _ROW_H + 4))
    parts.append("</svg>")
    return "".join(parts)


def _forest_row(row: ForestRow, top: float) -> str:
    values = [row.measured, *(row.interval or ()), *([row.paper] if row.paper is not None else [])]
    if row.criterion is not None:
        values += list(row.criterion.values)
    low, high = min(values), max(values)
    if high - low < 1e-12:
        pad = abs(low) * 0.1 or 1.0
        low, high = low - pad, high + pad
    margin = (high - low) * 0.08
    low, high = low - margin, high + margin

    def x(value: float) -> float:
        return _PANEL_X + (value - low) / (high - low) * _PANEL_W

    mid = top + _ROW_H / 2 - 2
    color = VERDICT_COLORS.get(row.verdict, VERDICT_COLORS[NOT_MEASURED])
    interval = (
        f"[{_num(row.interval[0])}, {_num(row.interval[1])}]" if row.interval is not None else "(no interval)"
    )
    tooltip = (
        f"{row.claim_id}: measured {_num(row.measured)} {interval}; paper {_num(row.paper)}; "
        f"verdict {row.verdict}; criterion: {row.text}"
    )
    out = [
        f'<g class="forest-row" data-claim="{_e(row.claim_id)}" data-target="{_slug(row.claim_id)}" '
        f'tabindex="0" role="button" aria-label="{_e(tooltip)}"><title>{_e(tooltip)}</title>',
        f'<rect class="hit" x="0" y="{top}" width="{_WIDTH}" height="{_ROW_H - 2}"/>',
        f'<rect x="{_PANEL_X}" y="{top + 3}" width="{_PANEL_W}" height="{_ROW_H - 12}" fill="#fafafa" stroke="#e3e3e3"/>',
    ]
    criterion = row.criterion
    labelled: list[float] = []  # where a threshold's value is written under the panel
    if criterion is not None:  # the paper's side shaded, the threshold(s) dashed and labelled
        if criterion.side == "inside":
            a, b = x(criterion.values[0]), x(criterion.values[1])
        elif criterion.side == "below":
            a, b = _PANEL_X, x(criterion.values[0])
        else:
            a, b = x(criterion.values[0]), _PANEL_X + _PANEL_W
        out.append(
            f'<rect class="paper-side" x="{a:.1f}" y="{top + 3}" width="{max(b - a, 0):.1f}" '
            f'height="{_ROW_H - 12}" fill="#e6f4e6"/>'
        )
        for value in criterion.values:
            out.append(
                f'<line class="criterion" x1="{x(value):.1f}" x2="{x(value):.1f}" y1="{top + 1}" '
                f'y2="{top + _ROW_H - 7}" stroke="#555" stroke-dasharray="4 3"/>'
                f'<text x="{x(value):.1f}" y="{top + _ROW_H - 1}" class="tick threshold" text-anchor="middle">'
                f"{_e(_num(value))}</text>"
            )
            labelled.append(x(value))
    if row.interval is not None:
        a, b = x(row.interval[0]), x(row.interval[1])
        out.append(
            f'<line class="interval" x1="{a:.1f}" x2="{b:.1f}" y1="{mid}" y2="{mid}" stroke="{color}" stroke-width="3"/>'
            f'<line x1="{a:.1f}" x2="{a:.1f}" y1="{mid - 5}" y2="{mid + 5}" stroke="{color}" stroke-width="2"/>'
            f'<line x1="{b:.1f}" x2="{b:.1f}" y1="{mid - 5}" y2="{mid + 5}" stroke="{color}" stroke-width="2"/>'
        )
    if row.paper is not None:
        p = x(row.paper)
        out.append(
            f'<path class="paper" d="M{p:.1f},{mid - 6} L{p + 6:.1f},{mid} L{p:.1f},{mid + 6} L{p - 6:.1f},{mid} Z" '
            'fill="#fff" stroke="#111" stroke-width="1.5"/>'
        )
    out.append(
        f'<circle class="measured" cx="{x(row.measured):.1f}" cy="{mid}" r="5" fill="{color}" stroke="#111" stroke-width="1"/>'
    )
    # the scale's ends, unless a threshold's label is written there
    if all(abs(at - _PANEL_X) > 40 for at in labelled):
        out.append(f'<text x="{_PANEL_X + 2}" y="{top + _ROW_H - 1}" class="tick">{_e(_num(low))}</text>')
    if all(abs(at - _PANEL_X - _PANEL_W) > 40 for at in labelled):
        out.append(
            f'<text x="{_PANEL_X + _PANEL_W - 2}" y="{top + _ROW_H - 1}" class="tick" text-anchor="end">'
            f"{_e(_num(high))}</text>"
        )
    out += [
        f'<text x="4" y="{mid + 4}" class="row-label">{_e(row.claim_id)}</text>',
        f'<text x="{_PANEL_X + _PANEL_W + 12}" y="{mid - 2}" class="row-figure">{_e(_num(row.measured))} '
        f"{_e(interval if row.interval is not None else '')}</text>",
        f'<text x="{_PANEL_X + _PANEL_W + 12}" y="{mid + 11}" class="row-verdict" fill="{"#8a6d00" if row.verdict == "inconclusive" else color}">'
        f"{_e(row.verdict)}</text>",
        *(
            [
                f'<text x="{_PANEL_X + _PANEL_W + 110}" y="{mid + 11}" class="tick">'
                f"with {criterion.parts} more part{'s' if criterion.parts > 1 else ''} (see the claim)</text>"
            ]
            if criterion is not None and criterion.parts
            else []
        ),
        "</g>",
    ]
    return "".join(out)


# ------------------------------------------------------------------------- details, rendered generically


def value_html(value: Any, depth: int = 0) -> str:
    """Any JSON value as HTML: a dict as a key/value table, a list of records as a table, a long
    list of numbers shortened with the rest one click away, nested containers collapsible."""
    if isinstance(value, Mapping):
        if not value:
            return '<span class="muted">(empty)</span>'
        rows = []
        for key, item in value.items():
            inner = value_html(item, depth + 1)
            if _nested(item) and _leaves(item) > _LIST_PREVIEW:
                inner = f"<details><summary>{_e(_describe(item))}</summary>{inner}</details>"
            rows.append(f'<tr><th scope="row">{_e(key)}</th><td>{inner}</td></tr>')
        return f'<table class="kv">{"".join(rows)}</table>'
    if isinstance(value, list):
        if not value:
            return '<span class="muted">(none)</span>'
        if all(isinstance(item, Mapping) for item in value):
            keys = list(dict.fromkeys(k for item in value for k in item))
            if len(keys) <= 14:
                head = "".join(f"<th>{_e(k)}</th>" for k in keys)
                body = "".join(
                    "<tr>" + "".join(f"<td>{value_html(item.get(k), depth + 1)}</td>" for k in keys) + "</tr>"
                    for item in value
                )
                return f'<table class="records"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'
        if all(not isinstance(item, (Mapping, list)) for item in value):
            shown = ", ".join(_scalar_html(item) for item in value[:_LIST_PREVIEW])
            if len(value) <= _LIST_PREVIEW:
                return f'<span class="list">[{shown}]</span>'
            every = ", ".join(_scalar_html(item) for item in value)
            return (
                f'<span class="list">[{shown}, …]</span> <details class="more"><summary>all {len(value)} values'
                f'</summary><span class="list">[{every}]</span></details>'
            )
        return "<ol>" + "".join(f"<li>{value_html(item, depth + 1)}</li>" for item in value) + "</ol>"
    return _scalar_html(value)


def _scalar_html(value: Any) -> str:
    if isinstance(value, float):
        return f'<span class="num" title="{_e(repr(value))}">{_e(_num(value))}</span>'
    if isinstance(value, bool) or value is None:
        return f'<span class="lit">{_e(json.dumps(value))}</span>'
    if isinstance(value, int):
        return f'<span class="num">{_e(_num(value))}</span>'
    return _e(value)


def _nested(value: Any) -> bool:
    """A dict, or a list holding containers: collapsed when large (a list of plain values shows
    its first ones instead)."""
    if isinstance(value, Mapping):
        return True
    return isinstance(value, list) and any(isinstance(item, (Mapping, list)) for item in value)


def _leaves(value: Any) -> int:
    """How many plain values a container holds, at any depth."""
    if isinstance(value, Mapping):
        return sum(_leaves(item) for item in value.values())
    if isinstance(value, list):
        return sum(_leaves(item) for item in value)
    return 1


def _describe(value: Any) -> str:
    if isinstance(value, Mapping):
        return f"{len(value)} entries"
    return f"{len(value)} values"


# ------------------------------------------------------------------------- the claims page


def claims_page(document: Mapping[str, Any], figures: Mapping[str, bytes] | None = None) -> str:
    """The page of a claims run, from its ``claims.json`` document (``header``, ``manifest``,
    ``claims``) and the figures' PNG bytes by file name."""
    header = document.get("header") or {}
    records = list(document.get("claims") or [])
    manifest = document.get("manifest")
    rows = forest_rows(records, header)
    counts: dict[str, int] = {}
    for record in records:
        verdict = (record.get("claim") or {}).get("verdict") or NOT_MEASURED
        counts[verdict] = counts.get(verdict, 0) + 1
    order = [v for v in (*VERDICTS, NOT_MEASURED) if v in counts] + sorted(
        set(counts) - {*VERDICTS, NOT_MEASURED}
    )
    summary = " ".join(f"{_chip(v)}&nbsp;{counts[v]}" for v in order)
    pair = header.get("pair", "?")
    incomplete = header.get("incomplete")
    figures = figures or {}
    body = [
        f"<header><h1>Claims of Yang et al. 2024 on pair <code>{_e(pair)}</code></h1>",
        '<p class="sub">'
        + " · ".join(
            _e(part)
            for part in (
                f"fingerprint {header.get('fingerprint', '?')}",
                f"{header.get('n_prompts', '?')} prompts",
                f"convention {header.get('convention', '?')}",
                f"scorer {header.get('scorer', '?')}",
                f"{len(records)} claims",
            )
        )
        + "</p>",
        f'<p class="counts">{summary}</p>',
        f'<p class="banner">Incomplete report: {_e(incomplete)} Verdicts cover only the claims that ran.</p>'
        if incomplete
        else "",
        '<nav><a href="#forest-section">forest plot</a> · <a href="#claims">claims</a> · '
        '<a href="#figures">figures</a> · <a href="#manifest">manifest</a></nav></header>',
        '<section id="forest-section"><h2>Forest plot</h2>',
        '<p class="legend">Each row is one claim on its own scale (the units differ): '
        '<svg width="14" height="12"><circle cx="7" cy="6" r="5" fill="#2ca02c" stroke="#111"/></svg> the measured '
        "figure and its 95% interval, coloured by verdict; "
        '<svg width="14" height="12"><path d="M7,0 L13,6 L7,12 L1,6 Z" fill="#fff" stroke="#111"/></svg> the '
        "paper's figure; a dashed line, the criterion's threshold, with the side where the paper puts the "
        'figure shaded <span class="swatch"></span>. Click a row for the claim.</p>',
        forest_svg(rows) if rows else '<p class="muted">No claim of this run has a figure.</p>',
        "</section>",
        '<section id="claims"><h2>Claims</h2>',
        '<p class="tools"><button type="button" id="open-all">open all</button> '
        '<button type="button" id="close-all">close all</button></p>',
        *(_claim_html(record, (manifest or {}).get("time", {}).get("claims_s", {})) for record in records),
        "</section>",
        _figures_html(figures, header.get("figures_skipped") or []),
        _manifest_html(manifest),
    ]
    return _document(f"dpoclaims: {pair}", "".join(body))


def _claim_html(record: Mapping[str, Any], seconds: Mapping[str, Any]) -> str:
    claim_id = str(record.get("id", "?"))
    claim = record.get("claim")
    verdict = (claim or {}).get("verdict") or NOT_MEASURED
    if claim:
        ci = claim.get("ci")
        interval = "exact" if claim.get("exact") else (f"[{_num(ci[0])}, {_num(ci[1])}]" if ci else "")
        figure = f"{_num(claim.get('measured'))} {interval}"
        title = claim.get("statement", "")
    else:
        figure, title = "not measured", record.get("skip_reason") or record.get("outcome", "")
    outcome = record.get("outcome", "")
    unexpected = outcome in ("failed", "xpassed", "error")
    facts: list[tuple[str, str]] = []
    if claim:
        facts += [
            ("statement", _e(claim.get("statement", ""))),
            ("criterion", _e(claim.get("criterion", ""))),
        ]
        if claim.get("finding"):
            facts.append(("finding", _e(claim["finding"])))
        facts += [
            ("measured", _e(figure)),
            ("paper", _e(_num(claim.get("paper")))),
            ("p", _e(_num(claim.get("p_value")))),
            ("p against", _e(_num(claim.get("p_against")))),
            ("level", _e(_num(claim.get("level")))),
        ]
    facts += [
        ("expected here", _e(record.get("expected", ""))),
        ("outcome", _e(outcome) + (' <b class="bad">(not what was expected)</b>' if unexpected else "")),
        ("test node", f"<code>{_e(record.get('node_id', ''))}</code>"),
    ]
    if claim_id in seconds:
        facts.append(("wall time", _e(f"{_num(seconds[claim_id])} s (the test call)")))
    if record.get("skip_reason"):
        facts.append(("skipped", _e(record["skip_reason"])))
    rows = "".join(f'<tr><th scope="row">{name}</th><td>{value}</td></tr>' for name, value in facts)
    details = (claim or {}).get("details") or {}
    details_html = (
        f'<h4>details</h4><div class="details">{value_html(details)}</div>'
        if details
        else '<p class="muted">no details recorded</p>'
    )
    raw = _e(json.dumps(record, indent=1, default=str))
    return (
        f'<details class="claim" id="{_slug(claim_id)}" data-claim="{_e(claim_id)}" data-verdict="{_e(verdict)}">'
        f'<summary>{_chip(verdict)} <b class="cid">{_e(claim_id)}</b> <span class="kw">{_e(record.get("keyword", ""))}</span> '
        f'<span class="st">{_e(title)}</span> <span class="fig">{_e(figure)}</span>'
        + (' <b class="bad">unexpected</b>' if unexpected else "")
        + f'</summary><div class="body"><table class="facts">{rows}</table>{details_html}'
        f'<details class="raw"><summary>the record as claims.json holds it</summary><pre>{raw}</pre></details>'
        "</div></details>"
    )


def _figures_html(figures: Mapping[str, bytes], skipped: Sequence[str]) -> str:
    items = "".join(
        f'<figure><img alt="{_e(name)}" src="data:image/png;base64,{base64.b64encode(data).decode()}"/>'
        f"<figcaption>{_e(name)}</figcaption></figure>"
        for name, data in figures.items()
    )
    note = (
        f'<p class="muted">Not drawn (their data was not computed in this run): {_e(", ".join(skipped))}.</p>'
        if skipped
        else ""
    )
    return f'<section id="figures"><h2>Figures</h2><div class="figures">{items or "<p>none</p>"}</div>{note}</section>'


def _manifest_html(manifest: Mapping[str, Any] | None) -> str:
    if not manifest:
        return '<section id="manifest"><h2>Manifest</h2><p class="muted">This report has no manifest.</p></section>'
    groups = "".join(
        f"<h3>{_e(group)}</h3>{value_html(manifest.get(group) or {}, -1)}"
        for group in ("versions", "machine", "settings", "time")
    )
    return f'<section id="manifest"><h2>Manifest</h2><p class="muted">What produced this report.</p>{groups}</section>'


# ------------------------------------------------------------------------- a sweep's matrix


def matrix_page(
    result: Mapping[str, Any], labels: Mapping[str, str], figures: Mapping[str, bytes] | None = None
) -> str:
    """The page of a sweep: the replication matrix (claims by cells, each cell coloured by its
    verdict and linking to that cell's own page), the cells' runs, the figure and the manifest."""
    columns, claims = list(result.get("columns") or []), list(result.get("claims") or [])
    stable = set(result.get("stable") or [])
    head = "".join(
        f'<th><a href="replication/{_e(c)}/index.html">{_e(labels.get(c, c))}</a></th>' for c in columns
    )
    rows = []
    for claim in claims:
        cells = []
        for column in columns:
            entry = (result.get("matrix") or {}).get(claim, {}).get(column, {})
            verdict = str(entry.get("verdict", NOT_MEASURED))
            color = VERDICT_COLORS.get(verdict, VERDICT_COLORS[NOT_MEASURED])
            ink = "#111" if verdict in _DARK_TEXT else "#fff"
            measured = entry.get("measured")
            text = _num(measured) if isinstance(measured, (int, float)) else verdict
            cells.append(
                f'<td class="cell" style="background:{color};color:{ink}" title="{_e(f"{claim} in {column}: {verdict}")}">'
                f"{_e(text)}</td>"
            )
        mark = "yes" if claim in stable else "no"
        rows.append(f'<tr><th scope="row">{_e(claim)}</th>{"".join(cells)}<td>{mark}</td></tr>')
    legend = " ".join(f"{_chip(v)}" for v in VERDICT_COLORS)
    missing = result.get("missing") or {}
    missing_html = "".join(
        f'<p class="banner">Missing cell {_e(labels.get(c, c))} (<code>{_e(c)}</code>): {_e(reason)}</p>'
        for c, reason in missing.items()
    )
    runs = result.get("runs") or []
    body = [
        "<header><h1>Claims across the cells of a sweep</h1>",
        f'<p class="sub">{len(claims)} claims × {len(columns)} cells'
        + (f" · engine {_e(result['engine'])}" if result.get("engine") else "")
        + (
            f" · wall time {_num(result['wall_s'])} s"
            if isinstance(result.get("wall_s"), (int, float))
            else ""
        )
        + "</p>",
        f'<p class="counts">{legend}</p>{missing_html}',
        '<nav><a href="#matrix">matrix</a> · <a href="#runs">runs</a> · <a href="#figures">figures</a> · '
        '<a href="#manifest">manifest</a></nav></header>',
        '<section id="matrix"><h2>Verdicts</h2><p class="legend">Each entry: the measured figure, coloured by '
        "the verdict; a column heading opens that cell's own report.</p>",
        f'<table class="matrix"><thead><tr><th>claim</th>{head}<th>stable</th></tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table>",
        f"<p>Stable across the cells ({len(stable)}): {_e(', '.join(result.get('stable') or []) or 'none')}.</p>",
        "</section>",
        f'<section id="runs"><h2>Runs</h2>{value_html(runs) if runs else "<p class=muted>none recorded</p>"}'
        f"{('<h3>cells</h3>' + value_html(list(result.get('cells') or []))) if result.get('cells') else ''}</section>",
        _figures_html(figures or {}, []),
        _manifest_html(result.get("manifest")),
    ]
    return _document("dpoclaims: sweep", "".join(body))


# ------------------------------------------------------------------------- the document


_STYLE = """
:root{--ink:#1d1d1f;--muted:#6b6b6b;--line:#e3e3e3;font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif}
body{margin:0 auto;max-width:1100px;padding:16px 24px 60px;color:var(--ink);line-height:1.4}
h1{font-size:1.5em;margin:.3em 0}h2{margin-top:1.6em;border-bottom:1px solid var(--line);padding-bottom:.2em}
h3{margin:1em 0 .3em}h4{margin:.8em 0 .3em}
.sub,.muted{color:var(--muted)}nav{margin:.5em 0}nav a{color:#1f5fbf}
.chip{display:inline-block;padding:1px 8px;border-radius:10px;font-size:.85em;border:1px solid #0002;white-space:nowrap}
.banner{background:#fff3cd;border:1px solid #e0c36a;padding:6px 10px;border-radius:4px}
.legend{font-size:.9em;color:#444}.swatch{display:inline-block;width:18px;height:10px;background:#e6f4e6;border:1px solid #cde5cd}
svg.forest{max-width:100%;height:auto;font-size:12px}
.forest-row{cursor:pointer}.forest-row .hit{fill:transparent}.forest-row:hover .hit,.forest-row:focus .hit{fill:#f0f4ff}
.forest-row:focus{outline:none}.row-label{font-weight:600;font-family:ui-monospace,monospace}.tick{fill:#888;font-size:10px}
.tick.threshold{fill:#333}.row-figure{font-size:11px}.row-verdict{font-size:11px;font-weight:600}
details.claim{border:1px solid var(--line);border-radius:6px;margin:6px 0;background:#fff}
details.claim>summary{cursor:pointer;padding:6px 10px;list-style-position:outside}
details.claim[open]>summary{background:#f6f8fa;border-bottom:1px solid var(--line)}
details.claim.flash{box-shadow:0 0 0 3px #7aa7ff}
.cid{font-family:ui-monospace,monospace}.kw{color:var(--muted);font-size:.85em}.fig{font-family:ui-monospace,monospace;font-size:.9em}
.bad{color:#b00020}.body{padding:8px 14px}
table{border-collapse:collapse;font-size:.9em}th,td{text-align:left;vertical-align:top;padding:3px 8px;border-bottom:1px solid #f0f0f0}
table.facts th,table.kv th{color:#444;font-weight:600;white-space:nowrap}
table.records th{background:#f6f8fa}table.kv table.kv{margin:2px 0}
.num,.lit,.list,code,pre{font-family:ui-monospace,monospace;font-size:.92em}.list{word-break:break-word}
pre{background:#f6f8fa;padding:8px;overflow:auto;max-height:420px}
details>summary{cursor:pointer}details.more{display:inline}
.figures{display:flex;flex-wrap:wrap;gap:12px}figure{margin:0;border:1px solid var(--line);padding:6px;background:#fff}
figure img{max-width:520px;width:100%}figcaption{font-size:.85em;color:var(--muted)}
table.matrix td.cell{text-align:center;font-family:ui-monospace,monospace;border:1px solid #fff}
button{font:inherit;padding:2px 10px;border:1px solid #bbb;border-radius:4px;background:#f6f8fa;cursor:pointer}
"""

_SCRIPT = """
(function(){
  function openClaim(id){
    var el=document.getElementById(id); if(!el){return;}
    el.open=true; el.scrollIntoView({block:'start'});
    el.classList.add('flash'); setTimeout(function(){el.classList.remove('flash');},1200);
  }
  document.querySelectorAll('.forest-row').forEach(function(row){
    row.addEventListener('click',function(){openClaim(row.getAttribute('data-target'));});
    row.addEventListener('keydown',function(ev){
      if(ev.key==='Enter'||ev.key===' '){ev.preventDefault();openClaim(row.getAttribute('data-target'));}
    });
  });
  function setAll(open){document.querySelectorAll('details.claim').forEach(function(d){d.open=open;});}
  var openAll=document.getElementById('open-all'), closeAll=document.getElementById('close-all');
  if(openAll){openAll.addEventListener('click',function(){setAll(true);});}
  if(closeAll){closeAll.addEventListener('click',function(){setAll(false);});}
  if(location.hash.indexOf('#claim-')===0){openClaim(location.hash.slice(1));}
})();
"""


def _document(title: str, body: str) -> str:
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8"/>'
        f'<meta http-equiv="Content-Security-Policy" content="{_POLICY}"/>'
        '<meta name="viewport" content="width=device-width, initial-scale=1"/>'
        f"<title>{_e(title)}</title><style>{_STYLE}</style></head>"
        f"<body>{body}<script>{_SCRIPT}</script></body></html>\n"
    )
