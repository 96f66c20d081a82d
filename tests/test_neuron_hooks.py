"""Plain PyTorch hooks on the raw HF model record and edit exactly what the TransformerBridge's
``blocks.L.mlp.hook_post`` hook points record and edit, on a GPT-2 and a Llama-shaped pair.

Precision: for the gated (Llama) pair the raw model and the bridge run the same operations, and
the values are ``torch.equal``. For GPT-2 the bridge computes attention from its own split
views of ``c_attn`` (q, k, v), not the fused matrix product of the HF forward, which moves
float32 values by about 2e-6 from layer 0 on; the raw model equals a freshly loaded HF model
exactly. So GPT-2 is compared in float64 (within 1e-10), where that rounding vanishes and any
difference in where a hook sits or what an intervention does would not, and in float32 within
the stated rounding tolerance.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from tiny import record_mlp_activations
from transformers import GPT2LMHeadModel, LlamaForCausalLM

from dpoclaims.cache import Cache
from dpoclaims.errors import PairMismatchError
from dpoclaims.models import MLPLayout
from dpoclaims.named_pairs import load_pair
from dpoclaims.neuron_hooks import (
    LastPositionRecorder,
    neuron_activation_modules,
    neuron_hooks,
    raw_model,
    set_neurons,
)

# The largest difference allowed between the bridge and the raw model, per pair and dtype.
TOLERANCE = {
    ("gpt2", torch.float64): 1e-10,
    ("gpt2", torch.float32): 1e-5,  # the bridge's split-QKV attention rounds differently
    ("llama", torch.float64): 0.0,
    ("llama", torch.float32): 0.0,
}
HF_CLASSES = {"gpt2": GPT2LMHeadModel, "llama": LlamaForCausalLM}
PAIRS = [(family, dtype) for family in ("gpt2", "llama") for dtype in (torch.float32, torch.float64)]


@pytest.fixture(scope="module")
def pairs(gpt2_pair_files, llama_pair_files, tmp_path_factory) -> dict[tuple[str, torch.dtype], Any]:
    """Both tiny pairs in float32 and float64, private to this module (tests edit weights)."""
    cache = Cache(tmp_path_factory.mktemp("neuron_hooks_cache"))
    files = {"gpt2": gpt2_pair_files, "llama": llama_pair_files}
    return {
        (family, dtype): load_pair(files[family].spec, cache=cache, dtype=dtype) for family, dtype in PAIRS
    }


def assert_same(actual: torch.Tensor, expected: torch.Tensor, tolerance: float) -> None:
    assert actual.shape == expected.shape and actual.dtype == expected.dtype
    if tolerance == 0.0:
        assert torch.equal(actual, expected), f"max difference {(actual - expected).abs().max().item()}"
    else:
        difference = (actual - expected).abs().max().item()
        assert difference <= tolerance, f"max difference {difference} > {tolerance}"


def raw_record(model: torch.nn.Module, layout: MLPLayout, edits: dict, **inputs: torch.Tensor):
    """Each layer's neuron activation after ``edits`` (nested inside them), and the logits."""
    seen: dict[int, torch.Tensor] = {}

    def keep(layer: int):
        return lambda activation: seen.__setitem__(layer, activation.clone())

    with torch.no_grad(), neuron_hooks(model, layout, edits):
        with neuron_hooks(model, layout, {layer: keep(layer) for layer in range(layout.n_layers)}):
            logits = model(**inputs).logits
    return [seen[layer] for layer in range(layout.n_layers)], logits


def bridge_set(indices: torch.Tensor, values: torch.Tensor):
    """A bridge hook setting neurons ``indices`` to ``values``, written here independently."""

    def hook(activation: torch.Tensor, hook: Any) -> torch.Tensor:
        activation = activation.clone()
        activation[..., indices] = values.to(activation.dtype)
        return activation

    return hook


