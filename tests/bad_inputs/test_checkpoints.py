"""Checkpoints: the model directories and state-dict files of a pair's two sides."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from bad_inputs.bench import Bench, Case, catalogue_test, registrar, truncated_dpo_pt, with_config
from dpoclaims.errors import (
    CheckpointError,
    ConfigWeightsMismatchError,
    IdenticalModelsError,
    NonFiniteWeightsError,
    PairMismatchError,
)

CASES: list[Case] = []
case = registrar(CASES)


class _WritesAMarker:
    """Unpickling this would create a directory: code run by merely loading the file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.makedirs, (str(self.marker),))


@case(
    "dpo-pt-truncated--refused-as-corrupt",
    "error",
    CheckpointError,
    r"cannot read state-dict file .*dpo\.pt \(corrupt, or not a plain torch file\)",
)
def dpo_pt_truncated(b: Bench):
    b.load(b.spec(dpo=str(truncated_dpo_pt(b))))


@case(
    "dpo-pt-carrying-code--refused-without-running-it",
    "error",
    CheckpointError,
    r"dpo\.pt needs pickle globals that safe loading refuses: os\.makedirs\. Unpickling them can run code",
)
def dpo_pt_carrying_code(b: Bench):
    marker = b.tmp / "code-ran"
    path = b.dpo_pt(payload=_WritesAMarker(marker))
    try:
        b.load(b.spec(dpo=str(path)))
    finally:
        assert not marker.exists()


@case(
    "dpo-dir-identical-to-base--refused-as-no-fine-tune",
    "error",
    IdenticalModelsError,
    r"the DPO model .*base' has exactly the weights of the base .*: there is no fine-tune to study",
)
def dpo_dir_identical_to_base(b: Bench):
    b.load(b.spec(dpo=str(b.files.base)))


@case(
    "dpo-pt-identical-to-base--refused-as-no-fine-tune",
    "error",
    IdenticalModelsError,
    r"the DPO model .*dpo\.pt' has exactly the weights of the base",
)
def dpo_pt_identical_to_base(b: Bench):
    from transformers import AutoModelForCausalLM

    base_state = AutoModelForCausalLM.from_pretrained(b.files.base).state_dict()
    b.load(b.spec(dpo=str(b.dpo_pt(base_state))))


@case(
    "dpo-weights-nan--refused-naming-the-tensor",
    "error",
    NonFiniteWeightsError,
    r"the DPO model .*dpo\.pt' has NaN or infinite weights in 1 tensors: transformer\.h\.0\.mlp\.c_proj\.weight \(4096 of 4096 entries\)",
)
def dpo_weights_nan(b: Bench):
    state = torch.load(b.files.dpo_pt, weights_only=True)["state"]
    state["transformer.h.0.mlp.c_proj.weight"] = torch.full_like(
        state["transformer.h.0.mlp.c_proj.weight"], float("nan")
    )
    b.load(b.spec(dpo=str(b.dpo_pt(state))))


@case(
    "base-weight-inf--refused-naming-the-tensor",
    "error",
    NonFiniteWeightsError,
    r"the base model .*base_inf' has NaN or infinite weights in 1 tensors: transformer\.h\.1\.attn\.c_attn\.weight \(1 of",
)
def base_weight_inf(b: Bench):
    base = b.model_dir(b.files.base, "base_inf")
    weights = load_file(str(base / "model.safetensors"))
    weights["transformer.h.1.attn.c_attn.weight"][3, 5] = float("inf")
    save_file(weights, str(base / "model.safetensors"), metadata={"format": "pt"})
    b.load(b.spec(base=str(base)))


@case(
    "dpo-config-n-inner-unlike-its-weights--refused-naming-the-shapes",
    "error",
    ConfigWeightsMismatchError,
    r"its config\.json does not describe its weights: 6 tensors have another shape in the weights than in the config, e\.g\. transformer\.h\.0\.mlp\.c_fc\.bias: weights \(128,\), config \(64,\)",
)
def dpo_config_n_inner_unlike_its_weights(b: Bench):
    b.load(b.spec(dpo=str(with_config(b, "dpo_n_inner", n_inner=64))))


