"""The claims workflow (``.github/workflows/claims.yml``), checked offline: it validates against
GitHub's workflow schema, and it keeps what makes it work on a fresh public repository. Each
check is also run on a copy of the workflow broken in the way it guards against, and must fail.
"""

from __future__ import annotations

import copy
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
WORKFLOW = ROOT / ".github" / "workflows" / "claims.yml"
# torch comes from the index the repository variable TORCH_INDEX_URL names (a CPU wheel index),
# the default index when it is unset; the workflow names no host itself
TORCH_INDEX = '${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"}'
Workflow = dict[str, Any]


def load_workflow() -> Workflow:
    return yaml.safe_load(WORKFLOW.read_text())


def steps(workflow: Workflow) -> list[dict[str, Any]]:
    return [step for job in workflow["jobs"].values() for step in job["steps"]]


def step_index(workflow: Workflow, predicate: Callable[[dict[str, Any]], bool], what: str) -> int:
    matches = [i for i, step in enumerate(steps(workflow)) if predicate(step)]
    assert len(matches) == 1, f"expected exactly one step that {what}, found {len(matches)}"
    return matches[0]


def runs(step: dict[str, Any], text: str) -> bool:
    return text in step.get("run", "")


def step_by_id(workflow: Workflow, step_id: str) -> dict[str, Any]:
    return next(step for step in steps(workflow) if step.get("id") == step_id)


def condition(step: dict[str, Any]) -> str:
    return str(step.get("if", "")).replace(" ", "")


def claims_step(workflow: Workflow) -> dict[str, Any]:
    return steps(workflow)[step_index(workflow, lambda s: runs(s, "pytest claims/"), "runs the claims")]


# -- the checks, each one point of issue #8 ----------------------------------------------------


def check_write_permission_only_where_pushing(workflow: Workflow) -> None:
    top = workflow.get("permissions")
    assert isinstance(top, dict) and top.get("contents") == "read", "top-level permissions must be read-only"
    assert "write" not in top.values(), "no write scope at the top level"
    for name, job in workflow["jobs"].items():
        pushes = any(runs(step, "git push") for step in job["steps"])
        contents = (job.get("permissions") or {}).get("contents")
        if pushes:
            assert contents == "write", f"job {name} pushes but does not ask for contents: write"
        else:
            assert contents != "write", f"job {name} does not push but asks for contents: write"
    assert any(runs(step, "git push") for step in steps(workflow)), "no job pushes the badges"


def check_cpu_torch(workflow: Workflow) -> None:
    rows = [(line.strip(), step) for step in steps(workflow) for line in step.get("run", "").splitlines()]
    lines = [line for line, _ in rows]
    torch_lines = [i for i, line in enumerate(lines) if re.search(r"pip install .*\btorch\b", line)]
    assert torch_lines, "torch is not installed on its own"
    for i in torch_lines:
        assert TORCH_INDEX in lines[i], f"torch installed without the TORCH_INDEX_URL index: {lines[i]}"
        env = rows[i][1].get("env") or {}
        assert env.get("TORCH_INDEX_URL") == "${{ vars.TORCH_INDEX_URL }}", (
            "the step that installs torch does not read the repository variable TORCH_INDEX_URL"
        )
        assert "torch==" in lines[i], f"torch is not pinned: {lines[i]}"
        assert "://" not in lines[i], f"the workflow names an index host: {lines[i]}"
    package = next(i for i, line in enumerate(lines) if re.search(r"pip install\b.*\s-e\s", line))
    assert max(torch_lines) < package, (
        "torch must be installed before the package, which would pull CUDA torch"
    )


def _output_from(step: dict[str, Any], command: str) -> str | None:
    """The name of the step output that a shell variable assigned from ``$(command ...)`` is
    written to (``var=$(command)`` then ``echo "name=$var" >> "$GITHUB_OUTPUT"``)."""
    script = step.get("run", "")
    assigned = re.search(rf"^\s*(\w+)=\$\({re.escape(command)}[^\n]*\)\s*$", script, re.MULTILINE)
    if assigned is None:
        return None
    variable = assigned.group(1)
    written = re.search(rf'echo "([\w-]+)=\$\{{?{variable}\}}?" >> "\$GITHUB_OUTPUT"', script)
    return written.group(1) if written else None


