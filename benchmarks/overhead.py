"""Shared by bench_claims.py and bench_scale.py: capture-style recording through plain PyTorch
hooks on the plain Hugging Face model (:mod:`dpoclaims.hooks.neurons`) against that model's plain
``generate``, measured interleaved in one run.

The variants, all greedy with left padding, ``max_new_tokens`` each, on one side of a pair:

- ``hf_generate``: the HF model's own forward with HF's default attention kernel (sdpa), no
  hooks: what a user runs without this suite. (The pair's model itself, its attention kernel
  switched for the run with ``set_attn_implementation``: no second copy of the weights.)
- ``hf_generate_eager``: the same with eager attention.
- ``hooks_capture``: ``hf_generate_eager`` plus :class:`LastPositionRecorder` (v1 capture
  convention: per-prompt float64 sums of every layer's neuron activation at the last position
  of each step), continuations decoded: what a capture does.
- ``hooks_capture_sdpa``: the same on the sdpa model.
"""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch

from dpoclaims.hooks.neurons import LastPositionRecorder
from dpoclaims.measure.generation import GenerationSettings, encode_prompts
from dpoclaims.models.loading import MLPLayout

OVERHEAD_TARGET = 0.15


def _continuations(output: torch.Tensor, prompt_width: int, eos: int | None, tokenizer: Any) -> list[str]:
    texts = []
    for row in output[:, prompt_width:].tolist():
        if eos is not None and eos in row:
            row = row[: row.index(eos)]
        texts.append(tokenizer.decode(row, skip_special_tokens=True))
    return texts


@torch.no_grad()
def generate(
    model: torch.nn.Module,
    tokenizer: Any,
    prompts: Sequence[str],
    settings: GenerationSettings,
    device: torch.device,
    layout: MLPLayout | None = None,
) -> tuple[list[str], torch.Tensor | None, torch.Tensor | None]:
    """Greedy continuations of ``prompts``; with ``layout``, also the v1 capture: per-prompt
    mean activations ``[n_prompts, n_layers, d_mlp]`` and counts ``[n_prompts]`` (CPU)."""
    texts: list[str] = []
    means, counts = [], []
    eos = tokenizer.eos_token_id
    for start in range(0, len(prompts), settings.batch_size):
        batch = encode_prompts(
            tokenizer, prompts[start : start + settings.batch_size], settings.max_prompt_tokens
        )
        ids, mask = batch["input_ids"].to(device), batch["attention_mask"].to(device)
        kwargs = dict(
            input_ids=ids,
            attention_mask=mask,
            max_new_tokens=settings.max_new_tokens,
            do_sample=False,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=eos,
        )
        if layout is None:
            output = model.generate(**kwargs)
        else:
            recorder = LastPositionRecorder(layout, len(ids), eos)
            with recorder.attached(model):
                output = model.generate(**kwargs)
            means.append(recorder.means())
            counts.append(recorder.counts().float())
        texts.extend(_continuations(output, ids.shape[1], eos, tokenizer))
    if layout is None:
        return texts, None, None
    return texts, torch.cat(means), torch.cat(counts)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def interleaved(
    runs: dict[str, Callable[[], Any]], repeats: int, device: torch.device
) -> dict[str, dict[str, float]]:
    """Each variant once to warm up, then ``repeats`` rounds of every variant in turn (so that
    machine noise hits all alike), each round starting one variant later (so that no variant
    always follows the same one), with Python's garbage collected before each timed run (so
    that no variant pays for another's garbage). Per variant: median wall and process CPU
    seconds."""
    names = list(runs)
    wall: dict[str, list[float]] = {name: [] for name in names}
    cpu: dict[str, list[float]] = {name: [] for name in names}
    for run in runs.values():
        run()
    for round_index in range(repeats):
        offset = round_index % len(names)
        for name in names[offset:] + names[:offset]:
            gc.collect()
            synchronize(device)
            start_wall, start_cpu = time.perf_counter(), time.process_time()
            runs[name]()
            synchronize(device)
            wall[name].append(time.perf_counter() - start_wall)
            cpu[name].append(time.process_time() - start_cpu)
    return {
        name: {"wall_s": statistics.median(wall[name]), "cpu_s": statistics.median(cpu[name])}
        for name in names
    }


