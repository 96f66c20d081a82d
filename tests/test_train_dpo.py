"""`dpoclaims train-dpo`: Lee et al.-format pairs in, an HF directory that loads as a DPO side out."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dpoclaims.cli import main
from dpoclaims.dpo import read_lee_pairs, split_pairs
from dpoclaims.errors import CheckpointError
from dpoclaims.organism import corpus


def _write_pairs(path: Path, n: int) -> Path:
    prompts = corpus.neutral_prompts(n, 0)
    rejected = corpus.toxic_continuations(n, 0)
    with open(path, "w") as handle:
        for prompt, bad in zip(prompts, rejected):
            handle.write(
                json.dumps(
                    {"prompt_text": prompt, "unpert_gen_text": ", the plan seems fair.", "pert_gen_text": bad}
                )
                + "\n"
            )
    return path


def test_train_dpo_writes_a_directory_that_loads_as_the_dpo_side(tmp_path, gpt2_pair_files, capsys):
    from dpoclaims.cache import Cache
    from dpoclaims.named_pairs import load_pair

    pairs = _write_pairs(tmp_path / "pairs.jsonl", 24)
    out = tmp_path / "dpo"
    code = main(
        [
            "--cache-dir",
            str(tmp_path / "cache"),
            "train-dpo",
            "--base",
            str(gpt2_pair_files.base),
            "--pairs",
            str(pairs),
            "--out",
            str(out),
            "--lr",
            "1e-3",
            "--batch-size",
            "4",
            "--eval-every",
            "2",
            "--warmup-steps",
            "1",
            "--max-length",
            "48",
            "--val-fraction",
            "0.25",
            "--no-progress",
        ]
    )
    assert code == 0, capsys.readouterr().err
    summary = json.loads((out / "dpo_training.json").read_text())
    assert summary["n_train"] == 18 and summary["n_val"] == 6 and summary["steps"] > 0
    (tmp_path / "pair.toml").write_text(
        f'base = "{gpt2_pair_files.base}"\ndpo = "{out}"\nprobe = "{gpt2_pair_files.probe}"\n'
    )
    pair = load_pair(tmp_path / "pair.toml", cache=Cache(tmp_path / "cache"))
    changed = (pair.value_vectors("dpo") - pair.value_vectors("base")).abs().max()
    assert float(changed) > 0  # training moved the weights


def test_read_lee_pairs_errors(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        read_lee_pairs(tmp_path / "missing.jsonl")
    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        '{"prompt_text": "a", "unpert_gen_text": "b"}\n{"prompt_text": "a", "unpert_gen_text": "b", "pert_gen_text": "c"}\n'
    )
    with pytest.raises(CheckpointError, match=r"bad.jsonl:1 lacks the text fields \['pert_gen_text'\]"):
        read_lee_pairs(bad)
    bad.write_text("not json\n")
    with pytest.raises(CheckpointError, match="is not JSON"):
        read_lee_pairs(bad)


@settings(max_examples=30, deadline=None)
@given(n=st.integers(2, 60), fraction=st.floats(0.01, 0.9), seed=st.integers(0, 100))
def test_split_keeps_pairs_whole_and_is_deterministic(n, fraction, seed):
    pairs = [{"prompt": f"p{i}", "chosen": f"c{i}", "rejected": f"r{i}"} for i in range(n)]
    train, val = split_pairs(pairs, fraction, seed)
    assert len(train) >= 1 and len(val) >= 1 and len(train) + len(val) == n
    assert sorted(p["prompt"] for p in train + val) == sorted(p["prompt"] for p in pairs)
    assert all(p["chosen"][1:] == p["prompt"][1:] == p["rejected"][1:] for p in train + val)
    assert split_pairs(pairs, fraction, seed) == (train, val)
