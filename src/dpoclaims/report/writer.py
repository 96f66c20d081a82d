"""Claims reports: ``claims.json``, ``claims.md``, shields.io badges and figures, written from
the typed claim records (:class:`dpoclaims.claims.results.ClaimRecord`) alone."""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from dpoclaims.claims.results import NOT_MEASURED, ClaimId, ClaimRecord, ClaimResult
from dpoclaims.errors import ReportError
from dpoclaims.files import (
    atomic_write_text,
    ensure_writable_dir,
    outputs_not_owned,
    owned_manifest,
    owned_outputs,
    refuse_overwriting,
)
from dpoclaims.stats import changed_by_holm, holm

log = logging.getLogger(__name__)

#: What to do when the reports directory cannot be written (pytest option and variable).
REPORTS_REMEDY = "set --reports-dir or $DPOCLAIMS_REPORTS to a writable directory"
#: What to do when the reports directory holds files the writer did not write.
FOREIGN_FILES_REMEDY = "set --reports-dir or $DPOCLAIMS_REPORTS to another directory"
# One colour per badge state (shields.io colour names); README.md documents them. The first
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
    lines = []
    for r in records:
        details = _details(r)
        if "search" not in details or "n_measured" not in details:
            continue
        best, counter = details.get("best"), details.get("counterexample")
        text = (
            f"- **{r.id}**: {details['n_measured']} ablations measured "
            f"(up to {details.get('max_examples')} drawn by Hypothesis)"
        )
        if best:
            text += f"; best: {_ablation(best)} of DPO's drop ({best['verdict']})"
        if counter:
            how = (
                "shrunk by Hypothesis"
                if counter.get("shrunk")
                else "measured before Hypothesis's draws (a rule's largest ablation or an earlier run's "
                "strongest), not shrunk"
            )
            text += f"; counterexample ({how}): {_ablation(counter)} ({counter['verdict']})"
        else:
            text += "; no counterexample"
        lines.append(text + ".")
    return ["", "Counterexample searches:", "", *lines] if lines else []


def _edit_search_lines(records: Sequence[ClaimRecord]) -> list[str]:
    """C13[search]: the best edit and the one found, and the toxicity / perplexity table."""
    record = next((r for r in records if _details(r).get("edit_search")), None)
    if record is None:
        return []
    details = _details(record)
    text = (
        f"- **{record.id}**: {details['n_measured']} edits measured (up to {details.get('max_examples')} "
        f"drawn by Hypothesis; directions {', '.join(details['directions'])}); verdict {details['verdict']}, "
        f"Bonferroni p {_p_text(details['p_value'])}"
    )
    best, found = details.get("best"), details.get("found")
    if best:
        text += f"; best: {_edit(best)} ({best['verdict']})"
    if found:
        how = "shrunk by Hypothesis" if found.get("shrunk") else "measured before the search drew"
        text += f"; found ({how}): {_edit(found)}"
    else:
        text += "; no edit found with both parts below DPO's"
    lines = ["", "Activation editing:", "", text + "."]
    if details.get("unavailable"):
        lines.append(f"- The unembedding direction is not searched on this pair: {details['unavailable']}.")
    table = details.get("table") or []
    if table:
        lines += [
            "",
            "| model | edit | neurons | toxicity | 95% CI | perplexity | 95% CI |",
            "|---|---|---|---|---|---|---|",
        ]
        for row in table:
            what = {"base": "base", "dpo": "DPO"}.get(row["kind"], f"base, {row['kind']}")
            edit = (
                f"alpha {row['alpha']:g}, beta {row['beta']:g}, {row['direction']}, {row['selection']}"
                if "alpha" in row
                else "-"
            )
            lines.append(
                f"| {what} | {edit} | {row.get('n_neurons', '-')} | {_fmt(row['toxicity'], 4)} | "
                f"[{_fmt(row['toxicity_ci'][0], 4)}, {_fmt(row['toxicity_ci'][1], 4)}] | "
                f"{_fmt(row['perplexity'], 3)} | [{_fmt(row['perplexity_ci'][0], 3)}, {_fmt(row['perplexity_ci'][1], 3)}] |"
            )
    return lines


def _edit(point: dict[str, Any]) -> str:
    return (
        f"alpha {point['alpha']:g}, beta {point['beta']:g} ({point['direction']}, {point['selection']}; "
        f"{point['n_neurons']} neurons): toxicity minus DPO's {_fmt(point['toxicity_vs_dpo']['value'], 4)} "
        f"[{_fmt(point['toxicity_vs_dpo']['ci'][0], 4)}, {_fmt(point['toxicity_vs_dpo']['ci'][1], 4)}], "
        f"perplexity over DPO's {point['perplexity_vs_dpo']['value']:+.2%} "
        f"[{point['perplexity_vs_dpo']['ci'][0]:+.2%}, {point['perplexity_vs_dpo']['ci'][1]:+.2%}]"
    )


