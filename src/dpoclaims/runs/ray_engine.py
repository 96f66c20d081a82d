"""The sweep's Ray engine: each cell a Ray task, on a running cluster or a local Ray instance
(see :mod:`dpoclaims.runs.sweep` for what a cell needs of the nodes)."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from dpoclaims.cache import Cache
from dpoclaims.errors import OptionError
from dpoclaims.files import atomic_write_bytes
from dpoclaims.runs.cells import (
    CellJob,
    CellResult,
    Progress,
    ProgressBoard,
    SweepError,
    cell_threads,
    run_cell,
)

RAY_INSTALL = "pip install -e '.[cluster]' (or pip install 'ray>=2.9')"


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
            "processes or nodes (see docs/sweeps.md, 'The cache across nodes')"
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
    board = ProgressBoard([job.cell for job in jobs], progress)
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
