"""Neuron interventions on the plain HF model (``Intervention.applied``): ablation == zeroed value
vectors, patching == a bias shift, key scaling == scaled key vectors in a weight copy."""

from __future__ import annotations

import copy

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tiny import intervened_logits, run_logits
from transformers import GPT2LMHeadModel, LlamaForCausalLM

from dpoclaims.hooks.interventions import Intervention, neuron_set_from_flat, scaled_key_vectors
from dpoclaims.models.mlp import neuron_activation_modules

D_MLP = 128  # 4 * D_MODEL for the tiny GPT-2
FIXTURE_OK = [HealthCheck.function_scoped_fixture]


def flat_ids(neurons) -> tuple[int, ...]:
    """A neuron set (layer -> indices) as the flat ids an :class:`Intervention` takes."""
    return tuple(layer * D_MLP + int(i) for layer, idx in neurons.items() for i in idx)


def ablation(neurons) -> Intervention:
    return Intervention("ablate", flat_ids(neurons))


def patch(neurons, values) -> Intervention:
    """Set each neuron of ``neurons`` to ``values[layer][index]``."""
    patched = tuple(float(values[layer][i]) for layer, idx in neurons.items() for i in idx)
    return Intervention("patch", flat_ids(neurons), values=patched)


def no_hook_left(pair) -> bool:
    return all(not m._forward_pre_hooks for m in neuron_activation_modules(pair.base, pair.layout))


@pytest.fixture(scope="module")
def raw_base(gpt2_pair_files):
    """A copy of the tiny GPT-2 base model, loaded separately from disk (never hooked)."""
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
def test_ablation_equals_zeroed_value_vectors(gpt2_pair, raw_base, sample_batch, neurons):
    hooked = intervened_logits(gpt2_pair.base, gpt2_pair.layout, sample_batch, ablation(neurons))
    edited = zero_value_vectors_gpt2(raw_base, neurons)
    with torch.no_grad():
        expected = edited(**sample_batch).logits
    torch.testing.assert_close(hooked, expected, rtol=1e-5, atol=1e-5)
    assert no_hook_left(gpt2_pair)


def test_ablation_changes_logits(gpt2_pair, sample_batch):
    clean = run_logits(gpt2_pair.base, sample_batch)
    neurons = {0: torch.tensor([0, 5, 17]), 1: torch.tensor([3])}
    ablated = intervened_logits(gpt2_pair.base, gpt2_pair.layout, sample_batch, ablation(neurons))
    assert (clean - ablated).abs().max() > 1e-4


def test_ablation_sets_activations_to_zero_only_for_chosen_neurons(gpt2_pair, sample_batch):
    neurons = {1: torch.tensor([2, 9, 100])}
    seen = {}

    def record(activation):
        seen["act"] = activation.detach().clone()

    # A recording edit passed as extra_edits runs after the ablation: it sees the ablated activation.
    with ablation(neurons).applied(gpt2_pair.base, gpt2_pair.layout, extra_edits={1: record}) as model:
        run_logits(model, sample_batch)
    ablated = seen["act"]
    with Intervention().applied(gpt2_pair.base, gpt2_pair.layout, extra_edits={1: record}) as model:
        run_logits(model, sample_batch)
    clean = seen["act"]
    assert torch.all(ablated[..., neurons[1]] == 0)
    others = torch.ones(clean.shape[-1], dtype=torch.bool)
    others[neurons[1]] = False
    torch.testing.assert_close(ablated[..., others], clean[..., others], rtol=0, atol=0)
    assert torch.all(clean[..., neurons[1]] != 0)
    assert no_hook_left(gpt2_pair)


