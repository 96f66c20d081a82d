"""The cache: damaged entries, a cache directory that cannot be written, concurrent builds, a kill mid-build, a held lock."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from bad_inputs.bench import (
    BATCH_SIZE,
    SETTINGS,
    Bench,
    Case,
    ExitedNonZero,
    capture_entries,
    catalogue_test,
    entry_bytes,
    registrar,
    wait_for,
)
from dpoclaims.cache import MANIFEST, Cache, verify_entry
from dpoclaims.errors import CacheError
from dpoclaims.measure.measurements import Measurements

CASES: list[Case] = []
case = registrar(CASES)


def _rebuilt_capture(b: Bench, damage: Callable[[Path], None]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Copy the reference capture entry into a fresh cache, ``damage`` it, measure again."""
    reference = b.measured
    entry = b.cache.root / "capture" / reference.entry.name
    shutil.copytree(reference.entry, entry)
    damage(entry)
    capture = b.measurements(reference.pair).capture("base")
    expected = {
        **entry_bytes(reference.entry),
        "mean_activation": reference.capture.mean_activation,
        "entry verified": None,
    }
    got = {
        **entry_bytes(entry),
        "mean_activation": capture.mean_activation,
        "entry verified": verify_entry(entry),
    }
    return expected, got


def _flip_a_byte(entry: Path) -> None:
    path = entry / "capture.safetensors"
    data = bytearray(path.read_bytes())
    data[-5] ^= 0xFF
    path.write_bytes(bytes(data))


_CAPTURE_SCRIPT = textwrap.dedent("""
    import hashlib, os, sys, time
    from pathlib import Path

    import torch

    torch.set_num_threads(1)  # as in the tests' process: the same sums, bit for bit
    import dpoclaims.measure.capture
    import dpoclaims.measure.measurements
    from dpoclaims.cache import Cache
    from dpoclaims.measure.generation import GenerationSettings
    from dpoclaims.measure.measurements import Measurements, MeasurementSettings
    from dpoclaims.train.named_pairs import load_pair

    spec, root, mode, marks = sys.argv[1], Path(sys.argv[2]), sys.argv[3], Path(sys.argv[4])
    cache = Cache(root)
    pair = load_pair(spec, cache=cache)
    settings = MeasurementSettings(generation=GenerationSettings(batch_size={batch_size}))
    measurements = Measurements(pair, cache, settings, progress=False)
    if mode == "kill":
        generated = dpoclaims.measure.capture._Recorder.generated

        def pause_after_the_first_batch(self, *args):
            generated(self, *args)
            (marks / "first-batch-done").touch()
            time.sleep(600)

        dpoclaims.measure.capture._Recorder.generated = pause_after_the_first_batch
    else:
        capture = dpoclaims.measure.measurements.capture

        def counted(*args, **kwargs):
            with open(marks / "builds.txt", "a") as handle:
                handle.write(f"{{os.getpid()}}\\n")
            time.sleep(1.0)  # hold the entry's lock while the other process asks for it
            return capture(*args, **kwargs)

        dpoclaims.measure.measurements.capture = counted
        (marks / f"ready.{{os.getpid()}}").touch()
        while not (marks / "go").exists():
            time.sleep(0.02)
    result = measurements.capture("base")
    print(hashlib.sha256(result.mean_activation.numpy().tobytes()).hexdigest())
""").format(batch_size=BATCH_SIZE)


def _sha256(tensor: torch.Tensor) -> str:
    return hashlib.sha256(tensor.numpy().tobytes()).hexdigest()


def _start_capture(b: Bench, root: Path, mode: str) -> subprocess.Popen[str]:
    script = b.tmp / "capture_script.py"
    script.write_text(_CAPTURE_SCRIPT)
    command = [sys.executable, str(script), str(b.measured.spec), str(root), mode, str(b.tmp)]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


_HOLD_THE_LOCK = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from dpoclaims.cache import _OwnedLock

    with _OwnedLock(Path(sys.argv[1])):
        Path(sys.argv[2]).touch()
        time.sleep(float(sys.argv[3]))
