"""The Ray engine's overhead over the local engine for one sweep grid, and a projection of a
larger grid onto N GPU nodes from the measured per-cell times.

Runs the same grid (default: the default toy under both position conventions, 20 prompts)
with ``--engine local`` and ``--engine ray`` in one process, each on a fresh cache that holds
only the toy (hard-linked from the user's cache), so both compute every measurement: first cold
(local, then ray), then warm (every measurement read back from that engine's cache). The Ray
run asks ``--cpus-per-cell`` CPUs per cell (default: every core, so its cells run one at a time
with the local engine's thread count and the difference is the engine's own cost: starting Ray,
the cache check from every node, scheduling, shipping reports back). The matrices of the two
engines are compared cell for cell. Writes reports/bench_sweep.json.

Projection: a grid of ``--project-cells`` cells (default 24: 4 models x 3 DPO seeds x 2
conventions) on N nodes of one GPU each, one cell per GPU at a time, is
``fixed + ceil(cells / N) * (cell_s + per_cell_overhead)``, with ``fixed`` and
``per_cell_overhead`` the Ray costs measured here and ``cell_s`` either the toy's measured cold
cell time or an assumed time per 7-8B cell (``--assume-cell-s``, stated as an assumption: no
7-8B cell is measured on this machine). Assumes equal cell times, a cache already holding the
pairs, and nodes that do not share a GPU.

    python benchmarks/bench_sweep.py [--seeds 2] [--conventions v1 emnlp] [--max-prompts 20]
        [--cpus-per-cell N] [--project-cells 24] [--nodes 1 2 4 8 12 24] [--assume-cell-s 3600]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from dpoclaims.cache import Cache
from dpoclaims.runs import sweep
from dpoclaims.runs.cells import Cell, grid
from dpoclaims.runs.ray_engine import check_shared_cache
from dpoclaims.train.organism import DEFAULT_SEED
from dpoclaims.train.organism.build import ToyConfig, ensure_toy, toy_key

ROOT = Path(__file__).resolve().parent.parent


def fresh_cache(root: Path, seeds: list[int]) -> Cache:
    """A cache holding only the toys at ``seeds`` (hard links to the user's cache entries)."""
    user = Cache()
    cache = Cache(root)
    for seed in seeds:
        config = replace(ToyConfig(), seed=seed)
        source = ensure_toy(config, cache=user, progress=False)
        target = cache.entry_dir("toy", toy_key(config))
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            shutil.copytree(source, target, copy_function=os.link)
        except OSError:
            shutil.rmtree(target, ignore_errors=True)
            shutil.copytree(source, target)
    return cache


def timed_sweep(engine: str, cells: list[Cell], cache: Cache, reports: Path, args, **ray) -> dict[str, Any]:
    lines: list[str] = []

    def progress(line: str) -> None:
        lines.append(line)
        print(f"  [{engine}] {line}", flush=True)

    began = time.perf_counter()
    sweep.sweep(
        cells,
        cache=cache,
        reports_dir=reports,
        engine=engine,
        max_prompts=args.max_prompts,
        pytest_args=args.pytest_args.split(),
        cpus_per_cell=args.cpus_per_cell,
        progress=progress,
        **ray,
    )
    wall = time.perf_counter() - began
    result = json.loads((reports / "replication.json").read_text())
    return {
        "wall_s": round(wall, 2),
        "cells": {
            run["cell"]: {"build_s": round(run["build_s"], 2), "claims_s": round(run["claims_s"], 2)}
            for run in result["runs"]
        },
        "matrix": result["matrix"],
        "missing": result["missing"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[DEFAULT_SEED])
    parser.add_argument("--conventions", nargs="+", default=["v1", "emnlp"])
    parser.add_argument("--max-prompts", type=int, default=20)
    parser.add_argument("--pytest-args", default="", help="extra pytest arguments for each cell")
    parser.add_argument("--cpus-per-cell", type=float, default=float(os.cpu_count() or 1))
    parser.add_argument("--project-cells", type=int, default=24)
    parser.add_argument("--nodes", type=int, nargs="+", default=[1, 2, 4, 8, 12, 24])
    parser.add_argument(
        "--assume-cell-s",
        type=float,
        default=3600.0,
        help="assumed seconds per 7-8B cell on one GPU for the second projection (not measured here)",
    )
    parser.add_argument(
        "--phases",
        nargs="+",
        choices=["cold", "warm"],
        default=["cold", "warm"],
        help="cold and/or warm runs",
    )
    parser.add_argument("--out", default=str(ROOT / "reports" / "bench_sweep.json"))
    args = parser.parse_args()

    import ray

    cells = grid(["toy"], args.seeds, args.conventions)
    work = Path(tempfile.mkdtemp(prefix="bench-sweep-"))
    runs: dict[str, Any] = {}
    try:
        caches = {engine: fresh_cache(work / engine / "cache", args.seeds) for engine in sweep.ENGINES}
        for phase in args.phases:
            for engine in sweep.ENGINES:
                print(f"{phase} {engine}: {len(cells)} cells", flush=True)
                reports = work / engine / f"reports-{phase}"
                if engine == "local":
                    runs[f"{engine}_{phase}"] = timed_sweep(engine, cells, caches[engine], reports, args)
                    continue
                # Ray started here, timed on its own, and reused by the sweep (as under --address).
                began = time.perf_counter()
                ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
                init_s = time.perf_counter() - began
                began = time.perf_counter()
                check_shared_cache(ray, caches[engine].root)
                check_s = time.perf_counter() - began
                try:
                    run = timed_sweep(engine, cells, caches[engine], reports, args)
                finally:
                    began = time.perf_counter()
                    ray.shutdown()
                    shutdown_s = time.perf_counter() - began
                run.update(
                    init_s=round(init_s, 2),
                    cache_check_s=round(check_s, 2),
                    shutdown_s=round(shutdown_s, 2),
                    wall_s=round(run["wall_s"] + init_s + shutdown_s, 2),  # as a user sees it
                )
                runs[f"{engine}_{phase}"] = run
    finally:
        shutil.rmtree(work, ignore_errors=True)

    same = {
        phase: runs[f"local_{phase}"]["matrix"] == runs[f"ray_{phase}"]["matrix"]
        for phase in ("cold", "warm")
    }
    summary: dict[str, Any] = {}
    for phase in ("cold", "warm"):
        local, on_ray = runs[f"local_{phase}"], runs[f"ray_{phase}"]
        summary[phase] = {
            "local_s": local["wall_s"],
            "ray_s": on_ray["wall_s"],
            "overhead_s": round(on_ray["wall_s"] - local["wall_s"], 2),
            "ratio": round(on_ray["wall_s"] / local["wall_s"], 3),
            "ray_fixed_s": round(on_ray["init_s"] + on_ray["cache_check_s"] + on_ray["shutdown_s"], 2),
        }
    # The Ray engine's costs: a fixed part (start, cache check, shutdown) and the rest per cell.
    cold = summary["cold"] if "cold" in summary else summary["warm"]
    fixed = cold["ray_fixed_s"]
    per_cell = max(0.0, (cold["overhead_s"] - fixed) / len(cells))
    first = runs[f"local_{args.phases[0]}"]
    toy_cell_s = sum(c["build_s"] + c["claims_s"] for c in first["cells"].values()) / len(cells)

    def makespan(cell_s: float, nodes: int) -> float:
        return fixed + math.ceil(args.project_cells / nodes) * (cell_s + per_cell)

    projection = {
        "cells": args.project_cells,
        "formula": "fixed + ceil(cells / nodes) * (cell_s + per_cell_overhead_s)",
        "fixed_s": fixed,
        "per_cell_overhead_s": round(per_cell, 2),
        "assumptions": (
            "one GPU per node, one cell per GPU at a time; equal cell times; the pairs already in the "
            "shared cache; fixed and per-cell Ray costs as measured here on a local instance"
        ),
        f"toy_cell_s (measured, {args.phases[0]}, this machine)": round(toy_cell_s, 1),
        "assumed_7_8B_cell_s (assumption, not measured)": args.assume_cell_s,
        "makespan_s": {
            str(n): {
                "toy cells": round(makespan(toy_cell_s, n), 1),
                "assumed 7-8B cells": round(makespan(args.assume_cell_s, n), 1),
            }
            for n in args.nodes
        },
    }
    out = {
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "ray": ray.__version__,
        "grid": [c.id for c in cells],
        "max_prompts": args.max_prompts,
        "cpus_per_cell": args.cpus_per_cell,
        "summary": summary,
        "same_matrix_local_vs_ray": same,
        "runs": {name: {k: v for k, v in run.items() if k != "matrix"} for name, run in runs.items()},
        "projection": projection,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1))
    print(json.dumps({k: out[k] for k in ("summary", "same_matrix_local_vs_ray", "projection")}, indent=1))
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
