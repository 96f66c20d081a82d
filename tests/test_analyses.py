"""Tests of the claims' analyses: capture, decomposition, groups, shares, patching, bootstrap."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from tiny import claim_record, record_mlp_activations

from dpoclaims.hooks.neurons import neuron_hooks
from dpoclaims.measure.capture import capture
from dpoclaims.measure.decomposition import (
    ALL_GROUPS,
    MIRROR_GROUPS,
    REDUCING_GROUPS,
    assign_groups,
    decompose,
)
from dpoclaims.measure.generation import GenerationSettings
from dpoclaims.models.mlp import decoder_layers
from dpoclaims.stats import bootstrap, mean_difference, ratio_of_means, recovered_share

PROMPTS = [
    "thanks for sharing this story about the city budget",
    "shut up already about",
    "i am not sure about the new parking rules and",
    "people like you",
    "good point about the tax plan",
]
SETTINGS = GenerationSettings(max_prompt_tokens=12, max_new_tokens=6, batch_size=5)


@contextmanager
def mlp_outputs_kept(model, layers) -> Iterator[dict[int, torch.Tensor]]:
    """The MLP output of each of ``layers`` (what TransformerLens names ``blocks.L.mlp.hook_out``),
    kept by a forward hook on the layer's ``mlp`` module."""
    kept: dict[int, torch.Tensor] = {}
    handles = [
        decoder_layers(model)[layer].mlp.register_forward_hook(
            lambda module, args, output, layer=layer: kept.__setitem__(layer, output.detach().clone())
        )
        for layer in layers
    ]
    try:
        yield kept
    finally:
        for handle in handles:
            handle.remove()


def _full_activations(pair, side, prompt_ids, continuation_ids):
    """Per-layer activations ``[seq, L, d_mlp]`` of one unpadded prompt + continuation."""
    activations, _ = record_mlp_activations(
        pair, side, input_ids=torch.tensor([prompt_ids + continuation_ids])
    )
    return torch.stack([a[0] for a in activations], 1)


@pytest.mark.parametrize("convention", ["v1", "emnlp"])
def test_capture_matches_a_full_forward_over_the_same_positions(gpt2_pair, convention):
    result = capture(gpt2_pair, "base", PROMPTS, SETTINGS, convention=convention, progress=False)
    tokenizer = gpt2_pair.tokenizer
    for i, prompt in enumerate(PROMPTS):
        prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"][: SETTINGS.max_prompt_tokens]
        acts = _full_activations(gpt2_pair, "base", prompt_ids, result.continuation_ids[i])
        n = int(result.n_positions[i])
        if convention == "v1":
            expected = acts[len(prompt_ids) - 1 : len(prompt_ids) - 1 + n].mean(0)
        else:
            expected = acts[-n:].mean(0)
        torch.testing.assert_close(result.mean_activation[i], expected, atol=1e-5, rtol=1e-4)


def test_capture_does_not_depend_on_batch_size_or_padding_side(gpt2_pair):
    reference = capture(gpt2_pair, "dpo", PROMPTS, SETTINGS, progress=False)
    gpt2_pair.tokenizer.padding_side = "right"  # capture must left-pad regardless
    other = capture(gpt2_pair, "dpo", PROMPTS, GenerationSettings(12, 6, batch_size=2), progress=False)
    assert other.continuations == reference.continuations
    torch.testing.assert_close(other.mean_activation, reference.mean_activation, atol=1e-5, rtol=1e-4)


