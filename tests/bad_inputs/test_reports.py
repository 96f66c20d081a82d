"""Reports: what a run writes into the reports directory, and what it leaves of the user's."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
from pathlib import Path
from typing import Any

from tiny import claim_record

from bad_inputs.bench import (
    ROOT,
    SUITE_PLUGINS,
    Bench,
    Case,
    ExitedNonZero,
    catalogue_test,
    cli,
    registrar,
    tree_bytes,
)
from dpoclaims.errors import ReportError

CASES: list[Case] = []
case = registrar(CASES)


def _report_record(claim_id: str, measured: float = 0.5) -> Any:
    return claim_record(claim_id, measured=measured)


_HEADER = {"pair": "p", "fingerprint": "f", "n_prompts": 12, "convention": "v1", "scorer": "lexicon"}


_FAKE_CLAIMS = """
import os
import re
import pytest
from dpoclaims.claims.results import ClaimResult


def _result(claim, param):
    return ClaimResult(claim=claim, param=param, statement="s", criterion="c", measured=0.5, ci=(0.4, 0.6),
                       exact=False, p_value=0.01, verdict="replicates", paper=0.5)


@pytest.mark.noise
@pytest.mark.claim("C6", param="one")
def test_one(check_claim):
    open(os.environ["RAN_MARK"], "a").write("one\\n")
    check_claim(_result("C6", "one"))


@pytest.mark.noise
@pytest.mark.claim("C6", param="two")
def test_two(check_claim):
    if os.environ.get("INTERRUPT"):
        raise KeyboardInterrupt
    check_claim(_result("C6", "two"))
"""


def _fake_suite(b: Bench, *args: str, **env: str) -> str:
    """pytest on two fake claim tests with the suite's plugins; reports in ``b.tmp/reports``."""
    (b.tmp / "test_fake_claims.py").write_text(_FAKE_CLAIMS)
    (b.tmp / "table.toml").write_text("[pairs]\n")
    for name, value in {
        "RAN_MARK": str(b.tmp / "ran.txt"),
        "DPOCLAIMS_EXPECTATIONS": str(b.tmp / "table.toml"),
        **env,
    }.items():
        b.monkeypatch.setenv(name, value)
    command = b.pytest_command(
        str(b.tmp / "test_fake_claims.py"),
        *SUITE_PLUGINS,
        "--rootdir",
        str(b.tmp),
        "--cache-dir",
        str(b.tmp / "cache"),
        *args,
    )
    return b.run(command, timeout=120)


@case("reports-dir-with-another-tools-badge--kept-own-stale-badge-removed", "recovery")
def reports_dir_with_another_tools_badge(b: Bench):
    from dpoclaims.report.writer import write_reports

    reports = b.tmp / "site"
    (reports / "badges").mkdir(parents=True)
    (reports / "badges" / "coverage.json").write_text('{"label": "coverage"}')
    write_reports([_report_record("C3"), _report_record("C4[v1]")], reports, _HEADER)
    write_reports([_report_record("C3")], reports, _HEADER)  # C4[v1] not run now: its badge goes
    expected = {"badges": ["C3.json", "README.md", "coverage.json"], "coverage": b'{"label": "coverage"}'}
    got = {
        "badges": sorted(p.name for p in (reports / "badges").iterdir()),
        "coverage": (reports / "badges" / "coverage.json").read_bytes(),
    }
    return expected, got


@case(
    "reports-disk-full-while-writing--refused-previous-report-unchanged",
    "error",
    ReportError,
    r"cannot write the reports in .*reports \(No space left on device\); set --reports-dir",
)
def reports_disk_full_while_writing(b: Bench):
    from dpoclaims.report.writer import write_reports

    reports = b.tmp / "reports"
    write_reports([_report_record("C3"), _report_record("C4[v1]")], reports, _HEADER)
    before = tree_bytes(reports)
    real_write_text = Path.write_text

    def full_after_the_first(path: Path, *args: Any, **kwargs: Any) -> int:
        if path.name == "claims.md":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write_text(path, *args, **kwargs)

    b.monkeypatch.setattr(Path, "write_text", full_after_the_first)
    try:
        write_reports([_report_record("C3", 0.7)], reports, _HEADER)
    finally:
        b.monkeypatch.undo()
        assert tree_bytes(reports) == before


