"""Benchmark: ``dpoclaims calibrate`` (every claim on the 4 planted organisms x 20 replications),
cold: the toy built (in the user's cache, untimed), every planted measurement computed anew in an
empty cache. Target: 20 minutes or less on 2 CPU cores (issue #28). Prints the wall time, its
ratio to the target, the time per replication and per organism, the largest worker's memory, and
whether every determined cell met the 5% goal; writes the calibration files into --reports-dir.

    python benchmarks/bench_calibrate.py [--replications 20] [--workers 2] [--reports-dir reports]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import tempfile
import time
from pathlib import Path

from dpoclaims.cache import Cache
from dpoclaims.calibration.report import write_calibration
from dpoclaims.calibration.run import CalibrationSettings, calibrate
from dpoclaims.files import atomic_write_text
from dpoclaims.quiet import quiet_third_party
from dpoclaims.train.named_pairs import checked_toy
from dpoclaims.train.organism.build import ToyConfig

TARGET_SECONDS = 20 * 60


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--replications", type=int, default=CalibrationSettings().replications)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--reports-dir", default="reports")
    args = parser.parse_args()
    quiet_third_party()
    toy_dir = checked_toy(Cache(), ToyConfig())  # built or reused, untimed
    settings = CalibrationSettings(replications=args.replications)
    with tempfile.TemporaryDirectory(prefix="bench-calibrate-") as empty:
        started = time.perf_counter()
        replications, facts = calibrate(settings, Cache(empty), workers=args.workers, toy_dir=toy_dir)
        wall = time.perf_counter() - started
    summary = write_calibration(Path(args.reports_dir), replications, facts)
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(f"calibrate, cold: {len(replications)} replications on {args.workers} workers")
    print(
        f"  wall {wall:.1f} s = {wall / 60:.1f} min; target {TARGET_SECONDS / 60:.0f} min; ratio {wall / TARGET_SECONDS:.3f}"
    )
    for name in settings.organisms:
        times = [r.seconds for r in replications if r.organism == name]
        print(f"  {name:18} median {statistics.median(times):5.1f} s per replication (max {max(times):.1f})")
    print(f"  largest worker process: {peak_mb:.0f} MB")
    print(
        f"  determined cells {summary['determined_cells']}, largest wrong rate {(summary['largest_wrong_rate'] or 0):.1%}, "
        f"goal met: {summary['met']}"
    )
    figures = {
        "wall_seconds": wall,
        "target_seconds": TARGET_SECONDS,
        "ratio": wall / TARGET_SECONDS,
        "replications": len(replications),
        "workers": args.workers,
        "largest_worker_mb": peak_mb,
        "summary": summary,
    }
    atomic_write_text(Path(args.reports_dir) / "bench_calibrate.json", json.dumps(figures, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