def test_contribution_equals_directly_measured_change_of_each_neurons_write(gpt2_pair):
    """D_i from the statistics equals the change of neuron i's write onto the probe, measured
    as the change of the MLP output's probe projection when neuron i alone is ablated."""
    base = capture(gpt2_pair, "base", PROMPTS, SETTINGS, progress=False)
    dpo = capture(gpt2_pair, "dpo", PROMPTS, SETTINGS, progress=False)
    d = decompose(
        gpt2_pair.value_vectors("base"),
        gpt2_pair.value_vectors("dpo"),
        gpt2_pair.probe,
        base.mean_activation,
        dpo.mean_activation,
    )
    unit = gpt2_pair.unit_probe
    tokenizer = gpt2_pair.tokenizer
    generator = torch.Generator().manual_seed(0)
    for _ in range(6):
        layer = int(torch.randint(gpt2_pair.layout.n_layers, (1,), generator=generator))
        neuron = int(torch.randint(gpt2_pair.layout.d_mlp, (1,), generator=generator))
        writes = {}
        for side, cap in (("base", base), ("dpo", dpo)):
            per_prompt = []
            for i, prompt in enumerate(PROMPTS):
                prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"][
                    : SETTINGS.max_prompt_tokens
                ]
                full = torch.tensor([prompt_ids + cap.continuation_ids[i]])
                model = gpt2_pair.model(side)

                def zero(activation):
                    activation = activation.clone()
                    activation[..., neuron] = 0
                    return activation

                with torch.no_grad():
                    with mlp_outputs_kept(model, [layer]) as full_out:
                        model(input_ids=full)
                    with neuron_hooks(model, gpt2_pair.layout, {layer: zero}):
                        with mlp_outputs_kept(model, [layer]) as ablated_out:
                            model(input_ids=full)
                outs = {"full": full_out[layer][0], "ablated": ablated_out[layer][0]}
                write = (outs["full"] - outs["ablated"]) @ unit  # [seq]
                n = int(cap.n_positions[i])
                per_prompt.append(write[len(prompt_ids) - 1 : len(prompt_ids) - 1 + n].mean())
            writes[side] = torch.stack(per_prompt).mean()
        assert float(d.contribution[layer, neuron]) == pytest.approx(
            float(writes["base"] - writes["dpo"]), abs=1e-5
        )


def _equal_weight_decomposition(
    seed: int, n_prompts: int = 6, layers: int = 2, d_mlp: int = 40, d_model: int = 8
):
    generator = torch.Generator().manual_seed(seed)
    values = torch.randn(layers, d_mlp, d_model, generator=generator)
    probe = torch.randn(d_model, generator=generator)
    base = torch.randn(n_prompts, layers, d_mlp, generator=generator)
    dpo = base + 0.3 * torch.randn(n_prompts, layers, d_mlp, generator=generator)
    return decompose(values, values, probe, base, dpo)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000))
def test_groups_and_mirror_groups_partition_the_changed_neurons(seed):
    d = _equal_weight_decomposition(seed)
    stacked = torch.stack([d.groups[g] for g in ALL_GROUPS])
    assert int(stacked.sum(0).max()) <= 1  # disjoint
    changed = d.contribution != 0
    assert torch.equal(stacked.any(0), changed)  # with equal weights: exactly the neurons with D != 0
    reducing = torch.stack([d.groups[g] for g in REDUCING_GROUPS]).any(0)
    mirror = torch.stack([d.groups[g] for g in MIRROR_GROUPS]).any(0)
    assert torch.equal(reducing, d.contribution > 0)
    assert torch.equal(mirror, d.contribution < 0)


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10_000))
def test_shares_sum_to_one_under_both_denominators(seed):
    d = _equal_weight_decomposition(seed)
    for denominator in ("four-groups", "gross"):
        total = sum(d.share(g, denominator).value for g in REDUCING_GROUPS)
        assert total == pytest.approx(1.0, abs=1e-6)
    mirror_sum = sum(d.group_sum(g) for g in MIRROR_GROUPS)
    assert d.net == pytest.approx(
        sum(d.group_sum(g) for g in REDUCING_GROUPS) + mirror_sum, rel=1e-4, abs=1e-4
    )


def test_group_definitions_follow_the_paper_table():
    cos = torch.tensor([1.0, 1.0, -1.0, -1.0, 1.0, 1.0, -1.0, -1.0])
    mean_base = torch.tensor([1.0, -1.0, 1.0, -1.0, 1.0, -1.0, 1.0, -1.0])
    diff = torch.tensor([1.0, 1.0, -1.0, -1.0, -1.0, -1.0, 1.0, 1.0])
    groups = assign_groups(cos, mean_base, diff)
    for index, name in enumerate(["TP-", "TN+", "AP+", "AN-", "TP+", "TN-", "AP-", "AN+"]):
        assert torch.nonzero(groups[name]).flatten().tolist() == [index], name


