"""Reports and cache directories that cannot be written: one clear error naming the path and
what to do, never a traceback, and nothing half written."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from dpoclaims.errors import ReportError
from dpoclaims.report.writer import write_reports

REPORTS_REMEDY = "set --reports-dir or $DPOCLAIMS_REPORTS to a writable directory"
CACHE_REMEDY = "set --cache-dir or $DPOCLAIMS_CACHE to a writable directory"
HEADER = {"pair": "p", "fingerprint": "f", "n_prompts": 3, "convention": "v1", "scorer": "lexicon"}


def test_reports_dir_that_is_a_file(tmp_path: Path):
    reports = tmp_path / "reports"
    reports.write_text("not a directory")
    with pytest.raises(ReportError) as info:
        write_reports([], reports, HEADER)
    assert str(info.value) == f"reports directory {reports} is a file, not a directory; {REPORTS_REMEDY}"


def test_reports_subdirectory_that_is_a_file_stops_before_anything_is_written(tmp_path: Path):
    (tmp_path / "badges").write_text("in the way")
    with pytest.raises(ReportError) as info:
        write_reports([], tmp_path, HEADER)
    assert str(info.value) == (
        f"reports directory {tmp_path / 'badges'} is a file, not a directory; {REPORTS_REMEDY}"
    )
    assert not (tmp_path / "claims.json").exists() and not (tmp_path / "claims.md").exists()


def test_reports_dir_under_a_file(tmp_path: Path):
    (tmp_path / "file").write_text("x")
    reports = tmp_path / "file" / "reports"
    with pytest.raises(ReportError) as info:
        write_reports([], reports, HEADER)
    assert str(info.value) == f"cannot create reports directory {reports} (Not a directory); {REPORTS_REMEDY}"


def test_read_only_reports_dir(tmp_path: Path):
    reports = tmp_path / "reports"
    reports.mkdir()
    reports.chmod(0o555)
    try:
        if os.access(reports, os.W_OK):
            pytest.skip("chmod does not make a directory read-only for this user (running as root)")
        with pytest.raises(ReportError) as info:
            write_reports([], reports, HEADER)
    finally:
        reports.chmod(0o755)
    assert (
        str(info.value)
        == f"reports directory {reports} is not writable (Permission denied); {REPORTS_REMEDY}"
    )


_ON_A_READ_ONLY_MOUNT = textwrap.dedent("""
    import sys
    from pathlib import Path
    from dpoclaims.cache import Cache
    from dpoclaims.errors import DpoclaimsError
    from dpoclaims.report.writer import write_reports

    mount = Path(sys.argv[1])
    for attempt in (
        lambda: Cache(mount).get_or_build("things", "k", lambda tmp: None),
        lambda: write_reports([], mount / "reports", {}),
    ):
        try:
            attempt()
            print("no error")
        except DpoclaimsError as exc:
            print(f"{type(exc).__name__}: {exc}")
""")


def test_read_only_file_system(tmp_path: Path):
    """A read-only mount refuses writes even to root, so this runs where chmod cannot."""
    unshare = shutil.which("unshare")
    if unshare is None:
        pytest.skip("no unshare command to make a read-only mount")
    mount = tmp_path / "mount"
    (mount / "reports").mkdir(parents=True)
    script = tmp_path / "attempt.py"
    script.write_text(_ON_A_READ_ONLY_MOUNT)
    shell = (
        f"mount --bind '{mount}' '{mount}' && mount -o remount,bind,ro '{mount}' || exit 77; "
        f"exec '{sys.executable}' '{script}' '{mount}'"
    )
    done = subprocess.run(
        [unshare, "--mount", "sh", "-c", shell],
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ),
    )
    if done.returncode == 77 or "unshare failed" in done.stderr:
        pytest.skip(f"cannot make a read-only mount here: {done.stderr.strip()}")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        f"CacheError: cache directory {mount} is not writable (Read-only file system); {CACHE_REMEDY}",
        f"ReportError: reports directory {mount / 'reports'} is not writable (Read-only file system); "
        f"{REPORTS_REMEDY}",
    ]