@case(
    "dpo-config-fewer-layers-than-its-weights--refused-naming-the-extra-tensors",
    "error",
    ConfigWeightsMismatchError,
    r"11 tensors in the weights have no place in the config's architecture, e\.g\. \['transformer\.h\.1\.",
)
def dpo_config_fewer_layers_than_its_weights(b: Bench):
    b.load(b.spec(dpo=str(with_config(b, "dpo_n_layer", n_layer=1))))


@case(
    "dpo-weights-lacking-a-tensor--refused-naming-it",
    "error",
    ConfigWeightsMismatchError,
    r"1 tensors are missing from the weights, e\.g\. \['transformer\.h\.1\.mlp\.c_proj\.weight'\]",
)
def dpo_weights_lacking_a_tensor(b: Bench):
    directory = b.model_dir(b.files.dpo, "dpo_lacking")
    weights = load_file(str(directory / "model.safetensors"))
    del weights["transformer.h.1.mlp.c_proj.weight"]
    save_file(weights, str(directory / "model.safetensors"), metadata={"format": "pt"})
    b.load(b.spec(dpo=str(directory)))


@case(
    "dpo-dir-without-config--refused-as-no-model-directory",
    "error",
    CheckpointError,
    r"dpo_noconfig' is not a Hugging Face model directory \(no config\.json\)",
)
def dpo_dir_without_config(b: Bench):
    directory = b.model_dir(b.files.dpo, "dpo_noconfig")
    (directory / "config.json").unlink()
    b.load(b.spec(dpo=str(directory)))


@case(
    "dpo-safetensors-corrupt--refused-naming-the-model",
    "error",
    CheckpointError,
    r"cannot load model .*dpo_corrupt'",
)
def dpo_safetensors_corrupt(b: Bench):
    directory = b.model_dir(b.files.dpo, "dpo_corrupt")
    (directory / "model.safetensors").write_bytes(bytes(range(256)) * 8)
    b.load(b.spec(dpo=str(directory)))


@case(
    "dpo-pt-without-a-state-dict--refused-saying-what-is-expected",
    "error",
    CheckpointError,
    r"dpo\.pt holds no state dict \(expected a dict of tensors, or one under 'state'\)",
)
def dpo_pt_without_a_state_dict(b: Bench):
    torch.save({"state": {"a": 1}, "step": 3}, b.tmp / "dpo.pt")
    b.load(b.spec(dpo=str(b.tmp / "dpo.pt")))


@case(
    "dpo-with-more-layers--refused-naming-both-counts",
    "error",
    PairMismatchError,
    r"n_layers differs: base 2, DPO 3",
)
def dpo_with_more_layers(b: Bench):
    make_gpt2 = b.request.getfixturevalue("make_gpt2")
    make_gpt2(5, n_layer=3).save_pretrained(b.tmp / "dpo_3_layers")
    b.load(b.spec(dpo=str(b.tmp / "dpo_3_layers")))


@case(
    "dpo-pt-missing--refused-naming-the-path",
    "error",
    CheckpointError,
    r"state-dict file .*dpo_missing\.pt does not exist",
)
def dpo_pt_missing(b: Bench):
    b.load(b.spec(dpo=str(b.tmp / "dpo_missing.pt")))


# ---- pairs that are not what they claim


