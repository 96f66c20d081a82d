"""The claims table with one column per pair, from the pairs' claims.json files:

    python scripts/claims_table.py toy=reports/claims.json smollm2=reports/smollm2/claims.json

prints a markdown table (claim | paper (GPT-2) | toy | smollm2): each pair's figure, its 95%
interval and verdict (the tables of docs/history.md are this output).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from dpoclaims.claims.results import ClaimRecord
from dpoclaims.report.render import pairs_table_markdown


def main(arguments: list[str]) -> int:
    if not arguments or any("=" not in a for a in arguments):
        print(__doc__, file=sys.stderr)
        return 2
    reports = {}
    for argument in arguments:
        name, path = argument.split("=", 1)
        data = json.loads(Path(path).read_text())
        reports[name] = [ClaimRecord.from_json(row) for row in data["claims"]]
    print(pairs_table_markdown(reports), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
