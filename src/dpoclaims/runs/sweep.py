"""A sweep: the claims suite over a grid of pairs x toy seeds x position conventions x scorers.

``dpoclaims sweep --seeds 0 1 --conventions v1 emnlp`` runs the whole claims suite once per cell
of the grid, each with no declared expectations (every outcome is the raw verdict), and gathers
the cells' ``claims.json`` into the replication matrix (:mod:`dpoclaims.runs.replication`). A seed
names the toy organism built at that seed (the pair ``toy-seedN``; ``toy-seed2``, at
:data:`~dpoclaims.train.organism.DEFAULT_SEED`, is the default toy, so its measurements are the
same cache entries); any other pair is named as for the suite.

Engines:

- ``local``: the cells one after another on this machine.
- ``ray``: each cell a Ray task (``--address`` joins a running cluster, otherwise a local Ray
  instance is started). A task asks for one GPU where the cluster has GPUs and ``--cpus-per-cell``
  CPUs; a task lost with its worker or node is retried (``--max-retries``).

A cell runs on whatever node Ray picks: it builds (or reuses) its pair in the shared cache, runs
``pytest claims/`` into a temporary directory on that node and returns its whole reports
directory to the driver, which writes it under ``<reports>/replication/<cell>/``. Only the cache
must be shared between nodes (see :func:`check_shared_cache`); the reports travel through Ray.

Faults: a cell whose run fails is reported with its message and the other cells go on; the matrix
marks it missing. Ctrl-C on the driver cancels the cells (their claims runs end with them) and
still writes the matrix of the cells that finished. The cache stays consistent throughout:
entries are built under a file lock in temporary directories and renamed into place, so a killed
build leaves no entry, only a temporary directory the next build of that entry removes.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from dpoclaims.cache import Cache
from dpoclaims.claims.results import ClaimRecord
from dpoclaims.errors import DpoclaimsError, OptionError, ReportError
from dpoclaims.files import (
    atomic_write_bytes,
    atomic_write_text,
    ensure_writable_dir,
    outputs_not_owned,
    owned_manifest,
    owned_outputs,
    refuse_overwriting,
)
from dpoclaims.runs.replication import (
    REPLICATION_FILES,
    REPLICATION_MANIFEST,
    REPORTS_REMEDY,
    write_replication,
)
from dpoclaims.train.organism import DEFAULT_SEED

ENGINES = ("local", "ray")
RAY_INSTALL = "pip install -e '.[cluster]' (or pip install 'ray>=2.9')"
#: A failed cell's report keeps this much of the end of its pytest log.
LOG_TAIL_CHARS = 3000
TOY_SEED_NAME = re.compile(r"toy-seed(\d+)")


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
        match = TOY_SEED_NAME.fullmatch(self.pair)
        return int(match[1]) if match else None

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
            from dpoclaims.train.named_pairs import built_toy
            from dpoclaims.train.organism.build import ToyConfig, toy_key

            config = replace(ToyConfig(), seed=cell.seed)
            result.toy_built = cache.get("toy", toy_key(config)) is None
            began = time.perf_counter()
            # Under the cache's lock: of two cells that need this toy, one builds it and the
            # other waits for it and reads it (see Cache.get_or_build). A toy outside its bands
            # is refused here, as the suite would refuse it at session start: the cell fails with
            # the band and its value, and the matrix marks it missing.
            built_toy(cache, config, progress=False)
            result.build_s = time.perf_counter() - began
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


# ------------------------------------------------------------------------- engines


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


class _Board:
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


def run_local(
    jobs: Sequence[CellJob], progress: Progress = print, sink: dict[str, CellResult] | None = None
) -> list[CellResult]:
    """The cells one after another on this machine; each result also goes into ``sink`` as it
    comes (what an interrupted sweep still reports)."""
    board = _Board([job.cell for job in jobs], progress)
    sink = {} if sink is None else sink
    for job in jobs:
        board.started(job.cell.id)
        result = run_cell(job)
        board.finished(result)
        sink[job.cell.id] = result
    return [sink[job.cell.id] for job in jobs]


def import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise SweepError(f"--engine ray needs Ray, which is not installed: {RAY_INSTALL}") from None
    return ray


#: How long the sweep waits for a TCP answer at ``--address`` before it says nothing answers
#: there (Ray's own client retries for minutes without a word).
RAY_ANSWER_TIMEOUT_S = 10.0
#: The port Ray listens on when an address names none: the GCS for host[:port], the Ray client
#: server for ray://host[:port].
RAY_DEFAULT_PORTS = {"": 6379, "ray": 10001}


def ray_endpoint(address: str) -> tuple[str, int]:
    """The host and port of a Ray ``--address`` (``host:port``, ``ray://host:port``, a port
    defaulted); an :class:`OptionError` for one that is neither."""
    scheme, _, rest = address.rpartition("://")
    if scheme not in RAY_DEFAULT_PORTS or not rest or "/" in rest:
        raise OptionError(f"--address must be host:port or ray://host:port (or auto), not {address!r}")
    host, colon, port = rest.rpartition(":") if not rest.endswith("]") else (rest, "", "")
    if not colon:
        host, port = rest, str(RAY_DEFAULT_PORTS[scheme])
    if not (port.isascii() and port.isdigit() and 0 < int(port) < 65536) or not host.strip("[]"):
        raise OptionError(f"--address must be host:port or ray://host:port (or auto), not {address!r}")
    return host.strip("[]"), int(port)


def check_ray_address(address: str | None, timeout_s: float = RAY_ANSWER_TIMEOUT_S) -> None:
    """A :class:`SweepError` naming ``address`` when nothing answers there within ``timeout_s``
    (``auto`` stands for ``$RAY_ADDRESS`` when set; None, or ``auto`` without it, starts or
    finds a local instance, which Ray settles at once)."""
    if address == "auto":
        address = os.environ.get("RAY_ADDRESS", "").strip() or None
    if address is None or address == "local":
        return
    host, port = ray_endpoint(address)
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return
    except OSError as exc:
        reason = "no answer" if isinstance(exc, TimeoutError) else (exc.strerror or str(exc))
    raise SweepError(
        f"no Ray cluster answers at {address} ({reason} within {timeout_s:g} s): start its head there (ray start "
        "--head), give the address of a running cluster's head node (--address host:6379), or leave --address "
        "out to start a local Ray instance"
    )


def check_shared_cache(ray: Any, cache_root: Path) -> list[str]:
    """Check that every node of the cluster sees the cache at ``cache_root`` as the driver does,
    with working file locks; return the nodes' host names. A :class:`SweepError` otherwise.

    The driver writes a token file and holds a lock in the cache; a zero-CPU task pinned to each
    alive node must read the token and must fail to take the lock. A node-local directory at the
    same path (no token), or a filesystem whose locks do not reach across nodes (the lock taken),
    would let two cells build the same entry at once.
    """
    from filelock import FileLock
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    cache = Cache(cache_root)
    cache.check_writable()
    token = f"{socket.gethostname()}-{os.getpid()}-{time.time_ns()}"
    token_path = cache.root / f".sweep-check-{token}"
    lock_path = str(token_path) + ".lock"
    atomic_write_bytes(token_path, token.encode())

    def probe(path: str, lock: str, expected: str) -> tuple[str, str | None]:
        from filelock import FileLock as ProbeLock
        from filelock import Timeout

        host = socket.gethostname()
        try:
            seen = Path(path).read_text()
        except OSError as exc:
            return host, f"cannot read {path} ({exc}): the cache directory is not shared with this node"
        if seen != expected:
            return host, f"{path} holds another token: this node has another directory at that path"
        attempt = ProbeLock(lock, timeout=0)
        try:
            attempt.acquire()
        except Timeout:
            return host, None  # the driver's lock is seen: locks work across these processes
        attempt.release()
        return host, (
            f"took the lock {lock} that the driver holds: this filesystem's locks do not reach across "
            "processes or nodes (see README, 'The cache across nodes')"
        )

    remote_probe = ray.remote(num_cpus=0, max_retries=0)(probe)
    try:
        with FileLock(lock_path):
            nodes = [node["NodeID"] for node in ray.nodes() if node.get("Alive")]
            refs = [
                remote_probe.options(
                    scheduling_strategy=NodeAffinitySchedulingStrategy(node_id=node, soft=False)
                ).remote(str(token_path), lock_path, token)
                for node in nodes
            ]
            answers = ray.get(refs, timeout=120)
    finally:
        for leftover in (token_path, Path(lock_path)):
            leftover.unlink(missing_ok=True)
    problems = [f"{host}: {problem}" for host, problem in answers if problem]
    if problems:
        raise SweepError(
            f"the cache {cache.root} is not usable from every node of the cluster:\n  "
            + "\n  ".join(problems)
            + "\nput it on a filesystem every node mounts at the same path, with working locks "
            "(--cache-dir or $DPOCLAIMS_CACHE)"
        )
    return [host for host, _ in answers]


def run_ray(
    jobs: Sequence[CellJob],
    *,
    address: str | None = None,
    cpus_per_cell: float = 1,
    gpus_per_cell: float | None = None,
    max_retries: int = 3,
    progress: Progress = print,
    init_kwargs: Mapping[str, Any] | None = None,
    sink: dict[str, CellResult] | None = None,
) -> list[CellResult]:
    """Each cell a Ray task; results in the order of ``jobs``.

    Joins the cluster at ``address``, else uses the Ray instance this process already has, else
    starts a local one (shut down again at the end). ``gpus_per_cell`` None: one GPU per cell
    where the cluster has GPUs, none otherwise. A task lost with its worker or node is retried up
    to ``max_retries`` times; a cell whose retries run out is a failed cell. KeyboardInterrupt
    cancels every unfinished cell (force: their workers and claims runs end) and propagates.
    """
    ray = import_ray()
    started_here = not ray.is_initialized()
    if started_here:
        check_ray_address(address)  # a word within seconds, not Ray's minutes of retries
        kwargs = {"include_dashboard": False, "log_to_driver": False, **(init_kwargs or {})}
        try:
            ray.init(address=address, **kwargs)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise SweepError(f"cannot join the Ray cluster at {address}: {exc}") from None
    try:
        sink = {} if sink is None else sink
        return _run_on_ray(ray, jobs, cpus_per_cell, gpus_per_cell, max_retries, progress, sink)
    finally:
        if started_here:
            ray.shutdown()


def _run_on_ray(
    ray: Any,
    jobs: Sequence[CellJob],
    cpus_per_cell: float,
    gpus_per_cell: float | None,
    max_retries: int,
    progress: Progress,
    results: dict[str, CellResult],
) -> list[CellResult]:
    resources = ray.cluster_resources()
    if gpus_per_cell is None:
        gpus_per_cell = 1 if resources.get("GPU", 0) > 0 else 0
    if cpus_per_cell > resources.get("CPU", 0) or gpus_per_cell > resources.get("GPU", 0):
        raise SweepError(
            f"a cell asks for {cpus_per_cell} CPUs and {gpus_per_cell} GPUs, more than the whole cluster "
            f"has ({resources.get('CPU', 0):g} CPUs, {resources.get('GPU', 0):g} GPUs): lower "
            "--cpus-per-cell or --gpus-per-cell"
        )
    hosts = check_shared_cache(ray, Path(jobs[0].cache_root)) if jobs else []
    progress(
        f"ray: {len(hosts)} node(s) ({', '.join(sorted(set(hosts)))}), {resources.get('CPU', 0):g} CPUs, "
        f"{resources.get('GPU', 0):g} GPUs; each cell {cpus_per_cell:g} CPU(s), {gpus_per_cell:g} GPU(s), "
        f"up to {max_retries} retries; the cache {jobs[0].cache_root if jobs else '-'} is shared"
    )

    class Starts:
        """Which cells a worker has started, and how often (retries start a cell again)."""

        def __init__(self) -> None:
            self.starts: dict[str, list[str]] = {}

        def started(self, cell_id: str, host: str) -> None:
            self.starts.setdefault(cell_id, []).append(host)

        def snapshot(self) -> dict[str, list[str]]:
            return self.starts

    def cell_task(job: CellJob, starts: Any) -> CellResult:
        ray.get(starts.started.remote(job.cell.id, socket.gethostname()))
        return run_cell(replace(job, threads=job.threads or cell_threads(cpus_per_cell)))

    # ray.remote called, not applied as a class decorator: type checkers keep a decorated class's own
    # type, which has no .remote
    starts = ray.remote(num_cpus=0)(Starts).remote()
    remote_cell = ray.remote(cell_task).options(
        num_cpus=cpus_per_cell, num_gpus=gpus_per_cell, max_retries=max_retries, retry_exceptions=False
    )
    board = _Board([job.cell for job in jobs], progress)
    pending = {remote_cell.remote(job, starts): job for job in jobs}
    seen: dict[str, int] = {}
    try:
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=2.0)
            snapshot = ray.get(starts.snapshot.remote())
            for cell_id, hosts_started in snapshot.items():
                if len(hosts_started) > seen.get(cell_id, 0) and cell_id not in results:
                    again = ""
                    if len(hosts_started) > 1:  # a retry: its time counts from the new start
                        again = f" again (attempt {len(hosts_started)})"
                        board.running.pop(cell_id, None)
                    board.started(cell_id, f"{again} on {hosts_started[-1]}")
                    seen[cell_id] = len(hosts_started)
            for ref in ready:
                job = pending.pop(ref)
                try:
                    result = ray.get(ref)
                except ray.exceptions.RayError as exc:  # retries exhausted, worker or node lost
                    result = CellResult(job.cell.id, error=f"{type(exc).__name__}: {exc}")
                result.attempts = len(ray.get(starts.snapshot.remote()).get(job.cell.id, [])) or None
                results[job.cell.id] = result
                board.finished(result)
    except KeyboardInterrupt:
        progress(f"interrupted: cancelling {len(pending)} unfinished cell(s)")
        for ref in pending:
            ray.cancel(ref, force=True)
        raise
    return [results[job.cell.id] for job in jobs]


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
            cells, finished, out, reports_dir, engine, start, "cancelled (Ctrl-C on the driver)", progress
        )
        raise
    return _gather(cells, finished, out, reports_dir, engine, start, "not run", progress)


def _gather(
    cells: Sequence[Cell],
    finished: Mapping[str, CellResult],
    out: Path,
    reports_dir: Path,
    engine: str,
    start: float,
    unfinished: str,
    progress: Progress,
) -> list[Path]:
    """Write each finished cell's reports and the matrix (a failed or unfinished cell missing)."""
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
    )
    _record_written(reports_dir, [out / cell.id for cell in cells if cell.id in finished], paths)
    progress(f"replication: {paths[1]} (+ {paths[0].name}, {paths[2]})")
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
