"""Plain PyTorch hooks on the plain HF model (:mod:`dpoclaims.hooks.neurons`) record and edit the
MLP neuron activation (TransformerLens' ``blocks.L.mlp.hook_post``), on a GPT-2 and a
Llama-shaped pair, in float32 and float64.

The references are independent of the module under test: the activation is recomputed by hand
from the MLP's input (``tiny.reference_mlp_activations``), and an edit is replayed by replacing
the MLP's whole output (``tiny.mlp_outputs_replaced``), never through a pre-hook on the output
projection. Both run the same operations as the HF MLP forward, so the values are equal; ablation
is also checked against a weight copy with the neurons' value vectors zeroed (a different
matrix product: equal within rounding).
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch
from tiny import mlp_outputs_replaced, reference_mlp_activations

from dpoclaims.cache import Cache
from dpoclaims.errors import PairMismatchError
from dpoclaims.hooks.neurons import LastPositionRecorder, neuron_hooks, set_neurons
from dpoclaims.models.loading import MLPLayout
from dpoclaims.models.mlp import (
    decoder_layers,
    key_vectors,
    mlp_modules,
    neuron_activation_modules,
    neuron_rows,
    value_vectors,
)
from dpoclaims.train.named_pairs import load_pair

PAIRS = [(family, dtype) for family in ("gpt2", "llama") for dtype in (torch.float32, torch.float64)]
# A weight copy with zeroed value vectors runs another matrix product than a zeroed activation.
ROUNDING = {torch.float32: 1e-5, torch.float64: 1e-10}


@pytest.fixture(scope="module")
def pairs(gpt2_pair_files, llama_pair_files, tmp_path_factory) -> dict[tuple[str, torch.dtype], Any]:
    """Both tiny pairs in float32 and float64, private to this module (tests edit weights)."""
    cache = Cache(tmp_path_factory.mktemp("neuron_hooks_cache"))
    files = {"gpt2": gpt2_pair_files, "llama": llama_pair_files}
    return {
        (family, dtype): load_pair(files[family].spec, cache=cache, dtype=dtype) for family, dtype in PAIRS
    }


def assert_equal(actual: torch.Tensor, expected: torch.Tensor, tolerance: float = 0.0) -> None:
    assert actual.shape == expected.shape and actual.dtype == expected.dtype
    difference = (actual - expected).abs().max().item()
    assert difference <= tolerance, f"max difference {difference} > {tolerance}"


def hooked_record(model: torch.nn.Module, layout: MLPLayout, edits: dict, **inputs: torch.Tensor):
    """Each layer's neuron activation after ``edits`` (a recorder nested inside them), and the logits,
    both through :func:`neuron_hooks`."""
    seen: dict[int, torch.Tensor] = {}

    def keep(layer: int):
        return lambda activation: seen.__setitem__(layer, activation.clone())

    with torch.no_grad(), neuron_hooks(model, layout, edits):
        with neuron_hooks(model, layout, {layer: keep(layer) for layer in range(layout.n_layers)}):
            logits = model(**inputs).logits
    return [seen[layer] for layer in range(layout.n_layers)], logits


# --------------------------------------------------------------------------- finding the modules


def test_neuron_activation_modules_are_c_proj_and_down_proj(pairs):
    gpt2, llama = pairs["gpt2", torch.float32], pairs["llama", torch.float32]
    assert neuron_activation_modules(gpt2.base, gpt2.layout) == [
        block.mlp.c_proj for block in gpt2.base.transformer.h
    ]
    assert neuron_activation_modules(llama.base, llama.layout) == [
        layer.mlp.down_proj for layer in llama.base.model.layers
    ]
    assert mlp_modules(gpt2.base, gpt2.layout) == [
        (b.mlp.c_fc, b.mlp.c_proj) for b in gpt2.base.transformer.h
    ]
    assert mlp_modules(llama.base, llama.layout) == [
        (layer.mlp.up_proj, layer.mlp.down_proj) for layer in llama.base.model.layers
    ]
    assert decoder_layers(gpt2.base) is gpt2.base.transformer.h
    assert decoder_layers(llama.base) is llama.base.model.layers


def test_decoder_layers_and_mlp_modules_refuse_what_they_cannot_read(pairs):
    pair = pairs["gpt2", torch.float32]
    with pytest.raises(PairMismatchError, match="cannot find the decoder layers of Linear"):
        decoder_layers(torch.nn.Linear(2, 2))
    with pytest.raises(PairMismatchError, match="cannot find the decoder layers"):
        mlp_modules(torch.nn.Sequential(torch.nn.Linear(2, 2)), pair.layout)
    wrong = MLPLayout("gpt2", pair.layout.n_layers + 1, pair.layout.d_model, pair.layout.d_mlp)
    with pytest.raises(PairMismatchError, match=f"has {pair.layout.n_layers} layers, the layout"):
        mlp_modules(pair.base, wrong)
    gated = MLPLayout("gated", pair.layout.n_layers, pair.layout.d_model, pair.layout.d_mlp)
    with pytest.raises(PairMismatchError, match=r"layer 0 .* no mlp\.up_proj/mlp\.down_proj"):
        neuron_activation_modules(pair.base, gated)
    llama = pairs["llama", torch.float32]
    as_gpt2 = MLPLayout("gpt2", llama.layout.n_layers, llama.layout.d_model, llama.layout.d_mlp)
    with pytest.raises(PairMismatchError, match="c_fc/mlp.c_proj or mlp.fc_in/mlp.fc_out"):
        mlp_modules(llama.base, as_gpt2)


# --------------------------------------------------------------------------- key and value vectors


def test_gpt2_key_and_value_vectors_are_the_conv1d_weights(pairs):
    """GPT-2's Conv1D stores ``[in, out]``: c_fc ``[d_model, d_mlp]`` (keys are its columns), c_proj
    ``[d_mlp, d_model]`` (values are its rows)."""
    pair = pairs["gpt2", torch.float64]
    layout = pair.layout
    keys, values = key_vectors(pair.base, layout), value_vectors(pair.base, layout)
    assert keys.shape == values.shape == (layout.n_layers, layout.d_mlp, layout.d_model)
    assert keys.dtype == values.dtype == torch.float32 and keys.device.type == "cpu"
    for layer, block in enumerate(pair.base.transformer.h):
        assert block.mlp.c_fc.weight.shape == (layout.d_model, layout.d_mlp)
        assert torch.equal(keys[layer], block.mlp.c_fc.weight.detach().float().T)
        assert torch.equal(values[layer], block.mlp.c_proj.weight.detach().float())
    # what a neuron writes: a one-hot activation through c_proj (without its bias) is its value vector
    block = pair.base.transformer.h[1].mlp
    one_hot = torch.zeros(1, layout.d_mlp, dtype=torch.float64)
    one_hot[0, 7] = 1.0
    with torch.no_grad():
        written = block.c_proj(one_hot) - block.c_proj.bias
    torch.testing.assert_close(written[0].float(), values[1, 7])
    assert torch.equal(pair.key_vectors("dpo"), key_vectors(pair.dpo, layout))
    assert torch.equal(pair.value_vectors("dpo"), value_vectors(pair.dpo, layout))
    assert not torch.equal(pair.value_vectors("dpo"), pair.value_vectors("base"))


def test_llama_key_and_value_vectors_are_the_linear_weights(pairs):
    """``torch.nn.Linear`` stores ``[out, in]``: up_proj ``[d_mlp, d_model]`` (keys are its rows),
    down_proj ``[d_model, d_mlp]`` (values are its columns)."""
    pair = pairs["llama", torch.float32]
    layout = pair.layout
    keys, values = pair.key_vectors("base"), pair.value_vectors("base")
    assert keys.shape == values.shape == (layout.n_layers, layout.d_mlp, layout.d_model)
    for layer, decoder_layer in enumerate(pair.base.model.layers):
        mlp = decoder_layer.mlp
        assert mlp.up_proj.weight.shape == (layout.d_mlp, layout.d_model)
        assert torch.equal(keys[layer], mlp.up_proj.weight.detach())
        assert torch.equal(values[layer], mlp.down_proj.weight.detach().T)
    # what a neuron reads: its key's dot product with x is that neuron's up_proj output
    x = torch.randn(layout.d_model, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(pair.base.model.layers[0].mlp.up_proj(x), keys[0] @ x)


def test_neuron_rows_is_a_view_and_refuses_a_wrong_shape(pairs):
    pair = pairs["gpt2", torch.float32]
    c_fc = pair.base.transformer.h[0].mlp.c_fc
    rows = neuron_rows(c_fc, pair.layout.d_mlp, pair.layout.d_model, neurons_are="outputs")
    assert rows.data_ptr() == c_fc.weight.data_ptr()
    with pytest.raises(PairMismatchError, match="does not hold"):
        neuron_rows(c_fc, pair.layout.d_mlp, pair.layout.d_model, neurons_are="inputs")
    with pytest.raises(PairMismatchError, match="does not hold 3 neurons of width 5"):
        neuron_rows(torch.nn.Linear(3, 4), 3, 5, neurons_are="inputs")


# --------------------------------------------------------------------------- against the references


@pytest.mark.parametrize(("family", "dtype"), PAIRS)
def test_recorded_activations_equal_the_recomputed_mlp_activation(pairs, family, dtype, sample_batch):
    pair = pairs[family, dtype]
    expected, expected_logits = reference_mlp_activations(pair.base, **sample_batch)
    recorded, logits = hooked_record(pair.base, pair.layout, {}, **sample_batch)
    for layer in range(pair.layout.n_layers):
        assert recorded[layer].shape == (*sample_batch["input_ids"].shape, pair.layout.d_mlp)
        assert_equal(recorded[layer], expected[layer])
    assert_equal(logits, expected_logits)
    # the two sides are different models (guards against loading one twice)
    dpo, _ = reference_mlp_activations(pair.dpo, **sample_batch)
    assert not torch.allclose(dpo[0], expected[0])


def test_the_recorded_activation_is_post_nonlinearity(pairs, sample_batch):
    """GPT-2: the recorded values are GELU's output (none below GELU's minimum, about -0.17), not
    c_fc's pre-activation (which goes below it)."""
    pair = pairs["gpt2", torch.float32]
    pre: dict[int, torch.Tensor] = {}
    handle = pair.base.transformer.h[0].mlp.c_fc.register_forward_hook(
        lambda module, args, output: pre.__setitem__(0, output.detach().clone())
    )
    try:
        recorded, _ = hooked_record(pair.base, pair.layout, {}, **sample_batch)
    finally:
        handle.remove()
    assert recorded[0].min() > -0.2 and pre[0].min() < -0.2