def _ablation(point: dict[str, Any]) -> str:
    return (
        f"{point['n']} neurons by rule `{point['rule']}` recover {_fmt(point['share'])} "
        f"[{_fmt(point['ci'][0])}, {_fmt(point['ci'][1])}]"
    )


def holm_adjust(records: Sequence[ClaimRecord]) -> tuple[list[ClaimRecord], list[str]]:
    """The records with Holm-adjusted p-values (``p_holm``) over the family of claims measured on
    the pair, and the ids whose "replicates" the adjustment would not support."""
    p_values = {str(r.id): r.result.p_value for r in records if r.result is not None}
    adjusted = holm(p_values)
    by_id = {str(r.id): r for r in records}
    changed = [key for key in changed_by_holm(p_values) if by_id[key].verdict == "replicates"]
    return [r.with_p_holm(adjusted.get(str(r.id))) for r in records], changed


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


def report_markdown(records: Sequence[ClaimRecord], header: dict[str, Any]) -> str:
    """``claims.md``: the pair's claims table, searches, criteria and figures."""
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
        "denominator (v1) unless the id says `gross` (the gross reduction over all D_i > 0, EMNLP). Intervals are "
        "95% bootstrap intervals over prompts (over texts or windows for perplexity; Fisher z for correlations; "
        '"exact" for figures without sampling error). Verdicts come from the interval: **replicates** when it lies '
        "wholly on the paper's side of the criterion, **contradicts** when wholly on the other side, "
        "**inconclusive** when it straddles it, **not measurable** when the figure is undefined on this pair. "
        'p is the one-sided p-value of H0 "the paper\'s finding does not hold" (see docs/claims.md); p (Holm) '
        "adjusts it over the claims of this run. Neuron counts from the paper are scaled to this pair by the "
        "fraction of all MLP neurons.",
        "",
        "| id | keyword | claim | paper | measured | 95% CI | p | p (Holm) | expected here | verdict | outcome |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in records:
        c = r.result
        claim_text = c.statement if c else _short(r.skip_reason)
        figures = (
            f"{_fmt(c.paper)} | {_fmt(c.measured)} | {_interval_text(c)} | {_p_text(c.p_value)} | {_p_text(c.p_holm)}"
            if c
            else "- | - | - | - | -"
        )
        lines.append(
            f"| {r.id} | {r.keyword} | {claim_text} | {figures} | {r.expectation.label} | {r.verdict} | {r.outcome} |"
        )
    changed = header.get("holm_changes") or []
    lines += [
        "",
        "Holm adjustment: "
        + (
            f'it would not support the verdict "replicates" of {", ".join(changed)} (adjusted p >= 0.025).'
            if changed
            else "it changes no verdict (every claim that replicates keeps adjusted p < 0.025)."
        ),
    ]
    lines += _search_lines(records)
    lines += _edit_search_lines(records)
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


#: The list of files the reports writer wrote last time, in the reports directory: the only
#: files it ever deletes (a badge of a claim no longer run). Other tools' files stay.
REPORTS_MANIFEST = ".dpoclaims-reports.json"
_STAGING_PREFIX = ".dpoclaims-reports-"
#: Bytes the start-of-run check writes: enough to find a full disk, small enough to be instant.
_CHECK_BYTES = 1 << 16


def report_file_names(claim_ids: Iterable[ClaimId | str] | None = None) -> list[str]:
    """Every file (relative path) a report of ``claim_ids`` may write (None: every claim of the
    paper table): where the writer must find nothing, or its own earlier files."""
    if claim_ids is None:
        from dpoclaims.claims import paper

        claim_ids = [entry.claim_id(p) for entry in paper.ENTRIES for p in (entry.params or (None,))]
    badges = sorted({f"badges/{badge_filename(claim_id)}" for claim_id in claim_ids})
    return ["claims.json", "claims.md", "badges/README.md", *badges, *(f"figures/{n}" for n in FIGURE_FILES)]


def _refuse_overwriting(out_dir: Path, names: Iterable[str]) -> None:
    refuse_overwriting(
        out_dir, REPORTS_MANIFEST, names, what="the report", remedy=FOREIGN_FILES_REMEDY, error=ReportError
    )


def check_reports_dir(out_dir: Path, claim_ids: Iterable[ClaimId | str] | None = None) -> None:
    """Before any test runs: the reports directory (and its ``figures``/``badges``) can be
    created, and a file of some size can be written and moved there (a read-only mount, a
    dangling symbolic link, a full disk, no permission are found now, not after the run), and it
    holds no file of the user's where the report of ``claim_ids`` (None: every claim of the
    paper table) would go (:func:`report_file_names`); a :class:`ReportError` naming the path and
    what to do otherwise."""
    for directory in (out_dir, out_dir / "figures", out_dir / "badges"):
        ensure_writable_dir(directory, "reports directory", REPORTS_REMEDY, ReportError)
    _refuse_overwriting(out_dir, report_file_names(claim_ids))
    staging = _staging_dir(out_dir)
    try:
        trial = staging / "check"
        with open(trial, "wb") as handle:
            handle.write(b"\0" * _CHECK_BYTES)
            handle.flush()
            os.fsync(handle.fileno())
    except OSError as exc:
        raise _write_error(out_dir, exc) from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _staging_dir(out_dir: Path) -> Path:
    try:
        return Path(tempfile.mkdtemp(prefix=_STAGING_PREFIX, dir=out_dir))
    except OSError as exc:
        raise _write_error(out_dir, exc) from None


