"""The claims tests' registry: ``@claim_test(key)`` gives a test its parametrization, markers
and docstring from the paper table (:mod:`dpoclaims.claims.paper`), so each is written once."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import pytest

from dpoclaims.claims import paper

Test = TypeVar("Test", bound=Callable[..., Any])


def docstring(entry: paper.ClaimEntry) -> str:
    figure = entry.paper if not isinstance(entry.paper, dict) else dict(entry.paper)
    lines = [
        entry.sentence,
        "",
        f"Measures: {entry.statement}.",
        f"Criterion: {entry.criterion}.",
        f"H0: {entry.null}. H1: {entry.alternative}.",
        f"Paper: {figure} ({entry.source}).",
    ]
    return "\n".join(lines)


def claim_test(key: str) -> Callable[[Test], Test]:
    """Mark, parametrize and document a claim test from its paper-table entry ``key``."""
    entry = paper.entry(key)

    def decorate(test: Test) -> Test:
        test.__doc__ = docstring(entry)
        variant = key[len(entry.claim) + 1 : -1] if "[" in key else None
        marked = pytest.mark.claim(entry.claim, param=variant, hypothesis=entry.hypothesis)(test)
        marked = getattr(pytest.mark, entry.keyword)(marked)
        if entry.param_name:
            ids = [entry.param_id.format(p) for p in entry.params]
            marked = pytest.mark.parametrize(entry.param_name, entry.params, ids=ids)(marked)
        return marked

    return decorate