def test_patching_every_neuron_to_dpo_activations_reproduces_dpo_mlp_outputs(
    make_gpt2, tokenizer_dir, tmp_path, session_cache
):
    """With equal MLP output weights, patching all neurons of the base to the DPO model's own
    per-position activations gives the DPO model's MLP outputs at every layer."""
    from transformers import AutoTokenizer

    from dpoclaims.train.named_pairs import load_pair

    base, dpo = make_gpt2(0), make_gpt2(0)
    with torch.no_grad():
        for name, param in dpo.named_parameters():
            if "mlp.c_proj" not in name:
                param.add_(0.05 * torch.randn_like(param))
    for side, model in (("base", base), ("dpo", dpo)):
        model.save_pretrained(tmp_path / side)
    AutoTokenizer.from_pretrained(tokenizer_dir).save_pretrained(tmp_path / "base")
    torch.save(torch.randn(base.config.n_embd), tmp_path / "probe.pt")
    (tmp_path / "pair.toml").write_text('base = "base"\ndpo = "dpo"\nprobe = "probe.pt"\n')
    pair = load_pair(tmp_path / "pair.toml", cache=session_cache)
    ids = torch.tensor([[5, 17, 40, 3, 99, 12]])
    layers = range(pair.layout.n_layers)

    def record(store, layer):
        return lambda activation: store.__setitem__(layer, activation.detach().clone())

    dpo_acts = {}
    with torch.no_grad():
        with neuron_hooks(pair.dpo, pair.layout, {l: record(dpo_acts, l) for l in layers}):
            with mlp_outputs_kept(pair.dpo, layers) as dpo_out:
                pair.dpo(input_ids=ids)
        with neuron_hooks(pair.base, pair.layout, {l: (lambda a, l=l: dpo_acts[l].clone()) for l in layers}):
            with mlp_outputs_kept(pair.base, layers) as patched_out:
                pair.base(input_ids=ids)
    assert set(dpo_out) == set(patched_out) == set(layers)
    for layer in layers:
        torch.testing.assert_close(patched_out[layer], dpo_out[layer], atol=1e-5, rtol=1e-5)


@settings(max_examples=25, deadline=None)
@given(
    data=st.lists(st.tuples(st.floats(0, 1), st.floats(0, 1), st.floats(0, 1)), min_size=5, max_size=60),
    seed=st.integers(0, 1000),
)
def test_bootstrap_interval_contains_the_point_estimate(data, seed):
    base, dpo, other = (np.array(column) for column in zip(*data))
    for statistic, samples in (
        (mean_difference, (base, dpo)),
        (ratio_of_means, (base + 1, dpo + 1)),
        (recovered_share, (base + 2, dpo, other)),
    ):
        estimate = bootstrap(statistic, *samples, seed=seed, n_resamples=200)
        if np.isfinite(estimate.low):
            assert estimate.low - 1e-9 <= estimate.value <= estimate.high + 1e-9


def test_recovered_share_is_one_for_dpo_itself_and_zero_for_the_base():
    base, dpo = np.array([0.9, 0.5, 0.7]), np.array([0.1, 0.2, 0.3])
    assert recovered_share(base, dpo, dpo) == pytest.approx(1.0)
    assert recovered_share(base, dpo, base) == pytest.approx(0.0)


def test_report_badges_follow_the_shields_endpoint_format(tmp_path: Path):
    from dpoclaims.report.writer import write_reports

    records = [
        claim_record("C9", "xfailed", "contradicts", keyword="correlation", expected="contradicts (declared)")
    ]
    header = {"pair": "p", "fingerprint": "f", "n_prompts": 3, "convention": "v1", "scorer": "lexicon"}
    write_reports(records, tmp_path, header)
    badge = json.loads((tmp_path / "badges" / "C9.json").read_text())
    assert badge == {
        "schemaVersion": 1,
        "label": "C9",
        "message": "contradicts (0.50)",
        "color": "red",
    }
    data = json.loads((tmp_path / "claims.json").read_text())
    assert data["claims"][0]["claim"]["measured"] == 0.5
    assert "| C9 | correlation |" in (tmp_path / "claims.md").read_text()
