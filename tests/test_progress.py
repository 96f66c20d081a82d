"""Logs that can be read: off a terminal (a CI log, ``nohup``, pytest's capture) a long step
writes one line when it ends, with its count and time, never progress-bar frames (``\\r``);
on a terminal it shows a bar, as before."""

from __future__ import annotations

import os
import pty
import re
import select
import types

import pytest
import torch

from dpoclaims.progress import on_terminal, stage_done, timed_stage, track_progress

STEP_LINE = re.compile(
    r"^(?P<desc>.+): (?P<n>\d+)(?: of (?P<total>\d+))? steps in \d+\.\d s(?: \((?P<post>.*)\))?$"
)


def _lines(text: str) -> list[str]:
    assert "\r" not in text, f"progress-bar frames off a terminal: {text[:300]!r}"
    return [line for line in text.splitlines() if line]


def test_off_a_terminal_a_step_is_one_line_with_its_count_and_time(capsys):
    assert not on_terminal(__import__("sys").stderr)  # pytest's capture is no terminal
    assert sum(track_progress(range(50), desc="generate (base)")) == sum(range(50))
    with track_progress(total=7, desc="DPO pairs") as bar:
        for _ in range(5):
            bar.update(1)
        bar.set_postfix(kept="5")
    for _ in track_progress(range(3), desc="silent", enabled=False):
        pass
    lines = _lines(capsys.readouterr().err)
    assert len(lines) == 2, lines
    first, second = (STEP_LINE.match(line) for line in lines)
    assert first and first["desc"] == "generate (base)" and (first["n"], first["total"]) == ("50", "50")
    assert second and (second["n"], second["total"], second["post"]) == ("5", "7", "kept 5")


def test_a_stage_is_one_line_off_a_terminal_and_none_when_it_fails(capsys):
    with timed_stage("toy build, probe"):
        pass
    with pytest.raises(RuntimeError), timed_stage("toy build, broken"):
        raise RuntimeError("no line for a stage that did not end")
    stage_done("toy build, pretrain", 118.25)
    stage_done("quiet", 1.0, enabled=False)
    assert _lines(capsys.readouterr().err) == ["toy build, probe: 0.0 s", "toy build, pretrain: 118.2 s"]


def test_on_a_terminal_a_step_shows_a_bar():
    """The opposite case, so the check above can fail: on a (pseudo-)terminal tqdm draws frames."""
    leader, follower = pty.openpty()
    try:
        with os.fdopen(follower, "w", buffering=1, closefd=False) as terminal:
            assert on_terminal(terminal)
            bar = track_progress(range(3), desc="generate (base)", stream=terminal)
            assert type(bar).__module__.startswith("tqdm")
            for _ in bar:
                pass
            terminal.flush()
        written = b""
        while select.select([leader], [], [], 0.5)[0]:
            chunk = os.read(leader, 4096)
            if not chunk:
                break
            written += chunk
    finally:
        os.close(leader)
        os.close(follower)
    assert b"\r" in written and b"generate (base)" in written


def test_a_generation_pass_off_a_terminal_writes_one_line(capsys, make_gpt2, tokenizer):
    from dpoclaims.measure.generation import GenerationSettings, greedy_generate

    prompts = [f"the plan {i} seems" for i in range(6)]
    settings = GenerationSettings(max_new_tokens=3, batch_size=2)
    greedy_generate(make_gpt2(0), tokenizer, prompts, settings, progress=True, desc="challenge (base)")
    (line,) = _lines(capsys.readouterr().err)
    match = STEP_LINE.match(line)
    assert match and match["desc"] == "challenge (base)" and (match["n"], match["total"]) == ("3", "3")


def test_pretraining_off_a_terminal_writes_one_line_with_the_last_loss(capsys, vocab_size):
    from transformers import GPT2Config

    from dpoclaims.train.organism.lm import pretrain

    config = GPT2Config(vocab_size=vocab_size, n_positions=16, n_embd=16, n_layer=1, n_head=2)
    data = torch.randint(0, vocab_size, (8, 16))
    pretrain(config, data, steps=4, batch_size=2, lr=1e-3, seed=0, progress=True)
    (line,) = _lines(capsys.readouterr().err)
    match = STEP_LINE.match(line)
    assert match and match["desc"] == "pretrain toy LM" and match["n"] == "4"


def test_dpo_training_off_a_terminal_writes_one_line_with_the_validation_loss(capsys):
    """The Trainer's progress (its own bar and log lines are switched off) comes from _StepBar."""
    from dpoclaims.train.dpo import _StepBar

    state = types.SimpleNamespace(max_steps=3)
    callback = _StepBar()
    callback.on_train_begin(None, state, None)
    for _ in range(3):
        callback.on_step_end(None, state, None)
    callback.on_evaluate(None, state, None, metrics={"eval_loss": 0.69314})
    callback.on_train_end(None, state, None)
    (line,) = _lines(capsys.readouterr().err)
    match = STEP_LINE.match(line)
    assert (
        match
        and match["desc"] == "DPO (TRL)"
        and (match["n"], match["total"], match["post"])
        == (
            "3",
            "3",
            "val_loss 0.6931",
        )
    )
