"""Compare the measured figures of two ``claims.json`` reports, claim by claim.

    python scripts/compare_claims.py BEFORE/claims.json AFTER/claims.json [--tol 1e-9] [--rename C4[v1]=C4[four-groups]]

First it says why the two reports may differ, from their run manifests: the versions (dpoclaims,
its commit, Python, the libraries that key the cache), the settings (pair and fingerprint,
prompts, convention, scorer, seed, ...) or the machine (OS, CPU, device, dtype, threads) that
produced them (see :mod:`dpoclaims.report.manifest`). Then every number under each claim's
``measured``, ``ci`` and ``details`` is compared (recursively); exits 1 if any differs by more
than ``--tol`` or a claim is missing on one side.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

from dpoclaims.report.manifest import manifest_differences


def numbers(value: Any, prefix: str = "") -> dict[str, Any]:
    """Flatten nested dicts/lists to ``path -> leaf``."""
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            out |= numbers(item, f"{prefix}.{key}" if prefix else str(key))
        return out
    if isinstance(value, (list, tuple)):
        out = {}
        for index, item in enumerate(value):
            out |= numbers(item, f"{prefix}[{index}]")
        return out
    return {prefix: value}


def why_they_differ(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """Lines saying in which of versions, settings and machine the reports' manifests differ."""
    differences = manifest_differences(before.get("manifest"), after.get("manifest"))
    if not differences:
        return ["same versions, settings and machine (the manifests agree)"]
    lines = []
    for group, items in differences.items():
        lines.append(f"they differ in {group}:" if group != "manifest" else "cannot say why they differ:")
        lines += [f"  {item}" for item in items]
    return lines


def measured(report: dict[str, Any], renames: dict[str, str]) -> dict[str, dict[str, Any]]:
    out = {}
    for record in report["claims"]:
        claim = record.get("claim") or {}
        fields = {k: claim.get(k) for k in ("measured", "ci", "details")}
        out[renames.get(record["id"], record["id"])] = numbers(fields)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    parser.add_argument("--tol", type=float, default=1e-9)
    parser.add_argument("--rename", action="append", default=[], help="OLD=NEW claim id of the first file")
    args = parser.parse_args(argv)
    renames = dict(item.split("=", 1) for item in args.rename)
    reports = [json.loads(path.read_text()) for path in (args.before, args.after)]
    for line in why_they_differ(*reports):
        print(line)
    before, after = measured(reports[0], renames), measured(reports[1], {})
    problems, compared = [], 0
    for claim_id in sorted(set(before) | set(after)):
        if claim_id not in before or claim_id not in after:
            problems.append(f"{claim_id}: only in {'before' if claim_id in before else 'after'}")
            continue
        a, b = before[claim_id], after[claim_id]
        for key in sorted(set(a) | set(b)):
            x, y = a.get(key), b.get(key)
            if isinstance(x, (int, float)) and isinstance(y, (int, float)) and not isinstance(x, bool):
                compared += 1
                one_nan = math.isnan(x) != math.isnan(y)  # NaN against a number: never "equal"
                both_nan = math.isnan(x) and math.isnan(y)
                if one_nan or (not both_nan and abs(x - y) > args.tol):
                    problems.append(f"{claim_id} {key}: {x!r} != {y!r}")
            elif x != y:
                problems.append(f"{claim_id} {key}: {x!r} != {y!r}")
    print(f"{len(set(before) & set(after))} claims, {compared} numbers compared at tolerance {args.tol}")
    for problem in problems:
        print("  DIFFERS", problem)
    print("identical" if not problems else f"{len(problems)} differences")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
