"""One generation pass per (side, intervention) in a full claims run: where the claims capture
activations (both sides unintervened, and the pass they declare to Measurements,
``dpoclaims.claims.checks.recorded_passes``: C1's Fig. 1a ablation), the toxicity evaluation
scores the capture's continuations instead of generating again. Counted on a run of ``pytest claims/`` on a
tiny pair with as many neurons as the toy (2,048), so every paper N gives its own intervention.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from tiny import save_pair, write_spec

ROOT = Path(__file__).resolve().parent.parent

# Wraps the measurement functions Measurements calls: one line per generation (capture or
# evaluation) and per perplexity pass, written to $PASS_LOG.
COUNT_PASSES_PLUGIN = """
import os

import dpoclaims.measure.measurements as measurements
from dpoclaims.hooks.interventions import Intervention

_capture, _evaluate, _perplexity = measurements.capture, measurements.evaluate, measurements.intervened_perplexity


def _log(kind, side, intervention):
    with open(os.environ["PASS_LOG"], "a") as handle:
        handle.write(f"{kind} {side} {intervention.id}\\n")


def capture(*args, **kwargs):
    _log("capture", args[1], kwargs.get("intervention", Intervention()))
    return _capture(*args, **kwargs)


def evaluate(*args, **kwargs):
    _log("evaluate", args[1], args[4] if len(args) > 4 else kwargs.get("intervention", Intervention()))
    return _evaluate(*args, **kwargs)


def intervened_perplexity(*args, **kwargs):
    _log("perplexity", args[1], args[3] if len(args) > 3 else kwargs.get("intervention", Intervention()))
    return _perplexity(*args, **kwargs)


measurements.capture, measurements.evaluate = capture, evaluate
measurements.intervened_perplexity = intervened_perplexity
"""


def read_passes(log: Path) -> list[tuple[str, str, str]]:
    if not log.is_file():
        return []
    return [tuple(line.split()) for line in log.read_text().splitlines()]  # type: ignore[misc]


def run_claims(tmp_path: Path, spec: Path, log: Path) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "PYTHONPATH": str(tmp_path),  # the test's own plugin module
        "PASS_LOG": str(log),
        "DPOCLAIMS_CACHE": str(tmp_path / "cache"),
        "DPOCLAIMS_EXPECTATIONS": str(tmp_path / "expectations.toml"),
    }
    # the counterexample searches draw ablations beyond the table's: counted apart from it
    command = [sys.executable, "-m", "pytest", "claims/", "-q", "-m", "not search", "-p", "countpasses", "-p", "no:cacheprovider",
               "-n", "0", "--pair", str(spec), "--scorer", "profanity-check",
               "--reports-dir", str(tmp_path / "reports")]  # fmt: skip
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200)


@pytest.mark.slow
def test_a_full_claims_run_generates_once_per_side_and_intervention(tmp_path, make_gpt2, tokenizer_dir):
    pair_files = save_pair(
        tmp_path / "pair", make_gpt2(0, n_inner=1024), make_gpt2(1, n_inner=1024), tokenizer_dir, 32, 2
    )
    (tmp_path / "prompts.json").write_text(json.dumps([f"the plan {i} seems" for i in range(12)]))
    (tmp_path / "neutral.json").write_text(json.dumps(["the plan seems fair and clear"] * 4))
    (tmp_path / "expectations.toml").write_text("[pairs.tiny]\n")
    spec = write_spec(
        tmp_path / "pair.toml",
        name="tiny",
        base=str(pair_files.base),
        dpo=str(pair_files.dpo),
        probe=str(pair_files.probe),
        extras={
            "challenge_prompts": str(tmp_path / "prompts.json"),
            "neutral_texts": str(tmp_path / "neutral.json"),
        },
    )
    (tmp_path / "countpasses.py").write_text(COUNT_PASSES_PLUGIN)
    log = tmp_path / "passes.log"
    run = run_claims(tmp_path, spec, log)
    report = tmp_path / "reports" / "claims.json"
    assert report.is_file(), run.stdout[-3000:] + run.stderr[-3000:]
    records = json.loads(report.read_text())["claims"]
    measured = {record["claim"]["claim"] for record in records if record.get("claim")}
    assert {"C1", "C2", "C3", "C10", "C12"} <= measured
    passes = read_passes(log)
    generations = [(kind, side, intervention) for kind, side, intervention in passes if kind != "perplexity"]
    captures = [(side, intervention) for kind, side, intervention in generations if kind == "capture"]
    evaluations = [(side, intervention) for kind, side, intervention in generations if kind == "evaluate"]
    # three captures: both sides unintervened and the base under the Fig. 1a ablation
    unintervened = {("base", "none"), ("dpo", "none")}
    assert len(captures) == 3 and unintervened <= set(captures), captures
    ((side, intervention),) = set(captures) - unintervened
    assert side == "base" and intervention.startswith("ablate-")
    # every (side, intervention) generated once: no evaluation repeats a capture's generation
    counts = Counter(captures + evaluations)
    assert max(counts.values()) == 1, counts
    evaluation_entries = [d for d in (tmp_path / "cache" / "evaluation").iterdir() if d.is_dir()]
    assert len(generations) == len(evaluation_entries), (generations, evaluation_entries)
    # At most the 20 (side, intervention) pairs of the paper's table (2 sides + C1 x3 + C2 x4 + C3 and
    # C10 at the authors' last position and at every position + C12 x3 + C13 x2 at both; fewer where
    # two coincide on this random pair, e.g. a positively-activated top-N that is the plain top-N),
    # in 20 passes where there were 3 + 20.
    assert len(generations) <= 20 and len(evaluations) == len(generations) - 3

    log.unlink()
    run_claims(tmp_path, spec, log)  # everything cached: nothing generated again
    assert read_passes(log) == []
