"""A sweep: the claims suite over a grid of pairs x toy seeds x position conventions x scorers.

``dpoclaims sweep --seeds 0 1 --conventions v1 emnlp`` runs the whole claims suite once per cell
of the grid, each with no declared expectations (every outcome is the raw verdict), and gathers
the cells' ``claims.json`` into the replication matrix (:mod:`dpoclaims.runs.replication`). A seed
names the toy organism built at that seed (the pair ``toy-seedN``; ``toy-seed2``, at
:data:`~dpoclaims.train.organism.DEFAULT_SEED`, is the default toy, so its measurements are the
same cache entries); any other pair is named as for the suite.

Engines (one module each; what they share, the grid and running one cell, is
:mod:`dpoclaims.runs.cells`):

- ``local`` (:mod:`~dpoclaims.runs.local_engine`): the cells one after another on this machine.
- ``ray`` (:mod:`~dpoclaims.runs.ray_engine`): each cell a Ray task (``--address`` joins a running cluster, otherwise a local Ray
  instance is started). A task asks for one GPU where the cluster has GPUs and ``--cpus-per-cell``
  CPUs; a task lost with its worker or node is retried (``--max-retries``).

A cell runs on whatever node Ray picks: it builds (or reuses) its pair in the shared cache, runs
``pytest claims/`` into a temporary directory on that node and returns its whole reports
directory to the driver, which writes it under ``<reports>/replication/<cell>/``. Only the cache
must be shared between nodes (see :func:`~dpoclaims.runs.ray_engine.check_shared_cache`); the reports travel through Ray.

Faults: a cell whose run fails is reported with its message and the other cells go on; the matrix
marks it missing. Ctrl-C on the driver cancels the cells (their claims runs end with them) and
still writes the matrix of the cells that finished. The cache stays consistent throughout:
entries are built under a file lock in temporary directories and renamed into place, so a killed
build leaves no entry, only a temporary directory the next build of that entry removes.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from dpoclaims.cache import Cache
from dpoclaims.errors import OptionError, ReportError
from dpoclaims.files import (
    atomic_write_bytes,
    atomic_write_text,
    ensure_writable_dir,
    outputs_not_owned,
    owned_manifest,
    owned_outputs,
    refuse_overwriting,
)
from dpoclaims.runs.cells import Cell, CellJob, CellResult, Progress, cell_threads, grid
from dpoclaims.runs.local_engine import run_local
from dpoclaims.runs.ray_engine import check_ray_address, import_ray, run_ray
from dpoclaims.runs.replication import (
    REPLICATION_FILES,
    REPLICATION_MANIFEST,
    REPORTS_REMEDY,
    write_replication,
)

ENGINES = ("local", "ray")


# ------------------------------------------------------------------------- the driver


def _write_cell_reports(out: Path, result: CellResult) -> Path:
    """Replace ``out`` with the cell's reports (and ``error.txt`` for a failed cell)."""
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        for relative, data in result.files.items():
            atomic_write_bytes(staging / relative, data)
        if result.error:
            atomic_write_bytes(staging / "error.txt", result.error.encode())
        if out.exists():
            shutil.rmtree(out)
        os.replace(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out


def sweep(
    cells: Sequence[Cell],
    *,
    cache: Cache,
    reports_dir: Path,
    engine: str = "local",
    claims_dir: Path | None = None,
    max_prompts: int | None = None,
    pytest_args: Sequence[str] = (),
    address: str | None = None,
    cpus_per_cell: float = 1,
    gpus_per_cell: float | None = None,
    max_retries: int = 3,
    progress: Progress = print,
    ray_init: Mapping[str, Any] | None = None,
) -> list[Path]:
    """Run the claims on every cell with ``engine`` and write the replication matrix; return the
    paths of ``replication.json``, ``replication.md`` and the figure.

    Each cell's reports go to ``<reports_dir>/replication/<cell id>/`` (a failed cell's to the same
    place, with ``error.txt``). Ctrl-C writes the matrix of the finished cells (the others
    missing) before it propagates.
    """
    from dpoclaims.measure.prompts import MIN_USABLE_PROMPTS

    if engine not in ENGINES:
        raise OptionError(f"unknown engine {engine!r}; choose from {ENGINES}")
    if not cells:
        raise OptionError("the grid has no cells")
    if max_prompts is not None and max_prompts < MIN_USABLE_PROMPTS:
        raise OptionError(
            f"--max-prompts must be at least {MIN_USABLE_PROMPTS} (bootstrap intervals over fewer prompts "
            f"are meaningless), not {max_prompts}"
        )
    if not (math.isfinite(cpus_per_cell) and cpus_per_cell > 0):
        raise OptionError(
            f"--cpus-per-cell must be positive and finite (the CPU threads of each cell), not {cpus_per_cell}"
        )
    if gpus_per_cell is not None and not (math.isfinite(gpus_per_cell) and gpus_per_cell >= 0):
        raise OptionError(f"--gpus-per-cell must be at least 0 and finite, not {gpus_per_cell}")
    if max_retries < 0:
        raise OptionError(f"--max-retries must be at least 0, not {max_retries}")
    claims_dir = Path(claims_dir) if claims_dir else Path.cwd() / "claims"
    if not any(claims_dir.glob("test_*.py")):
        raise OptionError(
            f"no claims suite at {claims_dir}: run from a dpoclaims checkout's root or pass --claims-dir"
        )
    if engine == "ray":
        import_ray()  # a clear error before anything is written
        check_ray_address(address)
    for cell in cells:  # a typo in a pair fails now, not on a node after the others have run
        if cell.seed is None:
            from dpoclaims.train.named_pairs import pair_name

            pair_name(cell.pair)
    out = reports_dir / "replication"
    # Nothing of the user's is written over: the matrix and each cell's directory go only where
    # nothing stands or where an earlier sweep wrote them.
    refuse_overwriting(
        reports_dir,
        REPLICATION_MANIFEST,
        [*REPLICATION_FILES, *(f"{out.name}/{cell.id}" for cell in cells)],
        what="the matrix",
        remedy="pass --reports-dir with another directory",
        error=OptionError,
    )
    ensure_writable_dir(out, "reports directory", REPORTS_REMEDY, ReportError)
    cache.check_writable()
    # Both engines run each cell's claims on the same number of CPU threads: float sums depend on
    # it, so a sweep's figures do not depend on the engine that ran it.
    threads = cell_threads(cpus_per_cell)
    jobs = [
        CellJob(
            cell,
            str(cache.root.resolve()),
            str(claims_dir.resolve()),
            max_prompts,
            tuple(pytest_args),
            threads,
        )
        for cell in cells
    ]
    progress(f"sweep: {len(cells)} cell(s) with engine {engine}: {', '.join(c.id for c in cells)}")
    # What shaped the sweep's figures, for the manifest of replication.json (each cell's claims.json
    # has its own manifest, with the device and threads its claims ran on).
    settings = {
        "engine": engine,
        "cells": [cell.id for cell in cells],
        "max_prompts": max_prompts,
        "pytest_args": list(pytest_args),
        "threads_per_cell": threads,
    }
    started = time.time()
    start = time.perf_counter()
    finished: dict[str, CellResult] = {}
    try:
        if engine == "local":
            run_local(jobs, progress, finished)
        else:
            run_ray(
                jobs,
                address=address,
                cpus_per_cell=cpus_per_cell,
                gpus_per_cell=gpus_per_cell,
                max_retries=max_retries,
                progress=progress,
                init_kwargs=ray_init,
                sink=finished,
            )
    except KeyboardInterrupt:
        # The matrix of what finished, every other cell missing; then the interrupt goes on.
        _gather(
            cells,
            finished,
            out,
            reports_dir,
            engine,
            start,
            "cancelled (Ctrl-C on the driver)",
            progress,
            manifest_of=(settings, started),
        )
        raise
    return _gather(
        cells, finished, out, reports_dir, engine, start, "not run", progress, manifest_of=(settings, started)
    )


def _gather(
    cells: Sequence[Cell],
    finished: Mapping[str, CellResult],
    out: Path,
    reports_dir: Path,
    engine: str,
    start: float,
    unfinished: str,
    progress: Progress,
    manifest_of: tuple[Mapping[str, Any], float] | None = None,
) -> list[Path]:
    """Write each finished cell's reports and the matrix (a failed or unfinished cell missing);
    ``manifest_of``: the sweep's settings and start time (seconds since the epoch) for its manifest."""
    from dpoclaims.report.manifest import run_manifest

    claims_files, missing = {}, {}
    for cell in cells:
        result = finished.get(cell.id)
        if result is None:
            missing[cell.id] = unfinished
            continue
        cell_dir = _write_cell_reports(out / cell.id, result)
        if result.ok:
            claims_files[cell.id] = cell_dir / "claims.json"
        else:
            first = (result.error or "").splitlines()[0]
            missing[cell.id] = f"failed: {first} (see {cell_dir / 'error.txt'})"
    paths = write_replication(
        claims_files,
        reports_dir,
        columns=[cell.id for cell in cells],
        cells=[cell.describe() for cell in cells],
        missing=missing,
        runs=[finished[cell.id].run_record() for cell in cells if cell.id in finished],
        wall_s=time.perf_counter() - start,
        engine=engine,
        manifest=None
        if manifest_of is None
        else run_manifest(
            manifest_of[0],
            device=None,  # each cell's claims.json says its own
            dtype=None,
            threads=None,
            started=manifest_of[1],
            wall_s=time.perf_counter() - start,
            durations={"cells_s": {r.cell: r.build_s + r.claims_s for r in finished.values()}},
        ),
    )
    _record_written(reports_dir, [out / cell.id for cell in cells if cell.id in finished], paths)
    progress(f"replication: {paths[1]} (+ {paths[0].name}, {paths[3].name}, {paths[2]})")
    return paths


def _record_written(reports_dir: Path, cell_dirs: Sequence[Path], paths: Sequence[Path]) -> None:
    """The sweep's manifest: what it wrote now, and what earlier sweeps wrote that is unchanged."""
    written = [str(p.relative_to(reports_dir)) for p in paths]
    for cell_dir in cell_dirs:
        written += [str(p.relative_to(reports_dir)) for p in cell_dir.rglob("*") if p.is_file()]
    earlier = [name for name in owned_outputs(reports_dir, REPLICATION_MANIFEST) if name not in written]
    changed = outputs_not_owned(reports_dir, REPLICATION_MANIFEST, earlier)
    kept = [name for name in earlier if name not in changed and (reports_dir / name).is_file()]
    atomic_write_text(reports_dir / REPLICATION_MANIFEST, owned_manifest(reports_dir, written + kept))


def replicate(
    seeds: Sequence[int],
    *,
    cache: Cache,
    reports_dir: Path,
    claims_dir: Path | None = None,
    pytest_args: Sequence[str] = (),
    progress: Progress = print,
    **options: Any,
) -> list[Path]:
    """``dpoclaims replicate``: the sweep over toy seeds alone (v1 convention, default scorer)."""
    return sweep(
        grid(("toy",), seeds),
        cache=cache,
        reports_dir=reports_dir,
        claims_dir=claims_dir,
        pytest_args=pytest_args,
        progress=progress,
        **options,
    )
