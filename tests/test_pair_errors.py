"""Pair validation: every bad input raises a specific dpoclaims error naming the culprit."""

from __future__ import annotations

import os
import shutil

import pytest
import torch
from tiny import D_MODEL, write_spec

from dpoclaims.cache import Cache
from dpoclaims.errors import CheckpointError, DpoclaimsError, PairMismatchError, UnknownPairError
from dpoclaims.models.pairs import PairSpec
from dpoclaims.train.named_pairs import load_pair


@pytest.fixture(scope="module")
def variants(tmp_path_factory, make_gpt2, vocab_size):
    """HF directories of GPT-2 models that do not fit the tiny pair's base."""
    root = tmp_path_factory.mktemp("variants")
    configs = {
        "n_layer": dict(n_layer=3),
        "n_embd": dict(n_embd=48),
        "n_inner": dict(n_inner=64),
        "vocab": dict(vocab_size=vocab_size + 10),
        "small_vocab": dict(vocab_size=vocab_size - 50),
    }
    out = {}
    for name, overrides in configs.items():
        make_gpt2(5, **overrides).save_pretrained(root / name)
        out[name] = root / name
    return out


def _spec(tmp_path, files, **overrides):
    keys = dict(
        name="bad",
        base=str(files.base),
        dpo=str(files.dpo),
        probe=str(files.probe),
        tokenizer=str(files.tokenizer),
    )
    keys.update(overrides)
    keys = {k: v for k, v in keys.items() if v is not None}
    return write_spec(tmp_path / "pair.toml", **keys)


def _load(spec, tmp_path):
    return load_pair(spec, cache=Cache(tmp_path / "cache"))


def test_error_classes_share_a_base():
    for cls in (CheckpointError, PairMismatchError, UnknownPairError):
        assert issubclass(cls, DpoclaimsError)


# --------------------------------------------------------------------------- unknown pairs / specs


def test_unknown_pair_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UnknownPairError, match="no_such_pair") as info:
        load_pair("no_such_pair", cache=Cache(tmp_path / "cache"))
    assert "toy" in str(info.value)  # lists the named pairs
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())


def test_missing_spec_file(tmp_path):
    with pytest.raises(UnknownPairError, match="nowhere.toml"):
        load_pair(tmp_path / "nowhere.toml", cache=Cache(tmp_path / "cache"))


def test_spec_with_unknown_keys(tmp_path, gpt2_pair_files):
    spec = _spec(tmp_path, gpt2_pair_files, checkpoint="x", colour="blue")
    with pytest.raises(UnknownPairError, match="unknown keys") as info:
        _load(spec, tmp_path)
    assert "checkpoint" in str(info.value) and "colour" in str(info.value)


@pytest.mark.parametrize("missing", ["base", "dpo", "probe"])
def test_spec_with_missing_keys(tmp_path, gpt2_pair_files, missing):
    spec = _spec(tmp_path, gpt2_pair_files, **{missing: None})
    with pytest.raises(UnknownPairError, match=f"'{missing}'"):
        _load(spec, tmp_path)


def test_spec_with_wrong_suffix_or_syntax(tmp_path):
    yaml = tmp_path / "pair.yaml"
    yaml.write_text("base: x\n")
    with pytest.raises(UnknownPairError, match="toml or .json"):
        PairSpec.from_file(yaml)
    broken = tmp_path / "broken.toml"
    broken.write_text("base = [unclosed\n")
    with pytest.raises(UnknownPairError, match="broken.toml"):
        PairSpec.from_file(broken)
    broken_json = tmp_path / "broken.json"
    broken_json.write_text("{not json")
    with pytest.raises(UnknownPairError, match="broken.json"):
        PairSpec.from_file(broken_json)


def test_unknown_extra(gpt2_pair):
    with pytest.raises(UnknownPairError, match="nonexistent_extra"):
        gpt2_pair.extra_path("nonexistent_extra")


# --------------------------------------------------------------------------- checkpoints


def test_missing_base_dir_absolute(tmp_path, gpt2_pair_files):
    missing = tmp_path / "no_base_here"
    with pytest.raises(CheckpointError, match="no_base_here"):
        _load(_spec(tmp_path, gpt2_pair_files, base=str(missing)), tmp_path)


