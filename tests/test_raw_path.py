"""The library's measurements run the raw Hugging Face model with plain PyTorch hooks
(:mod:`dpoclaims.neuron_hooks`); they give what the TransformerBridge's hook points give: the
same continuations, the same activations (within 1e-5: GPT-2's bridge computes attention from
split q/k/v views and rounds float32 differently by about 2e-6) and the same perplexity, for no
intervention, ablation, patching and key scaling, on a GPT-2 and a Llama-shaped pair, under
both capture conventions.
"""

from __future__ import annotations

import pytest
import torch

from dpoclaims.capture import capture
from dpoclaims.errors import OptionError
from dpoclaims.evaluation import evaluate, intervened_perplexity
from dpoclaims.generation import GenerationSettings
from dpoclaims.interventions import Intervention
from dpoclaims.neuron_hooks import neuron_activation_modules

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


def in_weights(pair, side: str) -> list[torch.Tensor]:
    return [block.mlp.W_in.detach().clone() for block in pair.model(side).blocks]


@pytest.mark.parametrize("convention", ["v1", "emnlp"])
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_capture_through_the_raw_model_equals_the_bridge_hook_points(
    family, kind, convention, gpt2_pair, llama_pair
):
    pair = pair_of(family, gpt2_pair, llama_pair)
    intervention = make_intervention(kind, pair.layout.d_mlp)
    weights_before = in_weights(pair, "base")
    raw = capture(
        pair, "base", PROMPTS, SETTINGS, convention=convention, intervention=intervention, progress=False
    )
    bridge = capture(
        pair,
        "base",
        PROMPTS,
        SETTINGS,
        convention=convention,
        intervention=intervention,
        progress=False,
        through="bridge",
    )
    assert raw.continuation_ids == bridge.continuation_ids
    assert raw.continuations == bridge.continuations
    assert torch.equal(raw.n_positions, bridge.n_positions)
    assert raw.mean_activation.dtype == torch.float32 and raw.mean_activation.device.type == "cpu"
    difference = (raw.mean_activation - bridge.mean_activation).abs().max().item()
    assert difference <= TOLERANCE, f"max difference {difference}"
    # restored: no hook left on the raw model, key vectors as before
    assert all(not m._forward_pre_hooks for m in neuron_activation_modules(pair.raw("base"), pair.layout))
    assert not pair.raw("base")._forward_pre_hooks
    for before, after in zip(weights_before, in_weights(pair, "base")):
        assert torch.equal(before, after)
    if kind != "none":  # the intervention did something, on both paths alike
        clean = capture(pair, "base", PROMPTS, SETTINGS, convention=convention, progress=False)
        assert (clean.mean_activation - raw.mean_activation).abs().max() > 1e-3
    if kind in ("ablate", "patch"):  # recorded after the intervention: the set values
        ids = torch.tensor(intervention.neurons)
        flat = raw.mean_activation.flatten(1)[:, ids]  # [n_prompts, n_neurons]
        expected = torch.tensor(intervention.values or [0.0] * len(ids)).expand_as(flat)
        torch.testing.assert_close(flat, expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_evaluation_and_perplexity_through_the_raw_model_equal_the_bridge_hook_points(
    family, kind, gpt2_pair, llama_pair
):
    pair = pair_of(family, gpt2_pair, llama_pair)
    intervention = make_intervention(kind, pair.layout.d_mlp)
    scorers = ("profanity-check",)
    raw = evaluate(pair, "dpo", PROMPTS, SETTINGS, intervention, scorers=scorers, progress=False)
    bridge = evaluate(
        pair, "dpo", PROMPTS, SETTINGS, intervention, scorers=scorers, progress=False, through="bridge"
    )
    assert raw.continuations == bridge.continuations
    assert raw.scores == bridge.scores
    raw_nll, raw_tokens = intervened_perplexity(pair, "dpo", TEXTS, intervention)
    bridge_nll, bridge_tokens = intervened_perplexity(pair, "dpo", TEXTS, intervention, through="bridge")
    assert (raw_tokens == bridge_tokens).all()
    assert abs(raw_nll - bridge_nll).max() <= TOLERANCE * abs(bridge_nll).max()
    if kind != "none":
        clean_nll, _ = intervened_perplexity(pair, "dpo", TEXTS)
        assert abs(clean_nll - raw_nll).max() > 1e-3


def test_the_raw_model_is_built_once_per_side_and_shares_the_weights(gpt2_pair):
    assert gpt2_pair.raw("base") is gpt2_pair.raw("base")
    assert gpt2_pair.raw("dpo") is not gpt2_pair.raw("base")
    raw_pointers = {p.data_ptr() for p in gpt2_pair.raw("dpo").parameters()}
    assert raw_pointers <= {p.data_ptr() for p in gpt2_pair.dpo.original_model.parameters()}
    with pytest.raises(ValueError, match="side"):
        gpt2_pair.raw("other")


def test_bridge_hooks_cannot_be_mixed_with_the_raw_model(gpt2_pair):
    intervention = make_intervention("ablate", gpt2_pair.layout.d_mlp)
    with pytest.raises(OptionError, match="do not fire on the raw model"):
        with intervention.applied(
            gpt2_pair.base,
            gpt2_pair.layout,
            [("blocks.0.mlp.hook_post", lambda a, hook: a)],
            raw=gpt2_pair.raw("base"),
        ):
            pass
    with pytest.raises(OptionError, match="unknown capture path"):
        capture(gpt2_pair, "base", PROMPTS, SETTINGS, progress=False, through="elsewhere")  # type: ignore[arg-type]
