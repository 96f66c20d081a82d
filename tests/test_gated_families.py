"""Gated-MLP families of the EMNLP version (Llama, Mistral, Gemma-2): tiny random stand-ins of
each architecture load as pairs; the neuron activation is the input of ``down_proj``; a bf16
pair is analysed in float32."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from tiny import reference_mlp_activations

from dpoclaims.cache import Cache
from dpoclaims.hooks.neurons import neuron_hooks
from dpoclaims.measure.capture import capture
from dpoclaims.measure.generation import GenerationSettings
from dpoclaims.train.named_pairs import load_pair

FAMILIES = {
    "llama": ("LlamaConfig", "LlamaForCausalLM"),
    "mistral": ("MistralConfig", "MistralForCausalLM"),
    "gemma2": ("Gemma2Config", "Gemma2ForCausalLM"),
}


def _save_family_pair(root: Path, family: str, tokenizer_dir: Path, vocab_size: int) -> Path:
    import transformers
    from transformers import AutoTokenizer

    config_name, model_name = FAMILIES[family]
    config = getattr(transformers, config_name)(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=16,
        max_position_embeddings=64,
        bos_token_id=0,
        eos_token_id=0,
        pad_token_id=0,
        initializer_range=0.2,
    )
    model_cls = getattr(transformers, model_name)
    for seed, side in ((0, "base"), (1, "dpo")):
        torch.manual_seed(seed)
        model_cls(config).save_pretrained(root / side)
    AutoTokenizer.from_pretrained(tokenizer_dir).save_pretrained(root / "base")
    torch.save(torch.randn(32, generator=torch.Generator().manual_seed(2)), root / "probe.pt")
    (root / "pair.toml").write_text('base = "base"\ndpo = "dpo"\nprobe = "probe.pt"\n')
    return root / "pair.toml"


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_gated_family_hook_is_the_input_of_down_proj(family, tmp_path, tokenizer_dir, vocab_size):
    """What ``neuron_hooks`` records is ``act_fn(gate_proj(x)) * up_proj(x)``, recomputed by hand
    from the MLP's input; key and value vectors are up_proj's rows and down_proj's columns of a
    separately loaded copy."""
    import transformers

    spec = _save_family_pair(tmp_path, family, tokenizer_dir, vocab_size)
    pair = load_pair(spec, cache=Cache(tmp_path / "cache"))
    assert pair.layout.kind == "gated" and pair.layout.d_mlp == 64
    ids = torch.tensor([[3, 5, 7, 9, 11]])
    seen: dict[int, torch.Tensor] = {}
    edits = {
        layer: (lambda activation, layer=layer: seen.__setitem__(layer, activation.detach().clone()))
        for layer in range(pair.layout.n_layers)
    }
    with torch.no_grad(), neuron_hooks(pair.base, pair.layout, edits):
        pair.base(input_ids=ids)
    expected, _ = reference_mlp_activations(pair.base, input_ids=ids)
    fresh = getattr(transformers, FAMILIES[family][1]).from_pretrained(tmp_path / "base").eval()
    for layer in range(pair.layout.n_layers):
        assert torch.equal(seen[layer], expected[layer])
        mlp = fresh.model.layers[layer].mlp
        assert torch.equal(pair.value_vectors("base")[layer], mlp.down_proj.weight.detach().T)
        assert torch.equal(pair.key_vectors("base")[layer], mlp.up_proj.weight.detach())


def test_bf16_pair_is_captured_and_analysed_in_float32(tmp_path, tokenizer_dir, vocab_size):
    spec = _save_family_pair(tmp_path, "llama", tokenizer_dir, vocab_size)
    pair = load_pair(spec, cache=Cache(tmp_path / "cache"), dtype=torch.bfloat16)
    assert pair.base.dtype == torch.bfloat16
    assert pair.value_vectors("dpo").dtype == torch.float32
    result = capture(
        pair, "base", ["hello there", "thanks for sharing"], GenerationSettings(8, 4, 2), progress=False
    )
    assert result.mean_activation.dtype == torch.float32
    assert torch.isfinite(result.mean_activation).all() and result.mean_activation.abs().sum() > 0
