"""Print a ``[pairs.NAME]`` table for ``claims/expectations.toml`` from a run's ``claims.json``.

    python scripts/declare_expectations.py reports/smollm2/claims.json [--pair smollm2]

Every claim that did not replicate is declared with what was measured: "contradicts" as a plain
string, "inconclusive" and "not measurable" as ``{ verdict, reason }``. The reason is the claim's
figure with its interval at the run's level and the paper's figure, then the claim's own finding
where it has one. A claim not tested (skipped) is not declared. Review the reasons before
pasting: they are the measurement's words, not a reading of it.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any


def number(value: Any) -> str:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return str(value)
    if math.isnan(value):
        return "nan"
    return f"{value:.4g}"


def reason(claim: dict[str, Any]) -> str:
    measured, ci, paper = claim.get("measured"), claim.get("ci"), claim.get("paper")
    text = f"measured {number(measured)}"
    if ci:
        text += f" [{number(ci[0])}, {number(ci[1])}]"
    if paper is not None:
        text += f" (paper {number(paper)})"
    finding = (claim.get("finding") or "").strip()
    return f"{text}: {finding}" if finding else text


def toml_string(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)  # a TOML basic string is a JSON string here


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("claims_json", type=Path)
    parser.add_argument("--pair", default=None, help="the table's name (default: the report's pair)")
    args = parser.parse_args()
    report = json.loads(args.claims_json.read_text())
    pair = args.pair or report["header"]["pair"]
    print(f"[pairs.{pair}]")
    for record in report["claims"]:
        if record.get("outcome") == "skipped":
            continue
        claim = record["claim"]
        verdict = claim["verdict"]
        if verdict == "replicates":
            continue
        key = toml_string(record["id"])
        if verdict == "contradicts":
            print(f"{key} = {toml_string(reason(claim))}")
        else:
            print(f"{key} = {{ verdict = {toml_string(verdict)}, reason = {toml_string(reason(claim))} }}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