def check_toy_cache(workflow: Workflow) -> None:
    key_step = next((s for s in steps(workflow) if runs(s, "dpoclaims build-toy --print-key")), None)
    assert key_step is not None and key_step.get("id"), "no step with an id computes the toy's key"
    toy_output = _output_from(key_step, "dpoclaims build-toy --print-key")
    version_output = _output_from(key_step, 'python -c "import dpoclaims; print(dpoclaims.__version__)"')
    assert toy_output, "the --print-key output is not a step output"
    assert version_output, "the package version is not a step output"
    cache_dir = workflow["jobs"]["claims"]["env"]["DPOCLAIMS_CACHE"]
    assert "github.workspace" in cache_dir, "DPOCLAIMS_CACHE must lie in the workspace"
    cache_steps = [s for s in steps(workflow) if str(s.get("uses", "")).startswith("actions/cache")]
    restore = [
        s for s in cache_steps if s["uses"].split("@")[0] in ("actions/cache", "actions/cache/restore")
    ]
    assert restore, "no actions/cache step restores the dpoclaims cache"
    for step in cache_steps:
        key = step["with"]["key"].replace(" ", "")
        for output in (toy_output, version_output):
            assert f"steps.{key_step['id']}.outputs.{output}}}}}" in key, f"cache key lacks {output}: {key}"
        assert "DPOCLAIMS_CACHE" in step["with"]["path"], "the cache step does not cache the dpoclaims cache"
    assert steps(workflow).index(restore[0]) < steps(workflow).index(claims_step(workflow)), (
        "the cache is restored after the claims run"
    )
    save = [s for s in cache_steps if s["uses"].split("@")[0] == "actions/cache/save"]
    if not any(s["uses"].split("@")[0] == "actions/cache" for s in cache_steps):
        assert save and "always()" in condition(save[0]), "the toy is not saved when a claim fails"


def check_claims_cannot_stop_publishing(workflow: Workflow) -> None:
    claims = claims_step(workflow)
    assert claims.get("continue-on-error") is True, "a failing claim would skip the rest of the job"
    assert claims.get("id"), "the claims step has no id to read its outcome by"
    publish_at = step_index(workflow, lambda s: runs(s, "git push"), "pushes the badges")
    publish = steps(workflow)[publish_at]
    assert "always()" in condition(publish), "publishing is skipped when an earlier step fails"
    assert steps(workflow).index(claims) < publish_at, "badges are published before the claims run"
    outcome = f"steps.{claims['id']}.outcome"
    fails = [
        i
        for i, s in enumerate(steps(workflow))
        if f"{outcome}=='failure'" in condition(s) and runs(s, "exit 1")
    ]
    assert fails, "no step fails the job when a claim fails"
    fail_at = fails[-1]
    assert "always()" in condition(steps(workflow)[fail_at]), (
        "the failing step is skipped after a failed publish"
    )
    assert fail_at > publish_at, "the job is failed before the badges are published"


def check_summary(workflow: Workflow) -> None:
    summary_at = step_index(
        workflow, lambda s: runs(s, '>> "$GITHUB_STEP_SUMMARY"'), "appends to $GITHUB_STEP_SUMMARY"
    )
    summary = steps(workflow)[summary_at]
    assert runs(summary, "reports/claims.md"), "the summary does not show claims.md"
    assert "always()" in condition(summary), "the summary is skipped when a claim fails"
    assert summary_at > steps(workflow).index(claims_step(workflow)), "the summary comes before the claims"


CHECKS = {
    "permissions": check_write_permission_only_where_pushing,
    "cpu-torch": check_cpu_torch,
    "toy-cache": check_toy_cache,
    "publish": check_claims_cannot_stop_publishing,
    "summary": check_summary,
}


# -- ways to break the workflow, each paired with the check that must catch it ----------------


def _step(workflow: Workflow, text: str) -> dict[str, Any]:
    return steps(workflow)[step_index(workflow, lambda s: runs(s, text), f"runs {text!r}")]


def _replace_run(workflow: Workflow, text: str, old: str, new: str) -> None:
    step = _step(workflow, text)
    assert old in step["run"]
    step["run"] = step["run"].replace(old, new)


def _set_top_write(w: Workflow) -> None:
    w["permissions"] = {"contents": "write"}


def _drop_job_write(w: Workflow) -> None:
    del w["jobs"]["claims"]["permissions"]


def _drop_cpu_index(w: Workflow) -> None:
    step = _step(w, "pip install torch")
    step["run"] = step["run"].replace(" " + TORCH_INDEX, "")


def _drop_cache(w: Workflow) -> None:
    for job in w["jobs"].values():
        job["steps"] = [s for s in job["steps"] if not str(s.get("uses", "")).startswith("actions/cache")]


def _replace_in_cache_keys(w: Workflow, old: str, new: str) -> None:
    for step in steps(w):
        if str(step.get("uses", "")).startswith("actions/cache"):
            assert old in step["with"]["key"]
            step["with"]["key"] = step["with"]["key"].replace(old, new)


