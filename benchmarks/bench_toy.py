"""Benchmark: cold build of the toy organism and loading a built toy pair.

Targets (issue #2): cold build <= 5 minutes on 2 CPU cores; loading a built pair <= 5 s.
Prints figures and writes reports/bench_toy.json.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from dpoclaims.cache import Cache
from dpoclaims.files import atomic_write_text
from dpoclaims.quiet import quiet_third_party
from dpoclaims.train.named_pairs import load_pair
from dpoclaims.train.organism.build import ToyConfig, ensure_toy

BUILD_TARGET_S, LOAD_TARGET_S = 300.0, 5.0


def main() -> int:
    quiet_third_party()
    import torch

    with tempfile.TemporaryDirectory(prefix="dpoclaims-bench-") as root:
        cache = Cache(root)
        start = time.perf_counter()
        directory = ensure_toy(ToyConfig(), cache=cache, progress=False)
        build_s = time.perf_counter() - start
        loads = []
        for _ in range(5):
            start = time.perf_counter()
            load_pair("toy", cache=cache)
            loads.append(time.perf_counter() - start)
        report = json.loads((directory / "toy.json").read_text())
    load_s = statistics.median(loads)
    result = {
        "cpu_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "cold_build_s": round(build_s, 1),
        "build_target_s": BUILD_TARGET_S,
        "build_ratio_to_target": round(build_s / BUILD_TARGET_S, 3),
        "build_steps_s": report["timings_s"],
        "load_s_median_of_5": round(load_s, 3),
        "load_s_all": [round(x, 3) for x in loads],
        "load_target_s": LOAD_TARGET_S,
        "load_ratio_to_target": round(load_s / LOAD_TARGET_S, 3),
    }
    print(json.dumps(result, indent=1))
    print(
        f"cold build {build_s:.1f} s (target <= {BUILD_TARGET_S:.0f} s): {'ok' if build_s <= BUILD_TARGET_S else 'OVER'}"
    )
    print(
        f"load built pair {load_s:.2f} s median of 5 (target <= {LOAD_TARGET_S:.0f} s): {'ok' if load_s <= LOAD_TARGET_S else 'OVER'}"
    )
    atomic_write_text(Path("reports") / "bench_toy.json", json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
