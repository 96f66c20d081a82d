"""Neuron activations read through TransformerBridge equal the raw HF model's own."""

from __future__ import annotations

import pytest
import torch
from tiny import N_LAYER, record_mlp_activations
from transformers import GPT2LMHeadModel


def _capture_bridge(pair, side, batch):
    return record_mlp_activations(pair, side, **batch)


def _capture_raw_gpt2(model, batch):
    """Post-GELU activations of an un-bridged GPT-2: the output of ``mlp.act`` and the input
    of ``mlp.c_proj``, each captured with a plain torch forward hook."""
    act_out, proj_in, handles = {}, {}, []
    for layer, block in enumerate(model.transformer.h):
        handles.append(
            block.mlp.act.register_forward_hook(
                lambda module, args, output, layer=layer: act_out.__setitem__(layer, output.detach().clone())
            )
        )
        handles.append(
            block.mlp.c_proj.register_forward_pre_hook(
                lambda module, args, layer=layer: proj_in.__setitem__(layer, args[0].detach().clone())
            )
        )
    try:
        with torch.no_grad():
            logits = model(**batch).logits
    finally:
        for handle in handles:
            handle.remove()
    return [act_out[i] for i in range(len(act_out))], [proj_in[i] for i in range(len(proj_in))], logits


@pytest.mark.parametrize("side", ["base", "dpo"])
def test_bridge_hook_post_equals_raw_gpt2_post_gelu(gpt2_pair, gpt2_pair_files, sample_batch, side):
    raw = GPT2LMHeadModel.from_pretrained(getattr(gpt2_pair_files, side)).eval()
    bridged, bridge_logits = _capture_bridge(gpt2_pair, side, sample_batch)
    act_out, proj_in, raw_logits = _capture_raw_gpt2(raw, sample_batch)

    assert len(bridged) == N_LAYER == gpt2_pair.layout.n_layers
    batch, seq = sample_batch["input_ids"].shape
    for layer in range(N_LAYER):
        assert bridged[layer].shape == (batch, seq, gpt2_pair.layout.d_mlp)
        torch.testing.assert_close(bridged[layer], act_out[layer], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(bridged[layer], proj_in[layer], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(bridge_logits, raw_logits, rtol=1e-5, atol=1e-5)


def test_bridge_hook_post_is_not_pre_activation(gpt2_pair, gpt2_pair_files, sample_batch):
    """The hook reads post-GELU values: they differ from the c_fc output (pre-activation),
    and some are negative (GELU's small negative lobe) but none below GELU's minimum."""
    raw = GPT2LMHeadModel.from_pretrained(gpt2_pair_files.base).eval()
    pre = {}
    handle = raw.transformer.h[0].mlp.c_fc.register_forward_hook(
        lambda module, args, output: pre.__setitem__(0, output.detach().clone())
    )
    with torch.no_grad():
        raw(**sample_batch)
    handle.remove()
    bridged, _ = _capture_bridge(gpt2_pair, "base", sample_batch)
    assert not torch.allclose(bridged[0], pre[0])
    assert bridged[0].min() > -0.2  # min of GELU is about -0.17
    assert pre[0].min() < -0.2


def test_bridge_sides_differ(gpt2_pair, sample_batch):
    """The base and DPO sides are different models (guards against loading one twice)."""
    base, _ = _capture_bridge(gpt2_pair, "base", sample_batch)
    dpo, _ = _capture_bridge(gpt2_pair, "dpo", sample_batch)
    assert not torch.allclose(base[0], dpo[0])