""")


@case("cache-entry-with-a-flipped-byte--rebuilt-identical", "recovery")
def cache_entry_with_a_flipped_byte(b: Bench):
    return _rebuilt_capture(b, _flip_a_byte)


@case("cache-entry-without-manifest--rebuilt-identical", "recovery")
def cache_entry_without_manifest(b: Bench):
    return _rebuilt_capture(b, lambda entry: (entry / MANIFEST).unlink())


@case("cache-file-in-place-of-an-entry--rebuilt-identical", "recovery")
def cache_file_in_place_of_an_entry(b: Bench):
    def replace_by_a_file(entry: Path) -> None:
        shutil.rmtree(entry)
        entry.write_text("not an entry")

    return _rebuilt_capture(b, replace_by_a_file)


@case("cache-orphaned-build-directory--removed-and-rebuilt-identical", "recovery")
def cache_orphaned_build_directory(b: Bench):
    orphans: list[Path] = []

    def leave_an_orphan(entry: Path) -> None:
        orphan = entry.parent / f".{entry.name}.abcd_123.tmp"
        orphan.mkdir()
        (orphan / "capture.safetensors").write_bytes(b"half")
        os.utime(orphan, (time.time() - 3600, time.time() - 3600))
        shutil.rmtree(entry)
        orphans.append(orphan)

    expected, got = _rebuilt_capture(b, leave_an_orphan)
    return {**expected, "orphan exists": False}, {**got, "orphan exists": orphans[0].exists()}


@case(
    "cache-dir-a-file--refused-naming-it",
    "error",
    CacheError,
    r"cache directory .*cache is a file, not a directory; set --cache-dir or \$DPOCLAIMS_CACHE",
)
def cache_dir_a_file(b: Bench):
    (b.tmp / "cache").write_text("in the way")
    b.measurements(b.measured.pair).capture("base")


@case(
    "cache-dir-under-a-file--refused-as-not-creatable",
    "error",
    CacheError,
    r"cannot create cache directory .*file/cache \(Not a directory\); set --cache-dir",
)
def cache_dir_under_a_file(b: Bench):
    (b.tmp / "file").write_text("x")
    Measurements(b.measured.pair, Cache(b.tmp / "file" / "cache"), SETTINGS, progress=False).capture("base")


@case(
    "suite-cache-dir-a-file--exit-4-one-line",
    "error",
    ExitedNonZero,
    r"exit 4: ERROR: cache directory .*cachefile is a file, not a directory; set --cache-dir",
)
def suite_cache_dir_a_file(b: Bench):
    """The default toy and claims/: stopped at session start with one line, no INTERNALERROR."""
    (b.tmp / "cachefile").write_text("in the way")
    b.run(b.pytest_command("claims/", "--cache-dir", str(b.tmp / "cachefile"), "--pair", "toy"))


@case(
    "suite-cache-dir-under-a-file--exit-4-one-line",
    "error",
    ExitedNonZero,
    r"exit 4: ERROR: cannot create cache directory .*file/cache \(Not a directory\)",
)
def suite_cache_dir_under_a_file(b: Bench):
    """Read-only in effect: the cache's place is under a file."""
    (b.tmp / "file").write_text("x")
    b.run(b.pytest_command("claims/", "--cache-dir", str(b.tmp / "file" / "cache"), "--pair", "toy"))


@case("two-processes-capturing-at-once--one-build-identical", "recovery")
def two_processes_capturing_at_once(b: Bench):
    root = b.tmp / "shared_cache"
    procs = [_start_capture(b, root, "concurrent") for _ in range(2)]
    wait_for(lambda: len(list(b.tmp.glob("ready.*"))) == 2, procs, "both processes were ready")
    (b.tmp / "go").touch()
    outputs = [proc.communicate(timeout=300) for proc in procs]
    for proc, (_, err) in zip(procs, outputs):
        assert proc.returncode == 0, err[-3000:]
    (entry,) = capture_entries(root)
    reference = b.measured
    expected = {
        "builds": 1,
        "activations read": [_sha256(reference.capture.mean_activation)] * 2,
        **entry_bytes(reference.entry),
    }
    got = {
        "builds": len((b.tmp / "builds.txt").read_text().split()),
        "activations read": [out.strip() for out, _ in outputs],
        **entry_bytes(entry),
    }
    return expected, got


@case("capture-killed-mid-build--rerun-identical", "recovery")
def capture_killed_mid_build(b: Bench):
    root = b.tmp / "killed_cache"
    proc = _start_capture(b, root, "kill")
    wait_for(lambda: (b.tmp / "first-batch-done").exists(), [proc], "the first batch was captured")
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    # (the killed build's lock files stay: its lock, and the note of its holder's process id)
    left = [p.name for p in (root / "capture").iterdir() if not p.name.endswith((".lock", ".lock.owner"))]
    assert len(left) == 1 and left[0].endswith(".tmp"), left  # only the interrupted build's directory
    time.sleep(0.05)  # the rerun starts strictly after the orphan's last change
    reference = b.measured
    rerun = Measurements(reference.pair, Cache(root), SETTINGS, progress=False).capture("base")
    (entry,) = capture_entries(root)
    expected = {
        "mean_activation": reference.capture.mean_activation,
        "n_positions": reference.capture.n_positions,
        "continuations": reference.capture.continuation_ids,
        "left over": [],
        **entry_bytes(reference.entry),
    }
    got = {
        "mean_activation": rerun.mean_activation,
        "n_positions": rerun.n_positions,
        "continuations": rerun.continuation_ids,
        "left over": [p.name for p in (root / "capture").iterdir() if p.name.endswith(".tmp")],
        **entry_bytes(entry),
    }
    return expected, got


@case(
    "cache-disk-full--refused-naming-the-cache-and-a-remedy",
    "error",
    CacheError,
    r"cannot write cache entry things/k in the cache directory .*cache \(No space left on device\); free "
    r"space there, or set --cache-dir or \$DPOCLAIMS_CACHE to a writable directory",
)
def cache_disk_full(b: Bench):
    def fill_the_disk(directory: Path) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    try:
        b.cache.get_or_build("things", "k", fill_the_disk)
    finally:
        assert [p.name for p in (b.tmp / "cache" / "things").iterdir() if p.name.endswith(".tmp")] == []


