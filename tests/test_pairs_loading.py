"""Loading pairs: a DPO side from a Lee et al. state-dict file equals the same weights from
an HF directory; gated (Llama) pairs; spec resolution."""

from __future__ import annotations

import json

import pytest
import torch
from tiny import D_MODEL, N_LAYER, N_POSITIONS, reference_mlp_activations, run_logits, write_spec
from transformers import GPT2LMHeadModel, LlamaForCausalLM

from dpoclaims.cache import Cache
from dpoclaims.hooks.neurons import neuron_hooks
from dpoclaims.models.loading import MLPLayout, mlp_layout
from dpoclaims.models.pairs import PairSpec
from dpoclaims.train.named_pairs import load_pair


def _old_gpt2_buffers(n_layer: int, n_positions: int) -> dict[str, torch.Tensor]:
    """The causal-mask buffers old GPT-2 state dicts carry."""
    mask = torch.tril(torch.ones(n_positions, n_positions, dtype=torch.bool)).view(
        1, 1, n_positions, n_positions
    )
    buffers = {}
    for layer in range(n_layer):
        buffers[f"transformer.h.{layer}.attn.bias"] = mask
        buffers[f"transformer.h.{layer}.attn.masked_bias"] = torch.tensor(-1e4)
    return buffers


def _state_variants(dpo_dir):
    state = GPT2LMHeadModel.from_pretrained(dpo_dir).state_dict()
    assert "lm_head.weight" in state
    without_head = {k: v for k, v in state.items() if k != "lm_head.weight"}
    return {
        "full": {"state": state},
        "no_lm_head": {"state": without_head},
        "old_buffers": {"state": {**without_head, **_old_gpt2_buffers(N_LAYER, N_POSITIONS)}},
        "bare": dict(state),  # a bare state dict (no "state" key) is accepted too
    }


@pytest.fixture(scope="module")
def dir_loaded(gpt2_pair_files, session_cache):
    return load_pair(gpt2_pair_files.spec, cache=session_cache)


@pytest.mark.parametrize("variant", ["full", "no_lm_head", "old_buffers", "bare"])
def test_state_dict_dpo_equals_directory_dpo(tmp_path, gpt2_pair_files, dir_loaded, sample_batch, variant):
    payload = _state_variants(gpt2_pair_files.dpo)[variant]
    torch.save(payload, tmp_path / "dpo.pt")
    spec = write_spec(
        tmp_path / "pair.toml",
        name="from_pt",
        base=str(gpt2_pair_files.base),
        dpo="dpo.pt",
        probe=str(gpt2_pair_files.probe),
    )
    from_pt = load_pair(spec, cache=Cache(tmp_path / "cache"))

    assert from_pt.layout == dir_loaded.layout
    assert from_pt.fingerprint == dir_loaded.fingerprint
    for side in ("base", "dpo"):
        torch.testing.assert_close(
            from_pt.value_vectors(side), dir_loaded.value_vectors(side), rtol=0, atol=0
        )
        torch.testing.assert_close(from_pt.key_vectors(side), dir_loaded.key_vectors(side), rtol=0, atol=0)
        torch.testing.assert_close(
            run_logits(from_pt.model(side), sample_batch),
            run_logits(dir_loaded.model(side), sample_batch),
            rtol=0,
            atol=0,
        )
    # the DPO side really is the DPO model, not the base
    assert not torch.allclose(from_pt.value_vectors("dpo"), from_pt.value_vectors("base"))


def test_state_dict_dpo_has_tied_embeddings(tmp_path, gpt2_pair_files, sample_batch):
    """Without lm_head.weight in the file, the unembedding is the (DPO) token embedding."""
    payload = _state_variants(gpt2_pair_files.dpo)["no_lm_head"]
    torch.save(payload, tmp_path / "dpo.pt")
    spec = write_spec(
        tmp_path / "pair.toml", base=str(gpt2_pair_files.base), dpo="dpo.pt", probe=str(gpt2_pair_files.probe)
    )
    pair = load_pair(spec, cache=Cache(tmp_path / "cache"))
    hf = pair.dpo
    torch.testing.assert_close(hf.lm_head.weight, payload["state"]["transformer.wte.weight"], rtol=0, atol=0)


