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


test_case = catalogue_test(CASES)
