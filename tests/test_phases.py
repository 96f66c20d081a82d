"""Where a run's time goes (dpoclaims.phases): off unless switched on; nested phases charged
their own time; one file per process, summed on reading; the claims' model passes counted."""

from __future__ import annotations

import time

import pytest

from dpoclaims import phases


@pytest.fixture
def switched_on(tmp_path, monkeypatch):
    monkeypatch.setenv(phases.ENV, str(tmp_path / "phases"))
    phases.reset()
    yield tmp_path / "phases"
    phases.reset()


def test_off_by_default_it_counts_nothing(monkeypatch):
    monkeypatch.delenv(phases.ENV, raising=False)
    phases.reset()
    with phases.phase("generation", tokens=10):
        pass
    assert phases.totals() == {}


def test_a_nested_phase_is_charged_to_itself_not_to_its_parent(switched_on):
    with phases.phase("searches"):
        time.sleep(0.05)
        with phases.phase("generation") as counted:
            time.sleep(0.1)
            counted["tokens"] = 640
    totals = phases.totals()
    assert 0.09 < totals["generation"]["seconds"] < 0.5
    assert 0.04 < totals["searches"]["seconds"] < 0.09  # its own 0.05 s, not the generation's
    assert (totals["generation"]["tokens"], totals["generation"]["calls"]) == (640, 1)


def test_each_process_writes_its_file_and_reading_sums_them(switched_on):
    with phases.phase("perplexity", tokens=100):
        pass
    phases.write()
    other = switched_on / "phases-1.json"
    other.write_text('{"perplexity": {"seconds": 2.0, "calls": 3, "tokens": 50}}')
    summed = phases.read(switched_on)
    assert summed["perplexity"]["calls"] == 4 and summed["perplexity"]["tokens"] == 150
    assert summed["perplexity"]["seconds"] >= 2.0


def test_the_model_passes_count_their_tokens(switched_on, gpt2_pair, tokenizer):
    from dpoclaims.measure.generation import GenerationSettings, greedy_generate
    from dpoclaims.measure.metrics import perplexity_rows

    prompts = [f"the plan {i} seems" for i in range(5)]
    greedy_generate(gpt2_pair.base, tokenizer, prompts, GenerationSettings(max_new_tokens=3), progress=False)
    perplexity_rows(gpt2_pair.base, tokenizer, ["a text to score", "another text"])
    totals = phases.totals()
    assert totals["generation"]["tokens"] >= len(prompts) * 4  # a prompt token and 3 new ones each, at least
    assert totals["perplexity"]["tokens"] >= 4


def test_as_a_decorator_each_call_is_charged(switched_on):
    @phases.phase("searches")
    def search() -> str:
        with phases.phase("generation", tokens=5):
            pass
        return "done"

    assert search() == "done" and search() == "done"
    totals = phases.totals()
    assert totals["searches"]["calls"] == 2 and totals["generation"]["tokens"] == 10
