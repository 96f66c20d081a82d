"""The run manifest: what produced a report (versions with the git commit, the machine, the
settings, the times), in ``claims.json``, ``claims.md`` and a sweep's ``replication.json``; and
``scripts/compare_claims.py`` saying from it why two reports differ before it compares figures."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
from tiny import claim_record

import dpoclaims
from dpoclaims.report.manifest import (
    manifest_differences,
    manifest_lines,
    run_manifest,
    source_revision,
)
from dpoclaims.versions import build_versions

ROOT = Path(__file__).resolve().parent.parent
pytest_plugins = ["pytester"]

FAKE_CLAIMS = """
import time

import pytest
from dpoclaims.claims.results import ClaimResult


def result(claim, param, verdict):
    return ClaimResult(claim=claim, param=param, statement="s", criterion="c", measured=0.3, ci=(0.2, 0.4),
                       exact=False, p_value=0.01, verdict=verdict, paper=0.3)


@pytest.mark.projection
@pytest.mark.claim("C4", param="fake")
def test_replicates(check_claim):
    time.sleep(0.2)  # a wall time the manifest must show
    check_claim(result("C4", "fake", "replicates"))


@pytest.mark.correlation
@pytest.mark.claim("C9")
def test_also_replicates(check_claim):
    check_claim(result("C9", "", "replicates"))
