"""`dpoclaims train-dpo`: Lee et al.-format pairs in, an HF directory that loads as a DPO side out."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dpoclaims.cli import main
from dpoclaims.errors import CheckpointError, TrainingError
from dpoclaims.train.dpo import DPOSettings, pairs_needed_for_warmup, plan_warmup, read_lee_pairs, split_pairs
from dpoclaims.train.organism import corpus


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


def _train_dpo(tmp_path: Path, base: Path, pairs: Path, *options: str) -> int:
    return main(
        [
            "--cache-dir",
            str(tmp_path / "cache"),
            "train-dpo",
            "--base",
            str(base),
            "--pairs",
            str(pairs),
            "--out",
            str(tmp_path / "dpo"),
            "--max-length",
            "48",
            "--no-progress",
            *options,
        ]
    )


def _read_rows(n: int) -> list[dict[str, str]]:
    return [{"prompt": p, "chosen": " fair.", "rejected": " awful."} for p in corpus.neutral_prompts(n, 0)]


def test_train_dpo_writes_a_directory_that_loads_as_the_dpo_side(tmp_path, gpt2_pair_files, capsys):
    from dpoclaims.cache import Cache
    from dpoclaims.train.named_pairs import load_pair

    pairs = _write_pairs(tmp_path / "pairs.jsonl", 24)
    out = tmp_path / "dpo"
    options = ["--lr", "1e-3", "--batch-size", "4", "--eval-every", "2", "--warmup-steps", "1"]
    code = _train_dpo(tmp_path, gpt2_pair_files.base, pairs, *options, "--val-fraction", "0.25")
    printed = capsys.readouterr()
    assert code == 0, printed.err
    summary = json.loads((out / "dpo_training.json").read_text())
    assert summary["n_train"] == 18 and summary["n_val"] == 6
    assert summary["steps"] == summary["max_steps"] == 5  # ceil(18 / 4), no early stop
    assert (summary["warmup_requested"], summary["warmup_used"], summary["warmup_clipped"]) == (1, 1, False)
    assert summary["largest_weight_change"] > 0
    assert summary["end_val_loss"] < summary["start_val_loss"]  # lr 1e-3 on 18 pairs does learn
    lines = printed.out.splitlines()
    assert lines[0] == (
        f"DPO model written to {out}: 18 training pairs, 6 validation; 5 of 5 optimisation steps "
        "(18 training pairs in batches of 4, 1 epoch), warm-up 1 step"
    )
    assert lines[1] == (
        f"  largest weight change {summary['largest_weight_change']:.3g} "
        f"({summary['largest_weight_change_tensor']})"
    )
    assert lines[2].startswith(
        f"  validation loss {summary['end_val_loss']:.6g} at the end, {summary['start_val_loss']:.6g} at the start"
    )
    (tmp_path / "pair.toml").write_text(
        f'base = "{gpt2_pair_files.base}"\ndpo = "{out}"\nprobe = "{gpt2_pair_files.probe}"\n'
    )
    pair = load_pair(tmp_path / "pair.toml", cache=Cache(tmp_path / "cache"))
    changed = (pair.value_vectors("dpo") - pair.value_vectors("base")).abs().max()
    assert float(changed) > 0  # training moved the weights


def test_two_pairs_with_the_default_warmup_are_refused_and_nothing_is_written(
    tmp_path, gpt2_pair_files, capsys
):
    """Issue #10: 2 pairs gave 1 step at learning rate 0 (warm-up), an unchanged copy and exit 0."""
    pairs = _write_pairs(tmp_path / "pairs.jsonl", 2)
    code = _train_dpo(tmp_path, gpt2_pair_files.base, pairs)  # defaults: warm-up 150, batch 4, lr 1e-6
    err = capsys.readouterr().err
    assert code == 2
    assert not (tmp_path / "dpo").exists()
    prefix = (
        "dpoclaims: error: DPO run too short for its warm-up: the run had 1 optimisation step (1 training pair "
        "in batches of 4, 1 epoch): warm-up clipped from 150 to 0 steps so that it ends by the last step; "
        "1 step is fewer than the 150 warm-up steps asked for. The run moved the weights by at most "
    )
    assert err.startswith(prefix), err
    assert err.rstrip().endswith(
        f"Nothing was written to {tmp_path / 'dpo'}. To train: give at least 600 training pairs (632 in the "
        "file at --val-fraction 0.05), or set --warmup-steps below 1 (e.g. 0)"
    ), err
    moved = float(err[len(prefix) :].split(" ", 1)[0])
    assert moved > 0  # the clipped warm-up let the one step train: the refusal is not about a no-op