# --------------------------------------------------------------------------- raw_model


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_raw_model_shares_every_tensor_and_holds_no_bridge_component(pairs, family):
    from transformer_lens.model_bridge.generalized_components.base import GeneralizedComponent

    bridge = pairs[family, torch.float32].base
    raw = raw_model(bridge)
    wrapped = bridge.original_model
    assert raw is not wrapped
    assert not any(isinstance(module, GeneralizedComponent) for module in raw.modules())
    bridge_parameters = {id(p) for p in wrapped.parameters()}
    bridge_pointers = {p.data_ptr() for p in wrapped.parameters()}
    raw_parameters = list(raw.parameters())
    assert raw_parameters and all(id(p) in bridge_parameters for p in raw_parameters)
    assert all(p.data_ptr() in bridge_pointers for p in raw_parameters)
    bridge_buffers = {b.data_ptr() for b in wrapped.buffers()}
    assert all(b.data_ptr() in bridge_buffers for b in raw.buffers())
    # The HF model's parameters under their HF names. (Its state dict also holds a zero
    # ``lm_head.bias`` buffer that the bridge adds, in place, to a bias-less unembedding.)
    assert [name for name, _ in raw.named_parameters()] == [
        name for name, _ in HF_CLASSES[family](raw.config).named_parameters()
    ]


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_raw_model_is_the_hugging_face_model(pairs, family, gpt2_pair_files, llama_pair_files, sample_batch):
    files = {"gpt2": gpt2_pair_files, "llama": llama_pair_files}[family]
    fresh = HF_CLASSES[family].from_pretrained(files.base).eval()
    fresh.set_attn_implementation("eager")  # the bridge switched its model to eager attention
    raw = raw_model(pairs[family, torch.float32].base)
    with torch.no_grad():
        assert torch.equal(raw(**sample_batch).logits, fresh(**sample_batch).logits)


def test_raw_model_with_its_own_attention_leaves_the_bridge_as_it_is(pairs, sample_batch):
    pair = pairs["llama", torch.float32]
    raw = raw_model(pair.base, attn_implementation="sdpa")
    assert raw.config is not pair.base.original_model.config
    assert raw.config._attn_implementation == "sdpa"
    assert pair.base.original_model.config._attn_implementation == "eager"
    assert all(m.config is raw.config for m in raw.modules() if "config" in m.__dict__)
    expected, _ = record_mlp_activations(pair, "base", **sample_batch)
    recorded, _ = raw_record(raw, pair.layout, {}, **sample_batch)
    mask = sample_batch["attention_mask"].bool()
    for layer in range(pair.layout.n_layers):  # equal up to the kernels' rounding
        torch.testing.assert_close(recorded[layer][mask], expected[layer][mask], rtol=1e-5, atol=1e-5)


def _in_weight(bridge: Any, layer: int) -> torch.nn.Parameter:
    return bridge.blocks[layer].mlp._modules["in"].original_component.weight


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_raw_model_follows_in_place_weight_changes(pairs, family, sample_batch):
    """Key scaling multiplies rows of W_in in place through the bridge: the raw model sees it."""
    pair = pairs[family, torch.float64]
    raw = raw_model(pair.base)
    layer, neurons = 1, torch.tensor([0, 3, 17])
    weight = _in_weight(pair.base, layer)
    raw_mlp = raw.transformer.h[layer].mlp.c_fc if family == "gpt2" else raw.model.layers[layer].mlp.up_proj
    assert raw_mlp.weight is weight and raw_mlp.weight.data_ptr() == weight.data_ptr()
    columns = family == "gpt2"  # GPT-2's Conv1D stores [d_model, d_mlp]
    with torch.no_grad():
        before = raw(**sample_batch).logits
        original = weight.detach().clone()
        try:
            if columns:
                weight[:, neurons] *= 3.0
            else:
                weight[neurons, :] *= 3.0
            after = raw(**sample_batch).logits
            bridge_after = pair.base.original_model(**sample_batch).logits
        finally:
            weight.copy_(original)
        restored = raw(**sample_batch).logits
    assert not torch.allclose(before, after)
    assert_same(after, bridge_after, TOLERANCE[family, torch.float64])
    assert torch.equal(restored, before)


