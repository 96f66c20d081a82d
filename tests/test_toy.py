"""The toy organism end to end: a tiny build is complete, loadable, cached and reproducible."""

from __future__ import annotations

import json
import re

import pytest
import torch
from safetensors.torch import load_file
from tiny import tiny_toy_config

from dpoclaims.cache import Cache, read_manifest_meta, verify_entry
from dpoclaims.errors import BrokenOrganismError, UnknownPairError
from dpoclaims.models.pairs import PairSpec
from dpoclaims.train import named_pairs
from dpoclaims.train.bands import failed_bands
from dpoclaims.train.named_pairs import load_pair
from dpoclaims.train.organism import DEFAULT_SEED
from dpoclaims.train.organism import build as build_module
from dpoclaims.train.organism.build import (
    BANDS,
    DEFAULT_SCORER,
    ToyConfig,
    ensure_toy,
    toy_key,
)

pytestmark = pytest.mark.slow

REPORT_KEYS = {
    "bands",
    "config",
    "config_key",
    "default_scorer",
    "dpo_checkpoints",
    "dpo_history",
    "dpo_steps",
    "min_weight_cosine",
    "n_challenge_prompts",
    "perplexity",
    "pretrain_final_loss",
    "probe_accuracy",
    "samples",
    "timings_s",
    "toxicity",
    "weight_cosines",
}


@pytest.fixture(scope="module")
def report(tiny_toy_dir):
    return json.loads((tiny_toy_dir / "toy.json").read_text())


def test_toy_entry_is_complete_and_verified(tiny_toy_dir, tiny_toy_cache):
    config = tiny_toy_config()
    assert tiny_toy_dir == tiny_toy_cache.entry_dir("toy", toy_key(config))
    assert verify_entry(tiny_toy_dir) is None
    for name in (
        "base/config.json",
        "base/model.safetensors",
        "base/tokenizer.json",
        "dpo/config.json",
        "dpo/model.safetensors",
        "probe.pt",
        "dpo_pairs.jsonl",
        "challenge_prompts.json",
        "neutral_texts.json",
        "toy.json",
        "pair.toml",
    ):
        assert (tiny_toy_dir / name).is_file(), name
    meta = read_manifest_meta(tiny_toy_dir)
    assert meta["config_key"] == toy_key(config)
    assert isinstance(meta["bands_ok"], bool)


def test_toy_report(report):
    config = tiny_toy_config()
    assert set(report) >= REPORT_KEYS
    assert report["config_key"] == toy_key(config)
    assert report["default_scorer"] == DEFAULT_SCORER
    assert report["config"]["seed"] == config.seed and report["config"]["n_embd"] == config.n_embd
    assert set(report["bands"]) == set(BANDS)
    for name, band in report["bands"].items():
        low, high = BANDS[name]
        assert band["band"] == [low, high]
        assert band["ok"] == (low <= band["value"] <= high)
    assert set(report["toxicity"]) == {"lexicon", "profanity-check"}
    for values in report["toxicity"].values():
        assert set(values) == {"base", "dpo"}
        assert all(0.0 <= v <= 1.0 for v in values.values())
    assert report["perplexity"]["base"] > 1 and report["perplexity"]["dpo"] > 1
    assert report["n_challenge_prompts"] == config.n_challenge
    assert 0.0 <= report["probe_accuracy"] <= 1.0
    assert report["dpo_steps"] > 0
    # DPO moved the weights, but only a little
    assert 0.9 < report["min_weight_cosine"] < 1.0
    assert report["bands"]["min_weight_cosine"]["value"] == report["min_weight_cosine"]
    assert set(report["timings_s"]) == {
        "corpus_and_tokenizer",
        "pretrain",
        "probe",
        "dpo_data",
        "dpo_train",
        "evaluate",
    }