def _interventions(
    layout: MLPLayout, dtype: torch.dtype
) -> dict[str, dict[int, tuple[torch.Tensor, torch.Tensor]]]:
    """Per intervention, ``layer -> (neuron indices, values)``."""
    generator = torch.Generator().manual_seed(7)
    some = torch.tensor([0, 5, 9, 31])
    return {
        "zero": {
            0: (some, torch.zeros(len(some), dtype=dtype)),
            1: (torch.arange(layout.d_mlp), torch.zeros(1)),
        },
        "fixed": {
            layer: (some + layer, torch.randn(len(some), generator=generator, dtype=dtype))
            for layer in range(layout.n_layers)
        },
    }


def reference_set(indices: torch.Tensor, values: torch.Tensor):
    """Setting neurons ``indices`` to ``values``, written here independently of ``set_neurons``."""

    def edit(activation: torch.Tensor) -> torch.Tensor:
        activation = activation.clone()
        activation[..., indices] = values.to(activation.dtype)
        return activation

    return edit


@pytest.mark.parametrize("intervention", ["zero", "fixed"])
@pytest.mark.parametrize(("family", "dtype"), PAIRS)
def test_interventions_equal_the_replayed_mlp(pairs, family, dtype, intervention, sample_batch):
    """Zeroing neurons and setting neurons to fixed values through ``neuron_hooks`` gives the
    logits of the MLP forward replayed with the same edit, and records the set values."""
    pair = pairs[family, dtype]
    spec = _interventions(pair.layout, dtype)[intervention]
    edits = {layer: set_neurons(idx, values) for layer, (idx, values) in spec.items()}
    recorded, logits = hooked_record(pair.base, pair.layout, edits, **sample_batch)
    with (
        torch.no_grad(),
        mlp_outputs_replaced(
            pair.base, {layer: reference_set(idx, values) for layer, (idx, values) in spec.items()}
        ),
    ):
        expected_logits = pair.base(**sample_batch).logits
    assert_equal(logits, expected_logits)
    for layer, (idx, values) in spec.items():
        assert torch.equal(recorded[layer][..., idx], values.to(dtype).expand_as(recorded[layer][..., idx]))
    _, clean_logits = hooked_record(pair.base, pair.layout, {}, **sample_batch)
    assert (logits - clean_logits).abs().max() > 1e-3  # the intervention did something
    if intervention == "zero":  # zeroed activations write what zeroed value vectors write
        ablated = copy.deepcopy(pair.base)
        with torch.no_grad():
            for layer, (idx, _) in spec.items():
                out_proj = neuron_activation_modules(ablated, pair.layout)[layer]
                # the neurons' rows of W_out: Conv1D [d_mlp, d_model] rows, Linear [d_model, d_mlp] columns
                if isinstance(out_proj, torch.nn.Linear):
                    out_proj.weight[:, idx] = 0
                else:
                    out_proj.weight[idx, :] = 0
            assert_equal(logits, ablated(**sample_batch).logits, ROUNDING[dtype])