@case(
    "reports-disk-full-before-the-tests--refused-at-the-check",
    "error",
    ReportError,
    r"cannot write the reports in .*reports \(No space left on device\); set --reports-dir",
)
def reports_disk_full_before_the_tests(b: Bench):
    from dpoclaims.report.writer import check_reports_dir

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    b.monkeypatch.setattr(os, "fsync", full)
    check_reports_dir(b.tmp / "reports")


@case("suite-run-interrupted--previous-complete-report-kept", "recovery")
def suite_run_interrupted(b: Bench):
    reports = b.tmp / "reports"
    _fake_suite(b, "--reports-dir", str(reports))
    before = tree_bytes(reports)
    try:
        _fake_suite(b, "--reports-dir", str(reports), INTERRUPT="1")
        status = "exit 0"
    except ExitedNonZero as exc:
        status = str(exc).split(":")[0]
        said = "previous complete report in" in str(exc)
    return {"status": "exit 2", "said so": True, "report": before}, {
        "status": status,
        "said so": said,
        "report": tree_bytes(reports),
    }


@case("suite-run-interrupted-without-a-report--report-marked-incomplete", "recovery")
def suite_run_interrupted_without_a_report(b: Bench):
    reports = b.tmp / "reports"
    with contextlib.suppress(ExitedNonZero):
        _fake_suite(b, "--reports-dir", str(reports), INTERRUPT="1")
    header = json.loads((reports / "claims.json").read_text())["header"]
    badge = json.loads((reports / "badges" / "C6-one.json").read_text())
    return {
        "json": "the run was interrupted (Ctrl-C); 1 of 2 selected claims ran.",
        "md": True,
        "badge": "interrupted: replicates (0.50)",
    }, {
        "json": header["incomplete"],
        "md": "**Incomplete report: the run was interrupted" in (reports / "claims.md").read_text(),
        "badge": badge["message"],
    }


@case(
    "suite-reports-dir-a-dangling-symlink--exit-4-before-the-tests",
    "error",
    ExitedNonZero,
    r"exit 4: [\s\S]*ERROR: reports directory .*reports is a symbolic link to .*nowhere, which does not exist",
)
def suite_reports_dir_a_dangling_symlink(b: Bench):
    (b.tmp / "reports").symlink_to(b.tmp / "nowhere")
    try:
        _fake_suite(b, "--reports-dir", str(b.tmp / "reports"))
    finally:
        assert not (b.tmp / "ran.txt").exists()  # no test ran


# ---- nothing the user wrote is overwritten: a report's files go only where the suite wrote them
# before (its manifest) or where nothing stands


def _users_file(b: Bench, relative: str, content: bytes = b"my own notes\n") -> tuple[Path, Path]:
    """A reports directory that holds a file of the user's at ``relative``."""
    reports = b.tmp / "docs"
    (reports / relative).parent.mkdir(parents=True, exist_ok=True)
    (reports / relative).write_bytes(content)
    return reports, reports / relative


@case(
    "suite-reports-dir-holding-the-users-claims-md--exit-4-before-the-tests-file-kept",
    "error",
    ExitedNonZero,
    r"exit 4: [\s\S]*ERROR: the reports directory .*docs holds claims\.md, which dpoclaims did not write: "
    r"writing the report would overwrite it\. Move it away, or set --reports-dir",
)
def suite_reports_dir_holding_the_users_claims_md(b: Bench):
    reports, mine = _users_file(b, "claims.md")
    try:
        _fake_suite(b, "--reports-dir", str(reports))
    finally:
        assert mine.read_bytes() == b"my own notes\n" and not (b.tmp / "ran.txt").exists()