def _cache_key_without_toy_key(w: Workflow) -> None:
    _replace_in_cache_keys(w, "${{ steps.toy-key.outputs.toy }}", "")


def _cache_key_without_version(w: Workflow) -> None:
    _replace_in_cache_keys(w, "${{ steps.toy-key.outputs.version }}", "")


def _version_not_from_the_package(w: Workflow) -> None:
    _replace_run(w, "--print-key", 'python -c "import dpoclaims; print(dpoclaims.__version__)"', "echo 0")


def _save_only_on_success(w: Workflow) -> None:
    for step in steps(w):
        if str(step.get("uses", "")).startswith("actions/cache/save"):
            step["if"] = "steps.toy-cache.outputs.cache-hit != 'true'"


def _claims_stop_the_job(w: Workflow) -> None:
    del claims_step(w)["continue-on-error"]


def _publish_on_success_only(w: Workflow) -> None:
    _step(w, "git push")["if"] = "success()"


def _never_fail_the_job(w: Workflow) -> None:
    for job in w["jobs"].values():
        job["steps"] = [s for s in job["steps"] if "outcome=='failure'" not in condition(s)]


def _no_summary(w: Workflow) -> None:
    _replace_run(w, "GITHUB_STEP_SUMMARY", '>> "$GITHUB_STEP_SUMMARY"', "> /dev/null")


BREAKAGES: dict[str, tuple[str, Callable[[Workflow], None]]] = {
    "write at top level": ("permissions", _set_top_write),
    "no write on the pushing job": ("permissions", _drop_job_write),
    "torch from the default index": ("cpu-torch", _drop_cpu_index),
    "no cache step": ("toy-cache", _drop_cache),
    "cache key without the toy key": ("toy-cache", _cache_key_without_toy_key),
    "cache key without the version": ("toy-cache", _cache_key_without_version),
    "version not from the package": ("toy-cache", _version_not_from_the_package),
    "toy saved only on success": ("toy-cache", _save_only_on_success),
    "a failing claim stops the job": ("publish", _claims_stop_the_job),
    "publish only on success": ("publish", _publish_on_success_only),
    "the job never fails": ("publish", _never_fail_the_job),
    "no step summary": ("summary", _no_summary),
}


# -- the tests ----------------------------------------------------------------------------------


def _check_jsonschema(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.github-workflows", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize("workflow", [WORKFLOW, WORKFLOW.with_name("smollm2.yml")], ids=lambda p: p.name)
def test_the_workflow_validates_against_githubs_workflow_schema(workflow: Path):
    result = _check_jsonschema(workflow)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_schema_check_rejects_a_broken_workflow(tmp_path):
    workflow = load_workflow()
    workflow["jobs"]["claims"]["permissions"] = {"contents": "writable"}
    broken = tmp_path / "claims.yml"
    broken.write_text(yaml.safe_dump(workflow))
    result = _check_jsonschema(broken)
    assert result.returncode != 0, "check-jsonschema accepted an invalid permission value"


@pytest.mark.parametrize("check", CHECKS.values(), ids=CHECKS.keys())
def test_the_workflow_keeps_its_point(check: Callable[[Workflow], None]):
    check(load_workflow())


@pytest.mark.parametrize("breakage", BREAKAGES, ids=BREAKAGES.keys())
def test_each_check_catches_its_regression(breakage: str):
    check_name, breaks = BREAKAGES[breakage]
    workflow = copy.deepcopy(load_workflow())
    breaks(workflow)
    with pytest.raises(AssertionError):
        CHECKS[check_name](workflow)


def test_every_check_has_a_breakage_it_catches():
    assert {name for name, _ in BREAKAGES.values()} == set(CHECKS)


def test_print_key_prints_only_the_toy_key_and_builds_nothing(tmp_path):
    """The workflow's cache key comes from ``$(dpoclaims build-toy --print-key)``: stdout must
    hold the key for the given seed and nothing else, and nothing may be built."""
    from dpoclaims.train.organism.build import ToyConfig, toy_key

    env = {**os.environ, "DPOCLAIMS_CACHE": str(tmp_path / "cache")}
    result = subprocess.run(
        [sys.executable, "-m", "dpoclaims.cli", "build-toy", "--print-key", "--seed", "3"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == toy_key(ToyConfig(seed=3)) + "\n"
    assert toy_key(ToyConfig(seed=3)) != toy_key(ToyConfig())
    assert not (tmp_path / "cache").exists() and not (tmp_path / "reports").exists()
