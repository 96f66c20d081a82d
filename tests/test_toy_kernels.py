"""The toy's pretraining does not depend on the CPU's vector kernels.

Another CPU is stood in for by the same machine with other kernels: ``ATEN_CPU_CAPABILITY=default``
(torch's unvectorised kernels), MKL held to SSE4.2 and oneDNN to SSE4.1. On the machine's own
kernels and on those, float32 pretraining ends in other weights; the toy's float64 pretraining,
with its numpy initialisation, must not.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from dpoclaims.train.organism.lm import initialise_gpt2

OTHER_KERNELS = {
    "ATEN_CPU_CAPABILITY": "default",
    "MKL_ENABLE_INSTRUCTIONS": "SSE4_2",
    "ONEDNN_MAX_CPU_ISA": "SSE41",
}

# A tiny GPT-2 pretrained for a few steps on seeded random rows; prints nothing, saves the weights.
PRETRAIN = textwrap.dedent(
    """
    import sys, torch
    from transformers import GPT2Config
    from dpoclaims.train.organism.lm import pretrain
    torch.set_num_threads(2)
    dtype, out = getattr(torch, sys.argv[1]), sys.argv[2]
    config = GPT2Config(vocab_size=300, n_positions=32, n_embd=32, n_layer=2, n_head=2)
    rows = torch.randint(300, (64, 32), generator=torch.Generator().manual_seed(1))
    model, _ = pretrain(config, rows, steps=8, batch_size=8, lr=3e-3, seed=0, progress=False, dtype=dtype)
    torch.save({k: v.double() for k, v in model.state_dict().items()}, out)
    """
)


def pretrained(tmp_path: Path, dtype: str, env: dict[str, str]) -> dict[str, torch.Tensor]:
    out = tmp_path / f"{dtype}-{'other' if env else 'own'}.pt"
    result = subprocess.run(
        [sys.executable, "-c", PRETRAIN, dtype, str(out)],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return torch.load(out)


def largest_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert set(a) == set(b)
    return max(float((a[name] - b[name]).abs().max()) for name in a)


@pytest.mark.slow
@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="the kernel settings are x86's")
def test_float64_pretraining_is_the_same_on_other_kernels(tmp_path):
    float32 = largest_difference(
        pretrained(tmp_path, "float32", {}), pretrained(tmp_path, "float32", OTHER_KERNELS)
    )
    if float32 <= 1e-8:  # e.g. a CPU whose own kernels are the unvectorised ones: nothing to compare
        pytest.skip("this CPU's own kernels give the same float32 sums as the portable ones")
    float64 = largest_difference(
        pretrained(tmp_path, "float64", {}), pretrained(tmp_path, "float64", OTHER_KERNELS)
    )
    assert float64 < 1e-12, f"float64 pretraining moved by {float64:.3g} with other kernels"


def test_initialisation_is_gpt2s_and_a_function_of_the_seed():
    config = GPT2Config(vocab_size=300, n_positions=32, n_embd=64, n_layer=4, n_head=2)
    model = GPT2LMHeadModel(config).double()
    initialise_gpt2(model, seed=3)
    params = {name: param.detach() for name, param in model.named_parameters()}
    assert float(params["transformer.wte.weight"].std()) == pytest.approx(0.02, rel=0.05)
    assert float(params["transformer.h.0.mlp.c_fc.weight"].std()) == pytest.approx(0.02, rel=0.05)
    assert float(params["transformer.h.2.attn.c_proj.weight"].std()) == pytest.approx(
        0.02 / np.sqrt(8), rel=0.05
    )
    assert torch.equal(params["transformer.h.1.ln_2.weight"], torch.ones(64, dtype=torch.float64))
    assert (
        not params["transformer.h.1.ln_2.bias"].any() and not params["transformer.h.3.attn.c_attn.bias"].any()
    )
    assert model.lm_head.weight.data_ptr() == params["transformer.wte.weight"].data_ptr()  # still tied

    again = GPT2LMHeadModel(config).double()
    initialise_gpt2(again, seed=3)
    other = GPT2LMHeadModel(config).double()
    initialise_gpt2(other, seed=4)
    for name, param in again.named_parameters():
        assert torch.equal(param, params[name]), name
    assert not torch.equal(other.transformer.wpe.weight.detach(), params["transformer.wpe.weight"])
