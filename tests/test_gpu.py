"""On a CUDA GPU (``pytest -m gpu``): captures, interventions and the claims suite give what they
give on the CPU, within float tolerance. Skipped, with the reason, where torch sees no GPU.

Tolerances: the GPU's float32 kernels sum in other orders than the CPU's, so activations differ
by about 1e-6 relative; on the tiny random pairs (logits far from ties) greedy continuations are
identical, on the toy a near-tie may flip a rare continuation, so there the prompts whose
continuations agree are compared and at least 95% must agree.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dpoclaims.cache import Cache
from dpoclaims.measure.capture import capture
from dpoclaims.measure.evaluation import evaluate
from dpoclaims.measure.generation import GenerationSettings
from dpoclaims.train.named_pairs import load_pair

ROOT = Path(__file__).resolve().parent.parent
NO_GPU_REASON = (
    "needs a CUDA GPU: "
    + ("this torch build has no CUDA support" if torch.version.cuda is None else "torch sees no CUDA GPU")
    + " (run `pytest -m gpu` on a CUDA machine)"
)
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason=NO_GPU_REASON)]

TOY_PROMPTS = 64
AGREEING_SHARE = 0.95
ACTIVATION_TOLERANCE = 1e-4
SETTINGS = GenerationSettings(max_prompt_tokens=12, max_new_tokens=6, batch_size=3)
PROMPTS = ["thanks for sharing this story about", "shut up already about", "people like you", "good point"]


def test_a_toy_capture_on_cuda_equals_the_cpu_capture():
    from dpoclaims.measure.prompts import pair_texts

    cpu_pair = load_pair("toy", cache=Cache(), device="cpu")
    gpu_pair = load_pair("toy", cache=Cache(), device="cuda")
    assert gpu_pair.fingerprint == cpu_pair.fingerprint  # the cache key does not name the device
    assert gpu_pair.base.device.type == "cuda" and cpu_pair.base.device.type == "cpu"
    prompts = pair_texts(cpu_pair, "challenge_prompts", TOY_PROMPTS)
    cpu = capture(cpu_pair, "base", prompts, progress=False)
    gpu = capture(gpu_pair, "base", prompts, progress=False)
    assert gpu.mean_activation.device.type == "cpu" and gpu.mean_activation.dtype == torch.float32
    agree = [i for i in range(len(prompts)) if cpu.continuation_ids[i] == gpu.continuation_ids[i]]
    assert len(agree) >= AGREEING_SHARE * len(prompts), f"{len(agree)} of {len(prompts)} continuations agree"
    assert torch.equal(cpu.n_positions[agree], gpu.n_positions[agree])
    torch.testing.assert_close(
        gpu.mean_activation[agree], cpu.mean_activation[agree], rtol=1e-3, atol=ACTIVATION_TOLERANCE
    )


@pytest.fixture(scope="module")
def pairs_on(gpt2_pair_files, llama_pair_files, tmp_path_factory):
    """Both tiny pairs on the CPU and on the GPU, private to this module."""
    cache = Cache(tmp_path_factory.mktemp("gpu_cache"))
    files = {"gpt2": gpt2_pair_files, "llama": llama_pair_files}
    return {
        (family, device): load_pair(files[family].spec, cache=cache, device=device)
        for family in files
        for device in ("cpu", "cuda")
    }


@pytest.mark.parametrize("kind", ["ablate", "patch", "scale_keys"])
@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_interventions_on_cuda_equal_the_cpu(pairs_on, family, kind):
    """The intervention's tensors follow the model to the GPU; the capture and the evaluation
    give the CPU's; no hook is left and the key vectors are restored, on the GPU too."""
    from test_measurement_path import make_intervention

    from dpoclaims.models.mlp import key_vectors, neuron_activation_modules

    cpu_pair, gpu_pair = pairs_on[family, "cpu"], pairs_on[family, "cuda"]
    intervention = make_intervention(kind, cpu_pair.layout.d_mlp)
    keys_before = key_vectors(gpu_pair.base, gpu_pair.layout)
    results = {
        device: capture(pair, "base", PROMPTS, SETTINGS, intervention=intervention, progress=False)
        for device, pair in (("cpu", cpu_pair), ("cuda", gpu_pair))
    }
    assert results["cuda"].continuation_ids == results["cpu"].continuation_ids
    torch.testing.assert_close(
        results["cuda"].mean_activation, results["cpu"].mean_activation, rtol=1e-4, atol=1e-5
    )
    clean = capture(gpu_pair, "base", PROMPTS, SETTINGS, progress=False)
    assert (clean.mean_activation - results["cuda"].mean_activation).abs().max() > 1e-3  # it acted
    assert all(not m._forward_pre_hooks for m in neuron_activation_modules(gpu_pair.base, gpu_pair.layout))
    assert torch.equal(key_vectors(gpu_pair.base, gpu_pair.layout), keys_before)
    gpu_eval = evaluate(
        gpu_pair, "dpo", PROMPTS, SETTINGS, intervention, scorers=("profanity-check",), progress=False
    )
    cpu_eval = evaluate(
        cpu_pair, "dpo", PROMPTS, SETTINGS, intervention, scorers=("profanity-check",), progress=False
    )
    assert gpu_eval.continuations == cpu_eval.continuations


