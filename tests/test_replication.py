"""Claims across organism seeds (dpoclaims.replication): the matrix, markdown and figure
written from the seeds' claims.json files (synthetic here: nothing is built or run)."""

from __future__ import annotations

import json

import pytest

from dpoclaims import replication
from dpoclaims.cache import Cache
from dpoclaims.cli import build_parser
from dpoclaims.errors import OptionError


def claim(verdict=None, replicates=None, measured=0.1):
    data = {"measured": measured, "ci": [measured - 0.01, measured + 0.01], "replicates": replicates}
    if verdict is not None:
        data["verdict"] = verdict
    return data


def record(claim_id, order, claim_data, outcome="passed"):
    return {"id": claim_id, "order": order, "outcome": outcome, "claim": claim_data}


SEEDS = {
    0: [
        record("C1[N=100]", 0, claim(replicates=True, measured=0.01)),  # two-state report
        record("C9", 5, claim("contradicts", measured=0.57)),
        record("C10", 6, claim("replicates", measured=0.9)),
        record("C2[N=100]", 1, claim("inconclusive")),
        record("C12[x2]", 7, None, outcome="skipped"),
    ],
    1: [
        record("C1[N=100]", 0, claim(replicates=True, measured=0.02)),
        record("C2[N=100]", 1, claim("replicates")),
        record("C9", 5, claim("contradicts", measured=0.41)),
        record("C10", 6, claim("not measurable", measured=float("nan"))),
        record("C12[x2]", 7, claim(replicates=False)),
    ],
    2: [
        record("C1[N=100]", 0, claim("replicates", measured=0.0)),
        record("C2[N=100]", 1, claim("contradicts")),
        record("C9", 5, claim("contradicts", measured=0.6)),
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
    assert result["seeds"] == [0, 1, 2]
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


def test_the_writer_gives_json_markdown_and_a_figure(claims_files, tmp_path):
    runs = [
        replication.SeedRun(s, f"/toys/{s}", s > 0, 150.0 * (s > 0), 60.0, 1, f"r/seed-{s}") for s in SEEDS
    ]
    out = tmp_path / "reports"
    paths = replication.write_replication(claims_files, out, runs, wall_s=480.0)
    assert paths == [out / "replication.json", out / "replication.md", out / "figures" / "replication.png"]
    data = json.loads(paths[0].read_text())
    assert data["runs"][1]["toy_built"] is True and data["wall_s"] == 480.0
    markdown = paths[1].read_text()
    assert "| claim | seed 0 | seed 1 | seed 2 | stable |" in markdown
    assert "| C9 | contradicts (0.57) | contradicts (0.41) | contradicts (0.6) | yes |" in markdown
    assert "| C10 | replicates (0.9) | not measurable | not measured | no |" in markdown
    assert "Stable across seeds (2): C1[N=100], C9." in markdown
    assert "| 1 | built | 150 | 60 | 1 |" in markdown and "Wall time: 480 s." in markdown
    png = paths[2].read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000


def test_verdicts_come_from_three_state_reports_or_else_the_replicates_flag():
    assert (
        replication.verdict_of({"claim": {"verdict": "inconclusive", "replicates": True}}) == "inconclusive"
    )
    assert replication.verdict_of({"claim": {"replicates": False}}) == "contradicts"
    assert replication.verdict_of({"claim": None, "outcome": "error"}) == "not measured"


def test_an_unreadable_seed_report_is_a_replication_error(tmp_path):
    (tmp_path / "claims.json").write_text("{not json")
    with pytest.raises(replication.ReplicationError, match="seed 4: cannot read"):
        replication.replication_matrix({4: tmp_path / "claims.json"})


def test_replicate_refuses_bad_seeds_and_a_missing_suite(tmp_path):
    cache = Cache(tmp_path / "cache")
    with pytest.raises(OptionError, match="at least one seed"):
        replication.replicate([], cache=cache, reports_dir=tmp_path)
    with pytest.raises(OptionError, match="each seed once"):
        replication.replicate([1, 1], cache=cache, reports_dir=tmp_path)
    with pytest.raises(OptionError, match="no claims suite"):
        replication.replicate([0], cache=cache, reports_dir=tmp_path, claims_dir=tmp_path)
    assert not (tmp_path / "cache").exists()  # nothing was built


def test_the_cli_parses_replicate():
    args = build_parser().parse_args(["replicate", "--seeds", "0", "1", "2", "--pytest-args", "-n 2"])
    assert args.seeds == [0, 1, 2] and args.pytest_args == "-n 2" and args.func.__name__ == "cmd_replicate"


def test_toy_seed_names_load_the_toy_at_that_seed_with_its_lexicon(tmp_path, monkeypatch):
    from dpoclaims import named_pairs
    from dpoclaims.organism.corpus import TOXIC_WORDS

    built = []

    def fake_ensure_toy(config, *, cache=None, progress=True):
        built.append(config.seed)
        (tmp_path / "pair.toml").write_text('name = "toy"\nbase = "base"\ndpo = "dpo"\nprobe = "probe.pt"\n')
        return tmp_path

    monkeypatch.setattr(named_pairs, "ensure_toy", fake_ensure_toy)
    assert named_pairs.toy_seed("toy-seed12") == 12 and named_pairs.toy_seed("toy") is None
    assert named_pairs.pair_name("toy-seed2") == "toy-seed2" and built == []  # naming builds nothing
    spec = named_pairs.resolve_spec("toy-seed2", Cache(tmp_path / "cache"))
    assert built == [2] and spec.name == "toy-seed2" and spec.lexicon == TOXIC_WORDS
    command = replication.claims_command(tmp_path, 2, tmp_path / "r", Cache(tmp_path / "cache"))
    assert command[command.index("--pair") + 1] == "toy-seed2"
