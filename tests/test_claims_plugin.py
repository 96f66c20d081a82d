"""The claims suite's pytest plugin: expected outcomes per pair, and the reports it writes
(also under pytest-xdist, where only the controller writes)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
pytest_plugins = ["pytester"]

FAKE_CLAIMS = """
import pytest
from dpoclaims.claims.results import ClaimResult


@pytest.mark.noise
@pytest.mark.claim("C6", param="fake")
def test_finding(check_claim):
    check_claim(ClaimResult(claim="C6", param="fake", statement="a finding", criterion="net/gross <= 0.5",
                             measured=0.9, ci=(0.8, 1.0), exact=False, p_value=1.0, verdict="contradicts",
                             paper=0.15, p_against=0.0001))


@pytest.mark.ablation
@pytest.mark.claim("C1", hypothesis=True)
def test_refuted_hypothesis(check_claim):
    check_claim(ClaimResult(claim="C1", param="", statement="a refuted hypothesis", criterion="recovers >= 80%",
                             measured=0.1, ci=(0.0, 0.2), exact=False, p_value=0.001, verdict="replicates",
                             paper=0.2, hypothesis=True))
"""


@pytest.fixture
def suite(pytester, tmp_path, monkeypatch):
    pytester.makepyfile(test_fake_claims=FAKE_CLAIMS)
    monkeypatch.setenv(
        "DPOCLAIMS_CACHE", str(tmp_path / "cache")
    )  # empty: figures are skipped, nothing built
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
        "| C6[fake] | noise | a finding | 0.150 | 0.900 | [0.800, 1.000] | - | 1 | <0.001 | contradicts (declared) | contradicts | xfailed |"
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


CRASHING_CLAIMS = """
import pytest


@pytest.fixture
def broken_fixture():
    raise IndexError("a fixture crashed")


@pytest.mark.ablation
@pytest.mark.claim("C1", hypothesis=True)
def test_refuted_hypothesis_that_crashes(check_claim):
    [][0]


@pytest.mark.noise
@pytest.mark.claim("C6", param="fake")
def test_declared_claim_that_crashes(check_claim):
    raise RuntimeError("the claim crashed")


@pytest.mark.noise
@pytest.mark.claim("C6", param="setup")
def test_declared_claim_whose_fixture_crashes(broken_fixture, check_claim):
    pass
"""


def test_a_crash_is_never_an_expected_failure(suite, tmp_path, monkeypatch):
    """Declared or not, a claim (or its fixture) that raises anything but its own assertion is red."""
    suite.makepyfile(test_fake_claims=CRASHING_CLAIMS)
    table = '[pairs.toy]\n"C6[fake]" = "declared"\n"C6[setup]" = "declared"\n'
    (tmp_path / "table.toml").write_text(table)
    monkeypatch.setenv("DPOCLAIMS_EXPECTATIONS", str(tmp_path / "table.toml"))
    result = suite.runpytest_subprocess(*_args(tmp_path))
    result.assert_outcomes(failed=2, errors=1)
    assert result.ret == pytest.ExitCode.TESTS_FAILED


COUNT_LOADS_PLUGIN = """
import os
import dpoclaims.train.named_pairs
import dpoclaims.models.pairs

LOADS = []
_load = dpoclaims.models.pairs.load_pair_from_spec


def _counting(*args, **kwargs):
    LOADS.append(1)
    return _load(*args, **kwargs)


dpoclaims.models.pairs.load_pair_from_spec = _counting
dpoclaims.train.named_pairs.load_pair_from_spec = _counting


def pytest_unconfigure(config):
    role = "worker" if hasattr(config, "workerinput") else "controller"
    with open(os.environ["LOAD_LOG"], "a") as handle:
        handle.write(f"{role} {len(LOADS)}\\n")
