"""Claim badges: URL-safe file names, colours by verdict state, and the badge wall."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from tiny import claim_record

from dpoclaims.report.render import BADGE_COLORS, badge, badge_filename, badge_wall_markdown
from dpoclaims.report.writer import write_reports
from dpoclaims.stats import VERDICTS

ROOT = Path(__file__).resolve().parent.parent
URL_SAFE = re.compile(r"^[A-Za-z0-9._-]+\.json$")
HEADER = {"pair": "p", "fingerprint": "f", "n_prompts": 3, "convention": "v1", "scorer": "lexicon"}

COLLECT_CLAIM_IDS = """
import json, sys
import pytest
from dpoclaims.plugin.reporting import claim_id

class Collector:
    ids = []
    def pytest_collection_finish(self, session):
        self.ids.extend(str(claim_id(item)) for item in session.items)

code = pytest.main(["--collect-only", "-q", "-p", "no:cacheprovider", "claims"], plugins=[Collector()])
with open(sys.argv[1], "w") as out:
    json.dump({"code": int(code), "ids": Collector.ids}, out)
"""


def record(
    claim_id: str = "C9",
    outcome: str = "passed",
    verdict: str | None = "replicates",
    measured: float = 0.5,
) -> Any:
    return claim_record(claim_id, outcome, verdict, measured)


@pytest.mark.parametrize(
    ("claim_id", "filename"),
    [
        ("C9", "C9.json"),
        ("C4[v1]", "C4-v1.json"),
        ("C1[N=100]", "C1-N100.json"),
        ("C5[TP-]", "C5-TPminus.json"),
        ("C5[TN+]", "C5-TNplus.json"),
        ("C5[anti-toxic]", "C5-anti-toxic.json"),
        ("C12[x2]", "C12-x2.json"),
    ],
)
def test_badge_filenames_are_url_safe_and_readable(claim_id: str, filename: str):
    assert badge_filename(claim_id) == filename


def test_every_claim_of_the_suite_gets_its_own_url_safe_badge_file(tmp_path):
    """The ids come from collecting ``claims/`` (nothing runs), so a new claim is covered.
    The cache is empty: collecting must not build the toy (that took CI past five minutes)."""
    out = tmp_path / "ids.json"
    cache = tmp_path / "empty-cache"
    env = {
        **os.environ,
        "DPOCLAIMS_CACHE": str(cache),
    }
    subprocess.run(
        [sys.executable, "-c", COLLECT_CLAIM_IDS, str(out)],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        timeout=300,
    )
    assert not (cache / "toy").exists(), "collecting claims/ built the toy organism"
    collected = json.loads(out.read_text())
    assert collected["code"] == 0
    ids = collected["ids"]
    assert "C4[four-groups]" in ids and "C5[AP+]" in ids and "C1[N=100]" in ids
    names = {claim_id: badge_filename(claim_id) for claim_id in ids}
    assert all(URL_SAFE.match(name) for name in names.values()), names
    assert len(set(names.values())) == len(set(ids)), "two claims share a badge file"


def test_badge_filename_refuses_what_is_not_a_claim_id():
    with pytest.raises(ValueError, match="not of the form"):
        badge_filename("C4[v1")


def test_two_ids_with_one_badge_file_are_refused(tmp_path):
    records = [record("C5[A+]"), record("C5[Aplus]")]
    with pytest.raises(ValueError, match="both give badge file C5-Aplus.json"):
        write_reports(records, tmp_path, HEADER)


@pytest.mark.parametrize("state", VERDICTS)
def test_each_verdict_state_has_its_colour(state: str):
    data = badge(record(verdict=state, outcome="passed"))
    assert data == {
        "schemaVersion": 1,
        "label": "C9",
        "message": f"{state} (0.50)",
        "color": BADGE_COLORS[state],
    }


def test_the_states_colours_are_distinct():
    states = [*VERDICTS, "not measured"]
    assert len({BADGE_COLORS[state] for state in states}) == len(states)


def test_the_state_is_the_records_verdict():
    assert badge(record(verdict="replicates"))["message"] == "replicates (0.50)"
    contradicts = badge(record(verdict="contradicts", outcome="xfailed"))
    assert (contradicts["message"], contradicts["color"]) == (
        "contradicts (0.50)",
        BADGE_COLORS["contradicts"],
    )


def test_a_skipped_claim_is_grey_and_not_measured():
    data = badge(record(outcome="skipped", verdict=None))
    assert (data["message"], data["color"]) == ("not measured", "lightgrey")


@pytest.mark.parametrize(
    ("outcome", "verdict", "message"),
    [
        ("failed", "contradicts", "unexpected: contradicts (0.50)"),
        ("xpassed", "replicates", "unexpected: replicates (0.50)"),
        ("error", None, "unexpected: error"),
    ],
)
def test_an_outcome_other_than_declared_is_marked_unexpected(outcome, verdict, message):
    data = badge(record(outcome=outcome, verdict=verdict))
    assert data["message"] == message
    assert data["color"] == data["labelColor"] == BADGE_COLORS["unexpected"]
    assert data["isError"] is True


def test_an_unknown_verdict_state_is_refused():
    with pytest.raises(ValueError, match="verdict 'maybe' is not one of"):
        badge(record(verdict="maybe"))


def test_a_measurement_that_is_not_a_number_shows_no_figure():
    assert badge(record(verdict="not measurable", measured=float("nan")))["message"] == "not measurable"


def test_the_badge_wall_points_at_the_repositorys_badges_branch(tmp_path):
    records = [record("C1[N=100]"), record("C4[v1]", outcome="skipped", verdict=None)]
    write_reports(records, tmp_path, {**HEADER, "badge_repo": "octo/claims"})
    assert sorted(p.name for p in (tmp_path / "badges").iterdir()) == [
        "C1-N100.json",
        "C4-v1.json",
        "README.md",
    ]
    wall = (tmp_path / "badges" / "README.md").read_text()
    endpoint = (
        "https://img.shields.io/endpoint?url=https://raw.githubusercontent.com/octo/claims/badges/C4-v1.json"
    )
    line = f"[![C4-v1]({endpoint})](https://github.com/octo/claims/blob/badges/claims.md)"
    assert wall.count(line) == 2  # rendered once, and once in the block to paste
    assert "raw.githubusercontent.com/octo/claims/badges/C1-N100.json" in wall
    assert "OWNER/REPO" not in wall


def test_without_a_repository_the_wall_says_how_to_set_it():
    wall = badge_wall_markdown([record("C4[v1]")], None)
    assert "raw.githubusercontent.com/OWNER/REPO/badges/C4-v1.json" in wall
    assert "--badge-repo" in wall and "GITHUB_REPOSITORY" in wall


def test_stale_badge_files_are_removed_and_only_those_the_reports_wrote(tmp_path):
    """The manifest of the last report names what it wrote: a badge of a claim not run now is
    removed; a file some other tool put there (or an older version's) is left alone (issue #18)."""
    (tmp_path / "badges").mkdir()
    (tmp_path / "badges" / "C4[v1].json").write_text("{}")
    write_reports([record("C4[v1]"), record("C5[A+]")], tmp_path, HEADER)
    write_reports([record("C4[v1]")], tmp_path, HEADER)
    assert sorted(p.name for p in (tmp_path / "badges").iterdir()) == [
        "C4-v1.json",
        "C4[v1].json",
        "README.md",
    ]


class FakeConfig:
    """What ``suite_options`` reads from a pytest config."""

    def __init__(self, **options: str | None) -> None:
        self.options = {f"--{name.replace('_', '-')}": value for name, value in options.items()}
        self.rootpath = ROOT

    def getoption(self, name: str) -> str | None:
        return self.options.get(name)


@pytest.mark.parametrize(
    ("option", "env", "expected"),
    [
        ("octo/claims", {"DPOCLAIMS_BADGE_REPO": "a/b", "GITHUB_REPOSITORY": "c/d"}, "octo/claims"),
        (None, {"DPOCLAIMS_BADGE_REPO": "a/b", "GITHUB_REPOSITORY": "c/d"}, "a/b"),
        (None, {"GITHUB_REPOSITORY": "c/d"}, "c/d"),
        (None, {}, None),
    ],
)
def test_the_badge_repository_comes_from_the_option_then_the_environment(monkeypatch, option, env, expected):
    from dpoclaims.plugin.options import suite_options

    for name in ("DPOCLAIMS_BADGE_REPO", "GITHUB_REPOSITORY"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert suite_options(FakeConfig(badge_repo=option)).badge_repo == expected


def test_a_badge_repository_that_is_not_owner_slash_name_is_refused(monkeypatch):
    from dpoclaims.plugin.options import suite_options

    with pytest.raises(pytest.UsageError, match="--badge-repo must be a GitHub owner/name"):
        suite_options(FakeConfig(badge_repo="https://github.com/octo/claims"))


def test_the_manual_documents_the_colours_and_one_row_of_the_wall():
    from dpoclaims.report.render import badge_markdown

    page = (ROOT / "docs" / "badges.md").read_text()
    for state, color in BADGE_COLORS.items():
        if state != "unexpected":
            assert f"| {color} | {state}" in page, f"docs/badges.md does not document {state} = {color}"
    assert "unexpected: ..." in page
    assert badge_markdown("C4[v1]", "OWNER/REPO") in page