def test_a_bf16_gated_pair_with_a_device_map_is_analysed_in_float32(tmp_path, tokenizer_dir, vocab_size):
    from test_gated_families import _save_family_pair

    from dpoclaims.measure.decomposition import decompose

    spec = _save_family_pair(tmp_path, "llama", tokenizer_dir, vocab_size)
    pair = load_pair(spec, cache=Cache(tmp_path / "cache"), dtype=torch.bfloat16, device_map="auto")
    model = pair.base
    assert (
        model.dtype == torch.bfloat16 and next(model.parameters()).device.type == "cuda"
    )  # placed by accelerate
    assert model.get_input_embeddings().weight.device.type == "cuda"
    captures = {side: capture(pair, side, PROMPTS, SETTINGS, progress=False) for side in ("base", "dpo")}
    for result in captures.values():
        assert result.mean_activation.dtype == torch.float32 and result.mean_activation.device.type == "cpu"
        assert torch.isfinite(result.mean_activation).all() and result.mean_activation.abs().sum() > 0
    values = {side: pair.value_vectors(side) for side in ("base", "dpo")}
    assert all(v.dtype == torch.float32 and v.device.type == "cpu" for v in values.values())
    d = decompose(
        values["base"],
        values["dpo"],
        pair.probe,
        captures["base"].mean_activation,
        captures["dpo"].mean_activation,
    )
    assert d.contribution.dtype == torch.float32 and torch.isfinite(d.contribution).all()


RECORD_GPU_PLUGIN = """
import os

import torch


def pytest_unconfigure(config):
    if hasattr(config, "workerinput") or not torch.cuda.is_available():
        return
    with open(os.environ["GPU_LOG"], "a") as handle:
        handle.write(str(torch.cuda.max_memory_allocated()))
"""


def test_the_claims_suite_on_cuda_is_green(tmp_path):
    """``pytest claims/ --device cuda`` on the toy (the user's built toy, a fresh statistics cache,
    so every measurement is made on the GPU), green with the toy's declared verdicts."""
    from dpoclaims.train.organism.build import ensure_toy

    toy = ensure_toy(cache=Cache(), progress=False)
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "toy").symlink_to(toy.parent, target_is_directory=True)
    (tmp_path / "recordgpu.py").write_text(RECORD_GPU_PLUGIN)
    env = {
        **os.environ,
        "PYTHONPATH": str(tmp_path),  # the test's own plugin module
        "DPOCLAIMS_CACHE": str(tmp_path / "cache"),
        "GPU_LOG": str(tmp_path / "gpu.log"),
    }
    command = [sys.executable, "-m", "pytest", "claims/", "-q", "--device", "cuda", "-p", "recordgpu",
               "-p", "no:cacheprovider", "--reports-dir", str(tmp_path / "reports")]  # fmt: skip
    run = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=3600)
    assert run.returncode == 0, run.stdout[-5000:] + run.stderr[-3000:]
    assert int((tmp_path / "gpu.log").read_text()) > 0  # the measurements ran on the GPU
    assert json.loads((tmp_path / "reports" / "claims.json").read_text())["claims"]
