"""Perplexity, continuation F1, weight cosines and the probe's pooled residuals: padding never matters."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from dpoclaims.errors import OptionError
from dpoclaims.measure.metrics import (
    F1Settings,
    continuation_f1,
    perplexity,
    split_for_continuation,
    token_f1,
    weight_cosines,
)
from dpoclaims.measure.probe import TRAIN_SHARE, LinearProbe, pooled_residuals, train_probe
from dpoclaims.models.mlp import decoder_layers
from dpoclaims.train.organism import corpus

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


class ContinuationOracle(torch.nn.Module):
    """A stand-in LM whose greedy continuation of a prompt is whatever ``continuations`` maps the
    prompt's text to (the real continuation, or a wrong one), so F1 is known exactly. It answers
    ``generate`` as a Hugging Face model does: the left-padded prompt ids, then the new tokens."""

    def __init__(self, tokenizer, continuations: dict[str, list[int]]):
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(1))  # gives the model a device
        self.tokenizer, self.continuations = tokenizer, continuations

    def generate(self, input_ids, attention_mask, max_new_tokens, pad_token_id, eos_token_id, **_):
        rows = []
        for ids, mask in zip(input_ids.tolist(), attention_mask.tolist()):
            prompt = self.tokenizer.decode([i for i, keep in zip(ids, mask) if keep])
            new = self.continuations[prompt][:max_new_tokens]
            rows.append(ids + new + [eos_token_id] * (max_new_tokens - len(new)))
        return torch.tensor(rows)


def test_continuation_f1_scores_the_real_continuation(tokenizer):
    """A model that continues each prefix with the text's real continuation scores F1 = 1 in
    both units; one that continues it with another text's continuation scores less."""
    candidates = corpus.neutral_prompts(30, 3) + [
        " ".join(corpus.neutral_prompts(6, 4))
    ]  # last: > 104 tokens
    settings = F1Settings(batch_size=5)
    texts, splits, prompts = [], [], []
    for text in candidates:  # the oracle knows a prompt's continuation only if prompts are distinct
        split = split_for_continuation(tokenizer, text, settings)
        prompt = tokenizer.decode(split[0])
        if prompt not in prompts:
            texts.append(text), splits.append(split), prompts.append(prompt)
    assert len(texts) >= 8
    truthful = ContinuationOracle(tokenizer, {p: reference for p, (_, reference) in zip(prompts, splits)})
    for unit in ("words", "token_ids"):
        result = continuation_f1(truthful, tokenizer, texts, F1Settings(batch_size=5, unit=unit))
        assert result.n_skipped == 0 and result.used == tuple(range(len(texts)))
        np.testing.assert_array_equal(result.scores, np.ones(len(texts)))
        assert result.continuations == result.references
    shifted = {p: splits[(i + 1) % len(splits)][1] for i, p in enumerate(prompts)}
    wrong = continuation_f1(ContinuationOracle(tokenizer, shifted), tokenizer, texts, settings)
    assert wrong.mean < 0.9 and np.all((wrong.scores >= 0) & (wrong.scores < 1))
    for index, (_, reference) in enumerate(splits):
        expected = token_f1(
            tokenizer.decode(splits[(index + 1) % len(splits)][1]), tokenizer.decode(reference)
        )
        assert wrong.scores[index] == pytest.approx(expected)


def test_continuation_f1_of_a_real_model_does_not_depend_on_batching(model, tokenizer):
    texts = corpus.neutral_prompts(9, 6)
    scores = [
        continuation_f1(model, tokenizer, texts, F1Settings(batch_size=size)).scores for size in (1, 4, 9)
    ]
    np.testing.assert_array_equal(scores[0], scores[1])
    np.testing.assert_array_equal(scores[0], scores[2])
    assert np.all((scores[0] >= 0) & (scores[0] <= 1))