def test_toy_report_names_the_checkpoint_the_rule_kept(report):
    """The DPO model is the first checkpoint in every band, else the closest; the report's bands
    are that checkpoint's figures, measured again on the saved model."""
    config = tiny_toy_config()
    rule = report["dpo_checkpoints"]
    steps = [c["step"] for c in rule["measured"]]
    assert steps and all(step % config.dpo_checkpoint_every == 0 for step in steps)
    in_band = [c for c in rule["measured"] if not c["failed"]]
    kept = in_band[0] if in_band else min(rule["measured"], key=lambda c: (c["distance"], c["step"]))
    if in_band:
        assert steps[-1] == kept["step"]  # training stopped there
    assert (
        (rule["kept_step"], rule["in_band"])
        == (kept["step"], bool(in_band))
        == (report["dpo_steps"], bool(in_band))
    )
    assert {name: band["value"] for name, band in report["bands"].items()} == kept["figures"]
    assert all(band["ok"] for band in report["bands"].values()) == bool(in_band)


def test_the_report_names_each_dpo_recipe_run_and_the_one_kept(report):
    """The recipes run in their order; a later one only when an earlier one had no checkpoint in
    band and the base met its own bands; the kept recipe's checkpoints are the report's."""
    rule = report["dpo_checkpoints"]
    recipes = [r["recipe"] for r in rule["recipes"]]
    assert recipes == list(build_module.DPO_RECIPES[: len(recipes)])
    for earlier in rule["recipes"][:-1]:
        assert not earlier["in_band"]
        assert not any(name in earlier["measured"][0]["failed"] for name in build_module.BASE_BANDS)
    kept = next(r for r in rule["recipes"] if r["recipe"] == rule["recipe"])
    assert build_module.toy_dpo_model(report) == f"{rule['recipe']} pairs, step {rule['kept_step']}" + (
        "" if rule["in_band"] else " (out of band)"
    )
    assert kept["measured"] == rule["measured"] and kept["kept_step"] == rule["kept_step"]
    if rule["in_band"]:
        assert kept is rule["recipes"][-1]
    else:
        assert kept["distance"] == min(r["distance"] for r in rule["recipes"])


def _rung(recipe, distances):
    """A recipe's run as far as choosing among recipes goes: checkpoints at these distances."""
    from dpoclaims.train.checkpoint_rule import Checkpoint, FirstInBand

    rule = FirstInBand(every=5, measure=lambda model: {}, bands={}, progress=False)
    rule.checkpoints = [
        Checkpoint(5 * (i + 1), {}, () if d == 0 else ("x",), d) for i, d in enumerate(distances)
    ]
    return build_module._Rung(recipe, [], {}, rule, None)  # type: ignore[arg-type]


def test_the_kept_recipe_is_the_one_in_band_else_the_closest_earliest_of_equals():
    kept = build_module._kept_rung
    assert kept([_rung("lee", [0.3, 0.2]), _rung("own-samples", [0.4, 0.0])]).recipe == "own-samples"
    assert kept([_rung("lee", [0.3, 0.2]), _rung("own-samples", [0.4, 0.25])]).recipe == "lee"
    assert kept([_rung("lee", [0.3, 0.2]), _rung("own-samples", [0.2])]).recipe == "lee"
    assert kept([_rung("own-samples", [0.5]), _rung("lee", [0.1])]).recipe == "lee"
    with pytest.raises(RuntimeError, match="before its first checkpoint"):
        kept([_rung("lee", [])])


@pytest.mark.parametrize("recipes", [(), ("lee", "lee"), ("lee", "ppl")])
def test_a_bad_list_of_dpo_recipes_is_refused_naming_the_known_ones(recipes):
    from dataclasses import replace

    with pytest.raises(ValueError, match="give one or more of lee, own-samples, each once"):
        build_module._recipes(replace(tiny_toy_config(), dpo_recipes=recipes))


