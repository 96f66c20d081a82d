"""Putting a claims report in place: the reports directory is checked before a run, the report
is rendered (:mod:`dpoclaims.report.render`) into a staging directory inside it and then moved
into place file by file, so a write that fails (a full disk) leaves the previous report as it was.
A file goes only where nothing stands or where the previous report wrote it, unchanged since; the
files the previous report wrote and this one does not are deleted if unchanged, and no other file is."""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from dpoclaims.claims.results import ClaimId, ClaimRecord
from dpoclaims.errors import ReportError
from dpoclaims.files import (
    atomic_write_text,
    ensure_writable_dir,
    outputs_not_owned,
    owned_manifest,
    owned_outputs,
    refuse_overwriting,
)
from dpoclaims.phases import phase
from dpoclaims.report.render import FIGURE_FILES, badge_filename, check_badge_names, render_reports

log = logging.getLogger(__name__)

#: What to do when the reports directory cannot be written (pytest option and variable).
REPORTS_REMEDY = "set --reports-dir or $DPOCLAIMS_REPORTS to a writable directory"
#: What to do when the reports directory holds files the writer did not write.
FOREIGN_FILES_REMEDY = "set --reports-dir or $DPOCLAIMS_REPORTS to another directory"


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

        claim_ids = [cid for entry in paper.ENTRIES for cid in entry.claim_ids()]
    badges = sorted({f"badges/{badge_filename(claim_id)}" for claim_id in claim_ids})
    return [
        "claims.json",
        "claims.md",
        "index.html",
        "badges/README.md",
        *badges,
        *(f"figures/{n}" for n in FIGURE_FILES),
    ]


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


@phase("reports")
def write_reports(
    records: Sequence[ClaimRecord],
    out_dir: Path,
    header: dict[str, Any],
    figure_data: dict[str, Any] | None = None,
    *,
    run_manifest: Mapping[str, Any] | None = None,
) -> list[Path]:
    """Write every report file from the claim records, the figure data the tests recorded
    (``figure_data``: :meth:`dpoclaims.measure.decomposition.Decomposition.figure_data`, or None)
    and ``run_manifest`` (:func:`dpoclaims.report.manifest.run_manifest`'s, or None), rendered by
    :func:`dpoclaims.report.render.render_reports`. Nothing is measured here.

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
    check_badge_names(records)
    staging = _staging_dir(out_dir)
    try:
        try:
            written = render_reports(staging, records, header, figure_data, run_manifest)
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
    return [out_dir / "claims.json", out_dir / "claims.md", out_dir / "index.html", out_dir / "badges"]
