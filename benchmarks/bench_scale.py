"""Scale benchmark: a randomly initialised gpt2-medium-shaped pair saved in the paper's file
formats (HF directory base, Lee et al. ``dpo.pt``, ``probe.pt``) and loaded through the same
path as the real one; and the toy pair.

Measures, on a sample: capture throughput against the same generation with no hooks (target
overhead <= 15%), peak memory (target <= 2x the two models' weights + 1 GB), and the time of
each step of a full paper run (1,199 prompts, every generation and perplexity pass the claims
need), projected from the sample to the full run on this machine. Writes reports/bench.json.

    python benchmarks/bench_scale.py [--sample-prompts 32] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PAPER_PROMPTS = 1199
WIKITEXT2_TEST_GPT2_TOKENS = 287_644  # Wikitext-2 raw test split under the GPT-2 tokenizer
# Passes a full claims run makes: captures (base, DPO, base with top-N ablation for Fig. 1a),
# generations (base, DPO, C1 x3, C2 x4, C3, C10, C12 x3) and perplexity passes: by default only
# where a claim uses it (C2: base and ablated base), with --perplexity all one per generation.
CAPTURE_PASSES = 3
EVALUATION_PASSES = 2 + 3 + 4 + 1 + 1 + 3
PERPLEXITY_PASSES = {"claims": 2, "all": EVALUATION_PASSES}


def build_gpt2_medium_stand_in(root: Path) -> Path:
    """Random gpt2-medium (24 x 1024, d_mlp 4096, vocab 50257) in the paper pair's formats."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from dpoclaims.cache import Cache
    from dpoclaims.organism.build import ToyConfig, ensure_toy

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


def measure(spec: str, sample_prompts: int, ppl_windows: int, repeats: int) -> dict:
    """Run in a fresh process so that peak memory is the measurement's own."""
    import torch

    from dpoclaims.cache import Cache
    from dpoclaims.capture import capture
    from dpoclaims.generation import GenerationSettings, greedy_generate
    from dpoclaims.metrics import perplexity
    from dpoclaims.named_pairs import load_pair
    from dpoclaims.prompts import pair_texts
    from dpoclaims.quiet import quiet_third_party

    quiet_third_party()
    start = time.perf_counter()
    pair = load_pair(spec, cache=Cache())
    load_s = time.perf_counter() - start
    weight_bytes = sum(
        p.numel() * p.element_size()
        for side in ("base", "dpo")
        for p in pair.model(side).original_model.parameters()
    )
    prompts = pair_texts(pair, "challenge_prompts")[:sample_prompts]
    settings = GenerationSettings(max_prompt_tokens=32, max_new_tokens=20, batch_size=min(32, sample_prompts))
    model = pair.base.original_model
    runs = {
        "generate_no_hooks": lambda: greedy_generate(
            model, pair.tokenizer, prompts, settings, progress=False
        ),
        "capture_v1": lambda: capture(pair, "base", prompts, settings, progress=False),
    }
    times: dict[str, list[float]] = {name: [] for name in runs}
    for fn in runs.values():
        fn()
    for _ in range(repeats):  # interleaved: noise hits both alike
        for name, fn in runs.items():
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
    med = {name: statistics.median(v) for name, v in times.items()}
    window = min(1024, model.config.n_positions)
    generator = torch.Generator().manual_seed(0)
    text_ids = torch.randint(0, len(pair.tokenizer), (ppl_windows, window), generator=generator)
    texts = [pair.tokenizer.decode(row) for row in text_ids]
    t = time.perf_counter()
    perplexity(model, pair.tokenizer, texts, batch_size=1, max_tokens=window)
    ppl_s_per_window = (time.perf_counter() - t) / ppl_windows
    peak_rss = peak_resident_bytes()
    new_tokens = len(prompts) * settings.max_new_tokens
    per_prompt_capture = med["capture_v1"] / len(prompts)
    per_prompt_generate = med["generate_no_hooks"] / len(prompts)
    n_windows = WIKITEXT2_TEST_GPT2_TOKENS // window
    steps = {
        "capture_pass_s": per_prompt_capture * PAPER_PROMPTS,
        "generation_pass_s": per_prompt_generate * PAPER_PROMPTS,
        "perplexity_pass_s": ppl_s_per_window * n_windows,
    }
    totals = {
        mode: CAPTURE_PASSES * steps["capture_pass_s"]
        + EVALUATION_PASSES * steps["generation_pass_s"]
        + passes * steps["perplexity_pass_s"]
        for mode, passes in PERPLEXITY_PASSES.items()
    }
    return {
        "pair": pair.name,
        "n_layers": pair.layout.n_layers,
        "d_mlp": pair.layout.d_mlp,
        "n_neurons": pair.layout.n_neurons,
        "torch_threads": torch.get_num_threads(),
        "load_s": round(load_s, 2),
        "sample_prompts": len(prompts),
        "repeats": repeats,
        "generate_no_hooks_s": round(med["generate_no_hooks"], 3),
        "capture_v1_s": round(med["capture_v1"], 3),
        "generate_tokens_per_s": round(new_tokens / med["generate_no_hooks"], 1),
        "capture_tokens_per_s": round(new_tokens / med["capture_v1"], 1),
        "capture_overhead": round(med["capture_v1"] / med["generate_no_hooks"] - 1, 3),
        "capture_overhead_target": 0.15,
        "perplexity_s_per_1024_window": round(ppl_s_per_window, 3),
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
            **{k: round(v, 1) for k, v in steps.items()},
            "total_s": round(totals["claims"], 1),
            "total_h": round(totals["claims"] / 3600, 2),
            "total_h_perplexity_all": round(totals["all"] / 3600, 2),
        },
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sample-prompts", type=int, default=32)
    parser.add_argument("--ppl-windows", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument(
        "--keep", default=None, help="directory for the stand-in pair (default: a temp dir, removed)"
    )
    parser.add_argument("--measure", default=None, help=argparse.SUPPRESS)  # internal: child process
    parser.add_argument("--build-stand-in", default=None, help=argparse.SUPPRESS)  # internal: child process
    args = parser.parse_args()
    if args.build_stand_in:
        build_gpt2_medium_stand_in(Path(args.build_stand_in))
        return 0
    if args.measure:
        print(json.dumps(measure(args.measure, args.sample_prompts, args.ppl_windows, args.repeats)))
        return 0

    def child(spec: str, sample: int, windows: int) -> dict:
        out = subprocess.run(
            [
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
            ],
            capture_output=True,
            text=True,
            check=True,
        )
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
            "gpt2-medium-random": child(str(spec), args.sample_prompts, args.ppl_windows),
            "toy": child("toy", 400, 8),
        }
    results["machine"] = {"cpu_count": os.cpu_count()}
    out = ROOT / "reports" / "bench.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=1))
    for name in ("gpt2-medium-random", "toy"):
        r = results[name]
        print(
            f"[{name}] capture {r['capture_tokens_per_s']} tok/s vs {r['generate_tokens_per_s']} tok/s without hooks "
            f"(overhead {r['capture_overhead']:+.1%}, target <= +15%); peak RSS {r['peak_rss_gb']} GB vs target "
            f"{r['memory_target_gb']} GB (two models {r['two_models_weight_gb']} GB); projected full paper run "
            f"{r['projected_full_run']['total_h']} h on this machine "
            f"({r['projected_full_run']['total_h_perplexity_all']} h with --perplexity all)"
        )
    print(f"written {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
