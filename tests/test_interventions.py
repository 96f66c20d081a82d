"""Neuron interventions: hook ablation == zeroed value vectors, patching, key scaling."""

from __future__ import annotations

import copy

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tiny import run_with_hooks
from transformers import GPT2LMHeadModel, LlamaForCausalLM

from dpoclaims.interventions import ablation_hooks, neuron_set_from_flat, patch_hooks, scaled_key_vectors

D_MLP = 128  # 4 * D_MODEL for the tiny GPT-2
FIXTURE_OK = [HealthCheck.function_scoped_fixture]


@pytest.fixture(scope="module")
def raw_base(gpt2_pair_files):
    """An un-bridged copy of the tiny GPT-2 base model, loaded separately from disk."""
    return GPT2LMHeadModel.from_pretrained(gpt2_pair_files.base).eval()


@pytest.fixture(scope="module")
def raw_llama_base(llama_pair_files):
    return LlamaForCausalLM.from_pretrained(llama_pair_files.base).eval()


def neuron_sets(n_layers: int, d_mlp: int):
    """Mappings layer -> index tensor (sometimes empty, sometimes a whole layer)."""
    indices = st.one_of(
        st.lists(st.integers(0, d_mlp - 1), min_size=0, max_size=24, unique=True),
        st.just(list(range(d_mlp))),
    )
    return st.dictionaries(st.integers(0, n_layers - 1), indices, max_size=n_layers).map(
        lambda d: {layer: torch.tensor(idx, dtype=torch.long) for layer, idx in d.items()}
    )


def zero_value_vectors_gpt2(raw: GPT2LMHeadModel, neurons) -> GPT2LMHeadModel:
    """A copy of ``raw`` whose neurons' value vectors (rows of Conv1D c_proj.weight,
    layout [d_mlp, d_model]) are zero."""
    model = copy.deepcopy(raw)
    with torch.no_grad():
        for layer, idx in neurons.items():
            weight = model.transformer.h[layer].mlp.c_proj.weight
            assert weight.shape == (D_MLP, model.config.n_embd)
            weight[idx, :] = 0
    return model


@settings(max_examples=15, deadline=None, suppress_health_check=FIXTURE_OK)
@given(neurons=neuron_sets(2, D_MLP))
def test_ablation_hooks_equal_zeroed_value_vectors(gpt2_pair, raw_base, sample_batch, neurons):
    hooked = run_with_hooks(gpt2_pair.base, sample_batch, ablation_hooks(gpt2_pair.layout, neurons))
    edited = zero_value_vectors_gpt2(raw_base, neurons)
    with torch.no_grad():
        expected = edited(**sample_batch).logits
    torch.testing.assert_close(hooked, expected, rtol=1e-5, atol=1e-5)


def test_ablation_changes_logits(gpt2_pair, sample_batch):
    clean = run_with_hooks(gpt2_pair.base, sample_batch, [])
    neurons = {0: torch.tensor([0, 5, 17]), 1: torch.tensor([3])}
    ablated = run_with_hooks(gpt2_pair.base, sample_batch, ablation_hooks(gpt2_pair.layout, neurons))
    assert (clean - ablated).abs().max() > 1e-4


def test_ablation_sets_activations_to_zero_only_for_chosen_neurons(gpt2_pair, sample_batch):
    neurons = {1: torch.tensor([2, 9, 100])}
    seen = {}

    def record(activation, hook):
        seen["act"] = activation.detach().clone()
        return activation

    # A recording hook added after the ablation hook sees the ablated activation.
    hooks = ablation_hooks(gpt2_pair.layout, neurons) + [(gpt2_pair.layout.hook_name(1), record)]
    run_with_hooks(gpt2_pair.base, sample_batch, hooks)
    ablated = seen["act"]
    run_with_hooks(gpt2_pair.base, sample_batch, [(gpt2_pair.layout.hook_name(1), record)])
    clean = seen["act"]
    assert torch.all(ablated[..., neurons[1]] == 0)
    others = torch.ones(clean.shape[-1], dtype=torch.bool)
    others[neurons[1]] = False
    torch.testing.assert_close(ablated[..., others], clean[..., others], rtol=0, atol=0)
    assert torch.all(clean[..., neurons[1]] != 0)