def _refused_at_the_check(relative: str, content: bytes = b"my own notes\n") -> None:
    name = relative.replace("/", "-").replace(".", "-").replace("_", "-").lower()

    @case(
        f"reports-dir-holding-the-users-{name}--refused-at-the-check-file-kept",
        "error",
        ReportError,
        rf"the reports directory .*docs holds {re.escape(relative)}, which dpoclaims did not write: writing "
        r"the report would overwrite it\. Move it away, or set --reports-dir or \$DPOCLAIMS_REPORTS to another",
    )
    def refused(b: Bench):
        from dpoclaims.report.writer import check_reports_dir

        reports, mine = _users_file(b, relative, content)
        try:
            check_reports_dir(reports)
        finally:
            assert mine.read_bytes() == content


_refused_at_the_check("claims.json", b'{"mine": true}\n')
_refused_at_the_check("badges/README.md")
_refused_at_the_check("badges/C3.json", b'{"label": "my own C3"}')
_refused_at_the_check("figures/fig2_cumulative_contribution.png", b"\x89PNG my own figure")


@case(
    "reports-written-over-a-users-claims-md--refused-before-writing-anything",
    "error",
    ReportError,
    r"the reports directory .*docs holds claims\.md, which dpoclaims did not write",
)
def reports_written_over_a_users_claims_md(b: Bench):
    """The writer itself refuses too (a file that appeared during the run), before any file moves."""
    from dpoclaims.report.writer import write_reports

    reports, mine = _users_file(b, "claims.md")
    before = tree_bytes(reports)
    try:
        write_reports([_report_record("C3")], reports, _HEADER)
    finally:
        assert tree_bytes(reports) == before


@case(
    "reports-claims-md-edited-since-the-run-wrote-it--refused-naming-the-change",
    "error",
    ReportError,
    r"the reports directory .*site holds claims\.md, which was changed since dpoclaims wrote it",
)
def reports_claims_md_edited_since_the_run_wrote_it(b: Bench):
    from dpoclaims.report.writer import write_reports

    reports = b.tmp / "site"
    write_reports([_report_record("C3")], reports, _HEADER)
    (reports / "claims.md").write_text("my notes on the run\n")
    try:
        write_reports([_report_record("C3", 0.7)], reports, _HEADER)
    finally:
        assert (reports / "claims.md").read_text() == "my notes on the run\n"


@case("reports-dir-written-by-the-suite-before--rewritten-in-place", "recovery")
def reports_dir_written_by_the_suite_before(b: Bench):
    from dpoclaims.report.writer import check_reports_dir, write_reports

    reports = b.tmp / "site"
    write_reports([_report_record("C3"), _report_record("C4[v1]")], reports, _HEADER)
    check_reports_dir(reports)  # its own files: no refusal
    write_reports([_report_record("C3", 0.7)], reports, _HEADER)
    measured = json.loads((reports / "claims.json").read_text())["claims"][0]["claim"]["measured"]
    return {"measured": 0.7, "badges": ["C3.json", "README.md"]}, {
        "measured": measured,
        "badges": sorted(p.name for p in (reports / "badges").iterdir()),
    }


@case(
    "sweep-reports-dir-holding-the-users-replication-md--exit-2-file-kept",
    "error",
    ExitedNonZero,
    r"exit 2: dpoclaims: error: the reports directory .*docs holds replication\.md, which dpoclaims did not "
    r"write: writing the matrix would overwrite it\. Move it away, or pass --reports-dir",
)
def sweep_reports_dir_holding_the_users_replication_md(b: Bench):
    def no_cell_may_run(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a cell ran: the sweep was not refused before its work")

    b.monkeypatch.setattr("dpoclaims.runs.sweep.run_local", no_cell_may_run)
    reports, mine = _users_file(b, "replication.md")
    try:
        cli(b, "sweep", "--reports-dir", str(reports), "--claims-dir", str(ROOT / "claims"))
    finally:
        assert mine.read_bytes() == b"my own notes\n"


test_case = catalogue_test(CASES)