def test_fingerprint_changes_with_any_part(tmp_path, gpt2_pair_files, dir_loaded):
    # a different probe
    torch.save(torch.ones(D_MODEL), tmp_path / "probe.pt")
    spec = write_spec(
        tmp_path / "a.toml", base=str(gpt2_pair_files.base), dpo=str(gpt2_pair_files.dpo), probe="probe.pt"
    )
    assert load_pair(spec, cache=Cache(tmp_path / "c")).fingerprint != dir_loaded.fingerprint
    # a DPO side that differs in one weight (a DPO side equal to the base is refused at load)
    state = torch.load(gpt2_pair_files.dpo_pt, weights_only=True)["state"]
    state["transformer.h.1.mlp.c_proj.weight"][0, 0] += 1e-3
    torch.save({"state": state}, tmp_path / "dpo.pt")
    spec = write_spec(
        tmp_path / "b.toml", base=str(gpt2_pair_files.base), dpo="dpo.pt", probe=str(gpt2_pair_files.probe)
    )
    assert load_pair(spec, cache=Cache(tmp_path / "c")).fingerprint != dir_loaded.fingerprint


def test_loaded_pair_fields(gpt2_pair, gpt2_pair_files):
    assert gpt2_pair.name == "tiny"
    assert gpt2_pair.layout == MLPLayout("gpt2", N_LAYER, D_MODEL, 4 * D_MODEL)
    assert gpt2_pair.layout.n_neurons == N_LAYER * 4 * D_MODEL
    assert gpt2_pair.layout.hook_names == [f"blocks.{i}.mlp.hook_post" for i in range(N_LAYER)]
    torch.testing.assert_close(gpt2_pair.probe, torch.load(gpt2_pair_files.probe).float())
    assert gpt2_pair.unit_probe.norm().item() == pytest.approx(1.0, abs=1e-6)
    # value vectors are rows of the Conv1D c_proj weight ([d_mlp, d_model])
    raw = GPT2LMHeadModel.from_pretrained(gpt2_pair_files.dpo)
    for layer in range(N_LAYER):
        torch.testing.assert_close(
            gpt2_pair.value_vectors("dpo")[layer], raw.transformer.h[layer].mlp.c_proj.weight, rtol=0, atol=0
        )
        torch.testing.assert_close(
            gpt2_pair.key_vectors("dpo")[layer], raw.transformer.h[layer].mlp.c_fc.weight.T, rtol=0, atol=0
        )
    assert gpt2_pair.extra_path("report").read_text() == "hello"
    with pytest.raises(ValueError, match="side"):
        gpt2_pair.model("other")


def test_load_pair_from_directory_and_json(tmp_path, gpt2_pair_files, gpt2_pair):
    """A directory holding pair.toml, and an equivalent JSON spec, load the same pair."""
    by_dir = load_pair(gpt2_pair_files.root, cache=Cache(tmp_path / "c"))
    assert by_dir.fingerprint == gpt2_pair.fingerprint
    json_spec = tmp_path / "pair.json"
    json_spec.write_text(
        json.dumps(
            {
                "name": "j",
                "base": str(gpt2_pair_files.base),
                "dpo": str(gpt2_pair_files.dpo),
                "probe": str(gpt2_pair_files.probe),
            }
        )
    )
    by_json = load_pair(json_spec, cache=Cache(tmp_path / "c"))
    assert by_json.name == "j"
    assert by_json.fingerprint == gpt2_pair.fingerprint


def test_spec_relative_paths_resolve_against_spec_dir(tmp_path, gpt2_pair_files, monkeypatch):
    spec = PairSpec.from_file(gpt2_pair_files.spec)
    assert spec.root == str(gpt2_pair_files.root.resolve())
    monkeypatch.chdir(tmp_path)  # not the spec's directory
    assert spec.resolve("base") == str(gpt2_pair_files.root.resolve() / "base")
    assert spec.resolve("org/hub-model") == "org/hub-model"
    assert spec.extras == {"report": "notes.txt"}
    assert spec.name == "tiny"
    unnamed = write_spec(tmp_path / "my_pair.toml", base="b", dpo="d", probe="p")
    assert PairSpec.from_file(unnamed).name == "my_pair"