def with_attention(model: Any, implementation: str, run: Callable[[Any], Any]) -> Callable[[], Any]:
    """``run(model)`` with ``model``'s attention kernel set to ``implementation`` for the call
    (and set back after it)."""

    def call() -> Any:
        before = model.config._attn_implementation
        model.set_attn_implementation(implementation)
        try:
            return run(model)
        finally:
            model.set_attn_implementation(before)

    return call


def capture_overhead(
    model: Any,
    layout: MLPLayout,
    tokenizer: Any,
    prompts: Sequence[str],
    settings: GenerationSettings,
    device: torch.device,
    repeats: int,
    extra_runs: dict[str, Callable[[], Any]] | None = None,
) -> dict[str, Any]:
    """Hooks capture against the plain HF model's ``generate``; see the module docstring.
    ``extra_runs`` (e.g. the library's capture) are timed in the same rounds."""
    runs: dict[str, Callable[[], Any]] = {
        "hf_generate": with_attention(
            model, "sdpa", lambda m: generate(m, tokenizer, prompts, settings, device)
        ),
        "hf_generate_eager": with_attention(
            model, "eager", lambda m: generate(m, tokenizer, prompts, settings, device)
        ),
        "hooks_capture": with_attention(
            model, "eager", lambda m: generate(m, tokenizer, prompts, settings, device, layout)
        ),
        "hooks_capture_sdpa": with_attention(
            model, "sdpa", lambda m: generate(m, tokenizer, prompts, settings, device, layout)
        ),
        **(extra_runs or {}),
    }
    medians = interleaved(runs, repeats, device)
    n_tokens = len(prompts) * settings.max_new_tokens

    def ratio(numerator: str, denominator: str, clock: str = "wall_s") -> float:
        return round(medians[numerator][clock] / medians[denominator][clock] - 1, 3)

    result: dict[str, Any] = {
        "device": str(device),
        "prompts": len(prompts),
        "settings": {
            "max_prompt_tokens": settings.max_prompt_tokens,
            "max_new_tokens": settings.max_new_tokens,
            "batch_size": settings.batch_size,
        },
        "repeats": repeats,
        "torch_threads": torch.get_num_threads(),
        **{f"{name}_s": round(m["wall_s"], 3) for name, m in medians.items()},
        **{f"{name}_cpu_s": round(m["cpu_s"], 3) for name, m in medians.items()},
        "hf_generate_tokens_per_s": round(n_tokens / medians["hf_generate"]["wall_s"], 1),
        "hooks_capture_tokens_per_s": round(n_tokens / medians["hooks_capture"]["wall_s"], 1),
        # The headline: a capture through hooks against the user's plain HF generate.
        "capture_overhead_vs_hf_generate": ratio("hooks_capture", "hf_generate"),
        "capture_sdpa_overhead_vs_hf_generate": ratio("hooks_capture_sdpa", "hf_generate"),
        # The hooks and recording alone (same model, same kernel, with and without).
        # (for sdpa, capture_sdpa_overhead_vs_hf_generate is that figure).
        "hooks_overhead_same_model": ratio("hooks_capture", "hf_generate_eager"),
        "capture_overhead_vs_hf_generate_cpu_time": ratio("hooks_capture", "hf_generate", "cpu_s"),
        "overhead_target": OVERHEAD_TARGET,
    }
    for name in extra_runs or {}:
        result[f"{name}_overhead_vs_hf_generate"] = ratio(name, "hf_generate")
    return result


def same_numbers(
    library_capture: Any,
    model: Any,
    layout: MLPLayout,
    tokenizer: Any,
    prompts: Sequence[str],
    settings: GenerationSettings,
    device: torch.device,
) -> dict[str, Any]:
    """This module's hooks capture against the library's capture (``library_capture``: a
    :class:`dpoclaims.measure.capture.Capture` of the same prompts on the same model)."""
    texts, means, counts = generate(model, tokenizer, prompts, settings, device, layout)
    assert means is not None and counts is not None
    return {
        "prompts": len(prompts),
        "same_continuations": texts == library_capture.continuations,
        "same_counts": bool(torch.equal(counts, library_capture.n_positions)),
        "max_abs_difference_of_means": float((means - library_capture.mean_activation).abs().max()),
        "max_abs_mean": float(library_capture.mean_activation.abs().max()),
    }
