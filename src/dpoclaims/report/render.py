"""What a claims report says: ``claims.json`` (with the run's manifest), ``claims.md``, the page
``index.html``, shields.io badges and figures, rendered into a directory from the typed claim
records (:class:`dpoclaims.claims.results.ClaimRecord`) alone. Putting them in place in the
reports directory is :mod:`dpoclaims.report.writer`'s job."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from dpoclaims.claims.results import NOT_MEASURED, ClaimId, ClaimRecord, ClaimResult
from dpoclaims.report.manifest import manifest_lines

# One colour per badge state (shields.io colour names); docs/badges.md documents them. The first
# four are the verdict states of a measured claim; "unexpected" marks an outcome other than the
# one declared for the pair (a failed, xpassed or erroring claim test), whatever the verdict.
BADGE_COLORS: dict[str, str] = {
    "replicates": "brightgreen",
    "contradicts": "red",
    "inconclusive": "yellow",
    "not measurable": "orange",
    NOT_MEASURED: "lightgrey",  # skipped: nothing was measured on this pair
    "unexpected": "critical",
}
UNEXPECTED_OUTCOMES = frozenset({"failed", "xpassed", "error"})
BADGE_BRANCH = "badges"  # the branch .github/workflows/claims.yml publishes reports/badges/ to
BADGE_REPO_PLACEHOLDER = "OWNER/REPO"
_SIGN_WORDS = {"+": "plus", "-": "minus"}


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _sig(value: float | None, digits: int = 3) -> str:
    """``value`` to ``digits`` significant digits ("-" for None or NaN)."""
    if value is None or math.isnan(value):
        return "-"
    return f"{value:.{digits}g}"


def _short(text: str, limit: int = 90) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _details(record: ClaimRecord) -> dict[str, Any]:
    return record.result.details if record.result is not None else {}


def _search_lines(records: Sequence[ClaimRecord]) -> list[str]:
    """The searches (C1[search], C2[search], C13[search]): what discovery chose and how it fared
    on each half (dpoclaims.claims.search)."""
    lines = []
    for r in records:
        details = _details(r)
        if "search" not in details or "n_measured" not in details:
            continue
        chosen = details.get("chosen")
        text = (
            f"- **{r.id}**: {details['n_measured']} candidates measured on the discovery half "
            f"(up to {details.get('max_examples')} drawn by Hypothesis, seed {details.get('seed')})"
        )
        if chosen:
            how = (
                "found (it reached the opposite of the claim there)"
                if chosen.get("hit")
                else "best (none reached it)"
            )
            text += (
                f"; {how}: {chosen['label']} ({chosen['size']} neurons): discovery "
                f"{_candidate(chosen['discovery'])}; confirmation {_candidate(chosen['confirmation'])}"
            )
        lines.append(text + ".")
        unavailable = (details.get("space") or {}).get("unavailable")
        if unavailable:
            lines.append(f"  - The unembedding direction is not searched on this pair: {unavailable}.")
    return (
        [
            "",
            "Searches (discovery on one half of the prompts and texts, confirmation on the other):",
            "",
            *lines,
        ]
        if lines
        else []
    )


def _candidate(evaluated: dict[str, Any]) -> str:
    parts = []
    for name in ("share", "toxicity_vs_dpo", "perplexity_vs_dpo"):
        figure = evaluated.get(name)
        if isinstance(figure, dict) and "unmeasured" in figure:
            parts.append(f"{name.replace('_', ' ')} not measured (not needed)")
        elif isinstance(figure, dict) and "value" in figure:
            low, high = figure["ci"]
            parts.append(
                f"{name.replace('_', ' ')} {_fmt(figure['value'], 4)} [{_fmt(low, 4)}, {_fmt(high, 4)}]"
            )
    return ", ".join(parts) or "-"


def _null_text(claim: ClaimResult) -> str:
    null = claim.details.get("null")
    if not null:
        return "-"
    if null.get("interval") is None:
        return f"undefined ({null.get('defined', 0):.0%} of draws)"
    low, high = null["interval"]
    return f"[{_fmt(low)}, {_fmt(high)}]" + (" (inside)" if null.get("contains") else "")


def _interval_text(claim: ClaimResult) -> str:
    if claim.exact:
        return "exact"
    ci = claim.ci
    return f"[{_fmt(ci[0])}, {_fmt(ci[1])}]" if ci else "-"


def pairs_table_markdown(reports: dict[str, Sequence[ClaimRecord]]) -> str:
    """One row per claim, one column per pair (after the paper's GPT-2 figure): each pair's figure,
    its 95% interval and verdict, as the pairs' ``claims.json`` files hold them."""
    names = list(reports)
    by_pair = {name: {str(r.id): r for r in records} for name, records in reports.items()}
    every = sorted((r for records in reports.values() for r in records), key=lambda r: r.sort_key)
    order = list(dict.fromkeys(str(r.id) for r in every))
    lines = ["| claim | paper (GPT-2) | " + " | ".join(names) + " |", "|---|---|" + "---|" * len(names)]
    for claim_id in order:
        results = [by_pair[n][claim_id].result for n in names if claim_id in by_pair[n]]
        paper = next((r.paper for r in results if r is not None and r.paper is not None), None)
        cells = []
        for name in names:
            record = by_pair[name].get(claim_id)
            if record is None or record.result is None:
                cells.append("-" if record is None else NOT_MEASURED)
                continue
            result = record.result
            interval = (
                "exact"
                if result.exact
                else f"[{_sig(result.ci[0])}, {_sig(result.ci[1])}]"
                if result.ci
                else ""
            )
            cells.append(f"{_sig(result.measured)} {interval} {result.verdict}")
        lines.append(f"| {claim_id} | {_sig(paper)} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _p_text(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.3g}" if value >= 0.001 else "<0.001"


def badge_filename(claim_id: ClaimId | str) -> str:
    """The badge file of a claim, safe in a URL as it is: ``C4[v1]`` -> ``C4-v1.json``,
    ``C1[N=100]`` -> ``C1-N100.json``, ``C5[TP-]`` -> ``C5-TPminus.json``.

    Letters, digits, ``.`` and ``_`` are kept; ``=`` is dropped; a ``+`` or ``-`` is kept
    between two letters or digits (``anti-toxic``) and spelled ``plus``/``minus`` elsewhere,
    where it is a sign; anything else becomes ``_``. ``write_reports`` refuses two ids that
    come out the same.
    """
    parsed = claim_id if isinstance(claim_id, ClaimId) else ClaimId.parse(claim_id)
    parts = [part for part in (parsed.claim, parsed.param) if part]
    safe_parts = []
    for part in parts:
        chars = []
        for index, char in enumerate(part):
            inner = 0 < index < len(part) - 1 and part[index - 1].isalnum() and part[index + 1].isalnum()
            if char.isascii() and (char.isalnum() or char in "._"):
                chars.append(char)
            elif char == "=":
                continue
            elif char in _SIGN_WORDS:
                chars.append(char if inner and char == "-" else _SIGN_WORDS[char])
            else:
                chars.append("_")
        safe_parts.append("".join(chars))
    return "-".join(safe_parts) + ".json"


def badge_state(record: ClaimRecord) -> str:
    """The record's verdict (a key of ``BADGE_COLORS``); ``not measured`` when the claim was skipped."""
    return record.verdict


def badge(record: ClaimRecord) -> dict[str, Any]:
    """A shields.io endpoint badge: label = claim id, message = verdict state and figure.

    Coloured by ``BADGE_COLORS``; an outcome other than the declared one (failed, xpassed,
    error) gets the message prefix ``unexpected:`` and a red label as well (``isError``).
    """
    claim = record.result
    state = badge_state(record)
    message = state
    if claim is not None and _fmt(claim.measured, 2) != "-":
        message += f" ({_fmt(claim.measured, 2)})"
    if claim is None and record.outcome == "error":
        message = "error"
    if record.outcome in UNEXPECTED_OUTCOMES:
        color = BADGE_COLORS["unexpected"]
        return {
            "schemaVersion": 1,
            "label": str(record.id),
            "message": f"unexpected: {message}",
            "color": color,
            "labelColor": color,
            "isError": True,
        }
    return {"schemaVersion": 1, "label": str(record.id), "message": message, "color": BADGE_COLORS[state]}


def badge_markdown(claim_id: ClaimId | str, repo: str) -> str:
    """Markdown for one claim's badge, read from the ``badges`` branch of ``repo`` (owner/name);
    it links to the claims table published beside it."""
    endpoint = f"https://raw.githubusercontent.com/{repo}/{BADGE_BRANCH}/{badge_filename(claim_id)}"
    table = f"https://github.com/{repo}/blob/{BADGE_BRANCH}/claims.md"
    alt = badge_filename(claim_id).removesuffix(".json")
    return f"[![{alt}](https://img.shields.io/endpoint?url={endpoint})]({table})"


def badge_wall_markdown(records: Sequence[ClaimRecord], repo: str | None) -> str:
    """``badges/README.md``: every claim's badge, rendered and as ready-to-paste markdown."""
    owner_repo = repo or BADGE_REPO_PLACEHOLDER
    lines = [
        "# Claim badges",
        "",
        f"One shields.io endpoint badge per claim, read from the `{BADGE_BRANCH}` branch of `{owner_repo}` "
        f"(`.github/workflows/claims.yml` publishes `reports/badges/` there on every push to `main`). "
        "Each badge links to the claims table.",
        "",
    ]
    if repo is None:
        lines += [
            f"`{BADGE_REPO_PLACEHOLDER}` is a placeholder: run `pytest claims/ --badge-repo owner/name` "
            "(or set `DPOCLAIMS_BADGE_REPO`; on GitHub Actions `GITHUB_REPOSITORY` is used) to fill it in.",
            "",
        ]
    lines += [
        "Colours: "
        + ", ".join(f"{color} = {state}" for state, color in BADGE_COLORS.items() if state != "unexpected")
        + f"; a red (`{BADGE_COLORS['unexpected']}`) label and the prefix `unexpected:` mark an outcome other than "
        "the one declared for this pair.",
        "",
        "## The wall",
        "",
        *[badge_markdown(r.id, owner_repo) for r in records],
        "",
        "## Markdown to paste",
        "",
        "```markdown",
        *[badge_markdown(r.id, owner_repo) for r in records],
        "```",
    ]
    return "\n".join(lines) + "\n"


def report_markdown(
    records: Sequence[ClaimRecord], header: dict[str, Any], manifest: Mapping[str, Any] | None = None
) -> str:
    """``claims.md``: the run's manifest, the pair's claims table, searches, criteria and figures."""
    incomplete = (
        [f"**Incomplete report: {header['incomplete']}** Verdicts below cover only the claims that ran.", ""]
        if header.get("incomplete")
        else []
    )
    dropped = header.get("prompts_dropped") or {}
    dropped_text = ", ".join(
        f"{n} {what}"
        for what, n in (("repeated", dropped.get("repeated")), ("empty or invisible", dropped.get("empty")))
        if n
    )
    lines = [
        f"# Claims of Yang et al. 2024 on pair `{header['pair']}`",
        "",
        *incomplete,
        f"Pair fingerprint `{header['fingerprint']}`; {header['n_prompts']} prompts"
        + (
            f" ({header['prompt_selection']})"
            if header.get("prompt_selection")
            else f" (distinct and usable; dropped from the file: {dropped_text})"
            if dropped_text
            else ""
        )
        + "; position convention "
        f"`{header['convention']}`; scorer `{header['scorer']}`. Shares use the four reducing groups' total as "
        "denominator (v1) unless the id says `gross`. Each claim has two one-sided bootstrap tests (10,000 resamples "
        'of the prompts; of the texts or windows for perplexity): p, of H0 "the paper\'s finding does not hold", and '
        'p against, of H0 "it holds". A verdict is definite when its p-value is at most the level, '
        f"{_p_text(header.get('level'))}: 5% over every claim test of the paper table (Bonferroni), so the chance "
        "of any wrong definite verdict in a run is at most 5%, whichever claims it selects. Intervals are read at the "
        "same level. **replicates**: p at most the level; **contradicts**: p against at most the level; "
        "**inconclusive**: neither; **not measurable**: a figure is undefined on this pair (a ratio whose "
        "denominator is not shown positive). C4-C9 show a null control (base and DPO swapped at random within "
        "prompts): a figure inside its 95% interval cannot replicate. See docs/claims.md. Neuron counts from the "
        "paper are scaled to this pair by the fraction of all MLP neurons.",
        "",
        *manifest_lines(manifest),
        "",
        "| id | keyword | claim | paper | measured | interval | null (95%) | p | p against | expected here | verdict | outcome |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in records:
        c = r.result
        claim_text = c.statement if c else _short(r.skip_reason)
        figures = (
            f"{_fmt(c.paper)} | {_fmt(c.measured)} | {_interval_text(c)} | {_null_text(c)} | {_p_text(c.p_value)} | "
            f"{_p_text(c.p_against)}"
            if c
            else "- | - | - | - | - | -"
        )
        lines.append(
            f"| {r.id} | {r.keyword} | {claim_text} | {figures} | {r.expectation.label} | {r.verdict} | {r.outcome} |"
        )
    findings = [(r.id, r.result.finding) for r in records if r.result is not None and r.result.finding]
    if findings:
        lines += ["", "Findings:", ""] + [f"- **{cid}**: {text}." for cid, text in findings]
    lines += _search_lines(records)
    reasons = sorted({r.skip_reason for r in records if r.skip_reason})
    if reasons:
        lines += ["", "Skipped, because:", ""] + [f"- {reason}" for reason in reasons]
    lines += ["", "Criteria:", ""]
    for r in records:
        if r.result is not None:
            lines.append(f"- **{r.id}**: {r.result.criterion}.")
    if header.get("figures"):
        lines += ["", "Figures:", ""] + [f"- ![{name}](figures/{name})" for name in header["figures"]]
    if header.get("figures_skipped"):
        lines += [
            "",
            f"Figures not drawn (their data was not computed in this run): {', '.join(header['figures_skipped'])}.",
        ]
    return "\n".join(lines) + "\n"


def check_badge_names(records: Sequence[ClaimRecord]) -> None:
    """A :class:`ValueError` when two claim ids give the same badge file (see :func:`badge_filename`)."""
    files: dict[str, str] = {}
    for r in records:
        name = badge_filename(r.id)
        if files.setdefault(name, str(r.id)) != str(r.id):
            raise ValueError(
                f"claim ids {files[name]!r} and {str(r.id)!r} both give badge file {name}; rename one"
            )


def render_reports(
    directory: Path,
    records: Sequence[ClaimRecord],
    header: dict[str, Any],
    figure_data: dict[str, Any] | None,
    manifest: Mapping[str, Any] | None = None,
) -> list[str]:
    """Write every report file into ``directory`` (empty: a staging directory); their paths
    relative to it. ``figure_data``: :meth:`dpoclaims.measure.decomposition.Decomposition.figure_data`
    or None; ``manifest``: :func:`dpoclaims.report.manifest.run_manifest`'s, or None. Nothing is
    measured here."""
    from dpoclaims.report.page import claims_page

    records = sorted(records, key=lambda r: r.sort_key)
    check_badge_names(records)
    figures, skipped = draw_figures(records, directory / "figures", header, figure_data)
    header = {**header, "figures": figures, "figures_skipped": skipped}
    document = {
        "header": header,
        "manifest": dict(manifest) if manifest else None,
        "claims": [r.to_json() for r in records],
    }
    (directory / "claims.json").write_text(json.dumps(document, indent=1, default=str))
    (directory / "claims.md").write_text(report_markdown(records, header, manifest))
    # The page reads the document as claims.json holds it (also what `dpoclaims view` could rebuild from).
    pictures = {name: (directory / "figures" / name).read_bytes() for name in figures}
    (directory / "index.html").write_text(
        claims_page(json.loads(json.dumps(document, default=str)), pictures)
    )
    badge_dir = directory / "badges"
    badge_dir.mkdir(exist_ok=True)
    for r in records:
        data = badge(r)
        if header.get("incomplete"):
            data = {**data, "message": f"interrupted: {data['message']}"}
        (badge_dir / badge_filename(r.id)).write_text(json.dumps(data))
    (badge_dir / "README.md").write_text(badge_wall_markdown(records, header.get("badge_repo")))
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*") if p.is_file())


#: The figures drawn from the decomposition's data.
DECOMPOSITION_FIGURES = (
    "fig2_cumulative_contribution.png",
    "group_shares.png",
    "activation_change_vs_cosine.png",
    "fig3_per_layer_groups.png",
)
LAYER_PROJECTION_FIGURE = "fig1a_layer_projection.png"  # Fig. 1a, from C1's details
EDIT_FRONT_FIGURE = "c13_edit_front.png"  # from C13[search]'s details
#: Every figure a report may draw (under ``figures/``).
FIGURE_FILES = (LAYER_PROJECTION_FIGURE, EDIT_FRONT_FIGURE, *DECOMPOSITION_FIGURES)


def draw_figures(
    records: Sequence[ClaimRecord],
    fig_dir: Path,
    header: dict[str, Any],
    figure_data: dict[str, Any] | None,
) -> tuple[list[str], list[str]]:
    from dpoclaims.report import plots

    fig_dir.mkdir(parents=True, exist_ok=True)
    drawn, skipped = [], []
    title = f"{header['pair']}"
    # Fig. 1a: the claim that recorded a layer projection (C1 at the paper's N = 100)
    projected = next((_details(r) for r in records if "layer_projection" in _details(r)), None)
    if projected is not None:
        n = projected["n_neurons_ablated"]
        plots.layer_projection(
            projected["layer_projection"],
            f"base, top {n} toxic ablated",
            f"{title}: MLP projection onto the probe",
            fig_dir / LAYER_PROJECTION_FIGURE,
        )
        drawn.append(LAYER_PROJECTION_FIGURE)
    else:
        skipped.append(LAYER_PROJECTION_FIGURE)
    edits = next((_details(r) for r in records if _details(r).get("search") == "C13[search]"), None)
    if edits is not None:
        plots.edit_front(edits, title, fig_dir / EDIT_FRONT_FIGURE)
        drawn.append(EDIT_FRONT_FIGURE)
    else:
        skipped.append(EDIT_FRONT_FIGURE)
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