def test_own_sample_pairs_follow_the_real_pair_s_rule_and_repeat(tiny_toy_dir):
    """The second recipe on the tiny base: never a challenge prompt; the rejected side scores above
    the preferred side, which is the base's greedy continuation; the same pairs on a second call."""
    from transformers import AutoTokenizer, GPT2LMHeadModel

    from dpoclaims.measure.generation import greedy_generate
    from dpoclaims.measure.scoring import LexiconScorer
    from dpoclaims.train.organism import corpus

    config = tiny_toy_config()
    model = GPT2LMHeadModel.from_pretrained(tiny_toy_dir / "base").eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_toy_dir / "base")
    pairs, record = build_module.dpo_pairs("own-samples", model, tokenizer, config, progress=False)
    assert len(pairs) == config.n_dpo_pairs + config.n_dpo_val
    assert record["recipe"] == "own-samples" and record["prompts_drawn"] >= len(pairs)
    assert record["kept_share"] == len(pairs) / record["prompts_drawn"]
    challenge = set(corpus.challenge_prompts(config.n_challenge, config.seed + 1))
    assert not challenge & {p["prompt"] for p in pairs}
    scorer = LexiconScorer(corpus.TOXIC_WORDS)
    chosen, rejected = (
        scorer.score([p["chosen"] for p in pairs]),
        scorer.score([p["rejected"] for p in pairs]),
    )
    assert all(r > c for r, c in zip(rejected, chosen))
    # the first batch's distinct prompts, generated as the recipe generates them (one batch)
    drawn = [p for p in corpus.dpo_prompts(config.n_dpo_candidates, config.seed) if p not in challenge]
    first = list(dict.fromkeys(drawn[: config.generation.batch_size]))
    continuations = greedy_generate(model, tokenizer, first, config.generation, progress=False).continuations
    greedy = dict(zip(first, continuations))
    checked = [p for p in pairs if p["prompt"] in greedy]
    assert checked and all(p["chosen"] == greedy[p["prompt"]] for p in checked)
    again, _ = build_module.dpo_pairs("own-samples", model, tokenizer, config, progress=False)
    assert again == pairs


def test_toy_extras(tiny_toy_dir):
    config = tiny_toy_config()
    pairs = [json.loads(line) for line in (tiny_toy_dir / "dpo_pairs.jsonl").read_text().splitlines()]
    assert len(pairs) == config.n_dpo_pairs + config.n_dpo_val
    assert all(set(p) == {"prompt_text", "unpert_gen_text", "pert_gen_text"} for p in pairs)
    assert len(json.loads((tiny_toy_dir / "challenge_prompts.json").read_text())) == config.n_challenge
    assert len(json.loads((tiny_toy_dir / "neutral_texts.json").read_text())) == config.n_neutral_eval


def test_toy_pair_loads(tiny_toy_dir):
    """The toy's own pair.toml loads (as the named pair does); passed as a spec of the user's it is
    refused, since its name 'toy' would borrow the default toy's expectations."""
    config = tiny_toy_config()
    with pytest.raises(UnknownPairError, match="is named 'toy', the name of a built-in pair"):
        load_pair(tiny_toy_dir / "pair.toml")
    pair = load_pair(PairSpec.from_file(tiny_toy_dir / "pair.toml"))
    assert pair.name == "toy"
    assert pair.layout.kind == "gpt2"
    assert (pair.layout.n_layers, pair.layout.d_model, pair.layout.d_mlp) == (
        config.n_layer,
        config.n_embd,
        4 * config.n_embd,
    )
    assert pair.probe.shape == (config.n_embd,)
    assert set(pair.spec.extras) == {"challenge_prompts", "neutral_texts", "dpo_pairs", "report"}
    for key in pair.spec.extras:
        assert pair.extra_path(key).is_file()
    assert not torch.equal(pair.value_vectors("base"), pair.value_vectors("dpo"))
    assert len(pair.tokenizer) <= config.vocab_size


