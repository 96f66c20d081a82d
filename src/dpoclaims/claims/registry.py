"""The claim functions, registered by their paper-table key: ``@claim("C5")``.

A claim function takes a pair's :class:`~dpoclaims.measure.measurements.Measurements` (and its
parameter, if the entry has one) and returns a :class:`~dpoclaims.claims.results.ClaimResult`
whose verdict comes from the entry's rule in :mod:`dpoclaims.claims.paper`; it never builds a
rule of its own. The functions register when their modules are imported
(:data:`CLAIM_MODULES`); :func:`registered` lists them, one per entry of the table.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from dpoclaims.claims import paper

ClaimFunction = TypeVar("ClaimFunction", bound=Callable[..., Any])
_REGISTRY: dict[str, Callable[..., Any]] = {}
#: The modules whose import registers every claim function (imported by whoever runs claims).
CLAIM_MODULES = ("dpoclaims.claims.checks", "dpoclaims.claims.search", "dpoclaims.claims.edit_search")


def claim(key: str) -> Callable[[ClaimFunction], ClaimFunction]:
    """Register the function that measures paper-table entry ``key`` (``"C5"``, ``"C6[increasing]"``)."""
    if key not in paper.TABLE:
        raise KeyError(
            f"no entry {key!r} in the paper table (dpoclaims.claims.paper); known: {sorted(paper.TABLE)}"
        )

    def register(function: ClaimFunction) -> ClaimFunction:
        existing = _REGISTRY.get(key)
        if existing is not None and existing.__qualname__ != function.__qualname__:
            raise ValueError(
                f"claim {key!r} is registered twice: {existing.__qualname__} and {function.__qualname__}"
            )
        _REGISTRY[key] = function
        return function

    return register


def registered() -> dict[str, Callable[..., Any]]:
    """Every claim function registered so far, by key."""
    return dict(_REGISTRY)