"""


def _git(*args: str) -> str:
    return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True, check=True).stdout


def test_a_claims_run_writes_its_manifest_into_claims_json_and_claims_md(pytester, tmp_path, monkeypatch):
    pytester.makepyfile(test_fake_claims=FAKE_CLAIMS)
    (tmp_path / "table.toml").write_text("[pairs.toy]\n")
    monkeypatch.setenv("DPOCLAIMS_EXPECTATIONS", str(tmp_path / "table.toml"))
    monkeypatch.setenv("DPOCLAIMS_CACHE", str(tmp_path / "cache"))
    reports = tmp_path / "reports"
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "--reports-dir", str(reports), "--device", "cpu", "--convention", "emnlp"
    )
    result.assert_outcomes(passed=2)
    document = json.loads((reports / "claims.json").read_text())
    manifest = document["manifest"]
    json.dumps(manifest, allow_nan=False)  # plain JSON
    versions, machine, settings, timing = (manifest[k] for k in ("versions", "machine", "settings", "time"))
    assert versions["dpoclaims"] == dpoclaims.__version__
    assert versions["libraries"] == build_versions() and {"torch", "transformers", "trl"} <= set(
        versions["libraries"]
    )
    assert versions["python"].endswith(sys.version.split()[0])
    package = Path(dpoclaims.__file__).resolve().parent
    if package.is_relative_to(ROOT) and (ROOT / ".git").exists():  # run from a checkout: its commit
        assert versions["commit"] == _git("rev-parse", "HEAD").strip()
        assert versions["dirty"] is bool(_git("status", "--porcelain").strip())
    assert machine["os"] and machine["cpu"] and machine["cpu_count"] >= 1
    assert (machine["device"], machine["dtype"]) == ("cpu", "float32")
    assert settings["pair"] == "toy" and settings["convention"] == "emnlp" and settings["max_prompts"] is None
    assert settings["search_examples"] == 16  # claims.search.DEFAULT_EXAMPLES, read when the suite is used
    assert settings["expectations"]["path"] == str(tmp_path / "table.toml")
    assert len(settings["expectations"]["sha256"]) == 64
    assert timing["started"].endswith("+00:00") and timing["wall_s"] > 0.2
    assert set(timing["claims_s"]) == {"C4[fake]", "C9"} and timing["claims_s"]["C4[fake]"] >= 0.2
    markdown = (reports / "claims.md").read_text()
    assert f"Run: dpoclaims {dpoclaims.__version__} (" in markdown
    assert "; device cpu, float32" in markdown and "convention `emnlp`" in markdown
    assert (reports / "index.html").is_file()
    assert ">versions<" in (reports / "index.html").read_text()


def test_the_manifest_holds_the_given_times_and_settings_as_plain_json():
    manifest = run_manifest(
        {"pair": "toy", "seed": 0},
        device="cuda:1",
        dtype="bfloat16",
        threads=4,
        started=0.0,
        wall_s=12.3456,
        durations={"claims_s": {"C9": 1.23456, "C10": math.nan}},
    )
    assert manifest["time"] == {
        "started": "1970-01-01T00:00:00+00:00",
        "wall_s": 12.346,
        "claims_s": {"C9": 1.235, "C10": None},
    }
    assert manifest["machine"]["device"] == "cuda:1" and manifest["machine"]["threads"] == 4
    assert manifest["settings"] == {"pair": "toy", "seed": 0}
    json.dumps(manifest, allow_nan=False)


def test_the_commit_and_dirty_flag_come_from_the_checkout_the_package_is_imported_from(tmp_path):
    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(tmp_path), *args], capture_output=True, text=True, check=True
        ).stdout

    package = tmp_path / "src" / "pkg"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    assert source_revision(package) == {"commit": None, "dirty": None}  # not a repository
    git("init", "-q")
    git("-c", "user.email=a@b", "-c", "user.name=a", "commit", "-q", "--allow-empty", "-m", "empty")
    assert source_revision(package) == {"commit": None, "dirty": None}  # in one, but not tracked there
    git("add", "src")
    git("-c", "user.email=a@b", "-c", "user.name=a", "commit", "-q", "-m", "package")
    head = git("rev-parse", "HEAD").strip()
    assert source_revision(package) == {"commit": head, "dirty": False}
    (package / "__init__.py").write_text("x = 1\n")
    assert source_revision(package) == {"commit": head, "dirty": True}
    git("checkout", "-q", "--", ".")
    (tmp_path / "new_claim.py").write_text("")  # neither tracked nor ignored
    assert source_revision(package)["dirty"] is True


def _manifest(**changes: dict) -> dict:
    base = {
        "format": 1,
        "versions": {"dpoclaims": "0.1.0", "commit": "abc", "dirty": False, "libraries": {"torch": "2.13.0"}},
        "machine": {"os": "Linux", "cpu": "cpu A", "device": "cpu", "dtype": "float32", "threads": 2},
        "settings": {"pair": "toy", "convention": "v1", "max_prompts": None},
        "time": {"started": "2026-01-01T00:00:00+00:00", "wall_s": 10.0},
    }
    for group, values in changes.items():
        base[group] = {**base[group], **values}
    return base


def test_differences_are_named_by_group_and_times_do_not_count():
    same = manifest_differences(_manifest(), _manifest(time={"wall_s": 99.0, "started": "later"}))
    assert same == {}
    changed = manifest_differences(
        _manifest(),
        _manifest(
            versions={"libraries": {"torch": "2.14.0"}, "dirty": True},
            settings={"convention": "emnlp"},
            machine={"cpu": "cpu B"},
        ),
    )
    assert changed == {
        "versions": ["dirty: False -> True", "libraries.torch: 2.13.0 -> 2.14.0"],
        "settings": ["convention: v1 -> emnlp"],
        "machine": ["cpu: cpu A -> cpu B"],
    }
    assert "no manifest" in manifest_differences(None, _manifest())["manifest"][0]


def test_the_markdown_lines_say_the_versions_machine_settings_and_time():
    text = "\n".join(manifest_lines(_manifest(versions={"dirty": True})))
    assert "Run: dpoclaims 0.1.0 (commit `abc` with uncommitted changes)" in text
    assert "torch 2.13.0" in text and "CPU cpu A" in text and "device cpu, float32, 2 threads" in text
    assert "pair `toy`; convention `v1`; max_prompts -" in text and "wall time 10 s" in text


def _report(path: Path, manifest: dict | None, measured: float) -> Path:
    records = [claim_record("C9", measured=measured).to_json(), claim_record("C3", measured=0.4).to_json()]
    path.write_text(json.dumps({"header": {"pair": "toy"}, "manifest": manifest, "claims": records}))
    return path


def _compare(*paths: Path) -> subprocess.CompletedProcess[str]:
    script = ROOT / "scripts" / "compare_claims.py"
    return subprocess.run(
        [sys.executable, str(script), *map(str, paths)], capture_output=True, text=True, timeout=60
    )


def test_compare_claims_says_why_two_reports_differ_before_their_figures(tmp_path):
    before = _report(tmp_path / "a.json", _manifest(), 0.5)
    after = _report(tmp_path / "b.json", _manifest(versions={"libraries": {"torch": "2.14.0"}}), 0.6)
    done = _compare(before, after)
    assert done.returncode == 1
    lines = done.stdout.splitlines()
    reason = lines.index("they differ in versions:")
    assert lines[reason + 1] == "  libraries.torch: 2.13.0 -> 2.14.0"
    figure = next(i for i, line in enumerate(lines) if line.startswith("  DIFFERS C9 measured"))
    assert reason < figure


def test_compare_claims_on_reports_of_the_same_run_settings(tmp_path):
    done = _compare(
        _report(tmp_path / "a.json", _manifest(), 0.5), _report(tmp_path / "b.json", _manifest(), 0.5)
    )
    assert done.returncode == 0
    assert done.stdout.splitlines()[0] == "same versions, settings and machine (the manifests agree)"
    assert done.stdout.splitlines()[-1] == "identical"


def test_compare_claims_on_a_report_without_a_manifest_says_it_cannot_tell_why(tmp_path):
    done = _compare(_report(tmp_path / "a.json", None, 0.5), _report(tmp_path / "b.json", _manifest(), 0.5))
    assert done.stdout.splitlines()[:2] == [
        "cannot say why they differ:",
        "  the first report has no manifest (written before dpoclaims recorded one): versions, settings and "
        "machine cannot be compared",
    ]


def test_a_sweep_writes_its_manifest_into_replication_json_and_md(tmp_path):
    from dpoclaims.runs import replication

    cell = tmp_path / "cell" / "claims.json"
    cell.parent.mkdir()
    _report(cell, _manifest(), 0.5)
    manifest = run_manifest(
        {"engine": "local", "cells": ["toy-seed2.v1.default"]},
        device=None,
        dtype=None,
        threads=None,
        started=0.0,
        wall_s=3.0,
        durations={"cells_s": {"toy-seed2.v1.default": 2.5}},
    )
    paths = replication.write_replication(
        {"toy-seed2.v1.default": cell}, tmp_path / "reports", manifest=manifest
    )
    data = json.loads(paths[0].read_text())
    assert data["manifest"] == manifest
    assert "Run: dpoclaims" in paths[1].read_text()
    page = paths[3].read_text()
    assert paths[3].name == "replication.html" and ">cells_s<" in page and 'class="cell"' in page


@pytest.mark.parametrize("group", ["versions", "machine", "settings", "time"])
def test_every_group_of_the_manifest_is_filled(group):
    manifest = run_manifest(
        {"pair": "toy"}, device="cpu", dtype="float32", threads=2, started=1.0, wall_s=1.0
    )
    assert manifest[group]
