"""Benchmark: the claims suite on the toy pair, and the cost of activation capture.

Targets: with the toy built and statistics cached, ``pytest claims/`` <= 60 s on 2 cores;
from a built toy with an empty statistics cache <= 3 minutes (issue #3); a capture <= 15%
over the raw Hugging Face model's plain ``generate`` (issue #9), measured interleaved in one
run (see overhead.py). Prints figures and ratios and writes reports/bench_claims.json.

    python benchmarks/bench_claims.py [--overhead-only] [--repeats 5] [--threads N]
"""

from __future__ import annotations

import argparse
import json
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--overhead-only",
        action="store_true",
        help="measure only the capture overhead, on the toy in the user cache (no suite runs)",
    )
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = parser.parse_args()
    quiet_third_party()
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
