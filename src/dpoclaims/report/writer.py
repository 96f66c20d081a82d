"""Putting a claims report in place: the reports directory is checked before a run, the report
is rendered (:mod:`dpoclaims.report.render`) into a staging directory inside it and then moved
into place file by file, so a write that fails (a full disk) leaves the previous report as it was;
the files the previous report wrote and this one does not are deleted, and no other file is."""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from dpoclaims.claims.results import ClaimRecord
from dpoclaims.errors import ReportError
from dpoclaims.files import atomic_write_text, ensure_writable_dir
from dpoclaims.report.render import check_badge_names, render_reports

log = logging.getLogger(__name__)

#: What to do when the reports directory cannot be written (pytest option and variable).
REPORTS_REMEDY = "set --reports-dir or $DPOCLAIMS_REPORTS to a writable directory"


#: The list of files the reports writer wrote last time, in the reports directory: the only
#: files it ever deletes (a badge of a claim no longer run). Other tools' files stay.
REPORTS_MANIFEST = ".dpoclaims-reports.json"
_STAGING_PREFIX = ".dpoclaims-reports-"
#: Bytes the start-of-run check writes: enough to find a full disk, small enough to be instant.
_CHECK_BYTES = 1 << 16


def check_reports_dir(out_dir: Path) -> None:
    """Before any test runs: the reports directory (and its ``figures``/``badges``) can be
    created, and a file of some size can be written and moved there (a read-only mount, a
    dangling symbolic link, a full disk, no permission are found now, not after the run); a
    :class:`ReportError` naming the path and what to do otherwise."""
    for directory in (out_dir, out_dir / "figures", out_dir / "badges"):
        ensure_writable_dir(directory, "reports directory", REPORTS_REMEDY, ReportError)
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


def report_files_written(out_dir: Path) -> list[str]:
    """The files (relative paths) the last :func:`write_reports` wrote into ``out_dir``; empty
    without a manifest (a directory this writer has not written, or an older version's)."""
    try:
        files = json.loads((out_dir / REPORTS_MANIFEST).read_text())["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return []
    return [
        f for f in files if isinstance(f, str) and ".." not in Path(f).parts and not Path(f).is_absolute()
    ]


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
    *,
    run_manifest: Mapping[str, Any] | None = None,
) -> list[Path]:
    """Write every report file from the claim records, the figure data the tests recorded
    (``figure_data``: :meth:`dpoclaims.measure.decomposition.Decomposition.figure_data`, or None)
    and ``run_manifest`` (:func:`dpoclaims.report.manifest.run_manifest`'s, or None), rendered by
    :func:`dpoclaims.report.render.render_reports`. Nothing is measured here.

    Everything is written first into a staging directory inside ``out_dir``, then moved into
    place, so a write that fails (a full disk) leaves the previous report as it was. Files the
    previous report wrote and this one does not (badges of claims not run now) are deleted;
    no other file is (:data:`REPORTS_MANIFEST` lists what was written). ``header["incomplete"]``
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
        previous = set(report_files_written(out_dir))
        for relative in written:
            target = out_dir / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(staging / relative, target)
        for stale in sorted(previous - set(written)):
            (out_dir / stale).unlink(missing_ok=True)
        manifest = {"files": written, "complete": not header.get("incomplete")}
        atomic_write_text(out_dir / REPORTS_MANIFEST, json.dumps(manifest, indent=1))
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return [out_dir / "claims.json", out_dir / "claims.md", out_dir / "index.html", out_dir / "badges"]
