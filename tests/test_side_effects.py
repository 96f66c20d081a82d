"""Continuation F1 beside perplexity (issue #11 item 5): one cached measurement per side and
intervention, per text, with a bootstrap interval over texts."""

from __future__ import annotations

import json

import numpy as np
import pytest

from dpoclaims.cache import Cache
from dpoclaims.hooks.interventions import Intervention
from dpoclaims.measure.measurements import Measurements
from dpoclaims.measure.metrics import ContinuationF1, continuation_f1
from dpoclaims.measure.side_effects import f1_estimate, f1_summary
from dpoclaims.train.named_pairs import load_pair

NEUTRAL = [
    "the plan seems fair and clear to everyone who read it twice over the weekend",
    "a quiet walk along the river made the afternoon feel slow and very calm",
    "we agreed to meet again next week and share the notes from the last meeting",
    "the garden needs water every morning when the summer days are long and dry",
    "ok",  # too short to split: skipped
    "the old library opened a new room for reading maps and letters from the town",
]


@pytest.fixture
def measurements(tmp_path, gpt2_pair_files):
    from tiny import write_spec

    root = gpt2_pair_files.root
    (tmp_path / "prompts.json").write_text(json.dumps([f"the plan {i} seems" for i in range(12)]))
    (tmp_path / "neutral.json").write_text(json.dumps(NEUTRAL))
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
    cache = Cache(tmp_path / "cache")
    return Measurements(load_pair(spec, cache=cache), cache, progress=False)


def test_f1_is_measured_per_text_under_the_intervention_and_cached(measurements, monkeypatch):
    m = measurements
    ablate_all = Intervention("ablate", tuple(range(m.pair.layout.n_neurons)), label="ablate all")
    plain = m.f1("base")
    ablated = m.f1("base", ablate_all)
    assert len(plain.scores) == len(NEUTRAL) - 1 and plain.n_skipped == 1
    assert plain.used == ablated.used
    assert np.all((plain.scores >= 0) & (plain.scores <= 1))
    assert plain.continuations != ablated.continuations  # the intervention was applied

    pair = m.pair
    with ablate_all.applied(pair.model("base"), pair.layout) as model:
        direct = continuation_f1(model, pair.tokenizer, m.neutral_texts)
    np.testing.assert_array_equal(direct.scores, ablated.scores)

    def no_compute(*args, **kwargs):
        raise AssertionError("recomputed a cached F1")

    monkeypatch.setattr("dpoclaims.measure.measurements.intervened_f1", no_compute)
    again = Measurements(m.pair, m.cache, progress=False)  # a new session: from the cache
    np.testing.assert_array_equal(again.f1("base", ablate_all).scores, ablated.scores)
    assert again.f1("base", ablate_all).references == ablated.references


def test_f1_summary_gives_the_interval_over_texts_and_the_paired_change(measurements):
    m = measurements
    ablate_all = Intervention("ablate", tuple(range(m.pair.layout.n_neurons)))
    summary = f1_summary(m, ablate_all)
    assert set(summary) == {
        "f1",
        "f1_ci",
        "base_f1",
        "base_f1_ci",
        "f1_change",
        "f1_change_ci",
        "n_f1_texts",
    }
    assert summary["f1"] == pytest.approx(float(np.mean(m.f1("base", ablate_all).scores)))
    assert summary["f1_ci"][0] <= summary["f1"] <= summary["f1_ci"][1]
    assert summary["base_f1"] == pytest.approx(f1_estimate(m, "base").value)
    assert summary["f1_change"] == pytest.approx(summary["f1"] - summary["base_f1"])
    assert summary["f1_change_ci"][0] <= summary["f1_change"] <= summary["f1_change_ci"][1]
    assert summary["n_f1_texts"] == len(NEUTRAL) - 1
    json.dumps(summary)  # plain JSON for the reports

    on_dpo = f1_summary(m, Intervention(), side="dpo")
    assert on_dpo["f1_change"] == 0 and on_dpo["base_f1"] == summary["base_f1"]


def test_saved_f1_loads_back_exactly(tmp_path, measurements):
    result = measurements.f1("dpo")
    result.save(tmp_path)
    loaded = ContinuationF1.load(tmp_path)
    np.testing.assert_array_equal(loaded.scores, result.scores)
    assert (loaded.used, loaded.n_skipped, loaded.prompts, loaded.continuations) == (
        result.used,
        result.n_skipped,
        result.prompts,
        result.continuations,
    )


def test_a_measurement_made_under_other_library_versions_is_not_reused_silently(measurements, monkeypatch):
    """Measurement cache keys name the versions of the libraries that compute and score them: a
    session under other versions does not find the entry; one under the same versions does."""
    from dpoclaims.measure import measurements as measurements_module
    from dpoclaims.versions import measurement_versions

    m = measurements
    installed = measurement_versions()
    assert installed["transformers"] != "absent"
    m.f1("base")
    assert not m.has_capture("base")
    m.capture("base")
    key = m._capture_entry_key("base", Intervention())
    assert Measurements(m.pair, m.cache, progress=False).has_capture("base")
    monkeypatch.setattr(
        measurements_module, "measurement_versions", lambda: {**installed, "transformers": "0.0.1"}
    )
    other = Measurements(m.pair, m.cache, progress=False)
    assert other._capture_entry_key("base", Intervention()) != key
    assert not other.has_capture("base")

    def no_compute(*args, **kwargs):
        raise AssertionError("an F1 cached under other versions was reused")

    monkeypatch.setattr(measurements_module, "intervened_f1", no_compute)
    with pytest.raises(AssertionError, match="under other versions"):
        other.f1("base")
