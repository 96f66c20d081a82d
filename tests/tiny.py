"""Plain helpers and constants shared by the tests (fixtures live in conftest.py).

A module of its own, with a unique name, so that test files can import it whatever other
``conftest`` modules pytest has loaded.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

D_MODEL = 32
N_LAYER = 2
N_HEAD = 2
N_POSITIONS = 64
TOKENIZER_VOCAB = 300


def write_spec(path: Path, **keys: Any) -> Path:
    """Write a pair spec TOML with the given top-level keys (strings) and an optional
    ``extras`` dict; return its path."""
    lines = []
    extras = keys.pop("extras", None)
    for key, value in keys.items():
        lines.append(f"{key} = {_toml_str(value)}")
    if extras is not None:
        lines.append("")
        lines.append("[extras]")
        for key, value in extras.items():
            lines.append(f"{key} = {_toml_str(value)}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def _toml_str(value: Any) -> str:
    text = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{text}"'


@dataclass(frozen=True)
class PairFiles:
    """A tiny pair on disk. ``spec`` uses the HF directory for the DPO side."""

    root: Path
    base: Path
    dpo: Path  # HF directory
    dpo_pt: Path  # Lee et al. format: {"state": state_dict}
    probe: Path
    tokenizer: Path
    spec: Path


def save_pair(
    root: Path, base: Any, dpo: Any, tokenizer_dir: Path, d_model: int, probe_seed: int
) -> PairFiles:
    from transformers import AutoTokenizer

    root.mkdir(parents=True, exist_ok=True)
    base.save_pretrained(root / "base")
    AutoTokenizer.from_pretrained(tokenizer_dir).save_pretrained(root / "base")
    dpo.save_pretrained(root / "dpo")
    torch.save({"state": dpo.state_dict()}, root / "dpo.pt")
    generator = torch.Generator().manual_seed(probe_seed)
    torch.save(torch.randn(d_model, generator=generator), root / "probe.pt")
    spec = write_spec(
        root / "pair.toml",
        name="tiny",
        base="base",
        dpo="dpo",
        probe="probe.pt",
        tokenizer="base",
        extras={"report": "notes.txt"},  # a free-form file: report is for reference
    )
    (root / "notes.txt").write_text("hello")
    return PairFiles(
        root, root / "base", root / "dpo", root / "dpo.pt", root / "probe.pt", root / "base", spec
    )


def run_with_hooks(bridge: Any, batch: dict[str, torch.Tensor], hooks: list) -> torch.Tensor:
    """Logits of ``bridge.original_model`` on ``batch`` with ``hooks`` attached."""
    with torch.no_grad(), bridge.hooks(fwd_hooks=hooks):
        return bridge.original_model(**batch).logits.detach().clone()


def tiny_toy_config(seed: int = 0):
    """A toy organism small enough to build in a few seconds."""
    from dpoclaims.dpo import DPOSettings
    from dpoclaims.organism.build import ToyConfig

    return ToyConfig(
        seed=seed,
        n_pretrain_comments=1500,
        vocab_size=600,
        n_layer=2,
        n_embd=32,
        n_head=2,
        pretrain_steps=30,
        n_probe_comments=300,
        n_dpo_pairs=48,
        n_dpo_val=16,
        dpo=DPOSettings(
            learning_rate=3e-5,
            batch_size=8,
            max_epochs=1,
            eval_every=4,
            patience=2,
            warmup_steps=1,
            max_length=64,
        ),
        n_challenge=32,
        n_neutral_eval=32,
    )


def record_mlp_activations(
    pair: Any, side: str, **model_inputs: torch.Tensor
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Activations at every ``blocks.L.mlp.hook_post`` of one side of a pair, and its logits."""
    captured: dict[str, torch.Tensor] = {}

    def keep(name: str) -> Any:
        def hook(activation: torch.Tensor, hook: Any) -> torch.Tensor:
            captured[name] = activation.detach().clone()
            return activation

        return hook

    bridge = pair.model(side)
    with torch.no_grad(), bridge.hooks(fwd_hooks=[(name, keep(name)) for name in pair.layout.hook_names]):
        logits = bridge.original_model(**model_inputs).logits.detach().clone()
    return [captured[name] for name in pair.layout.hook_names], logits