def test_hooks_are_removed_on_exit_and_on_error(pairs, sample_batch):
    pair = pairs["llama", torch.float32]
    model = pair.base
    modules = neuron_activation_modules(model, pair.layout)
    with torch.no_grad():
        clean = model(**sample_batch).logits
        with neuron_hooks(model, pair.layout, {0: set_neurons(torch.arange(4), torch.zeros(1))}):
            assert len(modules[0]._forward_pre_hooks) == 1
            assert not torch.equal(model(**sample_batch).logits, clean)
        with pytest.raises(RuntimeError, match="boom"):
            with neuron_hooks(model, pair.layout, {1: set_neurons(torch.arange(4), torch.zeros(1))}):
                assert len(modules[1]._forward_pre_hooks) == 1
                raise RuntimeError("boom")
        assert all(not module._forward_pre_hooks for module in modules)
        assert torch.equal(model(**sample_batch).logits, clean)


def test_out_of_range_layers_are_refused(pairs):
    pair = pairs["gpt2", torch.float32]
    with pytest.raises(PairMismatchError, match="out of range"):
        with neuron_hooks(pair.base, pair.layout, {pair.layout.n_layers: lambda a: None}):
            pass
    assert all(not m._forward_pre_hooks for m in neuron_activation_modules(pair.base, pair.layout))


