"""The manual's example of a claim of your own (docs/own-claim.md) runs as written: the code
block is taken from that page, put in a checkout-like directory (``claims/test_my_claim.py`` beside a
copy of ``fixtures/``) and run by pytest in a subprocess, through the installed plugin, on a tiny pair.

The tiny pair's outcome is known by construction: its DPO side is the base with one changed
position-embedding row that no pass reaches (a prompt of at most ``max_prompt_tokens`` plus
``max_new_tokens`` continuation tokens never gets to that position). The weights differ, so the pair
loads, but every activation of the DPO side equals the base's: DPO lowers none of the ten neurons,
and the example fails by its own assertion, saying so. Any other outcome (passed, an error in the
example or its fixtures, a skip) is a failure here.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import torch
from tiny import D_MODEL, N_POSITIONS, write_spec

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "docs" / "own-claim.md"
MARKER = "# claims/test_my_claim.py"
PROMPTS = [f"the plan {i} seems" for i in range(12)]  # [12], at least MIN_USABLE_PROMPTS


def docs_example() -> str:
    """The python code block of docs/own-claim.md that starts with MARKER."""
    blocks = re.findall(r"```python\n(.*?)```", PAGE.read_text(), flags=re.DOTALL)
    found = [block for block in blocks if block.startswith(MARKER + "\n")]
    assert len(found) == 1, (
        f"docs/own-claim.md holds {len(found)} python blocks starting with {MARKER!r}, not 1"
    )
    return found[0]


def test_the_docs_example_is_a_claim_file_using_the_fixtures():
    example = docs_example()
    assert "from fixtures import Decomposition" in example
    assert re.search(r"^def test_\w+\(decomposition: Decomposition\) -> None:", example, flags=re.M)


def test_the_docs_example_runs_and_its_assertion_decides(tmp_path, make_gpt2, tokenizer_dir):
    from transformers import AutoTokenizer

    from dpoclaims.measure.generation import GenerationSettings

    settings = GenerationSettings()  # what the plugin's measurements generate with
    unused_position = N_POSITIONS - 1
    assert settings.max_prompt_tokens + settings.max_new_tokens <= unused_position

    pair_dir = tmp_path / "pair"
    base, dpo = make_gpt2(0), make_gpt2(0)
    with torch.no_grad():
        dpo.transformer.wpe.weight[unused_position] += 1.0
    base.save_pretrained(pair_dir / "base")
    AutoTokenizer.from_pretrained(tokenizer_dir).save_pretrained(pair_dir / "base")
    dpo.save_pretrained(pair_dir / "dpo")
    generator = torch.Generator().manual_seed(2)
    torch.save(torch.randn(D_MODEL, generator=generator), pair_dir / "probe.pt")  # [d_model]
    (pair_dir / "prompts.json").write_text(json.dumps(PROMPTS))
    spec = write_spec(
        pair_dir / "pair.toml",
        name="tiny-unchanged",
        base="base",
        dpo="dpo",
        probe="probe.pt",
        tokenizer="base",
        extras={"challenge_prompts": "prompts.json"},
    )

    checkout = tmp_path / "checkout"  # a user's checkout: claims/, fixtures/, a pytest configuration
    (checkout / "claims").mkdir(parents=True)
    (checkout / "claims" / "test_my_claim.py").write_text(docs_example())
    shutil.copytree(ROOT / "fixtures", checkout / "fixtures", ignore=shutil.ignore_patterns("__pycache__"))
    (checkout / "pyproject.toml").write_text("[tool.pytest.ini_options]\n")  # the rootdir is the checkout

    env = {k: v for k, v in os.environ.items() if not k.startswith("DPOCLAIMS_")}
    command = [
        sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-rfEs", "claims/test_my_claim.py",
        "--pair", str(spec), "--cache-dir", str(tmp_path / "cache"), "--device", "cpu",
    ]  # fmt: skip
    done = subprocess.run(command, cwd=checkout, env=env, capture_output=True, text=True, timeout=300)
    output = done.stdout + done.stderr
    summary = output.strip().splitlines()[-1]
    assert done.returncode == 1 and re.fullmatch(r"=* ?1 failed in [\d.]+s.*", summary), output[-3000:]
    (name,) = re.findall(r"^def (test_\w+)\(", docs_example(), flags=re.M)
    assert f"FAILED claims/test_my_claim.py::{name}" in output, output[-3000:]
    assert "AssertionError: DPO lowers 0 of the 10" in output, output[-3000:]