def test_raw_model_follows_the_bridge_to_another_dtype(gpt2_pair_files, tmp_path, sample_batch):
    """``.to`` replaces buffers and parameter data (as a move to a GPU does): the raw model,
    sharing the modules' parameter and buffer dictionaries, follows."""
    pair = load_pair(gpt2_pair_files.spec, cache=Cache(tmp_path / "cache"))
    raw = raw_model(pair.base)
    pair.base.original_model.to(torch.float64)
    assert {p.dtype for p in raw.parameters()} == {torch.float64}
    assert all(b.dtype == torch.float64 for b in raw.buffers() if b.is_floating_point())
    with torch.no_grad():
        assert raw(**sample_batch).logits.dtype == torch.float64


def test_raw_model_keeps_accelerate_dispatch_hooks_running_on_the_raw_modules(
    gpt2_pair_files, tokenizer, sample_batch
):
    """A model dispatched by accelerate (``device_map`` over several devices) has ``forward``
    replaced by a hook bound to each module: in the raw model the hook runs, on the raw module."""
    from accelerate.hooks import ModelHook, add_hook_to_module

    from dpoclaims.models import boot_bridge

    class Seen(ModelHook):
        def __init__(self) -> None:
            self.modules: list[torch.nn.Module] = []

        def pre_forward(self, module, *args, **kwargs):
            self.modules.append(module)
            return args, kwargs

    model = GPT2LMHeadModel.from_pretrained(gpt2_pair_files.base).eval()
    block_hook, leaf_hook = Seen(), Seen()
    add_hook_to_module(model.transformer.h[1], block_hook)
    add_hook_to_module(model.transformer.h[1].mlp.c_proj, leaf_hook)
    bridge = boot_bridge(model, str(gpt2_pair_files.base), tokenizer)
    raw = raw_model(bridge)
    fresh = GPT2LMHeadModel.from_pretrained(gpt2_pair_files.base).eval()
    fresh.set_attn_implementation("eager")
    with torch.no_grad():
        logits = raw(**sample_batch).logits
        assert torch.equal(logits, fresh(**sample_batch).logits)
    assert block_hook.modules == [raw.transformer.h[1]] and leaf_hook.modules == [
        raw.transformer.h[1].mlp.c_proj
    ]


def test_raw_model_rejects_what_is_not_a_model():
    with pytest.raises(PairMismatchError, match="TransformerBridge or a Hugging Face"):
        raw_model(torch.nn.Linear(2, 2))


# --------------------------------------------------------------------------- neuron_activation_modules


def test_neuron_activation_modules_are_c_proj_and_down_proj(pairs):
    gpt2, llama = pairs["gpt2", torch.float32], pairs["llama", torch.float32]
    raw_gpt2, raw_llama = raw_model(gpt2.base), raw_model(llama.base)
    assert neuron_activation_modules(raw_gpt2, gpt2.layout) == [
        block.mlp.c_proj for block in raw_gpt2.transformer.h
    ]
    assert neuron_activation_modules(raw_llama, llama.layout) == [
        layer.mlp.down_proj for layer in raw_llama.model.layers
    ]


def test_neuron_activation_modules_reject_a_wrapped_model_and_a_wrong_layout(pairs):
    pair = pairs["gpt2", torch.float32]
    with pytest.raises(PairMismatchError, match=r"hook raw_model\(bridge\) instead"):
        neuron_activation_modules(pair.base.original_model, pair.layout)
    wrong = MLPLayout("gpt2", pair.layout.n_layers + 1, pair.layout.d_model, pair.layout.d_mlp)
    with pytest.raises(PairMismatchError, match="layers"):
        neuron_activation_modules(raw_model(pair.base), wrong)
    gated = MLPLayout("gated", pair.layout.n_layers, pair.layout.d_model, pair.layout.d_mlp)
    with pytest.raises(PairMismatchError, match="mlp.down_proj"):
        neuron_activation_modules(raw_model(pair.base), gated)


# --------------------------------------------------------------------------- equality with the bridge


