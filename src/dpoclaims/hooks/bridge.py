"""TransformerBridge for the fixtures users write their own claims with, checked at boot.

Nothing the library measures runs through the bridge: every measurement runs the plain Hugging
Face model (:mod:`dpoclaims.hooks.neurons`). The bridge is the TransformerLens view of a side
(``blocks.L.mlp.hook_post``, ``W_in``, ``W_out``, ``run_with_cache``) for users' own claims. It
wraps the modules of the model it is given in place, so it is booted on a copy of the side's
model, never on the model the library measures.

A bridge is handed out only after :func:`check_bridge` found that it computes what the plain
model computes, on a known input: the neuron activations of one forward and the logits of a
greedy generation with the KV cache. TransformerLens 4.3 with transformers 5.24 fails the
second: its attention component reads the layer cache from a ``past_key_values`` keyword that
5.24 renamed ``cache``, so cached generation through the bridge attends to the new token
alone. Such a bridge is refused with a :class:`BridgeMismatchError` naming the versions.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from dpoclaims.errors import BridgeMismatchError
from dpoclaims.hooks.neurons import neuron_hooks
from dpoclaims.models.loading import MLPLayout
from dpoclaims.models.pairs import ModelPair, PairSide
from dpoclaims.versions import versions_line

CHECK_PROMPT_TOKENS = 8  # the known input: this many token ids, 1..8 (or less in a tiny vocabulary)
CHECK_NEW_TOKENS = 6  # greedy tokens generated with the KV cache
# Largest |bridge - plain| accepted, relative to the largest |plain| value, by dtype: float32
# agrees to rounding (eager vs sdpa attention, ~1e-6); half precision to its own rounding.
CHECK_RELATIVE_TOLERANCE = {torch.float32: 1e-4, torch.float64: 1e-8}
HALF_RELATIVE_TOLERANCE = 2e-2


def boot_bridge(model: PreTrainedModel, name_or_path: str, tokenizer: PreTrainedTokenizerBase) -> Any:
    """A TransformerBridge around ``model``, which it wraps in place (so pass a copy). Its
    ``cfg.device`` is the model's device (TransformerLens would otherwise record CUDA whenever it
    is available); under a device map TransformerLens derives it from the map."""
    from transformer_lens.model_bridge import TransformerBridge

    device = None if getattr(model, "hf_device_map", None) else next(model.parameters()).device
    return TransformerBridge.boot_transformers(
        name_or_path, hf_model=model, tokenizer=tokenizer, dtype=model.dtype, device=device
    )


def _tolerance(dtype: torch.dtype) -> float:
    return CHECK_RELATIVE_TOLERANCE.get(dtype, HALF_RELATIVE_TOLERANCE)


def _relative_gap(bridge_value: torch.Tensor, plain_value: torch.Tensor) -> float:
    bridge_value, plain_value = bridge_value.float().cpu(), plain_value.float().cpu()
    scale = plain_value.abs().max().clamp(min=1e-6)
    return float((bridge_value - plain_value).abs().max() / scale)


@torch.no_grad()
def check_bridge(bridge: Any, plain: PreTrainedModel, layout: MLPLayout, what: str) -> None:
    """A :class:`BridgeMismatchError` unless ``bridge`` and the plain model ``plain`` (same
    weights) give the same neuron activations on a known input and the same logits at every
    step of a greedy generation with the KV cache."""
    from dpoclaims.devices import module_device

    device = module_device(plain)
    n_tokens = min(CHECK_PROMPT_TOKENS, int(plain.config.vocab_size) - 1)
    input_ids = torch.arange(1, n_tokens + 1, device=device)[None]  # [1, n_tokens]
    tolerance = _tolerance(plain.dtype)
    problems: list[str] = []

    # 1. One forward: the bridge's hook_post against the plain model's neuron activation.
    recorded: dict[int, torch.Tensor] = {}
    edits = {
        layer: (lambda a, layer=layer: recorded.__setitem__(layer, a.detach()))
        for layer in range(layout.n_layers)
    }
    with neuron_hooks(plain, layout, edits):
        plain(input_ids=input_ids)
    _, cache = bridge.run_with_cache(input_ids, names_filter=lambda name: name.endswith("mlp.hook_post"))
    for layer in range(layout.n_layers):
        gap = _relative_gap(cache[layout.hook_name(layer)], recorded[layer])
        if not gap <= tolerance:
            problems.append(f"{layout.hook_name(layer)} differs by {gap:.2e} (relative) on one forward")
            break

    # 2. Greedy generation with the KV cache through the bridge-wrapped model, its logits at each
    # step against one plain forward over the same sequence (no cache involved there).
    output = bridge.original_model.generate(
        input_ids=input_ids,
        attention_mask=torch.ones_like(input_ids),
        max_new_tokens=CHECK_NEW_TOKENS,
        do_sample=False,
        num_beams=1,
        use_cache=True,
        output_logits=True,
        return_dict_in_generate=True,
        pad_token_id=0,
        eos_token_id=None,
    )
    stepped = torch.stack(output.logits, dim=1)  # [1, new_tokens, vocab]
    full = plain(input_ids=output.sequences).logits[:, n_tokens - 1 : -1]  # [1, new_tokens, vocab]
    gap = _relative_gap(stepped, full)
    if not gap <= tolerance:
        problems.append(
            f"greedy generation with the KV cache gives logits that differ by {gap:.2e} (relative) "
            "from a plain forward over the same tokens"
        )
    if problems:
        raise BridgeMismatchError(
            f"TransformerBridge does not compute what the plain Hugging Face model computes for {what}: "
            f"{'; '.join(problems)} (tolerance {tolerance:.0e}). Installed: {versions_line()}. This "
            "TransformerLens release does not work with this transformers release, so its hook points "
            "would give wrong numbers. Install the project's locked versions (README, 'Set-up'), or a "
            "TransformerLens release made for this transformers. The claims suite itself does not use "
            "the bridge and is not affected."
        )


def pair_bridge(pair: ModelPair, side: PairSide) -> Any:
    """A TransformerBridge (TransformerLens 4.x, raw weights) of one side of ``pair``, for users'
    own claims: booted on a copy of the side's model (the bridge rewires the modules of the model
    it wraps; the library's measurements keep the plain one) and checked against the plain model
    first (:func:`check_bridge`: a :class:`~dpoclaims.errors.BridgeMismatchError` naming the
    versions when TransformerLens and transformers do not agree). Each call boots a new one (the
    suite's ``base_model``/``dpo_model`` fixtures keep one per session); the copy costs the side's
    memory once more."""
    plain = pair.model(side)
    name_or_path = str(plain.config.name_or_path or pair.spec.resolve(pair.spec.base))
    bridge = boot_bridge(copy.deepcopy(plain), name_or_path, pair.tokenizer)
    check_bridge(bridge, plain, pair.layout, f"the {side} side of pair {pair.name!r}")
    return bridge
