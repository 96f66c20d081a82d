"""The replication matrix (dpoclaims.runs.replication) and the sweep's grid and options
(dpoclaims.runs.sweep): the matrix, markdown and figure written from the cells' claims.json files
(synthetic here: nothing is built or run)."""

from __future__ import annotations

import json
import subprocess

import pytest
from tiny import claim_record

from dpoclaims.cache import Cache
from dpoclaims.cli import build_parser
from dpoclaims.errors import OptionError
from dpoclaims.runs import replication, sweep
from dpoclaims.runs.cells import (
    Cell,
    CellJob,
    CellResult,
    SweepError,
    _nothing_measured,
    claims_command,
    grid,
    run_cell,
)
from dpoclaims.train.organism import DEFAULT_SEED


def record(claim_id, order, verdict, outcome="passed", measured=0.1):
    """A claims.json record as the plugin writes one (``verdict=None``: not measured)."""
    data = claim_record(claim_id, outcome, verdict, measured).to_json()
    return {**data, "order": order}


SEEDS = {
    0: [
        record("C1[N=100]", 0, "replicates", measured=0.01),
        record("C9", 5, "contradicts", measured=0.57),
        record("C10", 6, "replicates", measured=0.9),
        record("C2[N=100]", 1, "inconclusive"),
        record("C12[x2]", 7, None, outcome="skipped"),
    ],
    1: [
        record("C1[N=100]", 0, "replicates", measured=0.02),
        record("C2[N=100]", 1, "replicates"),
        record("C9", 5, "contradicts", measured=0.41),
        record("C10", 6, "not measurable", measured=float("nan")),
        record("C12[x2]", 7, "contradicts"),
    ],
    2: [
        record("C1[N=100]", 0, "replicates", measured=0.0),
        record("C2[N=100]", 1, "contradicts"),
        record("C9", 5, "contradicts", measured=0.6),
        # C10 and C12[x2] not run at this seed
    ],
}


@pytest.fixture
def claims_files(tmp_path):
    files = {}
    for seed, records in SEEDS.items():
        path = tmp_path / f"seed-{seed}" / "claims.json"
        path.parent.mkdir()
        path.write_text(json.dumps({"header": {"pair": "toy"}, "claims": records}))
        files[seed] = path
    return files


def test_the_matrix_reads_each_seed_s_verdicts_in_claim_order(claims_files):
    result = replication.replication_matrix(claims_files)
    assert result["columns"] == ["0", "1", "2"] and result["missing"] == {}
    assert result["claims"] == ["C1[N=100]", "C2[N=100]", "C9", "C10", "C12[x2]"]
    verdicts = {c: [result["matrix"][c][str(s)]["verdict"] for s in (0, 1, 2)] for c in result["claims"]}
    assert verdicts == {
        "C1[N=100]": ["replicates"] * 3,
        "C2[N=100]": ["inconclusive", "replicates", "contradicts"],
        "C9": ["contradicts"] * 3,
        "C10": ["replicates", "not measurable", "not measured"],
        "C12[x2]": ["not measured", "contradicts", "not measured"],
    }
    assert result["matrix"]["C9"]["1"]["measured"] == 0.41
    assert result["matrix"]["C10"]["2"]["outcome"] == "not run"
    assert result["stable"] == ["C1[N=100]", "C9"]  # a stable contradiction is stable too
    assert result["unstable"] == ["C2[N=100]", "C10", "C12[x2]"]
    assert result["counts"]["C2[N=100]"] == {"replicates": 1, "contradicts": 1, "inconclusive": 1}
    assert result["counts"]["C10"] == {"replicates": 1, "not measurable": 1, "not measured": 1}
    assert result["counts"]["C9"] == {"contradicts": 3}
    text = replication.replication_markdown(result)
    assert "| cells by verdict | stable |" in text
    assert "| 1 replicates, 1 contradicts, 1 inconclusive | no |" in text


def test_the_writer_gives_json_markdown_and_a_figure(claims_files, tmp_path):
    cells = [Cell(f"toy-seed{s}") for s in SEEDS]
    files = {cell.id: claims_files[cell.seed] for cell in cells}
    runs = [
        CellResult(
            c.id,
            toy_built=c.seed > 0,
            dpo_model=f"lee pairs, step {5 * (c.seed + 1)}",
            build_s=150.0 * (c.seed > 0),
            claims_s=60.0,
            pytest_exit=1,
        )
        for c in cells
    ]
    out = tmp_path / "reports"
    paths = replication.write_replication(
        files,
        out,
        columns=[c.id for c in cells],
        cells=[c.describe() for c in cells],
        runs=[r.run_record() for r in runs],
        wall_s=480.0,
        engine="local",
    )
    assert paths == [
        out / "replication.json",
        out / "replication.md",
        out / "figures" / "replication.png",
        out / "replication.html",
    ]
    data = json.loads(paths[0].read_text())
    assert data["runs"][1]["toy_built"] is True and data["wall_s"] == 480.0
    assert data["columns"] == ["toy-seed0.v1.default", "toy-seed1.v1.default", "toy-seed2.v1.default"]
    markdown = paths[1].read_text()
    assert (
        "| claim | seed 0 | seed 1 | seed 2 | cells by verdict | stable |" in markdown
    )  # only the seed varies
    assert (
        "| C9 | contradicts (0.57) | contradicts (0.41) | contradicts (0.6) | 3 contradicts | yes |"
        in markdown
    )
    assert (
        "| C10 | replicates (0.9) | not measurable | not measured | 1 replicates, 1 not measurable, 1 not measured | no |"
        in markdown
    )
    assert "Stable across the cells (2): C1[N=100], C9." in markdown
    assert "| seed 1 | built | lee pairs, step 10 | 150 | 60 | 1 | - | - |  |" in markdown
    assert "Wall time: 480 s (engine local)." in markdown
    png = paths[2].read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000


