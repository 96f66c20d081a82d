"""Progress of the long steps (generation passes, the builds' stages, DPO training).

On a terminal, a step shows a progress bar (tqdm), gone when it ends. Anywhere else (a CI log,
``nohup``, a file, pytest's capture) a bar would write a frame per update, thousands of ``\\r``
lines in a log; there each step writes one line when it ends instead, with its count and time:

    generate (base): 40 of 40 steps in 12.3 s

:func:`track_progress` is the one way the library reports progress; :func:`timed_stage` (or
:func:`stage_done`) times a step that has no count of its own (a build stage). Both write to ``sys.stderr`` (as tqdm does) as it is
when they are called, and nothing when ``enabled`` is false.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any, Generic, TextIO, TypeVar

T = TypeVar("T")


def on_terminal(stream: TextIO) -> bool:
    """Whether ``stream`` is a terminal (a captured or redirected stream is not)."""
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or closed
        return False


class StepLine(Generic[T]):
    """A step's progress off a terminal: counted silently, one line when it ends (its iteration
    is exhausted, or :meth:`close`); the same calls as a tqdm bar (``update``, ``set_postfix``)."""

    def __init__(self, iterable: Iterable[T] | None, total: int | None, desc: str, stream: TextIO) -> None:
        self.iterable, self.desc, self.stream = iterable, desc, stream
        self.total = total if total is not None else _length(iterable)
        self.n = 0
        self.postfix = ""
        self.began = time.perf_counter()
        self.closed = False

    def __iter__(self) -> Iterator[T]:
        if self.iterable is None:
            raise TypeError(f"progress {self.desc!r} was given no iterable to iterate over")
        for item in self.iterable:
            yield item
            self.n += 1
        self.close()

    def __enter__(self) -> StepLine[T]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def update(self, n: int = 1) -> None:
        self.n += n

    def set_postfix(self, **values: Any) -> None:
        self.postfix = ", ".join(f"{key} {value}" for key, value in values.items())

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        count = f"{self.n} of {self.total}" if self.total is not None else str(self.n)
        line = f"{self.desc}: {count} steps in {time.perf_counter() - self.began:.1f} s"
        print(line + (f" ({self.postfix})" if self.postfix else ""), file=self.stream, flush=True)


class _Silent(Generic[T]):
    """A step whose progress is not shown (``enabled=False``)."""

    def __init__(self, iterable: Iterable[T] | None) -> None:
        self.iterable = iterable

    def __iter__(self) -> Iterator[T]:
        if self.iterable is None:
            raise TypeError("progress was given no iterable to iterate over")
        return iter(self.iterable)

    def __enter__(self) -> _Silent[T]:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def update(self, n: int = 1) -> None:
        pass

    def set_postfix(self, **values: Any) -> None:
        pass

    def close(self) -> None:
        pass


def _length(iterable: Iterable[Any] | None) -> int | None:
    try:
        return len(iterable)  # type: ignore[arg-type]  # a sized iterable; others have no total
    except TypeError:
        return None


def track_progress(
    iterable: Iterable[T] | None = None,
    *,
    desc: str,
    total: int | None = None,
    enabled: bool = True,
    stream: TextIO | None = None,
) -> Any:
    """A progress reporter for one step over ``iterable`` (or of ``total`` steps, advanced with
    ``update``): a tqdm bar on a terminal, a :class:`StepLine` elsewhere, silent when not
    ``enabled``. Iterate over it, or use it as a context manager (``with progress(...) as bar``)."""
    if not enabled:
        return _Silent(iterable)
    stream = stream if stream is not None else sys.stderr
    if on_terminal(stream):
        from tqdm.auto import tqdm

        return tqdm(iterable, total=total, desc=desc, leave=False, file=stream)
    return StepLine(iterable, total, desc, stream)


def stage_done(desc: str, seconds: float, *, enabled: bool = True, stream: TextIO | None = None) -> None:
    """A build stage has ended after ``seconds``: off a terminal, one line (``toy build, pretrain:
    118.2 s``), after those its steps wrote; on a terminal nothing (its bars showed it, as they
    always have)."""
    stream = stream if stream is not None else sys.stderr
    if enabled and not on_terminal(stream):
        print(f"{desc}: {seconds:.1f} s", file=stream, flush=True)


@contextmanager
def timed_stage(desc: str, *, enabled: bool = True, stream: TextIO | None = None) -> Iterator[None]:
    """Time the stage run inside the ``with`` block (:func:`stage_done` when it ends; a stage that
    raises writes no line)."""
    began = time.perf_counter()
    yield
    stage_done(desc, time.perf_counter() - began, enabled=enabled, stream=stream)
