"""The sweep's local engine: the cells one after another on this machine."""

from __future__ import annotations

from collections.abc import Sequence

from dpoclaims.runs.cells import CellJob, CellResult, Progress, ProgressBoard, run_cell


def run_local(
    jobs: Sequence[CellJob], progress: Progress = print, sink: dict[str, CellResult] | None = None
) -> list[CellResult]:
    """The cells one after another on this machine; each result also goes into ``sink`` as it
    comes (what an interrupted sweep still reports)."""
    board = ProgressBoard([job.cell for job in jobs], progress)
    sink = {} if sink is None else sink
    for job in jobs:
        board.started(job.cell.id)
        result = run_cell(job)
        board.finished(result)
        sink[job.cell.id] = result
    return [sink[job.cell.id] for job in jobs]