def test_a_record_without_a_verdict_is_an_unreadable_report(tmp_path):
    data = record("C9", 0, "replicates")
    del data["claim"]["verdict"]  # a report of another version: its verdict is not guessed
    (tmp_path / "claims.json").write_text(json.dumps({"claims": [data]}))
    with pytest.raises(replication.ReplicationError, match="cell 0: cannot read its claims report"):
        replication.replication_matrix({0: tmp_path / "claims.json"})


def test_an_unreadable_cell_report_is_a_replication_error(tmp_path):
    (tmp_path / "claims.json").write_text("{not json")
    with pytest.raises(replication.ReplicationError, match="cell 4: cannot read"):
        replication.replication_matrix({4: tmp_path / "claims.json"})


def test_a_missing_cell_is_marked_missing_never_a_verdict(claims_files, tmp_path):
    files = {"a": claims_files[0], "c": claims_files[2]}
    result = replication.replication_matrix(files, columns=["a", "b", "c"], missing={"b": "failed: boom"})
    assert result["missing"] == {"b": "failed: boom"}
    assert {result["matrix"][c]["b"]["verdict"] for c in result["claims"]} == {"missing"}
    assert result["matrix"]["C9"]["b"]["measured"] is None
    # C9 contradicts in both cells that ran, but a missing cell leaves it not stable.
    assert "C9" not in result["stable"] and result["stable"] == []
    paths = replication.write_replication(
        files, tmp_path / "r", columns=["a", "b", "c"], missing={"b": "failed: boom"}
    )
    markdown = paths[1].read_text()
    assert (
        "| C9 | contradicts (0.57) | missing | contradicts (0.6) | 2 contradicts, 1 missing | no |"
        in markdown
    )
    assert "**Missing cell b** (`b`): failed: boom" in markdown


def test_the_grid_crosses_pairs_seeds_conventions_and_scorers():
    cells = grid(["toy", "my-pair"], [0, 2], ["v1", "emnlp"], [None, "profanity-check"])
    assert len(cells) == (2 + 1) * 2 * 2
    assert cells[0] == Cell("toy-seed0", "v1", None) and cells[0].seed == 0
    assert [c.id for c in cells[:4]] == [
        "toy-seed0.v1.default",
        "toy-seed0.v1.profanity-check",
        "toy-seed0.emnlp.default",
        "toy-seed0.emnlp.profanity-check",
    ]
    assert cells[-1] == Cell("my-pair", "emnlp", "profanity-check") and cells[-1].seed is None
    assert Cell("specs/paper pair.toml").id == "paper_pair.v1.default"  # a path: its stem
    assert [c.id for c in grid()] == [f"toy-seed{DEFAULT_SEED}.v1.default"]  # the default toy
    assert [c.id for c in grid(["gpt2-paper"])] == ["gpt2-paper.v1.default"]  # no toy: no seed asked
    labels = replication.column_labels(
        {"columns": [c.id for c in cells], "cells": [c.describe() for c in cells]}
    )
    assert labels["toy-seed2.emnlp.profanity-check"] == "toy-seed2 · emnlp · profanity-check"


def test_the_sweep_refuses_bad_grids_and_options_before_running_anything(tmp_path):
    cache = Cache(tmp_path / "cache")
    with pytest.raises(OptionError, match="at least one seed"):
        grid(["toy"], [])
    with pytest.raises(OptionError, match="each seed once"):
        grid(["toy"], [1, 1])
    with pytest.raises(OptionError, match="add toy to --pairs"):
        grid(["gpt2-paper"], [0, 1])
    with pytest.raises(OptionError, match="unknown position convention"):
        grid(["toy"], [0], ["v2"])
    with pytest.raises(OptionError, match="unknown scorer"):
        grid(["toy"], [0], ["v1"], ["nope"])
    cells = grid()
    with pytest.raises(OptionError, match="no claims suite"):
        sweep.sweep(cells, cache=cache, reports_dir=tmp_path, claims_dir=tmp_path)
    with pytest.raises(OptionError, match="--max-prompts must be at least 10"):
        sweep.sweep(cells, cache=cache, reports_dir=tmp_path, max_prompts=5)
    with pytest.raises(OptionError, match="unknown engine"):
        sweep.sweep(cells, cache=cache, reports_dir=tmp_path, engine="slurm")
    with pytest.raises(OptionError, match="--cpus-per-cell must be positive"):
        sweep.sweep(cells, cache=cache, reports_dir=tmp_path, cpus_per_cell=0)
    with pytest.raises(OptionError, match="each seed once"):
        sweep.replicate([1, 1], cache=cache, reports_dir=tmp_path)
    assert not (tmp_path / "cache").exists()  # nothing was built


