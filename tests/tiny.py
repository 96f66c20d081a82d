"""Plain helpers and constants shared by the tests (fixtures live in conftest.py).

A module of its own, with a unique name, so that test files can import it whatever other
``conftest`` modules pytest has loaded.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
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


def run_logits(model: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Logits of the plain HF ``model`` on ``batch`` (whatever hooks are attached to it)."""
    with torch.no_grad():
        return model(**batch).logits.detach().clone()


def intervened_logits(
    model: Any, layout: Any, batch: dict[str, torch.Tensor], intervention: Any
) -> torch.Tensor:
    """Logits of ``model`` on ``batch`` under ``intervention`` (the library's hooked path)."""
    with intervention.applied(model, layout) as running:
        return run_logits(running, batch)


def tiny_toy_config(seed: int = 0):
    """A toy organism small enough to build in a few seconds."""
    from dpoclaims.train.dpo import DPOSettings
    from dpoclaims.train.organism.build import ToyConfig

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
        dpo_checkpoint_every=3,
        n_challenge=32,
        n_neutral_eval=32,
    )


def reference_mlp_activations(
    model: Any, **model_inputs: torch.Tensor
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Each layer's MLP neuron activation (TransformerLens' ``blocks.L.mlp.hook_post``) of a plain
    HF model, and its logits, computed independently of :mod:`dpoclaims.hooks.neurons`: a forward
    hook on each layer's ``mlp`` module keeps the MLP's input x, and the activation is recomputed
    from it by hand: GPT-2 ``act(c_fc(x))``, GPT-J ``act(fc_in(x))``, a gated MLP
    ``act_fn(gate_proj(x)) * up_proj(x)``. No hook on the output projection is involved."""
    inputs: dict[int, torch.Tensor] = {}
    mlps: dict[int, torch.nn.Module] = {}
    handles = []
    layers = _layers(model)
    try:
        for index, layer in enumerate(layers):
            mlps[index] = layer.mlp
            handles.append(
                layer.mlp.register_forward_hook(
                    lambda module, args, output, index=index: inputs.__setitem__(index, args[0].detach())
                )
            )
        with torch.no_grad():
            logits = model(**model_inputs).logits.detach().clone()
            activations = [_recompute(mlps[index], inputs[index]) for index in range(len(layers))]
    finally:
        for handle in handles:
            handle.remove()
    return activations, logits


def _layers(model: Any) -> Any:
    for path in ("transformer.h", "model.layers", "model.language_model.layers"):
        try:
            return model.get_submodule(path)
        except AttributeError:
            continue
    raise AssertionError(f"no decoder layers in {type(model).__name__}")


def _recompute(mlp: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    if hasattr(mlp, "gate_proj"):
        return mlp.act_fn(mlp.gate_proj(x)) * mlp.up_proj(x)
    if hasattr(mlp, "c_fc"):
        return mlp.act(mlp.c_fc(x))
    return mlp.act(mlp.fc_in(x))


def record_mlp_activations(
    pair: Any, side: str, **model_inputs: torch.Tensor
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """:func:`reference_mlp_activations` of one side of a pair."""
    return reference_mlp_activations(pair.model(side), **model_inputs)


def _out_proj(mlp: torch.nn.Module) -> torch.nn.Module:
    for name in ("down_proj", "c_proj", "fc_out"):
        if hasattr(mlp, name):
            return getattr(mlp, name)
    raise AssertionError(f"no output projection in {type(mlp).__name__}")


@contextmanager
def mlp_outputs_replaced(model: Any, edits: dict[int, Any]) -> Iterator[None]:
    """An independent reference for an activation edit: a forward hook on each edited layer's
    ``mlp`` module replaces the MLP's output by ``out_proj(edit(activation))``, the activation
    recomputed by hand from the MLP's input (see :func:`reference_mlp_activations`). The MLPs of
    the test models apply no dropout in eval mode, so this is the MLP's forward with the edit."""
    layers = _layers(model)
    handles = []

    def replace(edit: Any) -> Any:
        def hook(module: torch.nn.Module, args: tuple[Any, ...], output: torch.Tensor) -> torch.Tensor:
            activation = _recompute(module, args[0])
            edited = edit(activation)
            return _out_proj(module)(activation if edited is None else edited)

        return hook

    try:
        for layer, edit in edits.items():
            handles.append(layers[layer].mlp.register_forward_hook(replace(edit)))
        yield
    finally:
        for handle in handles:
            handle.remove()


def weight_edited_copy(model: Any, intervention: Any, d_mlp: int) -> Any:
    """An independent reference for ``intervention`` on ``model``: a deep copy whose weights do
    what the intervention's hooks do, with no hook at all. Ablation zeroes the neurons' value
    vectors; a patch zeroes them and adds ``value * value vector`` to the output projection's bias
    (a Llama ``down_proj`` gets a bias for it); key scaling multiplies the neurons' key vectors
    (GPT-2 ``c_fc`` columns, a gated MLP's ``up_proj`` rows). Written here from the weights'
    layouts, not with :mod:`dpoclaims.hooks.neurons`."""
    import copy

    edited = copy.deepcopy(model)
    values = dict(zip(intervention.neurons, intervention.values))
    layers = _layers(edited)
    with torch.no_grad():
        for flat in intervention.neurons:
            layer, index = divmod(flat, d_mlp)
            mlp = layers[layer].mlp
            out_proj = _out_proj(mlp)
            gated = hasattr(mlp, "up_proj")
            if intervention.kind == "scale_keys":
                if gated:
                    mlp.up_proj.weight[index, :] *= intervention.factor
                else:
                    mlp.c_fc.weight[:, index] *= intervention.factor
                continue
            # Linear stores [d_model, d_mlp] (a neuron's value vector is a column); Conv1D [d_mlp, d_model].
            value_vector = out_proj.weight[:, index] if gated else out_proj.weight[index, :]
            if intervention.kind == "patch":
                if out_proj.bias is None:
                    out_proj.bias = torch.nn.Parameter(torch.zeros_like(value_vector))
                out_proj.bias += values[flat] * value_vector
            value_vector.zero_()
    return edited


def claim_record(
    claim_id: str = "C9",
    outcome: str = "passed",
    verdict: str | None = "replicates",
    measured: float = 0.5,
    *,
    keyword: str = "k",
    expected: str = "replicates",
    details: dict | None = None,
    skip_reason: str | None = None,
) -> Any:
    """A typed claim record as the plugin makes one; ``verdict=None``: not measured (skipped)."""
    from dpoclaims.claims.results import ClaimId, ClaimRecord, ClaimResult, Expectation

    cid = ClaimId.parse(claim_id)
    result = None
    if verdict is not None:
        measurable = verdict != "not measurable" and measured == measured
        result = ClaimResult(
            claim=cid.claim,
            param=cid.param,
            statement="s",
            criterion="c",
            measured=measured,
            ci=(measured - 0.1, measured + 0.1) if measurable else None,
            exact=False,
            p_value=0.01 if measurable else float("nan"),
            verdict=verdict,  # type: ignore[arg-type]
            paper=0.3,
            details=details or {},
        )
    return ClaimRecord(
        id=cid,
        order=0,
        keyword=keyword,
        expectation=Expectation.from_label(expected),
        outcome=outcome,
        node_id=f"claims/x.py::{claim_id}",
        result=result,
        skip_reason=("not run here" if result is None else "") if skip_reason is None else skip_reason,
    )