@pytest.mark.parametrize(("family", "dtype"), PAIRS)
def test_recorded_activations_equal_the_bridge_hook_points(pairs, family, dtype, sample_batch):
    pair = pairs[family, dtype]
    expected, expected_logits = record_mlp_activations(pair, "base", **sample_batch)
    recorded, logits = raw_record(raw_model(pair.base), pair.layout, {}, **sample_batch)
    for layer in range(pair.layout.n_layers):
        assert recorded[layer].shape == (*sample_batch["input_ids"].shape, pair.layout.d_mlp)
        assert_same(recorded[layer], expected[layer], TOLERANCE[family, dtype])
    assert_same(logits, expected_logits, TOLERANCE[family, dtype])


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


@pytest.mark.parametrize("intervention", ["zero", "fixed"])
@pytest.mark.parametrize(("family", "dtype"), PAIRS)
def test_interventions_equal_the_bridge_hook_points(pairs, family, dtype, intervention, sample_batch):
    """Zeroing neurons and setting neurons to fixed values through ``neuron_hooks`` on the raw
    model gives the bridge's post-intervention activations and logits."""
    pair = pairs[family, dtype]
    spec = _interventions(pair.layout, dtype)[intervention]
    bridge_hooks = [
        (pair.layout.hook_name(layer), bridge_set(idx, values)) for layer, (idx, values) in spec.items()
    ]
    expected, expected_logits = record_mlp_activations_with(pair, bridge_hooks, sample_batch)
    edits = {layer: set_neurons(idx, values) for layer, (idx, values) in spec.items()}
    recorded, logits = raw_record(raw_model(pair.base), pair.layout, edits, **sample_batch)
    for layer, (idx, values) in spec.items():
        assert torch.equal(recorded[layer][..., idx], values.to(dtype).expand_as(recorded[layer][..., idx]))
    for layer in range(pair.layout.n_layers):
        assert_same(recorded[layer], expected[layer], TOLERANCE[family, dtype])
    assert_same(logits, expected_logits, TOLERANCE[family, dtype])
    _, clean_logits = raw_record(raw_model(pair.base), pair.layout, {}, **sample_batch)
    assert (logits - clean_logits).abs().max() > 1e-3  # the intervention did something


def record_mlp_activations_with(pair: Any, hooks: list, batch: dict[str, torch.Tensor]):
    """The bridge's ``hook_post`` activations after ``hooks``, and its logits."""
    captured: dict[str, torch.Tensor] = {}

    def keep(name: str):
        def hook(activation: torch.Tensor, hook: Any) -> torch.Tensor:
            captured[name] = activation.detach().clone()
            return activation

        return hook

    recording = [(name, keep(name)) for name in pair.layout.hook_names]
    with torch.no_grad(), pair.base.hooks(fwd_hooks=hooks + recording):
        logits = pair.base.original_model(**batch).logits.detach().clone()
    return [captured[name] for name in pair.layout.hook_names], logits


def test_hooks_are_removed_on_exit_and_on_error(pairs, sample_batch):
    pair = pairs["llama", torch.float32]
    raw = raw_model(pair.base)
    modules = neuron_activation_modules(raw, pair.layout)
    with torch.no_grad():
        clean = raw(**sample_batch).logits
        with neuron_hooks(raw, pair.layout, {0: set_neurons(torch.arange(4), torch.zeros(1))}):
            assert len(modules[0]._forward_pre_hooks) == 1
        with pytest.raises(RuntimeError, match="boom"):
            with neuron_hooks(raw, pair.layout, {1: set_neurons(torch.arange(4), torch.zeros(1))}):
                raise RuntimeError("boom")
        assert all(not module._forward_pre_hooks for module in modules)
        assert torch.equal(raw(**sample_batch).logits, clean)


def test_out_of_range_layers_are_refused(pairs):
    pair = pairs["gpt2", torch.float32]
    with pytest.raises(PairMismatchError, match="out of range"):
        with neuron_hooks(raw_model(pair.base), pair.layout, {pair.layout.n_layers: lambda a: None}):
            pass