# --------------------------------------------------------------------------- gated (Llama) pairs


def test_gated_pair_layout_and_value_vectors(llama_pair, llama_pair_files):
    assert llama_pair.layout == MLPLayout("gated", 2, D_MODEL, 64)
    for side in ("base", "dpo"):
        raw = LlamaForCausalLM.from_pretrained(getattr(llama_pair_files, side))
        values = llama_pair.value_vectors(side)
        assert values.shape == (2, 64, D_MODEL)
        for layer in range(2):
            mlp = raw.model.layers[layer].mlp
            torch.testing.assert_close(values[layer], mlp.down_proj.weight.T, rtol=0, atol=0)
            torch.testing.assert_close(
                llama_pair.key_vectors(side)[layer], mlp.up_proj.weight, rtol=0, atol=0
            )


@pytest.mark.parametrize("side", ["base", "dpo"])
def test_gated_hook_post_equals_down_proj_input(llama_pair, llama_pair_files, sample_batch, side):
    """The neuron activation the library records on a gated pair (``neuron_hooks``) is act(gate) * up,
    the input of down_proj, of a separately loaded copy of that side."""
    fresh = LlamaForCausalLM.from_pretrained(getattr(llama_pair_files, side)).eval()
    down_in, handles = {}, []
    for layer, block in enumerate(fresh.model.layers):
        handles.append(
            block.mlp.down_proj.register_forward_pre_hook(
                lambda module, args, layer=layer: down_in.__setitem__(layer, args[0].detach().clone())
            )
        )
    with torch.no_grad():
        fresh_logits = fresh(**sample_batch).logits
    for handle in handles:
        handle.remove()
    recomputed, _ = reference_mlp_activations(fresh, **sample_batch)

    recorded: dict[int, torch.Tensor] = {}
    edits = {
        layer: (lambda activation, layer=layer: recorded.__setitem__(layer, activation.detach().clone()))
        for layer in range(llama_pair.layout.n_layers)
    }
    with torch.no_grad(), neuron_hooks(llama_pair.model(side), llama_pair.layout, edits):
        logits = llama_pair.model(side)(**sample_batch).logits
    torch.testing.assert_close(logits, fresh_logits, rtol=1e-5, atol=1e-5)
    for layer in range(llama_pair.layout.n_layers):
        assert recorded[layer].shape[-1] == 64
        torch.testing.assert_close(recorded[layer], down_in[layer], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(recorded[layer], recomputed[layer], rtol=1e-5, atol=1e-6)


def test_gated_state_dict_dpo_equals_directory(tmp_path, llama_pair, llama_pair_files, sample_batch):
    spec = write_spec(
        tmp_path / "pair.toml",
        base=str(llama_pair_files.base),
        dpo=str(llama_pair_files.dpo_pt),
        probe=str(llama_pair_files.probe),
    )
    from_pt = load_pair(spec, cache=Cache(tmp_path / "c"))
    assert from_pt.layout.kind == "gated"
    assert from_pt.fingerprint == llama_pair.fingerprint
    torch.testing.assert_close(from_pt.value_vectors("dpo"), llama_pair.value_vectors("dpo"), rtol=0, atol=0)
    torch.testing.assert_close(
        run_logits(from_pt.dpo, sample_batch),
        run_logits(llama_pair.dpo, sample_batch),
        rtol=0,
        atol=0,
    )


def test_mlp_layout_of_configs():
    from transformers import GPT2Config, LlamaConfig

    assert mlp_layout(GPT2Config(n_embd=16, n_layer=3, n_head=2)) == MLPLayout("gpt2", 3, 16, 64)
    assert mlp_layout(GPT2Config(n_embd=16, n_layer=3, n_head=2, n_inner=40)).d_mlp == 40
    assert mlp_layout(
        LlamaConfig(hidden_size=16, intermediate_size=48, num_hidden_layers=5, num_attention_heads=2)
    ) == MLPLayout("gated", 5, 16, 48)


# --------------------------------------------------------------------------- fingerprint: config and tokenizer


def _copy_dir(source, target):
    import shutil

    shutil.copytree(source, target)
    return target


def _edit_json(path, edit) -> None:
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


def test_fingerprint_changes_with_the_config(tmp_path, gpt2_pair_files, dir_loaded, sample_batch):
    """The same weights under another activation function compute something else: another pair
    (both sides changed: a DPO side of another function than its base is refused)."""
    base = _copy_dir(gpt2_pair_files.base, tmp_path / "base")
    dpo = _copy_dir(gpt2_pair_files.dpo, tmp_path / "dpo")
    assert json.loads((base / "config.json").read_text())["activation_function"] == "gelu_new"
    for side in (base, dpo):
        _edit_json(side / "config.json", lambda config: config.__setitem__("activation_function", "relu"))
    spec = write_spec(tmp_path / "pair.toml", base=str(base), dpo=str(dpo), probe=str(gpt2_pair_files.probe))
    relu = load_pair(spec, cache=Cache(tmp_path / "c"))
    assert relu.fingerprint != dir_loaded.fingerprint
    assert not torch.equal(run_logits(relu.base, sample_batch), run_logits(dir_loaded.base, sample_batch))
    # what only says where or by which release a model was saved does not count
    same = _copy_dir(gpt2_pair_files.base, tmp_path / "same")
    _edit_json(same / "config.json", lambda config: config.__setitem__("transformers_version", "0.0.1"))
    spec = write_spec(
        tmp_path / "same.toml", base=str(same), dpo=str(gpt2_pair_files.dpo), probe=str(gpt2_pair_files.probe)
    )
    assert load_pair(spec, cache=Cache(tmp_path / "c")).fingerprint == dir_loaded.fingerprint


def test_fingerprint_changes_with_the_tokenizers_merges(tmp_path, gpt2_pair_files, dir_loaded):
    """The same vocabulary with its first two merges swapped tokenizes text otherwise."""
    from dpoclaims.models.loading import load_tokenizer

    tokenizer_dir = _copy_dir(gpt2_pair_files.tokenizer, tmp_path / "tokenizer")

    def swap_first_merges(data):
        merges = data["model"]["merges"]
        merges[0], merges[1] = merges[1], merges[0]

    _edit_json(tokenizer_dir / "tokenizer.json", swap_first_merges)
    assert load_tokenizer(str(tokenizer_dir)).get_vocab() == dir_loaded.tokenizer.get_vocab()
    spec = write_spec(
        tmp_path / "pair.toml",
        base=str(gpt2_pair_files.base),
        dpo=str(gpt2_pair_files.dpo),
        probe=str(gpt2_pair_files.probe),
        tokenizer=str(tokenizer_dir),
    )
    assert load_pair(spec, cache=Cache(tmp_path / "c")).fingerprint != dir_loaded.fingerprint


def test_a_dpo_directory_with_a_tokenizer_of_its_own_is_refused(tmp_path, gpt2_pair_files, dir_loaded):
    """A DPO directory that ships a tokenizer mapping text to other ids (two tokens' ids swapped) is
    refused; one that ships the pair's own tokenizer is accepted."""
    from transformers import AutoTokenizer

    from dpoclaims.errors import PairMismatchError

    same = _copy_dir(gpt2_pair_files.dpo, tmp_path / "dpo_same")
    AutoTokenizer.from_pretrained(gpt2_pair_files.tokenizer).save_pretrained(same)
    spec = write_spec(
        tmp_path / "same.toml",
        base=str(gpt2_pair_files.base),
        dpo=str(same),
        probe=str(gpt2_pair_files.probe),
    )
    assert load_pair(spec, cache=Cache(tmp_path / "c")).fingerprint == dir_loaded.fingerprint

    permuted = _copy_dir(same, tmp_path / "dpo_permuted")

    def swap_two_ids(data):
        vocab = data["model"]["vocab"]
        vocab["a"], vocab["b"] = vocab["b"], vocab["a"]

    _edit_json(permuted / "tokenizer.json", swap_two_ids)
    spec = write_spec(
        tmp_path / "permuted.toml",
        base=str(gpt2_pair_files.base),
        dpo=str(permuted),
        probe=str(gpt2_pair_files.probe),
    )
    with pytest.raises(PairMismatchError, match="has a tokenizer of its own that differs"):
        load_pair(spec, cache=Cache(tmp_path / "c"))
