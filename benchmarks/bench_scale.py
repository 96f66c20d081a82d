"""Scale benchmark: a randomly initialised gpt2-medium-shaped pair saved in the paper's file
formats (HF directory base, Lee et al. ``dpo.pt``, ``probe.pt``) and loaded through the same
path as the real one; and the toy pair.

Measures on one device (``--device``, see :func:`dpoclaims.devices.resolve_device`), on a
sample: a capture through plain hooks on the plain HF model against that model's plain
``generate``, interleaved in one run (overhead.py; target <= +15%), peak memory (target <= 2x
the two models' weights + 1 GB; on CUDA also peak GPU memory), and the time of each step of a
full paper run (1,199 prompts, every generation and perplexity pass the claims need),
projected from the sample. The stand-in's prompts are cut to 32 tokens, as the paper's:
RealToxicityPrompts' own with ``--prompts``, else synthetic ones of a long-prompt profile.
Writes reports/bench.json; every figure names its device.

    python benchmarks/bench_scale.py [--device cpu|cuda|cuda:N] [--sample-prompts 32]
        [--toy-prompts 400] [--repeats 2] [--threads N] [--prompts FILE] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from overhead import capture_overhead, synchronize, with_attention  # benchmarks/overhead.py

ROOT = Path(__file__).resolve().parent.parent
PAPER_PROMPTS = 1199
WIKITEXT2_TEST_GPT2_TOKENS = 287_644  # Wikitext-2 raw test split under the GPT-2 tokenizer
# Passes a full claims run makes: one generation per (side, intervention) scored for toxicity
# (base, DPO, C1 x3, C2 x4, C3, C10, C12 x3: 14), three of them captures that also record
# activations (base, DPO, base with the Fig. 1a top-N ablation; their evaluations score the
# captured continuations), and perplexity passes: by default only where a claim uses it (C2:
# base and ablated base), with --perplexity all one per scored (side, intervention). Before
# issue #9 the three captured ones were generated again to be scored: 3 + 14 generation passes.
SCORED = 2 + 3 + 4 + 1 + 1 + 3
CAPTURE_PASSES = 3
EVALUATION_PASSES = SCORED - CAPTURE_PASSES  # generation-only passes
PERPLEXITY_PASSES = {"claims": 2, "all": SCORED}
LONG_PROMPT_TOKENS = (12, 48)  # synthetic prompts' token lengths before the 32-token cut


def build_gpt2_medium_stand_in(root: Path) -> Path:
    """Random gpt2-medium (24 x 1024, d_mlp 4096, vocab 50257) in the paper pair's formats."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from dpoclaims.cache import Cache
    from dpoclaims.train.organism.build import ToyConfig, ensure_toy

    toy = ensure_toy(ToyConfig(), cache=Cache(), progress=False)  # its tokenizer stands in for GPT-2's
    config = GPT2Config(n_layer=24, n_embd=1024, n_head=16, n_positions=1024, vocab_size=50257)
    torch.manual_seed(0)
    base = GPT2LMHeadModel(config)
    base.save_pretrained(root / "base")
    from transformers import AutoTokenizer

    AutoTokenizer.from_pretrained(toy / "base").save_pretrained(root / "base")
    with torch.no_grad():  # a "DPO" side: the base plus a small perturbation, as Lee et al.'s dpo.pt
        for param in base.parameters():
            param.add_(1e-3 * torch.randn_like(param))
    torch.save({"state": base.state_dict()}, root / "dpo.pt")
    torch.save(torch.randn(1024), root / "probe.pt")
    prompts = json.loads((toy / "challenge_prompts.json").read_text())
    (root / "prompts.json").write_text(json.dumps(prompts))
    (root / "pair.toml").write_text(
        'name = "gpt2-medium-random"\nbase = "base"\ndpo = "dpo.pt"\nprobe = "probe.pt"\n'
        '[extras]\nchallenge_prompts = "prompts.json"\n'
    )
    return root / "pair.toml"