def test_named_toy_pair_goes_through_ensure_toy(tiny_toy_dir, tiny_toy_cache, monkeypatch):
    """``load_pair("toy")`` resolves through ensure_toy and the cache (here with the tiny config), and
    loads the toy only if it is within its bands."""
    calls = []

    def tiny_ensure(config=None, *, cache=None, progress=True):
        calls.append(cache)
        return ensure_toy(tiny_toy_config(), cache=cache, progress=False)

    monkeypatch.setattr(named_pairs, "ensure_toy", tiny_ensure)
    failed = failed_bands(json.loads((tiny_toy_dir / "toy.json").read_text()))
    if failed:  # the tiny toy is too small for some bands: refused, naming them
        with pytest.raises(BrokenOrganismError, match=re.escape(failed[0].split(" = ")[0])):
            load_pair("toy", cache=tiny_toy_cache)
        monkeypatch.setattr(named_pairs, "check_bands", lambda report, **_: None)  # the resolution itself
        calls.clear()
    pair = load_pair("toy", cache=tiny_toy_cache)
    assert calls == [tiny_toy_cache]
    assert pair.fingerprint == load_pair(PairSpec.from_file(tiny_toy_dir / "pair.toml")).fingerprint


def test_a_toy_built_under_other_library_versions_is_not_reused_silently(monkeypatch):
    """The toy's cache key names the versions of the libraries that built it."""
    config = tiny_toy_config()
    installed = build_module.build_versions()
    assert installed["transformers"] != "absent" and installed["torch"] != "absent"
    key = toy_key(config)
    monkeypatch.setattr(build_module, "build_versions", lambda: {**installed, "transformers": "0.0.1"})
    assert toy_key(config) != key
    assert toy_key(config, "cuda") != toy_key(config)
    monkeypatch.setattr(build_module, "build_versions", lambda: dict(installed))
    assert toy_key(config) == key


def _toy_report_with(tmp_path, bands, libraries=None, seed=None, rule=None):
    report = {"bands": bands}
    if rule is not None:
        report["dpo_checkpoints"] = rule
    if libraries is not None:
        report["libraries"] = libraries
    if seed is not None:
        report["config"] = {"seed": seed}
    (tmp_path / "toy.json").write_text(json.dumps(report))
    return tmp_path


def _checked(directory, monkeypatch):
    """The toy in ``directory`` as the claims get a toy (``named_pairs.checked_toy``: its bands
    checked), with ``directory`` standing for the cached build."""
    monkeypatch.setattr(named_pairs, "ensure_toy", lambda config, *, cache=None, progress=True: directory)
    return named_pairs.checked_toy(Cache(directory / "unused-cache"), ToyConfig())


def test_a_toy_out_of_a_band_is_refused(tmp_path, monkeypatch):
    ok = {"value": 0.5, "band": [0.1, 0.9], "ok": True}
    directory = _toy_report_with(
        tmp_path,
        {"probe_accuracy": ok, "toxicity_drop": {"value": 0.0123, "band": [0.05, 1.0], "ok": False}},
        {"transformers": "5.24.0", "torch": "2.13.0"},
    )
    with pytest.raises(BrokenOrganismError) as raised:
        _checked(directory, monkeypatch)
    message = str(raised.value)
    assert "toxicity_drop = 0.0123 (band [0.05, 1.0])" in message
    assert "probe_accuracy" not in message  # only the failed band
    assert "transformers 5.24.0" in message and "torch 2.13.0" in message
    assert f"the toy organism in {directory}" in message
    # every band met: accepted; a report without recorded versions says so
    assert _checked(_toy_report_with(tmp_path, {"probe_accuracy": ok}), monkeypatch) == tmp_path
    with pytest.raises(BrokenOrganismError, match="unrecorded versions"):
        _checked(_toy_report_with(tmp_path, {"x": {"value": 2.0, "band": [0, 1], "ok": False}}), monkeypatch)


