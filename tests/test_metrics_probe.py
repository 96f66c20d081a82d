"""Perplexity, weight cosines and the probe's pooled residuals: padding never matters."""

from __future__ import annotations

import math

import pytest
import torch

from dpoclaims.metrics import perplexity, weight_cosines
from dpoclaims.organism import corpus
from dpoclaims.probe import LinearProbe, pooled_residuals

TEXTS = corpus.neutral_prompts(6, 0) + [
    "hi",
    "the plan",
    "good point about the bike lanes, the paint is fair",
]  # < 64 tokens each


@pytest.fixture(scope="module")
def model(make_gpt2):
    return make_gpt2(21)


def _manual_ppl(model, tokenizer, texts):
    nll, count = 0.0, 0
    with torch.no_grad():
        for text in texts:
            ids = torch.tensor([tokenizer(text, add_special_tokens=False)["input_ids"]])
            logits = model(input_ids=ids).logits[0, :-1]
            nll += float(torch.nn.functional.cross_entropy(logits, ids[0, 1:], reduction="sum"))
            count += ids.shape[1] - 1
    return math.exp(nll / count)


def test_perplexity_ignores_padding_and_batching(model, tokenizer):
    expected = _manual_ppl(model, tokenizer, TEXTS)
    for batch_size in (1, 3, len(TEXTS)):
        assert perplexity(model, tokenizer, TEXTS, batch_size=batch_size) == pytest.approx(expected, rel=1e-5)
    assert perplexity(model, tokenizer, TEXTS[:1]) != pytest.approx(
        perplexity(model, tokenizer, TEXTS[1:2]), rel=1e-3
    )


def test_perplexity_reflects_the_model(tokenizer, make_gpt2):
    """A model whose logits are zero has perplexity = vocabulary size."""
    flat = make_gpt2(0)
    with torch.no_grad():
        flat.lm_head.weight.zero_()  # tied: wte is zeroed too; logits are all 0
    assert perplexity(flat, tokenizer, TEXTS) == pytest.approx(flat.config.vocab_size, rel=1e-5)


def test_weight_cosines(make_gpt2):
    a, b = make_gpt2(1), make_gpt2(2)
    same = weight_cosines(a, a)
    assert set(same) == {name for name, p in a.named_parameters() if p.ndim >= 2}
    assert all(v == pytest.approx(1.0, abs=1e-6) for v in same.values())
    different = weight_cosines(a, b)
    assert max(different.values()) < 0.5  # independent random matrices are nearly orthogonal
    scaled = make_gpt2(1)
    with torch.no_grad():
        scaled.transformer.h[0].mlp.c_fc.weight.mul_(3.0)
        scaled.transformer.h[1].mlp.c_proj.weight.neg_()
    cosines = weight_cosines(a, scaled)
    assert cosines["transformer.h.0.mlp.c_fc.weight"] == pytest.approx(1.0, abs=1e-6)
    assert cosines["transformer.h.1.mlp.c_proj.weight"] == pytest.approx(-1.0, abs=1e-6)


def _manual_pooled(raw, tokenizer, texts):
    """Mean over tokens of the last block's output (before ln_f), one text at a time."""
    rows = []
    captured = {}
    handle = raw.transformer.h[-1].register_forward_hook(
        lambda module, args, output: captured.__setitem__(
            "h", output[0] if isinstance(output, tuple) else output
        )
    )
    with torch.no_grad():
        for text in texts:
            ids = torch.tensor([tokenizer(text, add_special_tokens=False)["input_ids"]])
            raw(input_ids=ids)
            rows.append(captured["h"][0].mean(0))
    handle.remove()
    return torch.stack(rows)


def test_pooled_residuals_mask_padding(gpt2_pair, gpt2_pair_files, tokenizer):
    from transformers import GPT2LMHeadModel

    raw = GPT2LMHeadModel.from_pretrained(gpt2_pair_files.base).eval()
    expected = _manual_pooled(raw, tokenizer, TEXTS)
    for batch_size in (1, 3, len(TEXTS)):
        pooled = pooled_residuals(gpt2_pair.base, tokenizer, TEXTS, batch_size=batch_size, progress=False)
        assert pooled.shape == (len(TEXTS), gpt2_pair.layout.d_model)
        torch.testing.assert_close(pooled, expected, rtol=1e-4, atol=1e-5)


def test_linear_probe():
    generator = torch.Generator().manual_seed(0)
    direction = torch.randn(8, generator=generator)
    features = torch.randn(200, 8, generator=generator)
    labels = (features @ direction > 0).long().tolist()
    with pytest.raises(RuntimeError, match="fit"):
        LinearProbe().decision_function(features)
    probe = LinearProbe(C=10.0).fit(features[:150], labels[:150])
    assert probe.direction.shape == (8,)
    assert probe.accuracy(features[150:], labels[150:]) > 0.9
    cosine = torch.nn.functional.cosine_similarity(probe.direction, direction, dim=0)
    assert cosine > 0.9