def test_continuation_f1_splits_texts_and_skips_short_ones(model, tokenizer):
    texts = ["hi", *corpus.neutral_prompts(4, 5), "", "a b"]
    settings = F1Settings(min_tokens=4, continuation_tokens=20, max_prompt_tokens=32)
    result = continuation_f1(model, tokenizer, texts, settings)
    token_counts = [len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts]
    expected_used = tuple(i for i, count in enumerate(token_counts) if count >= 4)
    assert result.used == expected_used and result.n_skipped == len(texts) - len(expected_used) >= 2
    assert result.scores.shape == (len(expected_used),)
    for index, prompt, reference in zip(result.used, result.prompts, result.references):
        ids = tokenizer(texts[index], add_special_tokens=False)["input_ids"]
        n_prompt = len(tokenizer(prompt, add_special_tokens=False)["input_ids"])
        assert 1 <= n_prompt <= min(len(ids) // 2, 32)
        assert texts[index].startswith(prompt) and prompt.strip() == prompt  # cut at a word start
        assert reference[:1].isspace() and texts[index][len(prompt) :].startswith(reference)
        if len(ids) - n_prompt <= 20:  # the whole rest is the reference
            assert prompt + reference == texts[index]
    long_text = " ".join(corpus.neutral_prompts(6, 1))  # > 104 tokens: prompt and reference are capped
    prefix, reference_ids = split_for_continuation(tokenizer, long_text, settings)
    assert len(prefix) <= 32 and len(reference_ids) == 20
    assert long_text.startswith(tokenizer.decode(prefix) + " ")  # the prompt ends where a word ends
    assert split_for_continuation(tokenizer, "hi", settings) is None
    with pytest.raises(OptionError, match="unit"):
        F1Settings(unit="letters")  # type: ignore[arg-type]


def _manual_pooled(model, tokenizer, texts):
    """Mean over tokens of the last decoder layer's output (before the final norm), one unpadded
    text at a time: the independent reference for ``pooled_residuals``.

    ``output_hidden_states`` cannot give it directly: for these models the last hidden state is
    taken after the final norm (GPT-2 ``ln_f``, Llama ``model.norm``). So a copy of the model has
    its final norm replaced by the identity; that copy's ``last_hidden_state`` is then exactly the
    last layer's output, read with no hook on any layer."""
    import copy

    unnormed = copy.deepcopy(model)
    if hasattr(unnormed, "transformer"):
        unnormed.transformer.ln_f = torch.nn.Identity()
        body = unnormed.transformer
    else:
        unnormed.model.norm = torch.nn.Identity()
        body = unnormed.model
    rows = []
    with torch.no_grad():
        for text in texts:
            ids = torch.tensor([tokenizer(text, add_special_tokens=False)["input_ids"]])
            hidden = body(input_ids=ids, use_cache=False).last_hidden_state  # [1, seq, d_model]
            rows.append(hidden[0].mean(0))
        # the copy does differ from the model where the final norm acts
        normed = model(input_ids=ids, output_hidden_states=True).hidden_states[-1][0].mean(0)
    assert not torch.allclose(normed, rows[-1])
    return torch.stack(rows)


def hook_counts(model) -> list[int]:
    return [len(layer._forward_hooks) for layer in decoder_layers(model)] + [len(model._forward_hooks)]


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_pooled_residuals_mask_padding(family, gpt2_pair, llama_pair, tokenizer):
    pair = {"gpt2": gpt2_pair, "llama": llama_pair}[family]
    expected = _manual_pooled(pair.base, tokenizer, TEXTS)
    hooks_before = hook_counts(pair.base)
    for batch_size in (1, 3, len(TEXTS)):
        pooled = pooled_residuals(pair.base, tokenizer, TEXTS, batch_size=batch_size, progress=False)
        assert pooled.shape == (len(TEXTS), pair.layout.d_model)
        assert pooled.dtype == torch.float32 and pooled.device.type == "cpu"
        torch.testing.assert_close(pooled, expected, rtol=1e-4, atol=1e-5)
    # no hook of its own is left (transformers installs output-capturing hooks of its own on the layers)
    assert hook_counts(pair.base) == hooks_before


def test_pooled_residuals_refuse_an_empty_text(gpt2_pair, tokenizer):
    with pytest.raises(ValueError, match="empty text"):
        pooled_residuals(gpt2_pair.base, tokenizer, ["fine", "  "], progress=False)


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


def test_train_probe_fits_on_the_first_texts_and_measures_the_rest(gpt2_pair, tokenizer):
    """The one probe trainer (the toy's build, smollm2's and ``dpoclaims train-probe`` use it): the
    probe it returns is the one fitted on the pooled residuals of the first ``n_train`` texts, and
    its accuracies are that probe's on those texts and on the rest."""
    texts, labels = corpus.labelled_comments(40, 0)
    assert 0 < sum(labels) < len(labels)
    trained = train_probe(
        gpt2_pair.base, tokenizer, texts, labels, C=0.5, seed=3, max_tokens=32, progress=False
    )  # max_tokens: within the tiny model's positions
    n_train = int(TRAIN_SHARE * len(texts))
    assert (trained.n_train, trained.n_heldout) == (n_train, len(texts) - n_train)
    features = pooled_residuals(gpt2_pair.base, tokenizer, texts, max_tokens=32, progress=False)
    direct = LinearProbe(C=0.5, seed=3).fit(features[:n_train], labels[:n_train])
    assert torch.equal(trained.probe.fitted_direction, direct.fitted_direction)
    assert trained.probe.bias == direct.bias
    assert trained.train_accuracy == direct.accuracy(features[:n_train], labels[:n_train])
    assert trained.heldout_accuracy == direct.accuracy(features[n_train:], labels[n_train:])
    # every text trained on: nothing held out, its accuracy NaN (not a made-up number)
    whole = train_probe(
        gpt2_pair.base, tokenizer, texts, labels, n_train=len(texts), max_tokens=32, progress=False
    )
    assert whole.n_heldout == 0 and math.isnan(whole.heldout_accuracy)
    with pytest.raises(ValueError, match="40 texts and 39 labels"):
        train_probe(gpt2_pair.base, tokenizer, texts, labels[:-1], progress=False)


class _NoOffsets:
    """A tokenizer that, like a slow (Python) one, cannot give character offsets."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer

    def __call__(self, text, **kwargs):
        if kwargs.pop("return_offsets_mapping", False):
            raise NotImplementedError("return_offset_mapping is not available when using Python tokenizers")
        return self.tokenizer(text, **kwargs)


def test_split_without_offsets_cuts_at_the_token_midpoint(tokenizer):
    text = "good point about the price of coffee"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    prefix, reference = split_for_continuation(_NoOffsets(tokenizer), text)
    assert (prefix, reference) == (ids[: len(ids) // 2], ids[len(ids) // 2 :][:20])
    aligned, _ = split_for_continuation(tokenizer, text)
    assert len(aligned) < len(prefix)  # with offsets the cut moves back to a word start


def test_a_standardized_balanced_probe_reads_raw_residuals():
    """Fitted on standardized features, the probe's direction and bias are folded back so that
    decision_function on raw features equals the standardized model's decision."""
    from sklearn.linear_model import LogisticRegression

    generator = torch.Generator().manual_seed(0)
    features = torch.randn(200, 8, generator=generator) * torch.arange(1, 9) + 3.0
    labels = (features[:, 0] + 0.1 * features[:, 3] > 3.5).long().tolist()
    probe = LinearProbe(C=0.1, standardize=True, balanced=True).fit(features, labels)
    x = features.numpy().astype("float64")
    mean, scale = x.mean(0), x.std(0)
    reference = LogisticRegression(C=0.1, max_iter=2000, random_state=0, class_weight="balanced")
    reference.fit((x - mean) / scale, labels)
    expected = reference.decision_function((x - mean) / scale)
    assert torch.allclose(probe.decision_function(features).double(), torch.from_numpy(expected), atol=1e-4)