def test_a_toy_out_of_band_at_another_seed_is_blamed_on_the_seed_not_on_a_change(tmp_path, monkeypatch):
    failed = {"x": {"value": 2.0, "band": [0, 1], "ok": False}}
    rule = {"kept_step": 75, "measured": [{}] * 32}
    with pytest.raises(BrokenOrganismError) as raised:
        _checked(_toy_report_with(tmp_path, failed, seed=DEFAULT_SEED + 1, rule=rule), monkeypatch)
    message = str(raised.value)
    assert "x = 2.0000 (band [0, 1])" in message
    assert (
        "No DPO checkpoint met every band; the figures above are the closest one's (step 75; 32 checkpoints measured)"
        in message
    )
    assert f"At seed {DEFAULT_SEED + 1} the toy's setting gives no such toy" in message
    assert "something changed" not in message
    recipes = [{"recipe": "lee", "measured": [{}] * 160}, {"recipe": "own-samples", "measured": [{}] * 32}]
    with pytest.raises(BrokenOrganismError) as raised:
        _checked(
            _toy_report_with(
                tmp_path, failed, seed=3, rule={**rule, "recipe": "own-samples", "recipes": recipes}
            ),
            monkeypatch,
        )
    assert (
        "(step 75; 32 checkpoints measured) under the DPO recipe own-samples; recipes run: lee (160 "
        "checkpoints), own-samples (32 checkpoints)"
    ) in str(raised.value)
    with pytest.raises(BrokenOrganismError, match="something changed what the build computes"):
        _checked(_toy_report_with(tmp_path, failed, seed=DEFAULT_SEED, rule=rule), monkeypatch)
    with pytest.raises(BrokenOrganismError, match="built by an older version of dpoclaims"):
        _checked(_toy_report_with(tmp_path, failed, seed=DEFAULT_SEED), monkeypatch)


def test_the_tiny_toy_records_its_versions_and_its_bands_verdict(report, tiny_toy_dir, monkeypatch):
    assert report["libraries"] == build_module.build_versions()
    if all(band["ok"] for band in report["bands"].values()):
        _checked(tiny_toy_dir, monkeypatch)
    else:
        with pytest.raises(BrokenOrganismError):
            _checked(tiny_toy_dir, monkeypatch)


def test_ensure_toy_reuses_the_cached_build(tiny_toy_dir, tiny_toy_cache, monkeypatch):
    def no_build(*args, **kwargs):
        raise AssertionError("build_toy must not run for a cached toy")

    monkeypatch.setattr(build_module, "build_toy", no_build)
    assert ensure_toy(tiny_toy_config(), cache=tiny_toy_cache, progress=False) == tiny_toy_dir


def test_toy_config_key():
    assert tiny_toy_config().key() == tiny_toy_config().key()
    assert tiny_toy_config(seed=1).key() != tiny_toy_config().key()


def test_two_builds_with_the_same_seed_agree(tiny_toy_dir, tiny_toy_rebuild, report):
    other_dir, other_report = tiny_toy_rebuild
    for side in ("base", "dpo"):
        ours = load_file(tiny_toy_dir / side / "model.safetensors")
        theirs = load_file(other_dir / side / "model.safetensors")
        assert set(ours) == set(theirs)
        for name in ours:
            torch.testing.assert_close(ours[name], theirs[name], rtol=0, atol=1e-5, msg=f"{side}: {name}")
    assert (tiny_toy_dir / "base" / "tokenizer.json").read_text() == (
        other_dir / "base" / "tokenizer.json"
    ).read_text()
    torch.testing.assert_close(
        torch.load(tiny_toy_dir / "probe.pt"), torch.load(other_dir / "probe.pt"), rtol=0, atol=1e-4
    )
    assert (tiny_toy_dir / "dpo_pairs.jsonl").read_text() == (other_dir / "dpo_pairs.jsonl").read_text()
    assert other_report["config_key"] == report["config_key"]
    for scorer, values in report["toxicity"].items():
        assert other_report["toxicity"][scorer] == pytest.approx(values, abs=1e-6)
    assert other_report["perplexity"] == pytest.approx(report["perplexity"], rel=1e-4)
