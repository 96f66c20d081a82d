"""The paper pair's loading path on a randomly initialised gpt2-medium-shaped stand-in, saved
in exactly the formats of the real files: an HF directory for the base, Lee et al.'s ``dpo.pt``
(a state dict under ``"state"``) and ``probe.pt`` (a vector of d_model), found through the
``gpt2-medium`` named pair's environment variables."""

from __future__ import annotations

import pytest
import torch

from dpoclaims.cache import Cache
from dpoclaims.errors import CheckpointError
from dpoclaims.train.named_pairs import load_pair


@pytest.mark.slow
def test_gpt2_medium_shaped_stand_in_loads_through_the_named_pair(tmp_path, tokenizer_dir, monkeypatch):
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    config = GPT2Config(n_layer=24, n_embd=1024, n_head=16, n_positions=1024, vocab_size=50257)
    torch.manual_seed(0)
    base = GPT2LMHeadModel(config)
    base.save_pretrained(tmp_path / "gpt2-medium")
    AutoTokenizer.from_pretrained(tokenizer_dir).save_pretrained(tmp_path / "gpt2-medium")
    c_proj = base.transformer.h[23].mlp.c_proj.weight.detach().clone()
    with torch.no_grad():
        base.transformer.h[23].mlp.c_proj.weight.mul_(1.01)
    state = {
        k: v for k, v in base.state_dict().items() if k != "lm_head.weight"
    }  # tied, as in the released file
    torch.save({"state": state}, tmp_path / "dpo.pt")
    del base, state
    torch.save(torch.randn(1024), tmp_path / "probe.pt")

    monkeypatch.setenv("DPOCLAIMS_GPT2_BASE", str(tmp_path / "gpt2-medium"))
    monkeypatch.setenv("DPOCLAIMS_GPT2_DPO", str(tmp_path / "dpo.pt"))
    monkeypatch.setenv("DPOCLAIMS_GPT2_PROBE", str(tmp_path / "probe.pt"))
    pair = load_pair("gpt2-medium", cache=Cache(tmp_path / "cache"))
    assert pair.name == "gpt2-medium"
    assert (pair.layout.kind, pair.layout.n_layers, pair.layout.d_model, pair.layout.d_mlp) == (
        "gpt2",
        24,
        1024,
        4096,
    )
    assert pair.layout.n_neurons == 98_304
    torch.testing.assert_close(pair.value_vectors("base")[23], c_proj)
    torch.testing.assert_close(pair.value_vectors("dpo")[23], c_proj * 1.01)
    torch.testing.assert_close(pair.value_vectors("dpo")[:23], pair.value_vectors("base")[:23])
    assert pair.spec.extras["perplexity_window"] == "1024"


def test_paper_pair_without_its_files_says_what_is_missing(monkeypatch):
    for name in ("DPOCLAIMS_GPT2_DPO", "DPOCLAIMS_GPT2_PROBE"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(CheckpointError, match="DPOCLAIMS_GPT2_DPO, DPOCLAIMS_GPT2_PROBE not set.*dpo_toxic"):
        load_pair("gpt2-medium")