def test_a_run_that_changes_no_weight_is_refused(tmp_path, gpt2_pair_files, tokenizer):
    from dpoclaims.models.loading import load_hf_model
    from dpoclaims.train.dpo import train_dpo_run

    rows = _read_rows(6)
    model = load_hf_model(str(gpt2_pair_files.base))
    settings = DPOSettings(learning_rate=1e-3, batch_size=2, eval_every=10, warmup_steps=0, max_length=48)
    # A learning rate of 0 is refused as a setting; set past the check, it stands for any run that
    # ends with no weight changed, which the run itself must refuse.
    object.__setattr__(settings, "learning_rate", 0.0)
    with pytest.raises(TrainingError) as info:
        train_dpo_run(model, tokenizer, rows[:4], rows[4:], settings, progress=False)
    message = str(info.value)
    assert message.startswith(
        "DPO training changed no weight: 2 steps of 2 optimisation steps (4 training pairs in batches of 2, "
        "1 epoch), warm-up 0 steps, learning rate 0.0; validation loss "
    ), message
    assert message.endswith(
        "Give more pairs (or pairs whose chosen and rejected texts differ), fewer warm-up steps "
        "(--warmup-steps) or a larger learning rate (--lr)"
    )


def test_planned_steps_match_the_trainers_over_epochs_and_dropped_pairs(gpt2_pair_files, tokenizer):
    from dpoclaims.models.loading import load_hf_model
    from dpoclaims.train.dpo import train_dpo_run

    rows = _read_rows(8)
    model = load_hf_model(str(gpt2_pair_files.base))
    # At max_length 32 TRL drops the pairs whose prompt alone fills it: the plan must count the rest.
    settings = DPOSettings(
        learning_rate=1e-3, batch_size=2, max_epochs=2, eval_every=10, warmup_steps=9, max_length=32
    )
    run = train_dpo_run(model, tokenizer, rows[:5], rows[5:], settings, progress=False)
    assert 0 < run.n_train < 5
    assert run.steps == run.trainer_max_steps == run.warmup.max_steps == math.ceil(run.n_train / 2) * 2
    assert (run.warmup.effective, run.warmup.clipped) == (run.warmup.max_steps - 1, True)
    assert run.largest_change > 0 and run.largest_change_tensor in dict(model.named_parameters())


def test_pairs_whose_prompts_all_fill_max_length_are_refused(gpt2_pair_files, tokenizer):
    from dpoclaims.models.loading import load_hf_model
    from dpoclaims.train.dpo import train_dpo_run

    rows = _read_rows(4)
    model = load_hf_model(str(gpt2_pair_files.base))
    with pytest.raises(TrainingError) as info:
        train_dpo_run(model, tokenizer, rows[:3], rows[3:], DPOSettings(max_length=2), progress=False)
    assert str(info.value) == (
        "DPO has no usable training pair: the prompt of each of the 3 fills max_length 2; "
        "raise --max-length or use shorter prompts"
    )


def test_a_clipped_warmup_that_still_fits_trains_and_says_so(tmp_path, gpt2_pair_files, capsys):
    pairs = _write_pairs(tmp_path / "pairs.jsonl", 24)
    options = ["--lr", "1e-3", "--eval-every", "2", "--warmup-steps", "5", "--val-fraction", "0.25"]
    code = _train_dpo(tmp_path, gpt2_pair_files.base, pairs, *options)
    out = capsys.readouterr().out
    assert code == 0
    assert (
        "5 of 5 optimisation steps (18 training pairs in batches of 4, 1 epoch): warm-up clipped from 5 to 4 steps"
        in out
    )
    summary = json.loads((tmp_path / "dpo" / "dpo_training.json").read_text())
    assert (summary["warmup_used"], summary["warmup_clipped"]) == (4, True)


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--lr", "0", "--lr must be positive, not 0.0: at 0.0 no weight would change"),
        ("--batch-size", "0", "--batch-size must be at least 1, not 0"),
        ("--val-fraction", "1", "--val-fraction must be between 0 and 1, not 1.0"),
        ("--warmup-steps", "-1", "--warmup-steps must be at least 0 and --patience at least 1"),
    ],
)
def test_train_dpo_option_errors(tmp_path, capsys, option, value, message):
    pairs = _write_pairs(tmp_path / "pairs.jsonl", 4)
    assert _train_dpo(tmp_path, tmp_path / "no-base", pairs, option, value) == 2
    assert capsys.readouterr().err.strip() == f"dpoclaims: error: {message}"


