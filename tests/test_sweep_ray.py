"""The sweep on a real local Ray cluster (``ray.init(num_cpus=2)`` in this process), not a mock:
the Ray engine's matrix equals the local engine's cell for cell, a worker killed mid-cell is
retried to the same result, two cells that need one cache entry build it once, and a failed
cell is reported while the other goes on.

Each engine runs on its own fresh cache (holding only the toy, hard-linked from the user's cache,
where it is built on first use), so every measurement is computed again, not read back. Skipped,
with the reason, where Ray is not installed (``pip install -e '.[cluster]'``).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import threading
import time
from pathlib import Path

import pytest

from dpoclaims.cache import Cache, verify_entry
from dpoclaims.runs import sweep
from dpoclaims.runs.cells import CellJob, grid
from dpoclaims.runs.ray_engine import check_shared_cache, run_ray
from dpoclaims.train.organism import DEFAULT_SEED

ray = pytest.importorskip("ray", reason="Ray is not installed: pip install -e '.[cluster]'")

pytestmark = [pytest.mark.slow, pytest.mark.ray]

#: The smallest grid that is a sweep: the default toy under both position conventions.
#: --max-prompts 10 is the suite's minimum; the counterexample searches are skipped.
CELLS = grid(["toy"], [DEFAULT_SEED], ["v1", "emnlp"])
MAX_PROMPTS = 10
PYTEST_ARGS = ("--search-examples", "0")
CPUS_PER_CELL = 1


@pytest.fixture(scope="module")
def toy_entry() -> Path:
    """The default toy's cache entry in the user's cache (built there on first use)."""
    from dpoclaims.train.organism.build import ToyConfig, ensure_toy

    return ensure_toy(ToyConfig(), cache=Cache(), progress=False)


def fresh_cache(root: Path, toy_entry: Path) -> Cache:
    """A cache holding only the toy (hard links: nothing writes to a built entry)."""
    cache = Cache(root)
    target = cache.entry_dir("toy", toy_entry.name)
    target.parent.mkdir(parents=True)
    try:
        shutil.copytree(toy_entry, target, copy_function=os.link)
    except OSError:  # another filesystem: copy
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(toy_entry, target)
    return cache


@pytest.fixture(scope="module")
def ray_cluster():
    if ray.is_initialized():
        ray.shutdown()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def run_sweep(engine: str, cache: Cache, reports: Path, cells=CELLS) -> dict:
    lines: list[str] = []
    began = time.perf_counter()
    sweep.sweep(
        cells,
        cache=cache,
        reports_dir=reports,
        engine=engine,
        max_prompts=MAX_PROMPTS,
        pytest_args=PYTEST_ARGS,
        cpus_per_cell=CPUS_PER_CELL,
        progress=lines.append,
    )
    result = json.loads((reports / "replication.json").read_text())
    result["progress"] = lines
    result["driver_wall_s"] = time.perf_counter() - began
    return result


def broken_entries(cache: Cache) -> list[str]:
    """Entries that fail verification (temporary build directories, dot-named, are not entries)."""
    broken = []
    for kind in cache.root.iterdir():
        if not kind.is_dir():
            continue
        for entry in kind.iterdir():
            if entry.is_dir() and not entry.name.startswith(".") and (problem := verify_entry(entry)):
                broken.append(f"{kind.name}/{entry.name}: {problem}")
    return broken


@pytest.fixture(scope="module")
def local_result(tmp_path_factory, toy_entry) -> dict:
    root = tmp_path_factory.mktemp("local")
    return run_sweep("local", fresh_cache(root / "cache", toy_entry), root / "reports")


@pytest.fixture(scope="module")
def ray_result(tmp_path_factory, toy_entry, ray_cluster) -> dict:
    root = tmp_path_factory.mktemp("ray")
    result = run_sweep("ray", fresh_cache(root / "cache", toy_entry), root / "reports")
    result["root"] = root
    return result


def test_the_ray_engine_gives_the_local_engine_s_matrix_cell_for_cell(local_result, ray_result):
    assert ray_result["engine"] == "ray" and local_result["engine"] == "local"
    assert ray_result["columns"] == local_result["columns"] == [c.id for c in CELLS]
    assert ray_result["missing"] == local_result["missing"] == {}
    assert len(local_result["claims"]) > 10
    for claim_id in local_result["claims"]:
        for column in local_result["columns"]:
            assert ray_result["matrix"][claim_id][column] == local_result["matrix"][claim_id][column], (
                claim_id,
                column,
            )
    assert ray_result["stable"] == local_result["stable"]
    # Each cell keeps its full reports.
    for column in ray_result["columns"]:
        cell_dir = ray_result["root"] / "reports" / "replication" / column
        assert {"claims.json", "claims.md", "pytest.log"} <= {p.name for p in cell_dir.iterdir()}
    progress = "\n".join(ray_result["progress"])
    assert "2 done, 0 running, 0 queued, 0 failed" in progress and "started on" in progress
    assert all(run["attempts"] == 1 for run in ray_result["runs"])
    # Timing, for the record (pytest -s): the same grid on each engine, each on a cold cache.
    print(
        f"\nsweep of {len(CELLS)} cells: local {local_result['driver_wall_s']:.1f} s, "
        f"ray {ray_result['driver_wall_s']:.1f} s (cells {[round(r['claims_s'], 1) for r in ray_result['runs']]} s)"
    )


def pids_running(marker: str) -> list[int]:
    """The processes whose command line contains ``marker`` (Linux /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            if marker in cmdline(int(entry.name)):
                found.append(int(entry.name))
    return found


def measuring(cache: Cache) -> bool:
    """Whether a claims run has begun writing measurements into ``cache`` (anything besides the
    toy: a finished entry, or a temporary build directory)."""
    return any(kind.name != "toy" for kind in cache.root.iterdir() if kind.is_dir())


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def parent_of(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[1])


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds the worker through Linux /proc")
def test_a_worker_killed_mid_cell_is_retried_to_the_same_result(
    tmp_path, toy_entry, ray_cluster, local_result
):
    cache = fresh_cache(tmp_path / "cache", toy_entry)
    cells = CELLS[:1]
    outcome: dict = {}

    def drive() -> None:
        try:
            outcome["result"] = run_sweep("ray", cache, tmp_path / "reports", cells)
        except BaseException as exc:  # reported by the assertions below
            outcome["error"] = exc

    driver = threading.Thread(target=drive)
    driver.start()
    marker = str(cache.root)  # the cell's claims run names this cache on its command line
    killed = None
    deadline = time.monotonic() + 300
    while killed is None and time.monotonic() < deadline and driver.is_alive():
        claims_runs = [p for p in pids_running(marker) if "dpoclaims.runs.cell" in cmdline(p)]
        if claims_runs and measuring(cache):  # mid-cell: the claims run is writing measurements
            worker = parent_of(claims_runs[0])
            os.kill(worker, signal.SIGKILL)
            killed = (worker, claims_runs[0])
        time.sleep(0.5)
    driver.join(timeout=900)
    assert killed is not None, "the cell's claims run never started"
    assert "error" not in outcome, outcome.get("error")
    result = outcome["result"]
    # The orphaned claims run ended with its worker.
    assert (
        not Path(f"/proc/{killed[1]}").exists() or "zombie" in Path(f"/proc/{killed[1]}/status").read_text()
    )
    assert result["runs"][0]["attempts"] == 2, result["progress"]
    assert any("again (attempt 2)" in line for line in result["progress"])
    column = cells[0].id
    for claim_id in local_result["claims"]:
        assert result["matrix"][claim_id][column] == local_result["matrix"][claim_id][column], claim_id
    assert broken_entries(cache) == []


def test_two_cells_that_need_one_entry_build_it_once(tmp_path, ray_cluster):
    log = tmp_path / "builds.log"

    def build_slowly(root: str, log: str) -> str:
        """Get-or-build one entry, counting the builds in ``log`` (append-only). A nested
        function: Ray ships it by value (this test module is not importable on a worker)."""

        def build(tmp: Path) -> dict:
            with open(log, "a") as handle:
                handle.write(f"{os.getpid()}\n")
            time.sleep(2)  # long enough that the other task asks while this one builds
            (tmp / "data.txt").write_text("built once")
            return {}

        return str(Cache(root).get_or_build("shared", "one-key", build))

    task = ray.remote(num_cpus=1)(build_slowly)
    paths = ray.get([task.remote(str(tmp_path / "cache"), str(log)) for _ in range(2)])
    assert paths[0] == paths[1]
    assert len(log.read_text().split()) == 1  # one build; the other task waited on the lock and read it
    # Every node of the cluster sees the cache and its locks (here, one node and its workers).
    assert check_shared_cache(ray, tmp_path / "cache")
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["shared"]  # the check cleans up


def test_a_failing_cell_is_reported_and_the_other_goes_on(tmp_path, ray_result):
    cache = Cache(ray_result["root"] / "cache")  # warm: the good cell reads its measurements back
    claims_dir = str(Path(__file__).resolve().parent.parent / "claims")
    good = CellJob(CELLS[0], str(cache.root), claims_dir, MAX_PROMPTS, PYTEST_ARGS)
    bad = CellJob(CELLS[1], str(cache.root), claims_dir, MAX_PROMPTS, ("--no-such-option",))
    lines: list[str] = []
    results = run_ray([bad, good], cpus_per_cell=CPUS_PER_CELL, progress=lines.append)
    assert not results[0].ok and "wrote no claims.json" in results[0].error
    assert "--no-such-option" in results[0].error  # the tail of its pytest log says why
    assert results[1].ok and "claims.json" in results[1].files
    assert any("1 done, 0 running, 0 queued, 1 failed" in line for line in lines)


def test_ctrl_c_on_the_driver_cancels_the_cells_and_leaves_the_cache_consistent(
    tmp_path, toy_entry, ray_cluster, request
):
    import _thread

    cache = fresh_cache(tmp_path / "cache", toy_entry)
    marker = str(cache.root)
    seen: list[int] = []

    def interrupt_once_running() -> None:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            claims_runs = [p for p in pids_running(marker) if "dpoclaims.runs.cell" in cmdline(p)]
            if claims_runs:
                seen.extend(claims_runs)
                time.sleep(5)  # mid-cell
                _thread.interrupt_main()  # what Ctrl-C does to the driver
                return
            time.sleep(0.5)

    # What a terminal's Ctrl-C meets in an interactive driver. A shell starts a background job
    # with SIGINT ignored, and Python then keeps it ignored, so interrupt_main would do nothing.
    import signal

    previous_handler = signal.signal(signal.SIGINT, signal.default_int_handler)
    request.addfinalizer(lambda: signal.signal(signal.SIGINT, previous_handler))
    watcher = threading.Thread(target=interrupt_once_running, daemon=True)
    watcher.start()
    began = time.monotonic()
    try:
        run_sweep("ray", cache, tmp_path / "reports")
        interrupted = False
    except KeyboardInterrupt:
        interrupted = True
    watcher.join()
    assert seen, "no claims run started"
    assert interrupted, f"the sweep ended after {time.monotonic() - began:.0f} s without the interrupt"
    deadline = time.monotonic() + 30  # the cancelled workers' claims runs end with them
    while time.monotonic() < deadline and any(Path(f"/proc/{p}").exists() for p in seen):
        time.sleep(0.5)
    assert not any(p in pids_running(marker) for p in seen)
    result = json.loads((tmp_path / "reports" / "replication.json").read_text())
    assert set(result["missing"].values()) == {"cancelled (Ctrl-C on the driver)"}
    assert {entry["verdict"] for row in result["matrix"].values() for entry in row.values()} <= {"missing"}
    assert broken_entries(cache) == []