# --------------------------------------------------------------------------- LastPositionRecorder


@pytest.mark.parametrize("fold_every", [1, 2, 32])
def test_recorder_sums_the_last_position_of_unfinished_rows(pairs, fold_every):
    """Drive forwards by hand (a 5-token prompt step, then one-token steps): a row stops
    counting after a step *fed* EOS; the step that fed it EOS's predecessor still counts."""
    pair = pairs["gpt2", torch.float64]
    model, layout, eos = pair.base, pair.layout, 0
    generator = torch.Generator().manual_seed(3)
    prompt = torch.randint(1, 200, (3, 5), generator=generator)
    steps = [prompt] + [torch.randint(1, 200, (3, 1), generator=generator) for _ in range(5)]
    steps[2][1, 0] = eos  # row 1 is fed EOS at step 2: steps 0 and 1 count
    steps[4][2, 0] = eos  # row 2: steps 0..3 count
    steps[5][1, 0] = 7  # what a finished row is fed afterwards does not matter
    expected_weights = torch.tensor(
        [[1, 1, 1, 1, 1, 1], [1, 1, 0, 0, 0, 0], [1, 1, 1, 1, 0, 0]], dtype=torch.float64
    )
    expected = torch.zeros(3, layout.n_layers, layout.d_mlp, dtype=torch.float64)
    recorder = LastPositionRecorder(layout, 3, eos, fold_every=fold_every)
    with torch.no_grad():
        for step, ids in enumerate(steps):
            activations, _ = reference_mlp_activations(model, input_ids=ids)
            for layer in range(layout.n_layers):
                expected[:, layer] += expected_weights[:, step, None] * activations[layer][:, -1]
            with recorder.attached(model):
                model(input_ids=ids)
    assert torch.equal(recorder.counts(), expected_weights.sum(1))
    torch.testing.assert_close(recorder.sums(), expected, rtol=0, atol=1e-12)
    torch.testing.assert_close(recorder.means(), (expected / expected_weights.sum(1)[:, None, None]).float())
    assert not model._forward_pre_hooks  # the recorder's hooks are gone