def peak_resident_bytes() -> int:
    """This process's peak RSS. ``VmHWM`` belongs to the address space, which exec renews;
    ``ru_maxrss`` would carry over the parent's peak into a child on Linux."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def long_prompts(tokenizer: Any, texts: list[str], count: int, seed: int) -> list[str]:
    """``count`` prompts of a long-prompt profile: token lengths uniform in
    ``LONG_PROMPT_TOKENS`` (before the 32-token cut), made of consecutive ``texts`` joined.

    A stand-in for RealToxicityPrompts' lengths where its file is not given (``--prompts``):
    about half of these reach the cut, so every batch of 32 pads to the full 32 tokens, as
    batches of the real prompts cut to 32 tokens do whenever one prompt of the batch is that
    long.
    """
    generator = torch.Generator().manual_seed(seed)
    low, high = LONG_PROMPT_TOKENS
    lengths = torch.randint(low, high + 1, (count,), generator=generator).tolist()
    stream: list[int] = []
    for text in texts:
        stream.extend(tokenizer(" " + text, add_special_tokens=False)["input_ids"])
    prompts, position = [], 0
    for length in lengths:
        if position + length > len(stream):
            position = 0
        prompts.append(tokenizer.decode(stream[position : position + length]).strip())
        position += length
    return prompts


def measure(
    spec: str,
    sample_prompts: int,
    ppl_windows: int,
    repeats: int,
    device_name: str | None,
    prompt_file: str | None,
) -> dict:
    """Run in a fresh process so that peak memory is the measurement's own."""
    from dpoclaims.cache import Cache
    from dpoclaims.devices import resolve_device
    from dpoclaims.measure.generation import GenerationSettings
    from dpoclaims.measure.prompts import pair_texts, read_texts
    from dpoclaims.quiet import quiet_third_party
    from dpoclaims.train.named_pairs import load_pair

    quiet_third_party()
    device = resolve_device(device_name)
    start = time.perf_counter()
    pair = load_pair(spec, cache=Cache())
    load_s = time.perf_counter() - start
    weight_bytes = sum(
        p.numel() * p.element_size() for side in ("base", "dpo") for p in pair.model(side).parameters()
    )
    if device.type != "cpu":
        pair.base.to(device)  # the measured side; the DPO side stays where it was loaded
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    toy_prompts = pair_texts(pair, "challenge_prompts")
    if prompt_file:
        path = Path(prompt_file)
        if path.suffix == ".jsonl":
            from dpoclaims.measure.data import load_rtp_challenge

            prompts, profile = load_rtp_challenge(path)[:sample_prompts], f"file {path.name}"
        else:
            prompts, profile = read_texts(path)[:sample_prompts], f"file {path.name}"
    elif spec == "toy":
        prompts, profile = toy_prompts[:sample_prompts], "the toy's challenge prompts"
    else:
        prompts = long_prompts(pair.tokenizer, toy_prompts, sample_prompts, seed=0)
        profile = f"synthetic, {LONG_PROMPT_TOKENS[0]}..{LONG_PROMPT_TOKENS[1]} tokens before the cut"
    settings = GenerationSettings(max_prompt_tokens=32, max_new_tokens=20, batch_size=min(32, sample_prompts))
    prompt_tokens = [
        min(len(pair.tokenizer(text, add_special_tokens=False)["input_ids"]), settings.max_prompt_tokens)
        for text in prompts
    ]
    overhead = capture_overhead(pair.base, pair.layout, pair.tokenizer, prompts, settings, device, repeats)
    window = min(1024, pair.base.config.n_positions)
    ppl_s_per_window = {
        kernel: with_attention(
            pair.base,
            kernel,
            lambda model: perplexity_seconds_per_window(
                model, len(pair.tokenizer), window, ppl_windows, device
            ),
        )()
        for kernel in ("eager", "sdpa")
    }
    peak_rss = peak_resident_bytes()
    n_windows = WIKITEXT2_TEST_GPT2_TOKENS // window
    per_prompt = {
        name: overhead[f"{name}_s"] / len(prompts)
        for name in ("hooks_capture", "hooks_capture_sdpa", "hf_generate", "hf_generate_eager")
    }

    def projection(capture: str, generation: str, kernel: str) -> dict[str, Any]:
        steps = {
            "capture_pass_s": per_prompt[capture] * PAPER_PROMPTS,
            "generation_pass_s": per_prompt[generation] * PAPER_PROMPTS,
            "perplexity_pass_s": ppl_s_per_window[kernel] * n_windows,
        }
        totals = {
            mode: CAPTURE_PASSES * steps["capture_pass_s"]
            + EVALUATION_PASSES * steps["generation_pass_s"]
            + passes * steps["perplexity_pass_s"]
            for mode, passes in PERPLEXITY_PASSES.items()
        }
        return {
            "attention": kernel,
            **{k: round(v, 1) for k, v in steps.items()},
            "total_s": round(totals["claims"], 1),
            "total_h": round(totals["claims"] / 3600, 3),
            "total_h_perplexity_all": round(totals["all"] / 3600, 3),
        }

    result = {
        "pair": pair.name,
        "device": describe_device(device),
        "n_layers": pair.layout.n_layers,
        "d_mlp": pair.layout.d_mlp,
        "n_neurons": pair.layout.n_neurons,
        "load_s": round(load_s, 2),
        "prompt_profile": profile,
        "prompt_tokens_after_cut": {
            "mean": round(sum(prompt_tokens) / len(prompt_tokens), 1),
            "min": min(prompt_tokens),
            "max": max(prompt_tokens),
            "share_at_cut": round(
                sum(t == settings.max_prompt_tokens for t in prompt_tokens) / len(prompt_tokens), 3
            ),
        },
        "capture_overhead": overhead,
        "perplexity_s_per_window": {k: round(v, 3) for k, v in ppl_s_per_window.items()},
        "perplexity_window": window,
        "two_models_weight_gb": round(weight_bytes / 1e9, 3),
        "peak_rss_gb": round(peak_rss / 1e9, 3),
        "memory_target_gb": round(2 * weight_bytes / 1e9 + 1, 3),
        "memory_ratio_to_target": round(peak_rss / (2 * weight_bytes + 1e9), 3),
        "projected_full_run": {
            "prompts": PAPER_PROMPTS,
            "capture_passes": CAPTURE_PASSES,
            "generation_passes": EVALUATION_PASSES,
            "perplexity_passes": PERPLEXITY_PASSES,
            "perplexity_windows_per_pass": n_windows,
            "hooks_eager": projection("hooks_capture", "hf_generate_eager", "eager"),
            "hooks_sdpa": projection("hooks_capture_sdpa", "hf_generate", "sdpa"),
        },
    }
    if device.type == "cuda":
        result["peak_gpu_memory_gb"] = round(torch.cuda.max_memory_allocated(device) / 1e9, 3)
    return result