# --------------------------------------------------------------------------- LastPositionRecorder


@pytest.mark.parametrize("fold_every", [1, 2, 32])
def test_recorder_sums_the_last_position_of_unfinished_rows(pairs, fold_every):
    """Drive forwards by hand (a 5-token prompt step, then one-token steps): a row stops
    counting after a step *fed* EOS; the step that fed it EOS's predecessor still counts."""
    pair = pairs["gpt2", torch.float64]
    raw, layout, eos = raw_model(pair.base), pair.layout, 0
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
            activations, _ = raw_record(raw, layout, {}, input_ids=ids)
            for layer in range(layout.n_layers):
                expected[:, layer] += expected_weights[:, step, None] * activations[layer][:, -1]
            with recorder.attached(raw):
                raw(input_ids=ids)
    assert torch.equal(recorder.counts(), expected_weights.sum(1))
    torch.testing.assert_close(recorder.sums(), expected, rtol=0, atol=1e-12)
    torch.testing.assert_close(recorder.means(), (expected / expected_weights.sum(1)[:, None, None]).float())


PROMPTS = ["hello there", "thanks for sharing this", "what a", "you are such a"]  # left-padded


def generate_recording(pair: Any, prompts: list[str], max_new_tokens: int):
    """Greedy ``generate`` on the raw model with a recorder attached: (rows, recorder)."""
    from dpoclaims.generation import encode_prompts

    raw, tokenizer = raw_model(pair.base), pair.tokenizer
    batch = encode_prompts(tokenizer, prompts, 8)
    recorder = LastPositionRecorder(pair.layout, len(prompts), tokenizer.eos_token_id)
    with torch.no_grad(), recorder.attached(raw):
        output = raw.generate(
            **batch,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
    eos = tokenizer.eos_token_id
    new_tokens = output[:, batch["input_ids"].shape[1] :].tolist()
    return [row[: row.index(eos)] if eos in row else row for row in new_tokens], recorder


# Not the Llama in float64: there, HF's eager attention turns left padding into NaN (a fully
# masked padded position is NaN, and attention weights of 0 times NaN values leak it into the
# real positions from layer 1 on), in the raw model and the bridge alike.
@pytest.mark.parametrize(("family", "dtype"), [("gpt2", torch.float64), ("llama", torch.float32)])
def test_recorder_during_generate_equals_the_bridge_capture(pairs, family, dtype):
    """The recorder on the raw model, through ``generate``, gives the library's v1 capture
    (bridge hooks): the same continuations, counts and per-prompt means."""
    from dpoclaims.capture import capture
    from dpoclaims.generation import GenerationSettings

    pair = pairs[family, dtype]
    settings = GenerationSettings(max_prompt_tokens=8, max_new_tokens=6, batch_size=len(PROMPTS))
    reference = capture(pair, "base", PROMPTS, settings, progress=False, through="bridge")
    rows, recorder = generate_recording(pair, PROMPTS, settings.max_new_tokens)
    assert rows == reference.continuation_ids
    assert torch.equal(recorder.counts().float(), reference.n_positions)
    assert_same(recorder.means(), reference.mean_activation, 1e-6)


def test_recorder_refuses_a_batch_of_another_size(pairs):
    pair = pairs["gpt2", torch.float32]
    raw = raw_model(pair.base)
    recorder = LastPositionRecorder(pair.layout, 2, 0)
    with pytest.raises(PairMismatchError, match="made for 2 rows saw a batch of 3"):
        with torch.no_grad(), recorder.attached(raw):
            raw(input_ids=torch.ones(3, 4, dtype=torch.long))


def test_recorder_without_steps_gives_zeros(pairs):
    layout = pairs["gpt2", torch.float32].layout
    recorder = LastPositionRecorder(layout, 2, 0)
    assert recorder.sums().shape == (2, layout.n_layers, layout.d_mlp)
    assert recorder.counts().tolist() == [0.0, 0.0] and recorder.means().abs().sum() == 0