@pytest.mark.parametrize(
    "neurons",
    [
        {},
        {0: torch.tensor([], dtype=torch.long)},
        {0: torch.tensor([], dtype=torch.long), 1: torch.tensor([], dtype=torch.long)},
    ],
)
def test_ablating_empty_set_changes_nothing(gpt2_pair, raw_base, sample_batch, neurons):
    intervention = ablation(neurons)
    assert intervention.edits(gpt2_pair.layout) == {}
    hooked = intervened_logits(gpt2_pair.base, gpt2_pair.layout, sample_batch, intervention)
    with torch.no_grad():
        expected = raw_base(**sample_batch).logits
    torch.testing.assert_close(hooked, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(hooked, run_logits(gpt2_pair.base, sample_batch), rtol=0, atol=0)


def test_hooks_are_removed_after_context_and_on_error(gpt2_pair, sample_batch):
    before = run_logits(gpt2_pair.base, sample_batch)
    everything = ablation({0: torch.arange(D_MLP)})
    intervened_logits(gpt2_pair.base, gpt2_pair.layout, sample_batch, everything)
    assert no_hook_left(gpt2_pair)
    with pytest.raises(RuntimeError, match="boom"):
        with everything.applied(gpt2_pair.base, gpt2_pair.layout, extra_edits={1: lambda a: None}):
            assert not no_hook_left(gpt2_pair)
            raise RuntimeError("boom")
    assert no_hook_left(gpt2_pair)
    torch.testing.assert_close(before, run_logits(gpt2_pair.base, sample_batch), rtol=0, atol=0)


@settings(max_examples=8, deadline=None, suppress_health_check=FIXTURE_OK)
@given(neurons=neuron_sets(2, D_MLP), seed=st.integers(0, 2**16))
def test_patch_equals_bias_shift(gpt2_pair, raw_base, sample_batch, neurons, seed):
    """Fixing neuron i's activation to v everywhere == zeroing its value vector and adding
    v * value_vector to c_proj's bias."""
    generator = torch.Generator().manual_seed(seed)
    values = {layer: torch.randn(D_MLP, generator=generator) for layer in range(2)}
    hooked = intervened_logits(gpt2_pair.base, gpt2_pair.layout, sample_batch, patch(neurons, values))
    model = copy.deepcopy(raw_base)
    with torch.no_grad():
        for layer, idx in neurons.items():
            proj = model.transformer.h[layer].mlp.c_proj
            proj.bias += values[layer][idx] @ proj.weight[idx, :]
            proj.weight[idx, :] = 0
        expected = model(**sample_batch).logits
    torch.testing.assert_close(hooked, expected, rtol=1e-4, atol=1e-4)


def test_patch_to_zero_equals_ablation(gpt2_pair, sample_batch):
    neurons = {0: torch.tensor([1, 2, 3]), 1: torch.tensor([64, 127])}
    zeros = {layer: torch.zeros(D_MLP) for layer in range(2)}
    patched = intervened_logits(gpt2_pair.base, gpt2_pair.layout, sample_batch, patch(neurons, zeros))
    ablated = intervened_logits(gpt2_pair.base, gpt2_pair.layout, sample_batch, ablation(neurons))
    torch.testing.assert_close(patched, ablated, rtol=0, atol=0)


def test_gated_ablation_equals_zeroed_down_proj_columns(llama_pair, raw_llama_base, sample_batch):
    neurons = {0: torch.tensor([0, 7, 33]), 1: torch.tensor([63])}
    d_mlp = llama_pair.layout.d_mlp
    flat = tuple(layer * d_mlp + int(i) for layer, idx in neurons.items() for i in idx)
    hooked = intervened_logits(llama_pair.base, llama_pair.layout, sample_batch, Intervention("ablate", flat))
    model = copy.deepcopy(raw_llama_base)
    with torch.no_grad():
        for layer, idx in neurons.items():
            model.model.layers[layer].mlp.down_proj.weight[:, idx] = 0  # nn.Linear: [d_model, d_mlp]
        expected = model(**sample_batch).logits
    torch.testing.assert_close(hooked, expected, rtol=1e-5, atol=1e-5)
    assert (hooked - run_logits(llama_pair.base, sample_batch)).abs().max() > 1e-4


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


def _fc_weights(model):
    return [block.mlp.c_fc.weight.detach().clone() for block in model.transformer.h]


@pytest.mark.parametrize("factor", [0.0, 3.0])
def test_scaled_key_vectors_changes_outputs_and_restores(gpt2_pair, raw_base, sample_batch, factor):
    model, layout = gpt2_pair.base, gpt2_pair.layout
    neurons = {0: torch.tensor([1, 4, 9]), 1: torch.tensor([0, 127])}
    clean = run_logits(model, sample_batch)
    weights_before = _fc_weights(model)
    keys_before = gpt2_pair.key_vectors("base").clone()

    with scaled_key_vectors(model, layout, neurons, factor):
        inside = run_logits(model, sample_batch)
        keys_inside = gpt2_pair.key_vectors("base")
        # a separately loaded copy with the same key vectors scaled (Conv1D c_fc: [d_model, d_mlp])
        expected_model = copy.deepcopy(raw_base)
        with torch.no_grad():
            for layer, idx in neurons.items():
                expected_model.transformer.h[layer].mlp.c_fc.weight[:, idx] *= factor
            expected = expected_model(**sample_batch).logits

    assert (inside - clean).abs().max() > 1e-4
    torch.testing.assert_close(inside, expected, rtol=1e-5, atol=1e-5)
    for layer, idx in neurons.items():
        torch.testing.assert_close(keys_inside[layer][idx], keys_before[layer][idx] * factor)
        mask = torch.ones(D_MLP, dtype=torch.bool)
        mask[idx] = False
        torch.testing.assert_close(keys_inside[layer][mask], keys_before[layer][mask], rtol=0, atol=0)

    for before, after in zip(weights_before, _fc_weights(model)):
        assert torch.equal(before, after)
    torch.testing.assert_close(run_logits(model, sample_batch), clean, rtol=0, atol=0)


def test_scale_keys_intervention_restores_the_weights(gpt2_pair, sample_batch):
    """``Intervention("scale_keys")`` through ``applied``: scaled inside, restored after."""
    model, layout = gpt2_pair.base, gpt2_pair.layout
    weights_before = _fc_weights(model)
    intervention = Intervention("scale_keys", (3, D_MLP + 5), factor=4.0)
    with intervention.applied(model, layout) as running:
        assert running is model
        assert torch.equal(model.transformer.h[0].mlp.c_fc.weight[:, 3], weights_before[0][:, 3] * 4.0)
        assert torch.equal(model.transformer.h[1].mlp.c_fc.weight[:, 5], weights_before[1][:, 5] * 4.0)
    for before, after in zip(weights_before, _fc_weights(model)):
        assert torch.equal(before, after)


def test_scaled_key_vectors_restores_after_exception(gpt2_pair, sample_batch):
    model, layout = gpt2_pair.base, gpt2_pair.layout
    clean = run_logits(model, sample_batch)
    weights_before = _fc_weights(model)
    with pytest.raises(RuntimeError, match="boom"):
        with scaled_key_vectors(model, layout, {0: torch.arange(10), 1: torch.tensor([3])}, 5.0):
            assert not torch.equal(_fc_weights(model)[0], weights_before[0])
            raise RuntimeError("boom")
    for before, after in zip(weights_before, _fc_weights(model)):
        assert torch.equal(before, after)
    torch.testing.assert_close(run_logits(model, sample_batch), clean, rtol=0, atol=0)


def test_scaled_key_vectors_restores_after_bad_index(gpt2_pair):
    """An error while scaling (an index out of range in the second layer) still restores
    the layers already scaled."""
    model, layout = gpt2_pair.base, gpt2_pair.layout
    weights_before = _fc_weights(model)
    with pytest.raises(IndexError):
        with scaled_key_vectors(model, layout, {0: torch.tensor([1, 2]), 1: torch.tensor([D_MLP + 5])}, 4.0):
            pass
    for before, after in zip(weights_before, _fc_weights(model)):
        assert torch.equal(before, after)


def test_gated_zero_key_scaling_equals_ablation(llama_pair, sample_batch):
    """For a gated MLP the key vector is up_proj's row: scaling it by 0 zeroes act(gate) * up,
    i.e. ablates the neuron."""
    model, layout = llama_pair.base, llama_pair.layout
    neurons = {0: torch.tensor([2, 40]), 1: torch.tensor([0, 1, 63])}
    flat = tuple(layer * layout.d_mlp + int(i) for layer, idx in neurons.items() for i in idx)
    ablated = intervened_logits(model, layout, sample_batch, Intervention("ablate", flat))
    with scaled_key_vectors(model, layout, neurons, 0.0):
        scaled = run_logits(model, sample_batch)
    torch.testing.assert_close(scaled, ablated, rtol=1e-5, atol=1e-5)
    assert (scaled - run_logits(model, sample_batch)).abs().max() > 1e-4
