"""Benchmark: cold build of the toy organism at each seed asked for, and loading a built toy pair.

    python benchmarks/bench_toy.py                 # the default seed
    python benchmarks/bench_toy.py --seeds 0 1 2 3 4

Targets (issues #2, #30): a seed's cold build <= 5 minutes on 2 CPU cores; loading a built pair
<= 5 s. Each seed is built into its own empty cache, one after the other. Prints per seed the
build's stage times, the DPO recipe and checkpoint the rule kept and whether its bands are met; writes
reports/bench_toy.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from dpoclaims.cache import Cache
from dpoclaims.files import atomic_write_text
from dpoclaims.quiet import quiet_third_party
from dpoclaims.train.named_pairs import load_pair
from dpoclaims.train.organism import DEFAULT_SEED
from dpoclaims.train.organism.build import ToyConfig, ensure_toy, toy_key

BUILD_TARGET_S, LOAD_TARGET_S = 300.0, 5.0


def build_seed(seed: int, cache: Cache) -> dict[str, object]:
    """A build at ``seed`` in ``cache`` (cold unless it holds the toy): its time, stage times, kept
    checkpoint, bands."""
    config = replace(ToyConfig(), seed=seed)
    cached = cache.get("toy", toy_key(config)) is not None
    start = time.perf_counter()
    directory = ensure_toy(config, cache=cache, progress=False)
    build_s = time.perf_counter() - start
    report = json.loads((directory / "toy.json").read_text())
    rule = report["dpo_checkpoints"]
    return {
        "seed": seed,
        "from_cache": cached,
        "cold_build_s": None if cached else round(build_s, 1),
        "build_ratio_to_target": None if cached else round(build_s / BUILD_TARGET_S, 3),
        "build_steps_s": report["timings_s"],
        "recipe": rule["recipe"],
        "kept_step": rule["kept_step"],
        "checkpoints_measured": len(rule["measured"]),
        "checkpoints_measured_all_recipes": sum(len(r["measured"]) for r in rule["recipes"]),
        "bands_ok": all(band["ok"] for band in report["bands"].values()),
        "bands": {name: round(band["value"], 4) for name, band in report["bands"].items()},
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[DEFAULT_SEED])
    parser.add_argument(
        "--cache-dir",
        type=Path,
        help="build into this cache and keep the toys (default: a temporary cache, removed); a seed "
        "already there is reported as cached, not as a cold build",
    )
    args = parser.parse_args()
    quiet_third_party()
    import torch

    builds = []
    with tempfile.TemporaryDirectory(prefix="dpoclaims-bench-") as root:
        cache = Cache(args.cache_dir or root)
        for seed in args.seeds:
            built = build_seed(seed, cache)
            builds.append(built)
            cold = built["cold_build_s"]
            print(
                f"seed {seed}: "
                + (
                    "from the cache (not a cold build)"
                    if cold is None
                    else f"cold build {cold} s (target <= {BUILD_TARGET_S:.0f} s: "
                    f"{'ok' if float(str(cold)) <= BUILD_TARGET_S else 'OVER'})"
                )
                + "; stages "
                f"{built['build_steps_s']}; DPO checkpoint kept: recipe {built['recipe']}, step {built['kept_step']} "
                f"of {built['checkpoints_measured']} measured ({built['checkpoints_measured_all_recipes']} under "
                f"every recipe run); bands {'met' if built['bands_ok'] else 'NOT met'} "
                f"{built['bands']}",
                flush=True,
            )
        # loading the default toy, from the cache it was built into (built now if not asked for)
        ensure_toy(ToyConfig(), cache=cache, progress=False)
        loads = []
        for _ in range(5):
            start = time.perf_counter()
            load_pair("toy", cache=cache)
            loads.append(time.perf_counter() - start)
    load_s = statistics.median(loads)
    result = {
        "cpu_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "build_target_s": BUILD_TARGET_S,
        "builds": builds,
        "load_s_median_of_5": round(load_s, 3),
        "load_s_all": [round(x, 3) for x in loads],
        "load_target_s": LOAD_TARGET_S,
        "load_ratio_to_target": round(load_s / LOAD_TARGET_S, 3),
    }
    print(
        f"load built pair {load_s:.2f} s median of 5 (target <= {LOAD_TARGET_S:.0f} s): "
        f"{'ok' if load_s <= LOAD_TARGET_S else 'OVER'}"
    )
    atomic_write_text(Path("reports") / "bench_toy.json", json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
