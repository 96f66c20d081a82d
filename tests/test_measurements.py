"""The measurement cache: every artifact round-trips through its own save/load, an artifact's
format is part of its cache key, and activations are recorded only on the passes without
intervention and on those the caller declares (``recorded_passes``), where the evaluation then
scores the capture's continuations instead of generating again."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from dpoclaims.cache import Cache
from dpoclaims.hooks.interventions import Intervention
from dpoclaims.measure import measurements as measurements_module
from dpoclaims.measure.capture import Capture
from dpoclaims.measure.decomposition import Decomposition
from dpoclaims.measure.evaluation import Evaluation, PerplexityRows
from dpoclaims.measure.measurements import Measurements, MeasurementSettings
from dpoclaims.measure.metrics import ContinuationF1
from dpoclaims.train.named_pairs import load_pair

ARTIFACTS = (Capture, Evaluation, PerplexityRows, ContinuationF1)
SETTINGS = MeasurementSettings(scorer="profanity-check")  # the tiny pair has no lexicon of its own


def test_every_artifact_names_its_own_cache_kind_and_format():
    assert len({artifact.KIND for artifact in ARTIFACTS}) == len(ARTIFACTS)
    assert all(isinstance(artifact.FORMAT, int) for artifact in ARTIFACTS)


def test_a_capture_round_trips(tmp_path):
    mean_activation = torch.randn(3, 2, 5, generator=torch.Generator().manual_seed(0))  # [prompts, L, d_mlp]
    saved = Capture(mean_activation, torch.tensor([4.0, 1.0, 6.0]), ["a b", "", "ç ☃"], [[1, 2], [], [7]])
    saved.save(tmp_path)
    loaded = Capture.load(tmp_path)
    assert torch.equal(loaded.mean_activation, saved.mean_activation)
    assert torch.equal(loaded.n_positions, saved.n_positions)
    assert (loaded.continuations, loaded.continuation_ids) == (saved.continuations, saved.continuation_ids)


def test_an_evaluation_round_trips(tmp_path):
    saved = Evaluation("dpo", "ablate-2-abc", {"lexicon": [0.0, 0.25, 1 / 3]}, ["x", "y z", ""])
    saved.save(tmp_path)
    assert Evaluation.load(tmp_path) == saved


def test_perplexity_rows_round_trip_exactly(tmp_path):
    saved = PerplexityRows(np.array([12.5, 1 / 3, 0.0]), np.array([10.0, 3.0, 1.0]))  # [n_rows] each
    saved.save(tmp_path)
    loaded = PerplexityRows.load(tmp_path)
    assert loaded.nll.dtype == loaded.tokens.dtype == np.float64
    np.testing.assert_array_equal(loaded.nll, saved.nll)
    np.testing.assert_array_equal(loaded.tokens, saved.tokens)


def test_a_continuation_f1_round_trips_exactly(tmp_path):
    saved = ContinuationF1(np.array([0.5, 1 / 7]), (0, 2), 1, ("p0", "p2"), ("r0", "r2"), ("c0", "c2"))
    saved.save(tmp_path)
    loaded = ContinuationF1.load(tmp_path)
    np.testing.assert_array_equal(loaded.scores, saved.scores)
    assert (loaded.used, loaded.n_skipped, loaded.prompts, loaded.references, loaded.continuations) == (
        saved.used,
        saved.n_skipped,
        saved.prompts,
        saved.references,
        saved.continuations,
    )


@pytest.fixture
def spec(tmp_path, gpt2_pair_files):
    from tiny import write_spec

    root = gpt2_pair_files.root
    (tmp_path / "prompts.json").write_text(json.dumps([f"the plan {i} seems" for i in range(12)]))
    return write_spec(
        tmp_path / "pair.toml",
        name="tiny",
        base=str(root / "base"),
        dpo=str(root / "dpo"),
        probe=str(root / "probe.pt"),
        extras={"challenge_prompts": str(tmp_path / "prompts.json")},
    )


@pytest.fixture
def passes(monkeypatch):
    """The generation passes Measurements runs, as ``(kind, side, intervention id)``."""
    log: list[tuple[str, str, str]] = []
    capture, evaluate = measurements_module.capture, measurements_module.evaluate

    def logged_capture(pair, side, *args, **kwargs):
        log.append(("capture", side, kwargs["intervention"].id))
        return capture(pair, side, *args, **kwargs)

    def logged_evaluate(pair, side, prompts, settings, intervention, **kwargs):
        log.append(("evaluate", side, intervention.id))
        return evaluate(pair, side, prompts, settings, intervention, **kwargs)

    monkeypatch.setattr(measurements_module, "capture", logged_capture)
    monkeypatch.setattr(measurements_module, "evaluate", logged_evaluate)
    return log


def ablation(pair) -> Intervention:
    return Intervention("ablate", tuple(range(0, pair.layout.n_neurons, 3)), label="ablate every third")


def test_without_a_declaration_only_the_passes_without_intervention_are_recorded(tmp_path, spec, passes):
    cache = Cache(tmp_path / "cache")
    m = Measurements(load_pair(spec, cache=cache), cache, SETTINGS, progress=False)
    ablate = ablation(m.pair)
    m.evaluation("base")
    m.evaluation("base", ablate)
    assert m.declared_passes == ()
    assert not m.has_capture("base", ablate)
    # the unintervened evaluation scores the capture's continuations; the ablation generates alone
    assert passes == [("capture", "base", "none"), ("evaluate", "base", ablate.id)]


def test_a_declared_pass_is_recorded_and_its_evaluation_scores_the_capture(tmp_path, spec, passes):
    cache = Cache(tmp_path / "cache")
    pair = load_pair(spec, cache=cache)
    ablate = ablation(pair)
    seen: list[Decomposition] = []

    def declared(d: Decomposition):
        seen.append(d)
        return [("base", ablate)]

    m = Measurements(pair, cache, SETTINGS, recorded_passes=declared, progress=False)
    declared_evaluation = m.evaluation("base", ablate)
    assert len(seen) == 1 and seen[0] is m.decomposition
    assert m.declared_passes == (("base", ablate),)
    assert m.has_capture("base", ablate)
    m.evaluation("dpo", ablate)  # the same intervention on the other side: not declared
    assert sorted(passes) == sorted(
        [
            ("capture", "base", "none"),
            ("capture", "dpo", "none"),
            ("capture", "base", ablate.id),
            ("evaluate", "dpo", ablate.id),
        ]
    )
    # scoring the capture's continuations gives what a generation of its own gives
    separate = Cache(tmp_path / "separate")
    generated = Measurements(pair, separate, SETTINGS, progress=False).evaluation("base", ablate)
    assert generated == declared_evaluation


def test_an_artifacts_format_is_part_of_its_cache_key(tmp_path, spec, monkeypatch):
    cache = Cache(tmp_path / "cache")
    m = Measurements(load_pair(spec, cache=cache), cache, SETTINGS, progress=False)
    m.capture("base")
    assert Measurements(m.pair, cache, SETTINGS, progress=False).has_capture("base")
    monkeypatch.setattr(Capture, "FORMAT", Capture.FORMAT + 1)  # an entry of an older format ...
    assert not Measurements(m.pair, cache, SETTINGS, progress=False).has_capture("base")  # ... is not read
