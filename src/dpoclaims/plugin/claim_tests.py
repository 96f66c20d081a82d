"""The claims tests, generated from the paper table: one test function per entry, in the claims
file of its family (``claims/test_<family>.py`` holds ``globals().update(family_tests(__name__))``),
parametrized, marked and documented from the entry, calling the claim function bound to the entry
(:func:`dpoclaims.claims.registry.run_claim`). A claim is written once: its entry and its function."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest

from dpoclaims.claims import paper


def docstring(entry: paper.ClaimEntry) -> str:
    figure = entry.paper if not isinstance(entry.paper, dict) else dict(entry.paper)
    params = entry.params or (None,)
    lines = [
        entry.sentence,
        "",
        f"Measures: {entry.statement}.",
        *(
            f"Criterion{f' ({entry.test_id(p)})' if p is not None else ''}: {entry.criterion_for(p)}."
            for p in params
        ),
        f"Paper: {figure} ({entry.source}).",
    ]
    return "\n".join(lines)


def test_name(entry: paper.ClaimEntry) -> str:
    """``test_C6_increasing``: the entry's key as a Python name."""
    return "test_" + re.sub(r"\W+", "_", entry.key).strip("_")


def claim_test(entry: paper.ClaimEntry) -> Callable[..., Any]:
    """The test of ``entry``: it runs the entry's claim on the suite's measurements and asserts
    what the pair's expectation asserts (``check_claim``)."""
    key = entry.key

    if entry.param_name:

        def test(measurements: Any, check_claim: Any, suite_options: Any, claim_param: Any) -> None:
            check_claim(_run(key, measurements, suite_options, claim_param))

        test = pytest.mark.parametrize(
            "claim_param", entry.params, ids=[entry.param_id.format(p) for p in entry.params]
        )(test)
    else:

        def test(measurements: Any, check_claim: Any, suite_options: Any) -> None:  # type: ignore[misc]
            check_claim(_run(key, measurements, suite_options, None))

    test.__name__ = test.__qualname__ = test_name(entry)
    test.__doc__ = docstring(entry)
    test = pytest.mark.claim(entry.claim, param=entry.variant or None, hypothesis=entry.hypothesis)(test)
    test = getattr(pytest.mark, entry.keyword)(test)
    if entry.quantifier is not None:
        test = pytest.mark.search(test)
    return test


def _run(key: str, measurements: Any, options: Any, param: Any) -> Any:
    from dpoclaims.claims.registry import ClaimNotApplicable, run_claim

    extra = {}
    if paper.entry(key).quantifier is not None:  # a search: --search-examples sets its draws (0: off)
        if options.search_examples == 0:
            pytest.skip("the searches are off (--search-examples 0)")
        extra["max_examples"] = options.search_examples
    try:
        return run_claim(key, measurements, param, **extra)
    except ClaimNotApplicable as exc:
        pytest.skip(str(exc))


def family_tests(module: str) -> dict[str, Callable[..., Any]]:
    """The tests of the claims file ``module`` (``claims.test_patching`` or ``test_patching``):
    every entry whose family is its name, by test name."""
    family = module.rsplit(".", 1)[-1].removeprefix("test_")
    tests = {test_name(e): claim_test(e) for e in paper.ENTRIES if e.family == family}
    if not tests:
        families = sorted({e.family for e in paper.ENTRIES})
        raise LookupError(f"no claim of the paper table has family {family!r} (families: {families})")
    return tests