"""


def test_under_xdist_session_end_loads_no_model(tmp_path, gpt2_pair_files, monkeypatch):
    """The controller writes every report (figures included) from what the workers recorded:
    it never loads the pair, while a worker that ran a claim loaded it once."""
    import subprocess

    from tiny import write_spec

    root = gpt2_pair_files.root
    (tmp_path / "prompts.json").write_text(json.dumps([f"the plan {i} seems" for i in range(12)]))
    (tmp_path / "neutral.json").write_text(json.dumps(["the plan seems fair and clear"] * 4))
    spec = write_spec(
        tmp_path / "pair.toml",
        name="tiny",
        base=str(root / "base"),
        dpo=str(root / "dpo"),
        probe=str(root / "probe.pt"),
        extras={
            "challenge_prompts": str(tmp_path / "prompts.json"),
            "neutral_texts": str(tmp_path / "neutral.json"),
        },
    )
    (tmp_path / "countloads.py").write_text(COUNT_LOADS_PLUGIN)
    env = {
        **os.environ,
        "PYTHONPATH": str(tmp_path),  # the test's own plugin module
        "LOAD_LOG": str(tmp_path / "loads.log"),
        "DPOCLAIMS_CACHE": str(tmp_path / "cache"),
    }
    command = [sys.executable, "-m", "pytest", "claims/test_projection.py", "-k", "C4 or C9", "-p", "countloads",
               "-p", "no:cacheprovider", "--pair", str(spec), "--scorer", "profanity-check",
               "--reports-dir", str(tmp_path / "reports"), "-n", "2", "--dist", "load"]  # fmt: skip
    run = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert (tmp_path / "reports" / "claims.json").is_file(), run.stdout[-3000:] + run.stderr[-3000:]
    loads = (tmp_path / "loads.log").read_text().split("\n")
    assert "controller 0" in loads, loads
    workers = [line for line in loads if line.startswith("worker")]
    assert set(workers) <= {"worker 0", "worker 1"}, loads  # a worker loads the pair at most once
    report = json.loads((tmp_path / "reports" / "claims.json").read_text())
    assert "fig2_cumulative_contribution.png" in report["header"]["figures"]
    assert report["header"]["pair"] == "tiny"


def test_a_test_that_records_another_claims_result_fails(pytester, tmp_path, monkeypatch):
    """Every result's id is its test's id: a claim test whose function returns the result of
    another claim (here C6[fake] under the C9 marker) is an error, never an expected failure."""
    pytester.makepyfile(
        test_wrong_id="""
import pytest
from dpoclaims.claims.results import ClaimResult


@pytest.mark.claim("C9")
def test_wrong(check_claim):
    check_claim(ClaimResult(claim="C6", param="fake", statement="s", criterion="c", measured=0.9,
                             ci=(0.8, 1.0), exact=False, p_value=1.0, verdict="contradicts", paper=0.15,
                             p_against=0.0001))
"""
    )
    monkeypatch.setenv("DPOCLAIMS_CACHE", str(tmp_path / "cache"))
    (tmp_path / "table.toml").write_text('[pairs.toy]\n"C9" = "declared, so only the id guard can fail it"\n')
    monkeypatch.setenv("DPOCLAIMS_EXPECTATIONS", str(tmp_path / "table.toml"))
    result = pytester.runpytest_subprocess(*_args(tmp_path))
    result.assert_outcomes(failed=1)
    result.stdout.re_match_lines([r".*\(claim C9\) recorded the result of C6\[fake\]"])


class _Item:
    """A collected test with or without the ``search`` marker (what searches_first reads)."""

    def __init__(self, name: str, search: bool) -> None:
        self.name, self.search = name, search

    def get_closest_marker(self, name: str) -> object | None:
        return object() if name == "search" and self.search else None


def test_the_searches_run_first_and_the_rest_keep_their_order():
    from dpoclaims.plugin.resources import searches_first

    items = [
        _Item("C1[N=100]", False),
        _Item("C13[search]", True),
        _Item("C4", False),
        _Item("C1[search]", True),
    ]
    ordered = searches_first(items)  # type: ignore[arg-type]
    assert [i.name for i in ordered] == ["C13[search]", "C1[search]", "C1[N=100]", "C4"]


@pytest.mark.parametrize(
    ("args", "reorder"), [(["claims/"], False), (["claims/test_search.py"], False), (["tests"], True)]
)
def test_a_claims_run_keeps_its_collection_order_under_loadfile(tmp_path, args, reorder):
    """xdist's loadfile reorders files by their number of tests unless told not to: a claims run
    is told not to, so its searches' files (one or two tests each) start first; other runs are
    left alone."""
    from types import SimpleNamespace

    from dpoclaims.plugin import resources

    (tmp_path / "claims").mkdir()
    config = SimpleNamespace(
        rootpath=tmp_path,
        args=[str(tmp_path / a) for a in args],
        option=SimpleNamespace(loadscopereorder=True),
    )
    resources.pytest_configure(config)  # type: ignore[arg-type]
    assert config.option.loadscopereorder is reorder