@pytest.mark.parametrize(
    "neurons",
    [
        {},
        {0: torch.tensor([], dtype=torch.long)},
        {0: torch.tensor([], dtype=torch.long), 1: torch.tensor([], dtype=torch.long)},
    ],
)
def test_ablating_empty_set_changes_nothing(gpt2_pair, raw_base, sample_batch, neurons):
    hooks = ablation_hooks(gpt2_pair.layout, neurons)
    assert hooks == []
    hooked = run_with_hooks(gpt2_pair.base, sample_batch, hooks)
    with torch.no_grad():
        expected = raw_base(**sample_batch).logits
    torch.testing.assert_close(hooked, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(hooked, run_with_hooks(gpt2_pair.base, sample_batch, []), rtol=0, atol=0)


def test_hooks_are_removed_after_context(gpt2_pair, sample_batch):
    before = run_with_hooks(gpt2_pair.base, sample_batch, [])
    run_with_hooks(gpt2_pair.base, sample_batch, ablation_hooks(gpt2_pair.layout, {0: torch.arange(D_MLP)}))
    after = run_with_hooks(gpt2_pair.base, sample_batch, [])
    torch.testing.assert_close(before, after, rtol=0, atol=0)


@settings(max_examples=8, deadline=None, suppress_health_check=FIXTURE_OK)
@given(neurons=neuron_sets(2, D_MLP), seed=st.integers(0, 2**16))
def test_patch_hooks_equal_bias_shift(gpt2_pair, raw_base, sample_batch, neurons, seed):
    """Fixing neuron i's activation to v everywhere == zeroing its value vector and adding
    v * value_vector to c_proj's bias."""
    generator = torch.Generator().manual_seed(seed)
    values = {layer: torch.randn(D_MLP, generator=generator) for layer in range(2)}
    hooked = run_with_hooks(gpt2_pair.base, sample_batch, patch_hooks(gpt2_pair.layout, neurons, values))
    model = copy.deepcopy(raw_base)
    with torch.no_grad():
        for layer, idx in neurons.items():
            proj = model.transformer.h[layer].mlp.c_proj
            proj.bias += values[layer][idx] @ proj.weight[idx, :]
            proj.weight[idx, :] = 0
        expected = model(**sample_batch).logits
    torch.testing.assert_close(hooked, expected, rtol=1e-4, atol=1e-4)


def test_patch_hooks_to_zero_equal_ablation(gpt2_pair, sample_batch):
    neurons = {0: torch.tensor([1, 2, 3]), 1: torch.tensor([64, 127])}
    zeros = {layer: torch.zeros(D_MLP) for layer in range(2)}
    patched = run_with_hooks(gpt2_pair.base, sample_batch, patch_hooks(gpt2_pair.layout, neurons, zeros))
    ablated = run_with_hooks(gpt2_pair.base, sample_batch, ablation_hooks(gpt2_pair.layout, neurons))
    torch.testing.assert_close(patched, ablated, rtol=0, atol=0)


def test_gated_ablation_hooks_equal_zeroed_down_proj_columns(llama_pair, raw_llama_base, sample_batch):
    neurons = {0: torch.tensor([0, 7, 33]), 1: torch.tensor([63])}
    hooked = run_with_hooks(llama_pair.base, sample_batch, ablation_hooks(llama_pair.layout, neurons))
    model = copy.deepcopy(raw_llama_base)
    with torch.no_grad():
        for layer, idx in neurons.items():
            model.model.layers[layer].mlp.down_proj.weight[:, idx] = 0  # nn.Linear: [d_model, d_mlp]
        expected = model(**sample_batch).logits
    torch.testing.assert_close(hooked, expected, rtol=1e-5, atol=1e-5)
    assert (hooked - run_with_hooks(llama_pair.base, sample_batch, [])).abs().max() > 1e-4


# --------------------------------------------------------------------------- neuron_set_from_flat


@settings(max_examples=100, deadline=None)
@given(data=st.data(), n_layers=st.integers(1, 6), d_mlp=st.integers(1, 50))
def test_neuron_set_from_flat_round_trip(data, n_layers, d_mlp):
    flat = data.draw(st.lists(st.integers(0, n_layers * d_mlp - 1), unique=True, max_size=40))
    grouped = neuron_set_from_flat(torch.tensor(flat, dtype=torch.long), d_mlp)
    assert set(grouped) == {i // d_mlp for i in flat}
    back = []
    for layer, idx in grouped.items():
        assert isinstance(layer, int)
        assert idx.dtype == torch.long
        assert len(idx) > 0
        assert bool(((idx >= 0) & (idx < d_mlp)).all())
        back.extend(layer * d_mlp + int(i) for i in idx)
    assert sorted(back) == sorted(flat)
    # within a layer, the original order is kept
    for layer, idx in grouped.items():
        assert [int(i) for i in idx] == [i % d_mlp for i in flat if i // d_mlp == layer]


def test_neuron_set_from_flat_example():
    grouped = neuron_set_from_flat(torch.tensor([5, 130, 0, 255]), 128)
    assert sorted(grouped) == [0, 1]
    assert grouped[0].tolist() == [5, 0]
    assert grouped[1].tolist() == [2, 127]


# --------------------------------------------------------------------------- scaled_key_vectors


def _fc_weights(bridge):
    return [block.mlp._modules["in"].original_component.weight.detach().clone() for block in bridge.blocks]


@pytest.mark.parametrize("factor", [0.0, 3.0])
def test_scaled_key_vectors_changes_outputs_and_restores(gpt2_pair, raw_base, sample_batch, factor):
    bridge = gpt2_pair.base
    neurons = {0: torch.tensor([1, 4, 9]), 1: torch.tensor([0, 127])}
    clean = run_with_hooks(bridge, sample_batch, [])
    weights_before = _fc_weights(bridge)
    keys_before = gpt2_pair.key_vectors("base").clone()

    with scaled_key_vectors(bridge, neurons, factor):
        inside = run_with_hooks(bridge, sample_batch, [])
        keys_inside = gpt2_pair.key_vectors("base")
        # an un-bridged copy with the same key vectors scaled (Conv1D c_fc: [d_model, d_mlp])
        model = copy.deepcopy(raw_base)
        with torch.no_grad():
            for layer, idx in neurons.items():
                model.transformer.h[layer].mlp.c_fc.weight[:, idx] *= factor
            expected = model(**sample_batch).logits

    assert (inside - clean).abs().max() > 1e-4
    torch.testing.assert_close(inside, expected, rtol=1e-5, atol=1e-5)
    for layer, idx in neurons.items():
        torch.testing.assert_close(keys_inside[layer][idx], keys_before[layer][idx] * factor)
        mask = torch.ones(D_MLP, dtype=torch.bool)
        mask[idx] = False
        torch.testing.assert_close(keys_inside[layer][mask], keys_before[layer][mask], rtol=0, atol=0)

    for before, after in zip(weights_before, _fc_weights(bridge)):
        assert torch.equal(before, after)
    torch.testing.assert_close(run_with_hooks(bridge, sample_batch, []), clean, rtol=0, atol=0)


def test_scaled_key_vectors_restores_after_exception(gpt2_pair, sample_batch):
    bridge = gpt2_pair.base
    clean = run_with_hooks(bridge, sample_batch, [])
    weights_before = _fc_weights(bridge)
    with pytest.raises(RuntimeError, match="boom"):
        with scaled_key_vectors(bridge, {0: torch.arange(10), 1: torch.tensor([3])}, 5.0):
            assert not torch.equal(_fc_weights(bridge)[0], weights_before[0])
            raise RuntimeError("boom")
    for before, after in zip(weights_before, _fc_weights(bridge)):
        assert torch.equal(before, after)
    torch.testing.assert_close(run_with_hooks(bridge, sample_batch, []), clean, rtol=0, atol=0)


def test_scaled_key_vectors_restores_after_bad_index(gpt2_pair):
    """An error while scaling (an index out of range in the second layer) still restores
    the layers already scaled."""
    bridge = gpt2_pair.base
    weights_before = _fc_weights(bridge)
    with pytest.raises(IndexError):
        with scaled_key_vectors(bridge, {0: torch.tensor([1, 2]), 1: torch.tensor([D_MLP + 5])}, 4.0):
            pass
    for before, after in zip(weights_before, _fc_weights(bridge)):
        assert torch.equal(before, after)


def test_gated_zero_key_scaling_equals_ablation(llama_pair, sample_batch):
    """For a gated MLP the key vector is up_proj's row: scaling it by 0 zeroes act(gate) * up,
    i.e. ablates the neuron."""
    neurons = {0: torch.tensor([2, 40]), 1: torch.tensor([0, 1, 63])}
    ablated = run_with_hooks(llama_pair.base, sample_batch, ablation_hooks(llama_pair.layout, neurons))
    with scaled_key_vectors(llama_pair.base, neurons, 0.0):
        scaled = run_with_hooks(llama_pair.base, sample_batch, [])
    torch.testing.assert_close(scaled, ablated, rtol=1e-5, atol=1e-5)
    assert (scaled - run_with_hooks(llama_pair.base, sample_batch, [])).abs().max() > 1e-4