def _write_error(out_dir: Path, exc: OSError) -> ReportError:
    return ReportError(f"cannot write the reports in {out_dir} ({exc.strerror or exc}); {REPORTS_REMEDY}")


def previous_report_complete(out_dir: Path) -> bool:
    """Whether ``out_dir`` holds a claims report from a run that was not interrupted."""
    try:
        header = json.loads((out_dir / "claims.json").read_text())["header"]
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return isinstance(header, dict) and not header.get("incomplete")


def write_reports(
    records: Sequence[ClaimRecord],
    out_dir: Path,
    header: dict[str, Any],
    figure_data: dict[str, Any] | None = None,
) -> list[Path]:
    """Write every report file from the claim records and the figure data the tests recorded
    (``figure_data``: :meth:`dpoclaims.measure.decomposition.Decomposition.figure_data`, or None).
    Nothing is measured here.

    Everything is written first into a staging directory inside ``out_dir``, then moved into
    place, so a write that fails (a full disk) leaves the previous report as it was. A file goes
    only where nothing stands or where the previous report wrote it, unchanged since
    (:data:`REPORTS_MANIFEST` lists what was written, with digests): otherwise a
    :class:`ReportError` names it before anything moves. Files the previous report wrote and this
    one does not (badges of claims not run now) are deleted if unchanged; no other file is. ``header["incomplete"]``
    (a sentence: the run was interrupted) marks ``claims.md``, ``claims.json`` and every badge.
    A reports directory (or its ``figures``/``badges``) that is a file, cannot be created or is
    not writable is a :class:`ReportError` naming the path, before anything is written."""
    for directory in (out_dir, out_dir / "figures", out_dir / "badges"):
        ensure_writable_dir(directory, "reports directory", REPORTS_REMEDY, ReportError)
    records = sorted(records, key=lambda r: r.sort_key)
    files: dict[str, str] = {}
    for r in records:
        name = badge_filename(r.id)
        if files.setdefault(name, str(r.id)) != str(r.id):
            raise ValueError(
                f"claim ids {files[name]!r} and {str(r.id)!r} both give badge file {name}; rename one"
            )
    staging = _staging_dir(out_dir)
    try:
        try:
            written = _write_into(staging, records, header, figure_data)
        except OSError as exc:
            raise _write_error(out_dir, exc) from None
        _refuse_overwriting(out_dir, written)
        stale = sorted(set(owned_outputs(out_dir, REPORTS_MANIFEST)) - set(written))
        changed = outputs_not_owned(out_dir, REPORTS_MANIFEST, stale)
        for relative in written:
            target = out_dir / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(staging / relative, target)
        for name in stale:
            if name not in changed:  # a file edited since the writer wrote it is the user's now
                (out_dir / name).unlink(missing_ok=True)
        manifest = owned_manifest(out_dir, written, complete=not header.get("incomplete"))
        atomic_write_text(out_dir / REPORTS_MANIFEST, manifest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return [out_dir / "claims.json", out_dir / "claims.md", out_dir / "badges"]


def _write_into(
    directory: Path,
    records: list[ClaimRecord],
    header: dict[str, Any],
    figure_data: dict[str, Any] | None,
) -> list[str]:
    """Write the report files into ``directory``; their paths relative to it."""
    figures, skipped = draw_figures(records, directory / "figures", header, figure_data)
    records, holm_changes = holm_adjust(records)
    header = {**header, "figures": figures, "figures_skipped": skipped, "holm_changes": holm_changes}
    (directory / "claims.json").write_text(
        json.dumps({"header": header, "claims": [r.to_json() for r in records]}, indent=1, default=str)
    )
    (directory / "claims.md").write_text(report_markdown(records, header))
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
    edits = next((_details(r) for r in records if _details(r).get("edit_search")), None)
    if edits is not None:
        plots.edit_front(edits, title, fig_dir / EDIT_FRONT_FIGURE)
        drawn.append(EDIT_FRONT_FIGURE)
    else:
        skipped.append(EDIT_FRONT_FIGURE)
    decomposition_figures = {
        DECOMPOSITION_FIGURES[0]: plots.cumulative_contribution,
        DECOMPOSITION_FIGURES[1]: plots.group_shares,
        DECOMPOSITION_FIGURES[2]: plots.change_vs_cosine,
        DECOMPOSITION_FIGURES[3]: plots.per_layer_groups,
    }
    for name, draw in decomposition_figures.items():
        if figure_data is None:
            skipped.append(name)
            continue
        draw(figure_data, title, fig_dir / name)
        drawn.append(name)
    return drawn, skipped
