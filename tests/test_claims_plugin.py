"""The claims suite's pytest plugin: expected outcomes per pair, and the reports it writes
(also under pytest-xdist, where only the controller writes)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
pytest_plugins = ["pytester"]

FAKE_CLAIMS = """
import pytest
from dpoclaims.claims import ClaimResult


@pytest.mark.noise
@pytest.mark.claim("C6", param="fake")
def test_finding(record_claim):
    result = record_claim(ClaimResult("C6", "fake", "a finding", "net/gross <= 0.5", 0.9, (0.8, 1.0), 0.15,
                                      replicates=False))
    assert result.test_passes


@pytest.mark.ablation
@pytest.mark.claim("C1", hypothesis=True)
def test_refuted_hypothesis(record_claim):
    result = record_claim(ClaimResult("C1", "", "a refuted hypothesis", "recovers >= 80%", 0.1, (0.0, 0.2), 0.2,
                                      replicates=True, hypothesis=True))
    assert result.test_passes
"""


@pytest.fixture
def suite(pytester, tmp_path, monkeypatch):
    pytester.makeconftest('pytest_plugins = ["fixtures.options", "fixtures.resources", "fixtures.reporting"]')
    pytester.makepyfile(test_fake_claims=FAKE_CLAIMS)
    monkeypatch.setenv(
        "DPOCLAIMS_CACHE", str(tmp_path / "cache")
    )  # empty: figures are skipped, nothing built
    # the subprocess imports this tree's fixtures package and library, not an installed copy
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT / "src"), str(ROOT)]))
    return pytester


def _args(tmp_path, *extra):
    return ["-p", "no:cacheprovider", "--reports-dir", str(tmp_path / "reports"), *extra]


def test_undeclared_non_replication_fails_and_the_refuted_hypothesis_is_an_xfail(
    suite, tmp_path, monkeypatch
):
    monkeypatch.setenv("DPOCLAIMS_EXPECTATIONS", str(tmp_path / "none.toml"))
    (tmp_path / "none.toml").write_text("[pairs.toy]\n")
    result = suite.runpytest_subprocess(*_args(tmp_path))
    result.assert_outcomes(failed=1, xfailed=1)
    report = json.loads((tmp_path / "reports" / "claims.json").read_text())
    outcomes = {r["id"]: (r["outcome"], r["expected"]) for r in report["claims"]}
    assert outcomes == {"C1": ("xfailed", "replicates"), "C6[fake]": ("failed", "replicates")}
    badge = json.loads((tmp_path / "reports" / "badges" / "C6-fake.json").read_text())
    assert badge["color"] == "critical" and badge["message"] == "unexpected: contradicts (0.90)"


def test_a_declared_non_replication_makes_the_run_green(suite, tmp_path, monkeypatch):
    (tmp_path / "table.toml").write_text('[pairs.toy]\n"C6[fake]" = "measured 0.9"\n')
    monkeypatch.setenv("DPOCLAIMS_EXPECTATIONS", str(tmp_path / "table.toml"))
    result = suite.runpytest_subprocess(*_args(tmp_path))
    result.assert_outcomes(xfailed=2)
    markdown = (tmp_path / "reports" / "claims.md").read_text()
    assert (
        "| C6[fake] | noise | a finding | 0.150 | 0.900 | [0.800, 1.000] | does not replicate (declared) |"
        in markdown
    )


def test_unknown_declared_ids_are_refused(suite, tmp_path, monkeypatch):
    (tmp_path / "table.toml").write_text('[pairs.toy]\n"C6[typo]" = "x"\n')
    monkeypatch.setenv("DPOCLAIMS_EXPECTATIONS", str(tmp_path / "table.toml"))
    result = suite.runpytest_subprocess(*_args(tmp_path))
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*declares unknown claim ids*C6[[]typo]*"])


def test_unknown_options_are_refused(suite, tmp_path):
    result = suite.runpytest_subprocess(*_args(tmp_path, "--convention", "v2"))
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--convention must be one of*"])


def test_under_xdist_the_controller_writes_the_reports(suite, tmp_path, monkeypatch):
    (tmp_path / "table.toml").write_text('[pairs.toy]\n"C6[fake]" = "measured 0.9"\n')
    monkeypatch.setenv("DPOCLAIMS_EXPECTATIONS", str(tmp_path / "table.toml"))
    result = suite.runpytest_subprocess(
        *_args(tmp_path, "-n", "2", "--dist", "loadfile", "--badge-repo", "octo/claims")
    )
    result.assert_outcomes(xfailed=2)
    report = json.loads((tmp_path / "reports" / "claims.json").read_text())
    assert sorted(r["id"] for r in report["claims"]) == ["C1", "C6[fake]"]
    assert report["claims"][1]["claim"]["measured"] == 0.9
    badges = tmp_path / "reports" / "badges"
    assert sorted(p.name for p in badges.iterdir()) == ["C1.json", "C6-fake.json", "README.md"]
    assert "raw.githubusercontent.com/octo/claims/badges/C6-fake.json" in (badges / "README.md").read_text()
