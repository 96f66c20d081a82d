"""Benchmark: the claims suite on the toy pair, and the cost of activation capture; or, with
``--pair``, a cold claims run on a built pair, phase by phase, against this machine's limit.

Targets: with the toy built and statistics cached, ``pytest claims/`` <= 60 s on 2 cores;
from a built toy with an empty statistics cache <= 3 minutes (issue #3); a capture <= 15%
over the raw Hugging Face model's plain ``generate`` (issue #9), measured interleaved in one
run (see overhead.py). Prints figures and ratios and writes reports/bench_claims.json.

``--pair NAME`` (smollm2, toy, ...; built already, in the user cache): ``pytest claims/ --pair
NAME -n 2 --dist loadfile`` on an empty statistics cache (the pair's build entries linked in),
with the phase accounting of :mod:`dpoclaims.phases` switched on. Prints each phase's
worker-seconds, the tokens it ran through the model and its ratio to the limit: tokens x FLOPs
per token (2 x the model's parameters) over the float32 matmul FLOP/s measured here, in this
run, on one worker's threads. Target for smollm2 (issue #29): 30 minutes wall, 4 GB for the
largest process. Writes reports/bench_claims_<pair>.json; the claims reports go to
``--reports-dir`` (default reports/<pair>).

    python benchmarks/bench_claims.py [--overhead-only] [--repeats 5] [--threads N]
    python benchmarks/bench_claims.py --pair smollm2 [--max-prompts N] [--reports-dir DIR] [--dtype bfloat16]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import overhead  # benchmarks/overhead.py
from overhead import generate

from dpoclaims.cache import Cache
from dpoclaims.files import atomic_write_text
from dpoclaims.quiet import quiet_third_party
from dpoclaims.train.organism.build import ToyConfig, ensure_toy

ROOT = Path(__file__).resolve().parent.parent


def run_suite(cache_root: Path, reports: Path) -> float:
    start = time.perf_counter()
    process = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "claims/",
            "-q",
            "-n",
            "2",
            "--dist",
            "loadfile",
            "--cache-dir",
            str(cache_root),
            "--reports-dir",
            str(reports),
            "-p",
            "no:cacheprovider",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    elapsed = time.perf_counter() - start
    if process.returncode != 0:
        print(process.stdout[-3000:], process.stderr[-3000:])
        raise SystemExit(f"pytest claims/ exited {process.returncode}")
    return elapsed


def capture_overhead(cache: Cache, repeats: int = 5) -> dict[str, Any]:
    """On the toy's challenge prompts, in one interleaved run: a capture through plain hooks on
    the plain HF model (``overhead.py``) against that model's plain ``generate``; also the
    library's capture as the claims run it (``dpoclaims.measure.capture.capture``) and a separately
    loaded copy of the HF model (what a user loads)."""
    from transformers import AutoModelForCausalLM

    from dpoclaims.devices import module_device
    from dpoclaims.measure.capture import capture
    from dpoclaims.measure.generation import GenerationSettings
    from dpoclaims.measure.prompts import pair_texts
    from dpoclaims.train.named_pairs import load_pair

    pair = load_pair("toy", cache=cache)
    prompts = pair_texts(pair, "challenge_prompts")
    settings = GenerationSettings()
    device = module_device(pair.base)
    fresh = AutoModelForCausalLM.from_pretrained(pair.spec.resolve(pair.spec.base)).eval().to(device)
    extra_runs = {
        "hf_fresh_generate": lambda: generate(fresh, pair.tokenizer, prompts, settings, device),
        "library_capture_v1": lambda: capture(pair, "base", prompts, settings, progress=False),
    }
    result = overhead.capture_overhead(
        pair.base, pair.layout, pair.tokenizer, prompts, settings, device, repeats, extra_runs
    )
    library = capture(pair, "base", prompts, settings, progress=False)
    result["same_numbers_as_library_capture"] = overhead.same_numbers(
        library, pair.base, pair.layout, pair.tokenizer, prompts, settings, device
    )
    return result


def print_overhead(result: dict[str, Any]) -> None:
    print(
        f"[toy, {result['device']}, {result['prompts']} prompts] capture through hooks on the plain HF model: "
        f"{result['capture_overhead_vs_hf_generate']:+.1%} over the plain HF model's generate (target <= +15%; "
        f"CPU time {result['capture_overhead_vs_hf_generate_cpu_time']:+.1%}); with sdpa "
        f"{result['capture_sdpa_overhead_vs_hf_generate']:+.1%}; hooks alone on the same model "
        f"{result['hooks_overhead_same_model']:+.1%}. The library's capture (what the claims run): "
        f"{result['library_capture_v1_overhead_vs_hf_generate']:+.1%}; a separately loaded HF model: "
        f"{result['hf_fresh_generate_overhead_vs_hf_generate']:+.1%}"
    )
    same = result["same_numbers_as_library_capture"]
    print(
        f"same numbers as the library's capture: continuations {same['same_continuations']}, counts "
        f"{same['same_counts']}, max |difference of means| {same['max_abs_difference_of_means']:.2e}"
    )


# What a cold claims run may reuse: the pairs' builds, never a measurement.
BUILD_KINDS = ("toy", "smollm2-base", "smollm2-data", "smollm2-dpo", "smollm2-pair")
TARGET_S = {"smollm2": 1800.0}  # issue #29: a cold claims run on 2 cores
TARGET_RSS_GB = 4.0


def matmul_flops(threads: int, dtype: Any, seconds: float = 3.0) -> float:
    """FLOP/s of torch's matmul on ``threads`` threads at ``dtype``, on the MLP's shapes of a
    135M model ([4096, 576] x [576, 1536]), best of three timed blocks of ``seconds`` each."""
    import torch

    from dpoclaims.devices import torch_threads

    a = torch.randn(4096, 576).to(dtype)
    b = torch.randn(576, 1536).to(dtype)
    flops = 2 * 4096 * 576 * 1536
    best = 0.0
    with torch_threads(threads):
        for _ in range(3):
            torch.matmul(a, b)  # warm
            count, start = 0, time.perf_counter()
            while time.perf_counter() - start < seconds / 3:
                torch.matmul(a, b)
                count += 1
            best = max(best, count * flops / (time.perf_counter() - start))
    return best


def pair_parameters(pair: str) -> int:
    from dpoclaims.train.named_pairs import load_pair

    loaded = load_pair(pair)
    return int(sum(p.numel() for p in loaded.base.parameters()))


def cold_pair_run(args: argparse.Namespace) -> int:
    """The ``--pair`` benchmark (module docstring)."""
    import resource

    import torch

    from dpoclaims import phases

    workers = 2
    limits = {
        "float32_1_thread": matmul_flops(1, torch.float32),
        "float32_2_threads": matmul_flops(2, torch.float32),
        "bfloat16_1_thread": matmul_flops(1, torch.bfloat16),
    }
    print(
        "matmul limit here (GFLOP/s): " + ", ".join(f"{k} {v / 1e9:.0f}" for k, v in limits.items()),
        flush=True,
    )
    parameters = pair_parameters(args.pair)
    flops_per_token = 2 * parameters
    user_cache = Cache()
    reports = Path(args.reports_dir or ROOT / "reports" / args.pair)
    with tempfile.TemporaryDirectory(prefix="dpoclaims-bench-") as tmp:
        root = Path(tmp) / "cache"
        root.mkdir()
        for kind in BUILD_KINDS:
            if (user_cache.root / kind).is_dir():
                (root / kind).symlink_to(user_cache.root / kind)
        command = [
            sys.executable, "-m", "pytest", "claims/", "--pair", args.pair, "-q", "-n", str(workers),
            "--dist", "loadfile", "--cache-dir", str(root), "--reports-dir", str(reports),
            "-p", "no:cacheprovider", "--durations", "15",
        ]  # fmt: skip
        if args.max_prompts:
            command += ["--max-prompts", str(args.max_prompts)]
        if args.dtype:
            command += ["--dtype", args.dtype]
        env = {**os.environ, phases.ENV: str(Path(tmp) / "phases")}
        print("running: " + " ".join(command[2:]), flush=True)
        start = time.perf_counter()
        process = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - start
        largest_rss_gb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024**2
        totals = phases.read(Path(tmp) / "phases")
    print(process.stdout[-6000:])
    # one worker's threads (options.py: cores // workers), in the run's float type
    limit = limits["bfloat16_1_thread" if args.dtype == "bfloat16" else "float32_1_thread"]
    rows = []
    for name in (*phases.PHASES, *sorted(set(totals) - set(phases.PHASES))):
        total = totals.get(name, {"seconds": 0.0, "calls": 0, "tokens": 0})
        gflop = total["tokens"] * flops_per_token / 1e9
        rows.append(
            {
                "phase": name,
                "worker_seconds": round(total["seconds"], 1),
                "calls": int(total["calls"]),
                "tokens": int(total["tokens"]),
                "gflop": round(gflop, 1),
                "ratio_to_limit": round(gflop * 1e9 / (total["seconds"] * limit), 3)
                if total["tokens"]
                else None,
            }
        )
    accounted = sum(r["worker_seconds"] for r in rows)
    target = TARGET_S.get(args.pair)
    result = {
        "pair": args.pair,
        "max_prompts": args.max_prompts,
        "dtype": args.dtype or "float32",
        "workers": workers,
        "exit_status": process.returncode,
        "wall_s": round(wall, 1),
        "target_s": target,
        "ratio_to_target": round(wall / target, 3) if target else None,
        "largest_process_rss_gb": round(largest_rss_gb, 2),
        "target_rss_gb": TARGET_RSS_GB,
        "parameters": parameters,
        "gflop_per_token": round(flops_per_token / 1e9, 3),
        "matmul_gflops": {k: round(v / 1e9, 1) for k, v in limits.items()},
        "phases": rows,
        "worker_seconds_in_phases": round(accounted, 1),
        "worker_seconds_available": round(wall * workers, 1),
    }
    print(
        f"{'phase':<12}{'worker-s':>10}{'share':>8}{'calls':>8}{'tokens':>12}{'GFLOP':>10}{'ratio to limit':>16}"
    )
    for r in rows:
        share = r["worker_seconds"] / max(wall * workers, 1e-9)
        ratio = f"{r['ratio_to_limit']:.3f}" if r["ratio_to_limit"] is not None else "-"
        print(
            f"{r['phase']:<12}{r['worker_seconds']:>10.1f}{share:>8.1%}{r['calls']:>8}{r['tokens']:>12,}{r['gflop']:>10.0f}{ratio:>16}"
        )
    print(
        f"outside every phase (loading, collection, idle workers): {wall * workers - accounted:.1f} worker-s of "
        f"{wall * workers:.1f}"
    )
    print(
        f"cold claims run on {args.pair}: {wall:.1f} s wall"
        + (f" (target {target:.0f} s, ratio {wall / target:.3f})" if target else "")
        + f"; largest process {largest_rss_gb:.2f} GB (target {TARGET_RSS_GB} GB); pytest exit {process.returncode}"
    )
    atomic_write_text(ROOT / "reports" / f"bench_claims_{args.pair}.json", json.dumps(result, indent=1))
    return 0 if process.returncode == 0 else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--overhead-only",
        action="store_true",
        help="measure only the capture overhead, on the toy in the user cache (no suite runs)",
    )
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--pair", default=None, help="a built pair: a cold claims run on it, phase by phase")
    parser.add_argument("--max-prompts", type=int, default=None, help="with --pair: the run's --max-prompts")
    parser.add_argument("--reports-dir", default=None, help="with --pair: where the claims reports go")
    parser.add_argument(
        "--dtype",
        default=None,
        help="with --pair: the run's --dtype (bfloat16: a setting whose effect on every figure is to be compared "
        "with float32's, scripts/compare_claims.py)",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = parser.parse_args()
    quiet_third_party()
    if args.pair:
        return cold_pair_run(args)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    if args.overhead_only:
        result = capture_overhead(Cache(), args.repeats)
        print(json.dumps(result, indent=1))
        print_overhead(result)
        out = ROOT / "reports" / "bench_claims.json"
        previous = json.loads(out.read_text()) if out.is_file() else {}
        atomic_write_text(out, json.dumps({**previous, "capture_overhead": result}, indent=1))
        return 0
    with tempfile.TemporaryDirectory(prefix="dpoclaims-bench-") as tmp:
        tmp_path = Path(tmp)
        cache = Cache(tmp_path / "cache")
        print("building the toy (not timed here; see bench_toy.py) ...", flush=True)
        ensure_toy(ToyConfig(), cache=cache, progress=False)
        cold = run_suite(cache.root, tmp_path / "reports")
        warm = run_suite(cache.root, tmp_path / "reports")
        overhead_result = capture_overhead(cache, args.repeats)
        shutil.rmtree(tmp_path / "reports", ignore_errors=True)
    result = {
        "claims_empty_statistics_cache_s": round(cold, 1),
        "target_s": 180,
        "ratio_to_target": round(cold / 180, 3),
        "claims_statistics_cached_s": round(warm, 1),
        "cached_target_s": 60,
        "cached_ratio_to_target": round(warm / 60, 3),
        "capture_overhead": overhead_result,
    }
    print(json.dumps(result, indent=1))
    print(f"pytest claims/ from a built toy, empty statistics cache: {cold:.1f} s (target <= 180 s)")
    print(f"pytest claims/ with statistics cached: {warm:.1f} s (target <= 60 s)")
    print_overhead(overhead_result)
    atomic_write_text(ROOT / "reports" / "bench_claims.json", json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