def test_the_ray_engine_without_ray_says_how_to_install_it(tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "ray", None)  # import ray raises ImportError
    with pytest.raises(SweepError, match=r"pip install -e '\.\[cluster\]'"):
        sweep.sweep(grid(), cache=Cache(tmp_path / "cache"), reports_dir=tmp_path, engine="ray")
    assert not (tmp_path / "cache").exists() and not (tmp_path / "replication").exists()


def test_the_cli_parses_sweep_and_replicate_as_its_alias():
    args = build_parser().parse_args(["replicate", "--seeds", "0", "1", "2", "--pytest-args", "-n 2"])
    assert args.seeds == [0, 1, 2] and args.pytest_args == "-n 2" and args.func.__name__ == "cmd_sweep"
    assert args.engine == "local" and build_parser().parse_args(["replicate"]).seeds == [0, 1, 2]
    args = build_parser().parse_args(
        "sweep --engine ray --seeds 0 1 --conventions v1 emnlp --max-prompts 20".split()
    )
    assert (args.engine, args.seeds, args.conventions, args.max_prompts) == (
        "ray",
        [0, 1],
        ["v1", "emnlp"],
        20,
    )
    assert args.pairs == ["toy"] and args.scorers is None
    assert args.cpus_per_cell == 1 and args.gpus_per_cell is None and args.max_retries == 3


def test_toy_seed_names_load_the_toy_at_that_seed_with_its_lexicon(tmp_path, monkeypatch):
    from dpoclaims.train import named_pairs
    from dpoclaims.train.organism.corpus import TOXIC_WORDS

    built = []

    def fake_ensure_toy(config, *, cache=None, progress=True):
        built.append(config.seed)
        (tmp_path / "pair.toml").write_text('name = "toy"\nbase = "base"\ndpo = "dpo"\nprobe = "probe.pt"\n')
        (tmp_path / "toy.json").write_text(json.dumps({"bands": {}}))  # no band failed
        return tmp_path

    monkeypatch.setattr(named_pairs, "ensure_toy", fake_ensure_toy)
    assert named_pairs.toy_seed("toy-seed12") == 12 and named_pairs.toy_seed("toy") is None
    assert named_pairs.pair_name("toy-seed2") == "toy-seed2" and built == []  # naming builds nothing
    spec = named_pairs.resolve_spec("toy-seed2", Cache(tmp_path / "cache"))
    assert built == [2] and spec.name == "toy-seed2" and spec.lexicon == TOXIC_WORDS
    job = CellJob(Cell("toy-seed2", "emnlp"), str(tmp_path / "cache"), str(tmp_path), 10)
    command = claims_command(job, tmp_path / "r")
    assert command[command.index("--pair") + 1] == "toy-seed2"
    assert command[command.index("--convention") + 1] == "emnlp" and "--scorer" not in command
    assert command[command.index("--max-prompts") + 1] == "10"


def test_a_cell_on_a_toy_outside_its_bands_fails_with_the_band_and_runs_no_claims(tmp_path, monkeypatch):
    from dpoclaims.train import named_pairs

    toy = tmp_path / "toy"
    toy.mkdir()
    bands = {"dpo_over_base_toxicity": {"value": 0.7065, "band": [0.0, 0.5], "ok": False}}
    (toy / "toy.json").write_text(json.dumps({"bands": bands, "libraries": {"torch": "x"}}))
    monkeypatch.setattr(named_pairs, "ensure_toy", lambda config, *, cache=None, progress=True: toy)
    ran = []
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: ran.append(a))
    job = CellJob(Cell("toy-seed1"), str(tmp_path / "cache"), str(tmp_path), 10)
    result = run_cell(job)
    assert not result.ok and ran == []
    assert "BrokenOrganismError" in result.error and "dpo_over_base_toxicity = 0.7065" in result.error


def test_a_claims_run_that_measured_nothing_is_a_failed_cell():
    errored = {"claims": [record("C3", 0, None, "error"), record("C9", 1, None, "error")]}
    measured = {"claims": [record("C3", 0, None, "error"), record("C9", 1, "replicates")]}
    assert _nothing_measured(json.dumps(errored).encode())
    assert not _nothing_measured(json.dumps(measured).encode())
    assert not _nothing_measured(json.dumps({"claims": []}).encode())
