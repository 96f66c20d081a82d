"""The checkpoint rule: the first DPO checkpoint meeting every band is kept, else the closest."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from dpoclaims.train.checkpoint_rule import FirstInBand, distance_outside
from dpoclaims.train.dpo import DPOSettings, train_dpo_run, trainer_config
from dpoclaims.train.organism import corpus

BANDS = {"ratio": (0.0, 0.5), "ppl": (-1.0, 0.15)}


def test_distance_outside_is_in_band_widths():
    assert distance_outside(0.3, (0.0, 0.5)) == 0.0
    assert distance_outside(0.6, (0.0, 0.5)) == pytest.approx(0.2)
    assert distance_outside(-0.25, (0.0, 0.5)) == pytest.approx(0.5)
    assert distance_outside(0.5, (0.0, 0.5)) == 0.0  # the edges are inside


def _step(rule: FirstInBand, model, step: int):
    control = SimpleNamespace(should_training_stop=False)
    rule.on_step_end(None, SimpleNamespace(global_step=step), control, model=model)
    return control.should_training_stop


def _rule(figures_by_step: dict[int, dict[str, float]], every: int = 2) -> tuple[FirstInBand, list[int]]:
    measured: list[int] = []

    def measure(model):
        step = int(model.transformer.wte.weight[0, 0].item())  # each step's model carries its step
        measured.append(step)
        return figures_by_step[step]

    return FirstInBand(every=every, measure=measure, bands=BANDS, progress=False), measured


def _at_step(model, step: int):
    with torch.no_grad():
        model.transformer.wte.weight[0, 0] = step
    return model


def test_the_first_checkpoint_in_every_band_is_kept_and_training_stops(make_gpt2):
    model = make_gpt2()
    figures = {2: {"ratio": 0.7, "ppl": 0.01}, 4: {"ratio": 0.45, "ppl": 0.05}, 6: {"ratio": 0.3, "ppl": 0.1}}
    rule, measured = _rule(figures)
    stops = [_step(rule, _at_step(model, step), step) for step in (1, 2, 3, 4)]
    assert stops == [False, False, False, True]
    assert measured == [2, 4]  # only every 2nd step, and none after the kept one
    assert rule.chosen is not None and rule.chosen.step == 4 and rule.chosen.in_band
    assert [c.failed for c in rule.checkpoints] == [("ratio",), ()]
    assert rule.settle(model).step == 4
    assert model.transformer.wte.weight[0, 0].item() == 4  # training stopped at it: nothing put back


def test_without_a_checkpoint_in_band_the_closest_is_put_back(make_gpt2):
    model = make_gpt2()
    figures = {
        2: {"ratio": 0.8, "ppl": 0.0},  # 0.6 band widths outside
        4: {"ratio": 0.55, "ppl": 0.2},  # 0.1 + 0.05/1.15: the closest
        6: {"ratio": 0.5, "ppl": 0.4},  # 0.25 / 1.15
    }
    rule, _ = _rule(figures)
    for step in (2, 4, 6):
        assert not _step(rule, _at_step(model, step), step)
    kept = rule.settle(model)
    assert rule.chosen is None and kept.step == 4 and not kept.in_band
    assert kept.distance == pytest.approx(0.1 + 0.05 / 1.15)
    assert model.transformer.wte.weight[0, 0].item() == 4  # the closest one's weights, put back
    assert [c.as_record()["step"] for c in rule.checkpoints] == [2, 4, 6]


def test_a_run_without_any_checkpoint_is_refused(make_gpt2):
    rule, _ = _rule({}, every=10)
    _step(rule, make_gpt2(), 3)
    with pytest.raises(RuntimeError, match="ended before its first checkpoint"):
        rule.settle(make_gpt2())


def test_a_measure_missing_a_band_figure_is_refused(make_gpt2):
    rule, _ = _rule({2: {"ratio": 0.1}})
    with pytest.raises(KeyError, match="no figure for the bands"):
        _step(rule, _at_step(make_gpt2(), 2), 2)


@pytest.mark.parametrize("every", [0, -1, True, 2.5])
def test_the_rule_measures_every_whole_number_of_steps(every):
    with pytest.raises(ValueError, match="every N >= 1 steps"):
        FirstInBand(every=every, measure=lambda m: {}, bands=BANDS)


def test_a_run_by_rule_has_a_constant_rate_and_keeps_no_checkpoint(tmp_path):
    by_rule = trainer_config(DPOSettings(), tmp_path, torch.device("cpu"), by_rule=True)
    assert by_rule.lr_scheduler_type == "constant_with_warmup"
    assert (by_rule.load_best_model_at_end, by_rule.save_strategy) == (False, "no")


def test_a_dpo_run_by_rule_stops_at_the_kept_checkpoint(gpt2_pair_files, tokenizer):
    """End to end through TRL: the run ends at the first checkpoint the rule keeps, and the model it
    returns is that checkpoint's."""
    from dpoclaims.models.loading import load_hf_model

    rows = [{"prompt": p, "chosen": " fair.", "rejected": " awful."} for p in corpus.neutral_prompts(12, 0)]
    settings = DPOSettings(
        learning_rate=1e-3, batch_size=2, max_epochs=3, eval_every=2, warmup_steps=1, max_length=48
    )
    weights: dict[int, dict[str, torch.Tensor]] = {}

    def measure(model):
        step = 2 * (len(weights) + 1)
        weights[step] = {k: v.detach().clone() for k, v in model.state_dict().items()}
        return {"ratio": 0.4 if step == 4 else 0.9, "ppl": 0.0}

    rule = FirstInBand(every=2, measure=measure, bands=BANDS, progress=False)
    model = load_hf_model(str(gpt2_pair_files.base))
    run = train_dpo_run(model, tokenizer, rows[:8], rows[8:], settings, progress=False, checkpoint_rule=rule)
    assert run.steps == 4 < run.warmup.max_steps == 12
    assert sorted(weights) == [2, 4]
    for name, value in run.model.state_dict().items():
        assert torch.equal(value, weights[4][name]), name


def test_a_run_by_rule_refuses_a_checkpoint_directory(tmp_path, gpt2_pair_files, tokenizer):
    from dpoclaims.models.loading import load_hf_model

    rows = [{"prompt": p, "chosen": " fair.", "rejected": " awful."} for p in corpus.neutral_prompts(4, 0)]
    rule = FirstInBand(every=1, measure=lambda m: {}, bands=BANDS, progress=False)
    with pytest.raises(ValueError, match="keeps no checkpoints to resume from"):
        train_dpo_run(
            load_hf_model(str(gpt2_pair_files.base)),
            tokenizer,
            rows[:2],
            rows[2:],
            DPOSettings(warmup_steps=0, max_length=48),
            progress=False,
            checkpoint_dir=tmp_path,
            checkpoint_rule=rule,
        )
