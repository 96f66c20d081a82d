"""The catalogue as a whole: every surface file's cases together."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

from bad_inputs.bench import Case

#: The cases the catalogue held when it became one file per surface: it may only grow.
CASES_BEFORE_THE_SPLIT = 129


def every_case() -> list[Case]:
    here = Path(__file__).parent
    modules = [
        importlib.import_module(f"bad_inputs.{path.stem}")
        for path in sorted(here.glob("test_*.py"))
        if path.stem != "test_catalogue"
    ]
    return [case for module in modules for case in module.CASES]


def test_the_catalogue():
    """Unique ids in the form <what it feeds in>--<what it must get back>, none inside another
    (so that ``pytest -k <id>`` runs that case alone), every category present, no case lost."""
    cases = every_case()
    ids = [c.id for c in cases]
    assert len(ids) == len(set(ids)) and len(ids) >= CASES_BEFORE_THE_SPLIT
    assert {c.category for c in cases} == {"error", "recovery", "skip"}
    assert all(re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*--[a-z0-9]+(-[a-z0-9]+)*", i) for i in ids), [
        i for i in ids if not re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*--[a-z0-9]+(-[a-z0-9]+)*", i)
    ]
    inside = [(a, b) for a in ids for b in ids if a != b and a in b]
    assert inside == [], inside