def test_early_stop_before_the_warmup_ends_is_refused(tmp_path, gpt2_pair_files, capsys):
    pairs = _write_pairs(tmp_path / "pairs.jsonl", 40)
    # A huge learning rate saturates the validation loss at once, so early stopping ends the run.
    options = ["--lr", "10", "--eval-every", "1", "--patience", "1", "--warmup-steps", "6"]
    assert _train_dpo(tmp_path, gpt2_pair_files.base, pairs, *options, "--val-fraction", "0.25") == 2
    err = capsys.readouterr().err
    assert err.startswith(
        "dpoclaims: error: DPO run too short for its warm-up: training stopped early at step "
    ), err
    assert "of 8 (validation loss did not improve for 1 evaluation);" in err
    assert "To train: set --warmup-steps below " in err and "or a larger --patience or --eval-every" in err
    assert not (tmp_path / "dpo").exists()


def test_max_length_beyond_the_models_positions_is_an_option_error(tmp_path, gpt2_pair_files, capsys):
    pairs = _write_pairs(tmp_path / "pairs.jsonl", 4)
    assert _train_dpo(tmp_path, gpt2_pair_files.base, pairs, "--max-length", "128") == 2
    assert capsys.readouterr().err.strip() == (
        "dpoclaims: error: max_length 128 (--max-length) exceeds the model's 64 positions; set it to 64 or less"
    )


@pytest.mark.parametrize(
    ("n_train", "batch_size", "epochs", "warmup", "max_steps", "used"),
    [
        (1, 4, 1, 150, 1, 0),  # the case: one step, which must not run at learning rate 0
        (18, 4, 1, 1, 5, 1),
        (18, 4, 1, 5, 5, 4),
        (18, 4, 2, 5, 10, 5),
        (8, 8, 3, 0, 3, 0),
    ],
)
def test_warmup_is_clipped_to_end_by_the_last_step(n_train, batch_size, epochs, warmup, max_steps, used):
    settings = DPOSettings(batch_size=batch_size, max_epochs=epochs, warmup_steps=warmup)
    plan = plan_warmup(n_train, settings)
    assert (plan.max_steps, plan.effective, plan.clipped) == (max_steps, used, used != warmup)


def test_pairs_needed_for_warmup():
    assert pairs_needed_for_warmup(DPOSettings(batch_size=4, warmup_steps=150), 0.05) == (600, 632)
    assert pairs_needed_for_warmup(DPOSettings(batch_size=8, max_epochs=2, warmup_steps=5), 0.5) == (24, 48)
    n_train, n_file = pairs_needed_for_warmup(DPOSettings(batch_size=4, warmup_steps=150), 0.05)
    train, _ = split_pairs([{"prompt": str(i)} for i in range(n_file)], 0.05, 0)
    assert len(train) >= n_train
    train, _ = split_pairs([{"prompt": str(i)} for i in range(n_file - 1)], 0.05, 0)
    assert len(train) < n_train


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


def test_trainer_config_trains_in_float32_unless_asked(tmp_path):
    # TRL's DPOConfig turns bf16 autocast on by default, on the CPU too; the project's runs
    # are float32 so that a CPU's bf16 kernels cannot decide the toy (DPOSettings.bf16).
    import torch

    from dpoclaims.train.dpo import trainer_config

    default = trainer_config(DPOSettings(), tmp_path, torch.device("cpu"))
    assert (default.bf16, default.fp16) == (False, False)
    assert default.lr_scheduler_type == "linear" and default.weight_decay == 0.0
    assert trainer_config(DPOSettings(bf16=True), tmp_path, torch.device("cpu")).bf16 is True


def test_a_run_with_a_checkpoint_directory_resumes_from_its_last_checkpoint(
    tmp_path, gpt2_pair_files, tokenizer, caplog
):
    """What a killed smollm2 build relies on: checkpoints outlive the run, and a run started again
    with the same directory resumes from the last of them and ends as the first run did."""
    from dpoclaims.models.loading import load_hf_model
    from dpoclaims.train.dpo import train_dpo_run

    caplog.set_level("INFO", logger="dpoclaims.train.dpo")
    rows = _read_rows(12)
    settings = DPOSettings(
        learning_rate=1e-3, batch_size=2, eval_every=2, warmup_steps=1, max_length=48, patience=100
    )
    checkpoints = tmp_path / "checkpoints"

    def run():
        model = load_hf_model(str(gpt2_pair_files.base))
        return train_dpo_run(
            model, tokenizer, rows[:8], rows[8:], settings, progress=False, checkpoint_dir=checkpoints
        )

    first = run()
    assert sorted(p.name for p in checkpoints.glob("checkpoint-*"))  # kept after the run
    again = run()
    assert "DPO resumes from the last checkpoint" in caplog.text
    assert again.steps == first.steps == 4

    # The first run's log, restored with its state; the resumed run adds only its own summary.
    def logged(run):
        return [h for h in run.history if "train_runtime" not in h]

    assert logged(again) == logged(first)
    for (name, a), b in zip(first.model.state_dict().items(), again.model.state_dict().values()):
        assert torch.equal(a, b), name
