"""The activation position conventions (``--convention``): which positions a capture averages
over. ``v1``: the last position at each generation step; ``emnlp``: the last 20 positions of
prompt + continuation (see :mod:`dpoclaims.measure.capture`).

A leaf that imports nothing: the pytest plugin's options name the conventions when pytest
starts, where importing the capture (torch) would cost every pytest run."""

from __future__ import annotations

from typing import Literal

Convention = Literal["v1", "emnlp"]
CONVENTIONS: tuple[str, ...] = ("v1", "emnlp")