def _base_saved_in(b: Bench, dtype: torch.dtype, name: str) -> Path:
    """The base model saved again in ``dtype``: its weights rounded, no fine-tune."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(b.files.base)
    model.to(dtype).save_pretrained(b.tmp / name)
    return b.tmp / name


def _rounded_base(dtype_name: str) -> None:
    dtype = getattr(torch, dtype_name)

    @case(
        f"dpo-dir-the-base-saved-in-{dtype_name}--refused-as-the-base-rounded",
        "error",
        IdenticalModelsError,
        rf"the DPO model .*base_{dtype_name}' is the base .* rounded to {dtype_name}: at the DPO side's own "
        rf"precision \({dtype_name}\) every weight equals the base's",
    )
    def dpo_dir_the_base_saved_in(b: Bench):
        b.load(b.spec(dpo=str(_base_saved_in(b, dtype, f"base_{dtype_name}"))))


_rounded_base("bfloat16")
_rounded_base("float16")


@case(
    "dpo-pt-the-base-state-in-bfloat16--refused-as-the-base-rounded",
    "error",
    IdenticalModelsError,
    r"the DPO model .*dpo\.pt' is the base .* rounded to bfloat16",
)
def dpo_pt_the_base_state_in_bfloat16(b: Bench):
    from transformers import AutoModelForCausalLM

    state = AutoModelForCausalLM.from_pretrained(b.files.base).to(torch.bfloat16).state_dict()
    b.load(b.spec(dpo=str(b.dpo_pt(state))))


@case("dpo-dir-a-fine-tune-saved-in-bfloat16--loads-its-rounded-weights", "recovery")
def dpo_dir_a_fine_tune_saved_in_bfloat16(b: Bench):
    """Lower precision alone is no reason to refuse: a real fine-tune differs at its own precision."""
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(b.files.dpo).to(torch.bfloat16).save_pretrained(b.tmp / "dpo_bf16")
    pair = b.load(b.spec(dpo=str(b.tmp / "dpo_bf16")))
    weight = "transformer.h.0.mlp.c_fc.weight"
    stored = load_file(str(b.tmp / "dpo_bf16" / "model.safetensors"))[weight].float()
    return {"weight": stored}, {"weight": pair.dpo.state_dict()[weight]}


@case(
    "dpo-config-another-activation-and-norm-epsilon--refused-naming-both-values",
    "error",
    PairMismatchError,
    r"the DPO model .*dpo_relu' computes another function than the base .*: its config differs in "
    r"activation_function \(base 'gelu_new', DPO 'relu'\) and layer_norm_epsilon \(base 1e-05, DPO 0\.001\)",
)
def dpo_config_another_activation_and_norm_epsilon(b: Bench):
    b.load(b.spec(dpo=str(with_config(b, "dpo_relu", activation_function="relu", layer_norm_epsilon=1e-3))))


def _other_config(b: Bench, name: str, **config: Any) -> Path:
    """A DPO directory of its own architecture (weights that fit its config)."""
    b.request.getfixturevalue("make_gpt2")(1, **config).save_pretrained(b.tmp / name)
    return b.tmp / name


@case(
    "dpo-config-more-positions--refused-naming-both-sizes",
    "error",
    PairMismatchError,
    r"its config differs in n_positions \(base 64, DPO 128\)",
)
def dpo_config_more_positions(b: Bench):
    b.load(b.spec(dpo=str(_other_config(b, "dpo_128_positions", n_positions=128))))


@case(
    "dpo-config-more-heads-same-shapes--refused-naming-both-counts",
    "error",
    PairMismatchError,
    r"its config differs in n_head \(base 2, DPO 4\)",
)
def dpo_config_more_heads_same_shapes(b: Bench):
    b.load(b.spec(dpo=str(_other_config(b, "dpo_4_heads", n_head=4))))


@case(
    "dpo-config-untied-on-a-tied-base--refused-naming-the-tying",
    "error",
    PairMismatchError,
    r"its config differs in tie_word_embeddings \(base True, DPO False\)",
)
def dpo_config_untied_on_a_tied_base(b: Bench):
    b.load(b.spec(dpo=str(_other_config(b, "dpo_untied", tie_word_embeddings=False))))


@case(
    "dpo-pt-with-its-own-lm-head-on-a-tied-base--refused-naming-the-tying",
    "error",
    PairMismatchError,
    r"state dict .*dpo\.pt has an lm_head\.weight of its own \(it differs from transformer\.wte\.weight\), "
    r"but the base ties its output layer to its input embedding \(tie_word_embeddings\)",
)
def dpo_pt_with_its_own_lm_head_on_a_tied_base(b: Bench):
    state = torch.load(b.files.dpo_pt, weights_only=True)["state"]
    state["lm_head.weight"] = torch.randn_like(state["transformer.wte.weight"])
    b.load(b.spec(dpo=str(b.dpo_pt(state))))


@case("dpo-pt-with-a-tied-lm-head-on-a-tied-base--loads-the-same-pair", "recovery")
def dpo_pt_with_a_tied_lm_head_on_a_tied_base(b: Bench):
    """Lee et al.'s dpo.pt holds both names of the tied matrix, equal: that fits."""
    state = torch.load(b.files.dpo_pt, weights_only=True)["state"]
    assert torch.equal(state["lm_head.weight"], state["transformer.wte.weight"])
    from_dir = b.load(b.spec(name="dir.toml"))
    from_pt = b.load(b.spec(dpo=str(b.dpo_pt(state))))
    return {"fingerprint": from_dir.fingerprint}, {"fingerprint": from_pt.fingerprint}


test_case = catalogue_test(CASES)