PROMPTS = ["hello there", "thanks for sharing this", "what a", "you are such a"]  # left-padded


def generate_recording(pair: Any, prompts: list[str], max_new_tokens: int):
    """Greedy ``generate`` with the KV cache on the plain model, a recorder attached:
    (the prompts' ids without padding, the continuations' ids, the recorder)."""
    from dpoclaims.measure.generation import encode_prompts

    model, tokenizer = pair.base, pair.tokenizer
    batch = encode_prompts(tokenizer, prompts, 8)
    recorder = LastPositionRecorder(pair.layout, len(prompts), tokenizer.eos_token_id)
    with torch.no_grad(), recorder.attached(model):
        output = model.generate(
            **batch,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
    eos = tokenizer.eos_token_id
    new_tokens = output[:, batch["input_ids"].shape[1] :].tolist()
    prompt_ids = [ids[mask.bool()] for ids, mask in zip(batch["input_ids"], batch["attention_mask"])]
    return prompt_ids, [row[: row.index(eos)] if eos in row else row for row in new_tokens], recorder


def manual_greedy(model: Any, layout: MLPLayout, prompt: torch.Tensor, max_new_tokens: int, eos: int):
    """An independent v1 reference for one prompt: greedy decoding by full forwards over the
    unpadded sequence (no KV cache, no ``generate``), summing the recomputed activation at the last
    position of each forward, until the forward that would be fed EOS."""
    ids = prompt[None]
    total = torch.zeros(layout.n_layers, layout.d_mlp, dtype=torch.float64)
    new: list[int] = []
    count = 0
    for _ in range(max_new_tokens):
        if new and new[-1] == eos:
            break
        activations, logits = reference_mlp_activations(model, input_ids=ids)
        total += torch.stack([a[0, -1] for a in activations]).double()
        count += 1
        new.append(int(logits[0, -1].argmax()))
        ids = torch.cat([ids, torch.tensor([[new[-1]]])], dim=1)
    return (new[: new.index(eos)] if eos in new else new), total, count


# Not the Llama in float64: there, HF's eager attention turns left padding into NaN (a fully
# masked padded position is NaN, and attention weights of 0 times NaN values leak it into the
# real positions from layer 1 on).
@pytest.mark.parametrize(("family", "dtype"), [("gpt2", torch.float64), ("llama", torch.float32)])
def test_recorder_during_generate_equals_a_manual_greedy_loop(pairs, family, dtype):
    """The recorder through ``generate`` (left padding, KV cache) gives what a manual greedy loop
    on each unpadded prompt gives: the same continuations, counts and per-prompt means."""
    pair = pairs[family, dtype]
    max_new_tokens = 6
    prompt_ids, rows, recorder = generate_recording(pair, PROMPTS, max_new_tokens)
    sums, counts = recorder.sums(), recorder.counts()  # float64 (means() is float32)
    tolerance = 1e-10 if dtype == torch.float64 else 1e-5
    for index, prompt in enumerate(prompt_ids):
        new, total, count = manual_greedy(
            pair.base, pair.layout, prompt, max_new_tokens, pair.tokenizer.eos_token_id
        )
        assert rows[index] == new
        assert counts[index].item() == count
        difference = (sums[index] / count - total / count).abs().max().item()
        assert difference <= tolerance, f"prompt {index}: max difference {difference}"


def test_recorder_refuses_a_batch_of_another_size(pairs):
    pair = pairs["gpt2", torch.float32]
    recorder = LastPositionRecorder(pair.layout, 2, 0)
    with pytest.raises(PairMismatchError, match="made for 2 rows saw a batch of 3"):
        with torch.no_grad(), recorder.attached(pair.base):
            pair.base(input_ids=torch.ones(3, 4, dtype=torch.long))
    assert not pair.base._forward_pre_hooks


def test_recorder_without_steps_gives_zeros(pairs):
    layout = pairs["gpt2", torch.float32].layout
    recorder = LastPositionRecorder(layout, 2, 0)
    assert recorder.sums().shape == (2, layout.n_layers, layout.d_mlp)
    assert recorder.counts().tolist() == [0.0, 0.0] and recorder.means().abs().sum() == 0