def perplexity_seconds_per_window(
    model: torch.nn.Module, vocab: int, window: int, windows: int, device: torch.device
) -> float:
    """Seconds per ``window``-token perplexity window: a forward and the token losses, as
    :func:`dpoclaims.measure.metrics.perplexity` does with ``batch_size=1``, on random tokens."""
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(0, vocab, (windows, window), generator=generator).to(device)
    with torch.no_grad():
        model(input_ids=ids[:1, :16])  # warm-up
        synchronize(device)
        start = time.perf_counter()
        for row in ids:
            logits = model(input_ids=row[None]).logits[:, :-1].float()  # [1, window - 1, vocab]
            float(torch.nn.functional.cross_entropy(logits.transpose(1, 2), row[None, 1:]))
        synchronize(device)
    return (time.perf_counter() - start) / windows


def describe_device(device: torch.device) -> dict[str, Any]:
    """What a figure was measured on."""
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return {
            "type": "cuda",
            "name": torch.cuda.get_device_name(index),
            "index": index,
            "memory_gb": round(torch.cuda.get_device_properties(index).total_memory / 1e9, 1),
            "torch_cuda": torch.version.cuda,
        }
    return {
        "type": "cpu",
        "name": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--device", default=None, help="auto, cpu, cuda or cuda:N (default: $DPOCLAIMS_DEVICE, else auto)"
    )
    parser.add_argument("--sample-prompts", type=int, default=32)
    parser.add_argument(
        "--toy-prompts", type=int, default=400, help="prompts of the toy's run (0: skip the toy)"
    )
    parser.add_argument("--ppl-windows", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument(
        "--prompts",
        default=None,
        help="prompts for the stand-in: RealToxicityPrompts prompts.jsonl (challenge subset) or a prompt "
        "file (default: synthetic prompts of a long-prompt profile)",
    )
    parser.add_argument(
        "--keep", default=None, help="directory for the stand-in pair (default: a temp dir, removed)"
    )
    parser.add_argument("--measure", default=None, help=argparse.SUPPRESS)  # internal: child process
    parser.add_argument("--build-stand-in", default=None, help=argparse.SUPPRESS)  # internal: child process
    args = parser.parse_args()
    if args.build_stand_in:
        build_gpt2_medium_stand_in(Path(args.build_stand_in))
        return 0
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.measure:
        result = measure(
            args.measure, args.sample_prompts, args.ppl_windows, args.repeats, args.device, args.prompts
        )
        print(json.dumps(result))
        return 0

    from dpoclaims.devices import resolve_device
    from dpoclaims.errors import DpoclaimsError

    try:
        device = resolve_device(args.device)  # a bad --device fails here, before any work
    except DpoclaimsError as exc:
        parser.error(str(exc))

    def child(spec: str, sample: int, windows: int, prompts: str | None) -> dict:
        command = [
            sys.executable,
            __file__,
            "--measure",
            spec,
            "--sample-prompts",
            str(sample),
            "--ppl-windows",
            str(windows),
            "--repeats",
            str(args.repeats),
            "--device",
            str(device),
        ]
        if args.threads:
            command += ["--threads", str(args.threads)]
        if prompts:
            command += ["--prompts", prompts]
        out = subprocess.run(command, capture_output=True, text=True)
        if out.returncode != 0:
            raise SystemExit(f"measuring {spec} failed:\n{out.stderr[-3000:]}")
        return json.loads(out.stdout.strip().splitlines()[-1])

    from dpoclaims.quiet import quiet_third_party

    quiet_third_party()
    with tempfile.TemporaryDirectory(prefix="dpoclaims-scale-") as tmp:
        root = Path(args.keep or tmp)
        root.mkdir(parents=True, exist_ok=True)
        spec = root / "pair.toml"
        if not spec.is_file():
            print("writing the gpt2-medium-shaped stand-in pair ...", flush=True)
            subprocess.run([sys.executable, __file__, "--build-stand-in", str(root)], check=True)
        results = {
            "gpt2-medium-random": child(str(spec), args.sample_prompts, args.ppl_windows, args.prompts)
        }
        if args.toy_prompts:
            results["toy"] = child("toy", args.toy_prompts, 8, None)
    results["machine"] = {"cpu_count": os.cpu_count(), "requested_device": str(device)}
    out = ROOT / "reports" / "bench.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=1))
    for name in ("gpt2-medium-random", "toy"):
        if name not in results:
            continue
        r, o = results[name], results[name]["capture_overhead"]
        eager, sdpa = r["projected_full_run"]["hooks_eager"], r["projected_full_run"]["hooks_sdpa"]
        memory = f"peak RSS {r['peak_rss_gb']} GB vs target {r['memory_target_gb']} GB"
        if "peak_gpu_memory_gb" in r:
            memory += f", peak GPU memory {r['peak_gpu_memory_gb']} GB"
        print(
            f"[{name} on {o['device']}, {o['prompts']} prompts] capture {o['hooks_capture_tokens_per_s']} tok/s vs "
            f"{o['hf_generate_tokens_per_s']} tok/s for the raw HF model's generate: overhead "
            f"{o['capture_overhead_vs_hf_generate']:+.1%} (sdpa {o['capture_sdpa_overhead_vs_hf_generate']:+.1%}; "
            f"target <= +15%); {memory}; projected full paper run {eager['total_h']} h "
            f"(sdpa {sdpa['total_h']} h; {eager['total_h_perplexity_all']} h with --perplexity all)"
        )
    print(f"written {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