def test_missing_base_dir_relative(tmp_path, gpt2_pair_files, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CheckpointError, match="no_base_here"):
        _load(_spec(tmp_path, gpt2_pair_files, base="no_base_here"), tmp_path)


def test_missing_base_without_tokenizer_key(tmp_path, gpt2_pair_files):
    """Without a tokenizer key the tokenizer comes from the (missing) base: still a
    CheckpointError naming it."""
    missing = tmp_path / "no_base_here"
    with pytest.raises(CheckpointError, match="no_base_here"):
        _load(_spec(tmp_path, gpt2_pair_files, base=str(missing), tokenizer=None), tmp_path)


def test_missing_dpo_pt(tmp_path, gpt2_pair_files):
    with pytest.raises(CheckpointError, match="dpo_missing.pt"):
        _load(_spec(tmp_path, gpt2_pair_files, dpo="dpo_missing.pt"), tmp_path)


def test_corrupt_dpo_pt(tmp_path, gpt2_pair_files):
    (tmp_path / "dpo.pt").write_bytes(os.urandom(4096))
    with pytest.raises(CheckpointError, match="dpo.pt"):
        _load(_spec(tmp_path, gpt2_pair_files, dpo="dpo.pt"), tmp_path)


def test_truncated_dpo_pt(tmp_path, gpt2_pair_files):
    data = gpt2_pair_files.dpo_pt.read_bytes()
    (tmp_path / "dpo.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="dpo.pt"):
        _load(_spec(tmp_path, gpt2_pair_files, dpo="dpo.pt"), tmp_path)


def test_dpo_pt_without_state_dict(tmp_path, gpt2_pair_files):
    torch.save({"state": {"a": 1}, "step": 3}, tmp_path / "dpo.pt")
    with pytest.raises(CheckpointError, match="dpo.pt"):
        _load(_spec(tmp_path, gpt2_pair_files, dpo="dpo.pt"), tmp_path)


def test_directory_without_config(tmp_path, gpt2_pair_files):
    dpo = tmp_path / "dpo_noconfig"
    shutil.copytree(gpt2_pair_files.dpo, dpo)
    (dpo / "config.json").unlink()
    with pytest.raises(CheckpointError, match="dpo_noconfig") as info:
        _load(_spec(tmp_path, gpt2_pair_files, dpo=str(dpo)), tmp_path)
    assert "config.json" in str(info.value)


def test_directory_with_corrupt_weights(tmp_path, gpt2_pair_files):
    dpo = tmp_path / "dpo_corrupt"
    shutil.copytree(gpt2_pair_files.dpo, dpo)
    (dpo / "model.safetensors").write_bytes(os.urandom(2048))
    with pytest.raises(CheckpointError, match="dpo_corrupt"):
        _load(_spec(tmp_path, gpt2_pair_files, dpo=str(dpo)), tmp_path)


def test_missing_probe(tmp_path, gpt2_pair_files):
    with pytest.raises(CheckpointError, match="probe_missing.pt"):
        _load(_spec(tmp_path, gpt2_pair_files, probe="probe_missing.pt"), tmp_path)


def test_corrupt_probe(tmp_path, gpt2_pair_files):
    (tmp_path / "probe.pt").write_bytes(os.urandom(1000))
    with pytest.raises(CheckpointError, match="probe.pt"):
        _load(_spec(tmp_path, gpt2_pair_files, probe="probe.pt"), tmp_path)


@pytest.mark.parametrize("bad", ["zero", "nan", "not_tensor"])
def test_degenerate_probe(tmp_path, gpt2_pair_files, bad):
    value = {
        "zero": torch.zeros(D_MODEL),
        "nan": torch.full((D_MODEL,), float("nan")),
        "not_tensor": {"w": [1.0] * D_MODEL},
    }[bad]
    torch.save(value, tmp_path / "probe.pt")
    with pytest.raises(CheckpointError, match="probe.pt"):
        _load(_spec(tmp_path, gpt2_pair_files, probe="probe.pt"), tmp_path)


def test_probe_with_wrong_size(tmp_path, gpt2_pair_files):
    torch.save(torch.randn(D_MODEL + 3), tmp_path / "probe.pt")
    with pytest.raises(PairMismatchError, match="probe.pt") as info:
        _load(_spec(tmp_path, gpt2_pair_files, probe="probe.pt"), tmp_path)
    assert str(D_MODEL + 3) in str(info.value) and str(D_MODEL) in str(info.value)


def test_probe_in_a_dict_and_2d_is_accepted(tmp_path, gpt2_pair_files):
    torch.save({"weight": torch.ones(1, D_MODEL)}, tmp_path / "probe.pt")
    pair = _load(_spec(tmp_path, gpt2_pair_files, probe="probe.pt"), tmp_path)
    assert pair.probe.shape == (D_MODEL,)


# --------------------------------------------------------------------------- mismatched architectures


@pytest.mark.parametrize(
    "variant, words",
    [
        ("n_layer", ["n_layers", "2", "3"]),
        ("n_embd", ["d_model", "32", "48"]),
        ("n_inner", ["d_mlp", "128", "64"]),
        ("vocab", ["vocabulary"]),
    ],
)
def test_mismatched_architecture(tmp_path, gpt2_pair_files, variants, variant, words):
    with pytest.raises(PairMismatchError) as info:
        _load(_spec(tmp_path, gpt2_pair_files, dpo=str(variants[variant])), tmp_path)
    for word in words:
        assert word in str(info.value)


def test_mismatched_model_type(tmp_path, gpt2_pair_files, llama_pair_files):
    with pytest.raises(PairMismatchError, match="llama"):
        _load(_spec(tmp_path, gpt2_pair_files, dpo=str(llama_pair_files.dpo)), tmp_path)


def test_tokenizer_larger_than_vocabulary(tmp_path, gpt2_pair_files, variants):
    spec = _spec(
        tmp_path, gpt2_pair_files, base=str(variants["small_vocab"]), dpo=str(variants["small_vocab"])
    )
    with pytest.raises(PairMismatchError, match="tokenizer"):
        _load(spec, tmp_path)


@pytest.mark.parametrize("variant", ["n_embd", "n_inner", "vocab"])
def test_state_dict_with_wrong_shapes(tmp_path, gpt2_pair_files, variants, variant):
    from transformers import GPT2LMHeadModel

    torch.save(
        {"state": GPT2LMHeadModel.from_pretrained(variants[variant]).state_dict()}, tmp_path / "dpo.pt"
    )
    with pytest.raises(PairMismatchError, match="dpo.pt") as info:
        _load(_spec(tmp_path, gpt2_pair_files, dpo="dpo.pt"), tmp_path)
    assert "wrong shape" in str(info.value)


def test_state_dict_with_extra_layers(tmp_path, gpt2_pair_files, variants):
    from transformers import GPT2LMHeadModel

    torch.save(
        {"state": GPT2LMHeadModel.from_pretrained(variants["n_layer"]).state_dict()}, tmp_path / "dpo.pt"
    )
    with pytest.raises(PairMismatchError, match="unexpected") as info:
        _load(_spec(tmp_path, gpt2_pair_files, dpo="dpo.pt"), tmp_path)
    assert "transformer.h.2" in str(info.value)


def test_state_dict_with_missing_tensors(tmp_path, gpt2_pair_files):
    state = torch.load(gpt2_pair_files.dpo_pt, weights_only=True)["state"]
    del state["transformer.h.1.mlp.c_proj.weight"]
    torch.save({"state": state}, tmp_path / "dpo.pt")
    with pytest.raises(PairMismatchError, match="missing") as info:
        _load(_spec(tmp_path, gpt2_pair_files, dpo="dpo.pt"), tmp_path)
    assert "transformer.h.1.mlp.c_proj.weight" in str(info.value)


def test_missing_relative_base_is_not_taken_from_cwd(tmp_path, gpt2_pair_files, monkeypatch):
    """PairSpec: 'Paths are absolute or relative to root'. A spec whose relative ``base`` is
    missing next to it must fail, not silently load a same-named directory from the cwd."""
    cwd = tmp_path / "elsewhere"
    shutil.copytree(gpt2_pair_files.base, cwd / "base")
    monkeypatch.chdir(cwd)
    spec_dir = tmp_path / "spec"
    spec = _spec(spec_dir, gpt2_pair_files, base="base")  # spec_dir/base does not exist
    with pytest.raises(CheckpointError, match="base"):
        _load(spec, tmp_path)
