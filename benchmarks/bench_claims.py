"""Benchmark: the claims suite on the toy pair, and the cost of activation capture.

Targets (issue #3): with the toy built and statistics cached, ``pytest claims/`` <= 60 s on
2 cores; from a built toy with an empty statistics cache <= 3 minutes; capture overhead
<= 15% over the same generation with no hooks (measured interleaved, in one run).
Prints figures and ratios and writes reports/bench_claims.json.
"""

from __future__ import annotations

import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from dpoclaims.cache import Cache
from dpoclaims.files import atomic_write_text
from dpoclaims.organism.build import ToyConfig, ensure_toy
from dpoclaims.quiet import quiet_third_party

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


def capture_overhead(cache: Cache, repeats: int = 5) -> dict[str, float]:
    from transformers import GPT2LMHeadModel

    from dpoclaims.capture import capture
    from dpoclaims.generation import GenerationSettings, greedy_generate
    from dpoclaims.named_pairs import load_pair
    from dpoclaims.prompts import pair_texts

    pair = load_pair("toy", cache=cache)
    prompts = pair_texts(pair, "challenge_prompts")
    settings = GenerationSettings()
    raw = GPT2LMHeadModel.from_pretrained(pair.spec.resolve(pair.spec.base)).eval()
    runs = {
        "raw_hf_generate": lambda: greedy_generate(raw, pair.tokenizer, prompts, settings, progress=False),
        "bridge_generate_no_hooks": lambda: greedy_generate(
            pair.base.original_model, pair.tokenizer, prompts, settings, progress=False
        ),
        "bridge_capture_v1": lambda: capture(pair, "base", prompts, settings, progress=False),
    }
    times: dict[str, list[float]] = {name: [] for name in runs}
    for fn in runs.values():
        fn()  # warm-up
    for _ in range(repeats):  # interleaved, so machine noise hits every variant alike
        for name, fn in runs.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    medians = {name: statistics.median(values) for name, values in times.items()}
    n_tokens = len(prompts) * settings.max_new_tokens
    return {
        **{f"{k}_s": round(v, 3) for k, v in medians.items()},
        "capture_tokens_per_s": round(n_tokens / medians["bridge_capture_v1"], 1),
        "overhead_vs_same_generation_no_hooks": round(
            medians["bridge_capture_v1"] / medians["bridge_generate_no_hooks"] - 1, 3
        ),
        "overhead_vs_raw_hf_model": round(medians["bridge_capture_v1"] / medians["raw_hf_generate"] - 1, 3),
    }


def main() -> int:
    quiet_third_party()
    with tempfile.TemporaryDirectory(prefix="dpoclaims-bench-") as tmp:
        tmp_path = Path(tmp)
        cache = Cache(tmp_path / "cache")
        print("building the toy (not timed here; see bench_toy.py) ...", flush=True)
        ensure_toy(ToyConfig(), cache=cache, progress=False)
        cold = run_suite(cache.root, tmp_path / "reports")
        warm = run_suite(cache.root, tmp_path / "reports")
        overhead = capture_overhead(cache)
        shutil.rmtree(tmp_path / "reports", ignore_errors=True)
    result = {
        "claims_empty_statistics_cache_s": round(cold, 1),
        "target_s": 180,
        "ratio_to_target": round(cold / 180, 3),
        "claims_statistics_cached_s": round(warm, 1),
        "cached_target_s": 60,
        "cached_ratio_to_target": round(warm / 60, 3),
        **overhead,
        "overhead_target": 0.15,
    }
    print(json.dumps(result, indent=1))
    print(f"pytest claims/ from a built toy, empty statistics cache: {cold:.1f} s (target <= 180 s)")
    print(f"pytest claims/ with statistics cached: {warm:.1f} s (target <= 60 s)")
    print(
        f"capture overhead over the same generation without hooks: {overhead['overhead_vs_same_generation_no_hooks']:+.1%} "
        f"(target <= +15%); over the raw HF model: {overhead['overhead_vs_raw_hf_model']:+.1%}"
    )
    atomic_write_text(ROOT / "reports" / "bench_claims.json", json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
