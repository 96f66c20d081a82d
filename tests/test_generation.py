"""Greedy generation with left padding."""

from __future__ import annotations

import copy

import pytest
import torch

from dpoclaims.measure.generation import GenerationSettings, encode_prompts, greedy_generate

PROMPTS = [
    "hi",
    "the city budget",
    "i read the article this morning about the new parking rules and the meters seem fair",
    "good point about the weather forecast",
    "shut up already about the tax plan, you",
    "my neighbor told me about",
]


@pytest.fixture(scope="module")
def model(make_gpt2):
    return make_gpt2(11)


def manual_greedy(model, ids: list[int], n: int, eos: int) -> list[int]:
    """Greedy decoding one sequence at a time, no padding, no cache: the reference."""
    ids = list(ids)
    out = []
    with torch.no_grad():
        for _ in range(n):
            logits = model(input_ids=torch.tensor([ids])).logits[0, -1]
            token = int(logits.argmax())
            ids.append(token)
            out.append(token)
    return out[: out.index(eos)] if eos in out else out


def test_generation_does_not_depend_on_batch_size(model, tokenizer):
    results = {}
    for batch_size in (1, 2, 4, len(PROMPTS)):
        settings = GenerationSettings(max_prompt_tokens=32, max_new_tokens=8, batch_size=batch_size)
        generations = greedy_generate(model, tokenizer, PROMPTS, settings, progress=False)
        assert generations.prompts == PROMPTS
        assert len(generations.continuations) == len(generations.continuation_ids) == len(PROMPTS)
        results[batch_size] = generations.continuation_ids
    assert results[1] == results[2] == results[4] == results[len(PROMPTS)]
    # the model is not degenerate: continuations differ between prompts
    assert len({tuple(ids) for ids in results[1]}) > 1


def test_generation_matches_unpadded_reference(model, tokenizer):
    settings = GenerationSettings(max_prompt_tokens=32, max_new_tokens=8, batch_size=len(PROMPTS))
    generations = greedy_generate(model, tokenizer, PROMPTS, settings, progress=False)
    for prompt, ids, text in zip(PROMPTS, generations.continuation_ids, generations.continuations):
        prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"][:32]
        assert ids == manual_greedy(model, prompt_ids, 8, tokenizer.eos_token_id)
        assert tokenizer.eos_token_id not in ids
        assert text == tokenizer.decode(ids, skip_special_tokens=True)


def test_long_prompts_are_cut_keeping_their_beginning(model, tokenizer):
    long_prompt = PROMPTS[2]
    full_ids = tokenizer(long_prompt, add_special_tokens=False)["input_ids"]
    k = 6
    assert len(full_ids) > k
    settings = GenerationSettings(max_prompt_tokens=k, max_new_tokens=6, batch_size=4)
    generations = greedy_generate(model, tokenizer, [long_prompt, "hi"], settings, progress=False)
    assert generations.continuation_ids[0] == manual_greedy(model, full_ids[:k], 6, tokenizer.eos_token_id)
    uncut = manual_greedy(model, full_ids, 6, tokenizer.eos_token_id)
    assert generations.continuation_ids[0] != uncut  # cutting made a difference


def test_encode_prompts_left_pads_and_truncates(tokenizer):
    tokenizer.padding_side = "right"  # encode_prompts must set what it needs
    batch = encode_prompts(tokenizer, PROMPTS, max_prompt_tokens=5)
    ids, mask = batch["input_ids"], batch["attention_mask"]
    assert ids.shape == (len(PROMPTS), 5)
    for prompt, row, row_mask in zip(PROMPTS, ids.tolist(), mask.tolist()):
        expected = tokenizer(prompt, add_special_tokens=False)["input_ids"][:5]
        n = sum(row_mask)
        assert n == len(expected)
        assert row_mask == [0] * (5 - n) + [1] * n  # padding on the left
        assert row[5 - n :] == expected  # the beginning of the prompt is kept
        assert all(t == tokenizer.pad_token_id for t in row[: 5 - n])


def test_generation_under_neuron_hooks_acts_at_every_position(gpt2_pair, gpt2_pair_files, tokenizer):
    """Neuron hooks act during generation, at prompt and generated positions alike: ablating every
    neuron through ``Intervention.applied`` == generating with a separately loaded copy whose value
    vectors are zero (no hooks); the hooks are gone afterwards."""
    from transformers import GPT2LMHeadModel

    from dpoclaims.hooks.interventions import Intervention
    from dpoclaims.models.mlp import neuron_activation_modules

    layout = gpt2_pair.layout
    settings = GenerationSettings(max_prompt_tokens=16, max_new_tokens=6, batch_size=3)
    model = gpt2_pair.base
    everything = Intervention("ablate", tuple(range(layout.n_neurons)))
    positions = []

    def count(activation):
        positions.append(activation.shape[1])

    with everything.applied(model, layout, extra_edits={0: count}) as running:
        assert running is model
        hooked = greedy_generate(running, tokenizer, PROMPTS[:3], settings, progress=False)
    n_prompt = encode_prompts(tokenizer, PROMPTS[:3], 16)["input_ids"].shape[1]
    assert sum(positions) == n_prompt + settings.max_new_tokens - 1  # every position once (KV cache)
    assert all(not m._forward_pre_hooks for m in neuron_activation_modules(model, layout))

    zeroed = copy.deepcopy(GPT2LMHeadModel.from_pretrained(gpt2_pair_files.base).eval())
    with torch.no_grad():
        for block in zeroed.transformer.h:
            block.mlp.c_proj.weight.zero_()
    expected = greedy_generate(zeroed, tokenizer, PROMPTS[:3], settings, progress=False)
    assert hooked.continuation_ids == expected.continuation_ids
    clean = greedy_generate(model, tokenizer, PROMPTS[:3], settings, progress=False)
    assert clean.continuation_ids != hooked.continuation_ids


def test_sampling_is_seeded_per_batch_and_gives_n_samples_per_prompt(gpt2_pair_files, tokenizer):
    from dpoclaims.measure.generation import GenerationSettings, SamplingSettings, sample_generate
    from dpoclaims.models.loading import load_hf_model

    model = load_hf_model(str(gpt2_pair_files.base))
    prompts = ["the plan seems", "what a", "i think the mayor", "good point about"]
    settings = GenerationSettings(max_prompt_tokens=16, max_new_tokens=6, batch_size=2)
    drawn = sample_generate(
        model, tokenizer, prompts, settings, SamplingSettings(n_samples=3, seed=5), progress=False
    )
    assert [len(s) for s in drawn] == [3, 3, 3, 3]
    torch.manual_seed(123)  # the caller's generator state does not matter
    assert drawn == sample_generate(
        model, tokenizer, prompts, settings, SamplingSettings(n_samples=3, seed=5), progress=False
    )
    other = sample_generate(
        model, tokenizer, prompts, settings, SamplingSettings(n_samples=3, seed=6), progress=False
    )
    assert other != drawn
