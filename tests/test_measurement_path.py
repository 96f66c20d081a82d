"""The library's measurements (capture, evaluation, perplexity) under an intervention give what
an independent reference gives: the same model with the intervention written into a copy of its
weights (``tiny.weight_edited_copy``: zeroed value vectors for an ablation, zeroed value vectors
and a bias shift for a patch, scaled key vectors), measured with no intervention at all; and,
for the v1 capture, a manual greedy loop on each unpadded prompt that recomputes the neuron
activation from the MLP's input (``tiny.reference_mlp_activations``). On a GPT-2 and a
Llama-shaped pair, under both capture conventions. Intervened neurons are recorded after the
intervention (the set values), where the weight copy records its own.

Tolerance: the weight copy runs other matrix products than the hooked model (float32 rounding,
about 1e-6); a left-padded batch rounds differently from an unpadded prompt.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
from tiny import reference_mlp_activations, weight_edited_copy

from dpoclaims.hooks.interventions import Intervention
from dpoclaims.measure.capture import capture
from dpoclaims.measure.evaluation import evaluate, intervened_perplexity
from dpoclaims.measure.generation import GenerationSettings, encode_prompts
from dpoclaims.models.mlp import key_vectors, neuron_activation_modules

PROMPTS = [
    "thanks for sharing this story about the city budget",
    "shut up already about",
    "i am not sure about the new parking rules and",
    "people like you",
    "good point about the tax plan",
]
TEXTS = ["the plan seems fair and the city will vote on it next week", "people like you are"]
SETTINGS = GenerationSettings(max_prompt_tokens=12, max_new_tokens=6, batch_size=3)
TOLERANCE = 1e-5
KINDS = ["none", "ablate", "patch", "scale_keys"]


def make_intervention(kind: str, d_mlp: int) -> Intervention:
    """An intervention of ``kind`` on a few neurons of both layers (flat ids)."""
    neurons = (0, 5, 9, 17, d_mlp + 3, d_mlp + 31, d_mlp + 40)
    if kind == "none":
        return Intervention()
    if kind == "ablate":
        return Intervention("ablate", neurons)
    if kind == "patch":
        values = tuple(0.5 * (-1) ** i * (1 + i) for i in range(len(neurons)))
        return Intervention("patch", neurons, values=values)
    return Intervention("scale_keys", neurons, factor=6.0)


def pair_of(family: str, gpt2_pair, llama_pair):
    return {"gpt2": gpt2_pair, "llama": llama_pair}[family]


def reference_pair(pair, side: str, intervention: Intervention):
    """``pair`` with ``side`` replaced by its weight-edited copy (measured with no intervention)."""
    edited = weight_edited_copy(pair.model(side), intervention, pair.layout.d_mlp)
    return dataclasses.replace(pair, **{side: edited})


def set_values(intervention: Intervention) -> torch.Tensor | None:
    """The values an ablation or a patch records at its neurons (None for the other kinds)."""
    if intervention.kind == "ablate":
        return torch.zeros(len(intervention.neurons))
    if intervention.kind == "patch":
        return torch.tensor(intervention.values)
    return None


def assert_restored(pair, side: str, keys_before: torch.Tensor) -> None:
    """No hook left on the model, key vectors as before."""
    model = pair.model(side)
    assert all(not m._forward_pre_hooks for m in neuron_activation_modules(model, pair.layout))
    assert not model._forward_pre_hooks
    assert torch.equal(key_vectors(model, pair.layout), keys_before)


@pytest.mark.parametrize("convention", ["v1", "emnlp"])
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_capture_under_an_intervention_equals_the_weight_edited_model(
    family, kind, convention, gpt2_pair, llama_pair
):
    pair = pair_of(family, gpt2_pair, llama_pair)
    intervention = make_intervention(kind, pair.layout.d_mlp)
    keys_before = key_vectors(pair.base, pair.layout)
    hooked = capture(
        pair, "base", PROMPTS, SETTINGS, convention=convention, intervention=intervention, progress=False
    )
    assert_restored(pair, "base", keys_before)
    reference = capture(
        reference_pair(pair, "base", intervention),
        "base",
        PROMPTS,
        SETTINGS,
        convention=convention,
        progress=False,
    )
    assert hooked.continuation_ids == reference.continuation_ids
    assert hooked.continuations == reference.continuations
    assert torch.equal(hooked.n_positions, reference.n_positions)
    assert hooked.mean_activation.dtype == torch.float32 and hooked.mean_activation.device.type == "cpu"
    hooked_flat = hooked.mean_activation.flatten(1)  # [n_prompts, n_layers * d_mlp]
    reference_flat = reference.mean_activation.flatten(1)
    values = set_values(intervention)
    if values is not None:  # recorded after the intervention: the set values
        ids = torch.tensor(intervention.neurons)
        torch.testing.assert_close(hooked_flat[:, ids], values.expand(len(PROMPTS), -1), rtol=0, atol=1e-6)
        untouched = torch.ones(hooked_flat.shape[1], dtype=torch.bool)
        untouched[ids] = False
        hooked_flat, reference_flat = hooked_flat[:, untouched], reference_flat[:, untouched]
    difference = (hooked_flat - reference_flat).abs().max().item()
    assert difference <= TOLERANCE, f"max difference {difference}"
    if kind != "none":  # the intervention did something
        clean = capture(pair, "base", PROMPTS, SETTINGS, convention=convention, progress=False)
        assert (clean.mean_activation - hooked.mean_activation).abs().max() > 1e-3


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_v1_capture_equals_a_manual_greedy_loop(family, kind, gpt2_pair, llama_pair):
    """The v1 convention (the last position of every forward, until a row is fed EOS) against a
    greedy loop of full forwards over each unpadded prompt of the weight-edited model."""
    pair = pair_of(family, gpt2_pair, llama_pair)
    intervention = make_intervention(kind, pair.layout.d_mlp)
    hooked = capture(pair, "base", PROMPTS, SETTINGS, intervention=intervention, progress=False)
    model = weight_edited_copy(pair.base, intervention, pair.layout.d_mlp)
    eos = pair.tokenizer.eos_token_id
    batch = encode_prompts(pair.tokenizer, PROMPTS, SETTINGS.max_prompt_tokens)
    values = set_values(intervention)
    for row, (ids, mask) in enumerate(zip(batch["input_ids"], batch["attention_mask"])):
        sequence = ids[mask.bool()][None]
        total = torch.zeros(pair.layout.n_layers * pair.layout.d_mlp, dtype=torch.float64)
        new: list[int] = []
        for _ in range(SETTINGS.max_new_tokens):
            if new and new[-1] == eos:
                break
            activations, logits = reference_mlp_activations(model, input_ids=sequence)
            last = torch.cat([a[0, -1] for a in activations]).double()
            if values is not None:
                last[torch.tensor(intervention.neurons)] = values.double()
            total += last
            new.append(int(logits[0, -1].argmax()))
            sequence = torch.cat([sequence, torch.tensor([[new[-1]]])], dim=1)
        assert hooked.continuation_ids[row] == (new[: new.index(eos)] if eos in new else new)
        assert hooked.n_positions[row].item() == len(new)
        difference = (hooked.mean_activation[row].flatten().double() - total / len(new)).abs().max().item()
        assert difference <= TOLERANCE, f"prompt {row}: max difference {difference}"


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_evaluation_and_perplexity_under_an_intervention_equal_the_weight_edited_model(
    family, kind, gpt2_pair, llama_pair
):
    pair = pair_of(family, gpt2_pair, llama_pair)
    intervention = make_intervention(kind, pair.layout.d_mlp)
    keys_before = key_vectors(pair.dpo, pair.layout)
    reference = reference_pair(pair, "dpo", intervention)
    scorers = ("profanity-check",)
    hooked = evaluate(pair, "dpo", PROMPTS, SETTINGS, intervention, scorers=scorers, progress=False)
    expected = evaluate(reference, "dpo", PROMPTS, SETTINGS, scorers=scorers, progress=False)
    assert hooked.continuations == expected.continuations
    assert hooked.scores == expected.scores
    hooked_nll, hooked_tokens = intervened_perplexity(pair, "dpo", TEXTS, intervention)
    expected_nll, expected_tokens = intervened_perplexity(reference, "dpo", TEXTS)
    assert_restored(pair, "dpo", keys_before)
    assert (hooked_tokens == expected_tokens).all()
    assert abs(hooked_nll - expected_nll).max() <= TOLERANCE * abs(expected_nll).max()
    if kind != "none":
        clean_nll, _ = intervened_perplexity(pair, "dpo", TEXTS)
        assert abs(clean_nll - hooked_nll).max() > 1e-3


def test_the_reference_is_not_the_measured_model(gpt2_pair):
    """The weight-edited reference is a copy: building it leaves the pair's model as it was."""
    intervention = make_intervention("patch", gpt2_pair.layout.d_mlp)
    before = {name: tensor.clone() for name, tensor in gpt2_pair.base.state_dict().items()}
    edited = weight_edited_copy(gpt2_pair.base, intervention, gpt2_pair.layout.d_mlp)
    assert all(torch.equal(before[name], tensor) for name, tensor in gpt2_pair.base.state_dict().items())
    assert not torch.equal(
        edited.transformer.h[0].mlp.c_proj.bias, gpt2_pair.base.transformer.h[0].mlp.c_proj.bias
    )
