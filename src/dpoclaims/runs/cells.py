"""A sweep's cells: the grid of pairs x toy seeds x position conventions x scorers, what a node
needs to run one cell (its claims run on its pair), and the progress board every engine prints.
The engines (:mod:`dpoclaims.runs.local_engine`, :mod:`dpoclaims.runs.ray_engine`) run the cells;
the driver (:mod:`dpoclaims.runs.sweep`) writes their matrix.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from dpoclaims.cache import Cache
from dpoclaims.claims.results import ClaimRecord
from dpoclaims.errors import DpoclaimsError, OptionError
from dpoclaims.train.organism import DEFAULT_SEED

#: A failed cell's report keeps this much of the end of its pytest log.
LOG_TAIL_CHARS = 3000


class SweepError(DpoclaimsError):
    """A sweep that cannot run (no Ray, a cache the cluster's nodes do not share)."""


# ------------------------------------------------------------------------- the grid


@dataclass(frozen=True)
class Cell:
    """One claims run: a pair (``toy-seedN`` for the toy at seed N), a position convention and a
    scorer (None: the suite's default)."""

    pair: str
    convention: str = "v1"
    scorer: str | None = None

    @property
    def seed(self) -> int | None:
        """The toy's seed for a ``toy-seedN`` pair, else None."""
        from dpoclaims.train.named_pairs import toy_seed  # where the name is parsed; it loads torch

        return toy_seed(self.pair)

    @property
    def id(self) -> str:
        """A name fit for a directory: ``toy-seed1.v1.default``."""
        pair = Path(self.pair).stem if ("/" in self.pair or os.sep in self.pair) else self.pair
        pair = re.sub(r"[^A-Za-z0-9_.-]+", "_", pair)
        return f"{pair}.{self.convention}.{self.scorer or 'default'}"

    def describe(self) -> dict[str, Any]:
        return {**asdict(self), "seed": self.seed, "id": self.id}


def grid(
    pairs: Sequence[str] = ("toy",),
    seeds: Sequence[int] = (DEFAULT_SEED,),
    conventions: Sequence[str] = ("v1",),
    scorers: Sequence[str | None] = (None,),
) -> list[Cell]:
    """The cells of pairs x seeds x conventions x scorers, in that nesting order. The pair
    ``toy`` stands for the toy at each of ``seeds`` (``toy-seedN``); other pairs ignore seeds.
    Bad values are an :class:`OptionError` before anything runs."""
    from dpoclaims.measure.capture import CONVENTIONS
    from dpoclaims.measure.scoring import SCORERS

    for option, values in (("--pairs", pairs), ("--conventions", conventions), ("--scorers", scorers)):
        if not values:
            raise OptionError(f"name at least one value for {option}")
        if len(set(values)) != len(values):
            raise OptionError(f"each value of {option} once, please: got {list(values)}")
    if not seeds:
        raise OptionError("name at least one seed: --seeds 0 1 2")
    if len(set(seeds)) != len(seeds):
        raise OptionError(f"each seed once, please: got {list(seeds)}")
    if any(seed < 0 for seed in seeds):
        raise OptionError(f"seeds are whole numbers >= 0, not {list(seeds)}")
    if list(seeds) != [DEFAULT_SEED] and "toy" not in pairs:
        raise OptionError(
            "--seeds picks the toy organism built at each seed (toy-seedN): add toy to --pairs, "
            "or name toy-seedN pairs directly"
        )
    for convention in conventions:
        if convention not in CONVENTIONS:
            raise OptionError(f"unknown position convention {convention!r}; choose from {CONVENTIONS}")
    for scorer in scorers:
        if scorer is not None and scorer not in SCORERS:
            raise OptionError(f"unknown scorer {scorer!r}; choose from {sorted(SCORERS)}")
    names: list[str] = []
    for pair in pairs:
        names += [f"toy-seed{seed}" for seed in seeds] if pair == "toy" else [pair]
    cells = [Cell(name, c, s) for name in names for c in conventions for s in scorers]
    ids = [cell.id for cell in cells]
    if len(set(ids)) != len(ids):
        raise OptionError(f"two pairs share a name, so their cells would share a directory: {ids}")
    return cells


# ------------------------------------------------------------------------- one cell (runs on any node)


@dataclass(frozen=True)
class CellJob:
    """Everything a node needs to run a cell; plain data, so Ray ships it as is."""

    cell: Cell
    cache_root: str
    claims_dir: str
    max_prompts: int | None = None
    pytest_args: tuple[str, ...] = ()
    threads: int | None = None  # CPU threads of the claims run (None: torch's default)


@dataclass
class CellResult:
    """A cell's outcome: its reports (relative path -> bytes), or the error that stopped it."""

    cell: str
    files: dict[str, bytes] = field(default_factory=dict)
    error: str | None = None
    toy_built: bool | None = None  # None: not a toy cell, or stopped before the toy
    dpo_model: str = ""  # a toy cell's DPO model: its recipe and checkpoint (build report)
    build_s: float = 0.0
    claims_s: float = 0.0
    pytest_exit: int | None = None
    node: str = ""
    attempts: int | None = None  # Ray: how many times the task was started

    @property
    def ok(self) -> bool:
        return self.error is None

    def run_record(self) -> dict[str, Any]:
        record = asdict(self)
        del record["files"]
        return record


def cell_threads(cpus_per_cell: float) -> int:
    """The CPU threads of a cell's claims run that asks for ``cpus_per_cell`` CPUs."""
    return max(1, int(cpus_per_cell))


def _cell_env(expectations: Path, threads: int | None) -> dict[str, str]:
    env = {
        **os.environ,
        "DPOCLAIMS_EXPECTATIONS": str(expectations),
    }
    if threads is not None:  # the task's CPU share; torch would otherwise take every core
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
    return env


def claims_command(job: CellJob, reports_dir: Path) -> list[str]:
    """The cell's claims run: ``pytest claims/`` on its pair (a toy by its ``toy-seedN`` name,
    not its directory: a directory loads without the toy's lexicon, and the claims would be
    scored otherwise), in a subprocess that ends when this process ends."""
    cell = job.cell
    command = [
        sys.executable,
        "-m",
        "dpoclaims.runs.cell",
        str(os.getpid()),
        job.claims_dir,
        "-p",
        "no:cacheprovider",
        "-q",
        "--pair",
        cell.pair,
        "--convention",
        cell.convention,
        "--reports-dir",
        str(reports_dir),
        "--cache-dir",
        job.cache_root,
    ]
    if cell.scorer is not None:
        command += ["--scorer", cell.scorer]
    if job.max_prompts is not None:
        command += ["--max-prompts", str(job.max_prompts)]
    return command + list(job.pytest_args)


def _read_tree(directory: Path) -> dict[str, bytes]:
    return {
        str(path.relative_to(directory)): path.read_bytes()
        for path in sorted(directory.rglob("*"))
        if path.is_file()
    }


def run_cell(job: CellJob) -> CellResult:
    """Build (or reuse) the cell's pair, run the claims on it and return its reports.

    Runs on any node with the checkout and the cache at the same paths as the driver. A failure
    (the toy build, a claims run that writes no ``claims.json``) is returned as the result's
    ``error``, with the tail of the pytest log; failing claims are verdicts, not errors.
    KeyboardInterrupt (a cancelled task) stops the claims run and propagates.
    """
    cell = job.cell
    result = CellResult(cell.id, node=socket.gethostname())
    work = Path(tempfile.mkdtemp(prefix=f"dpoclaims-{cell.id}-"))
    try:
        cache = Cache(job.cache_root)
        if cell.seed is not None:
            from dpoclaims.train.named_pairs import checked_toy
            from dpoclaims.train.organism.build import ToyConfig, read_toy_report, toy_dpo_model, toy_key

            config = replace(ToyConfig(), seed=cell.seed)
            result.toy_built = cache.get("toy", toy_key(config)) is None
            began = time.perf_counter()
            # Under the cache's lock: of two cells that need this toy, one builds it and the
            # other waits for it and reads it (see Cache.get_or_build). A toy outside its bands
            # is refused here, as the suite would refuse it at session start: the cell fails with
            # the band and its value, and the matrix marks it missing.
            directory = checked_toy(cache, config, progress=False)
            result.build_s = time.perf_counter() - began
            result.dpo_model = toy_dpo_model(read_toy_report(directory))
        claims_dir = Path(job.claims_dir)
        reports = work / "reports"
        reports.mkdir()
        expectations = work / "no-expectations.toml"
        expectations.write_text("# empty: every claim's outcome is its raw verdict\n[pairs]\n")
        log = reports / "pytest.log"
        began = time.perf_counter()
        with open(log, "w") as handle:
            result.pytest_exit = subprocess.run(
                claims_command(job, reports),
                cwd=claims_dir.parent,  # the checkout: its conftest registers the suite's plugins
                env=_cell_env(expectations, job.threads),
                stdout=handle,
                stderr=subprocess.STDOUT,
                check=False,
            ).returncode
        result.claims_s = time.perf_counter() - began
        result.files = _read_tree(reports)
        if "claims.json" not in result.files:
            problem = "wrote no claims.json"
        elif _nothing_measured(result.files["claims.json"]):
            # e.g. a pair refused at session start: every claim errored before measuring
            problem = "measured no claim: every test errored"
        else:
            problem = None
        if problem is not None:
            tail = log.read_text(errors="replace")[-LOG_TAIL_CHARS:]
            result.error = (
                f"the claims run (pytest exit {result.pytest_exit}) {problem}; its log ends:\n{tail}"
            )
    except Exception as exc:  # reported as the cell's error: the other cells go on
        result.error = f"{type(exc).__name__}: {exc}"
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return result


def _nothing_measured(claims_json: bytes) -> bool:
    records = [ClaimRecord.from_json(data) for data in json.loads(claims_json)["claims"]]
    return bool(records) and all(record.outcome == "error" for record in records)


# ------------------------------------------------------------------------- progress, as every engine prints it


Progress = Callable[[str], None]


def _summary(result: CellResult) -> str:
    if not result.ok:
        first = (result.error or "").splitlines()[0]
        return f"FAILED: {first}"
    counts: dict[str, int] = {}
    for data in json.loads(result.files["claims.json"])["claims"]:
        verdict = ClaimRecord.from_json(data).verdict
        counts[verdict] = counts.get(verdict, 0) + 1
    return ", ".join(f"{n} {v}" for v, n in sorted(counts.items()))


class ProgressBoard:
    """Done / running / failed counts and the time per cell, printed as the sweep goes."""

    def __init__(self, cells: Sequence[Cell], progress: Progress) -> None:
        self.total, self.progress = len(cells), progress
        self.running: dict[str, float] = {}
        self.done = self.failed = 0
        self.began = time.perf_counter()

    def _counts(self) -> str:
        queued = self.total - self.done - self.failed - len(self.running)
        return (
            f"[{self.done} done, {len(self.running)} running, {queued} queued, {self.failed} failed; "
            f"{time.perf_counter() - self.began:.0f} s]"
        )

    def started(self, cell_id: str, detail: str = "") -> None:
        self.running.setdefault(cell_id, time.perf_counter())
        self.progress(f"{self._counts()} {cell_id}: started{detail}")

    def finished(self, result: CellResult) -> None:
        began = self.running.pop(result.cell, None)
        if result.ok:
            self.done += 1
        else:
            self.failed += 1
        took = f"{time.perf_counter() - began:.0f} s" if began is not None else "?"
        parts = f"build {result.build_s:.0f} s, claims {result.claims_s:.0f} s"
        where = f" on {result.node}" if result.node else ""
        attempts = f", attempt {result.attempts}" if result.attempts and result.attempts > 1 else ""
        self.progress(
            f"{self._counts()} {result.cell}: {_summary(result)} ({took}: {parts}{where}{attempts})"
        )