@case(
    "cache-build-raising-its-own-error--that-error-unchanged", "error", ZeroDivisionError, r"division by zero"
)
def cache_build_raising_its_own_error(b: Bench):
    """Only write failures become a CacheError: a bug in a build is not blamed on the disk."""
    b.cache.get_or_build("things", "k", lambda directory: 1 / 0)


@case("cache-entry-locked-by-another-process--waits-saying-whose", "recovery")
def cache_entry_locked_by_another_process(b: Bench):
    from dpoclaims.cache import LOCK_NOTICE_S

    root = b.tmp / "cache"
    (root / "things").mkdir(parents=True)
    script = b.tmp / "hold.py"
    script.write_text(_HOLD_THE_LOCK)
    holder = subprocess.Popen(
        [sys.executable, str(script), str(root / "things" / "k.lock"), str(b.tmp / "held"), "6"]
    )
    try:
        wait_for(lambda: (b.tmp / "held").exists(), [holder], "the other process held the lock")
        err = io.StringIO()
        started = time.monotonic()
        with contextlib.redirect_stderr(err):
            b.cache.get_or_build("things", "k", lambda d: (d / "x").write_text("built"))
        said = err.getvalue()
    finally:
        holder.wait(timeout=60)
    return {"said": True, "built": "built", "waited": True}, {
        "said": f"waiting for process {holder.pid}, which holds the build lock" in said,
        "built": (root / "things" / "k" / "x").read_text(),
        "waited": time.monotonic() - started > LOCK_NOTICE_S,
    }


# ---- a read-only cache: a fully cached run reads it without a write lock; a missing entry names the fix

_READ_THE_SUITE_CACHE = textwrap.dedent("""
    import hashlib, sys
    from pathlib import Path
    import torch

    torch.set_num_threads(1)
    from dpoclaims.errors import DpoclaimsError
    from dpoclaims.plugin.options import SuiteOptions
    from dpoclaims.plugin.resources import load_suite_pair, suite_cache, suite_measurements

    spec, root = sys.argv[1], Path(sys.argv[2])
    options = SuiteOptions(pair=spec, max_prompts=None, cache_dir=root, reports_dir=root.parent / "reports",
                           convention="v1", scorer="lexicon", dtype="float32", device_map=None, perplexity="claims")
    try:
        cache = suite_cache(options)
        measurements = suite_measurements(load_suite_pair(options, cache), cache, options)
        decomposition = measurements.decomposition
        print(hashlib.sha256(decomposition.contribution_per_prompt.numpy().tobytes()).hexdigest())
        print(measurements.perplexity("base"))
    except DpoclaimsError as exc:
        print(f"{type(exc).__name__}: {exc}")
        sys.exit(3)
""")


def _read_only(b: Bench, cache_root: Path) -> list[str]:
    """Run the suite's cache, pair and measurements on ``cache_root`` mounted read-only: the
    lines it prints (a digest of the decomposition and a perplexity, or the error); skips where
    no read-only mount can be made."""
    unshare = shutil.which("unshare")
    if unshare is None:
        pytest.skip("no unshare command to make a read-only mount")
    script = b.tmp / "read_the_suite_cache.py"
    script.write_text(_READ_THE_SUITE_CACHE)
    cache_root.mkdir(parents=True, exist_ok=True)
    shell = (
        f"mount --bind '{cache_root}' '{cache_root}' && mount -o remount,bind,ro '{cache_root}' || exit 77; "
        f"exec '{sys.executable}' '{script}' '{b.measured.spec}' '{cache_root}'"
    )
    done = subprocess.run(
        [unshare, "--mount", "sh", "-c", shell], capture_output=True, text=True, timeout=300
    )
    if done.returncode == 77 or "unshare failed" in done.stderr:
        pytest.skip(f"cannot make a read-only mount here: {done.stderr.strip()}")
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    return done.stdout.splitlines()


@case("suite-cache-read-only-fully-cached--the-same-numbers-without-a-lock", "recovery")
def suite_cache_read_only_fully_cached(b: Bench):
    root = b.tmp / "cache_ro"
    written = subprocess.run(
        [sys.executable, "-c", _READ_THE_SUITE_CACHE, str(b.measured.spec), str(root)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert written.returncode == 0, written.stderr[-3000:]
    return {"lines": written.stdout.splitlines()}, {"lines": _read_only(b, root)}


@case(
    "suite-cache-read-only-missing-an-entry--refused-naming-cache-dir",
    "error",
    CacheError,
    r"capture/\w+ is not in the cache at .*cache_ro, and cache directory .*cache_ro is not writable "
    r"\(Read-only file system\); set --cache-dir or \$DPOCLAIMS_CACHE to a writable directory",
)
def suite_cache_read_only_missing_an_entry(b: Bench):
    (last,) = _read_only(b, b.tmp / "cache_ro")[-1:]
    raise CacheError(last.split(": ", 1)[1])


test_case = catalogue_test(CASES)
