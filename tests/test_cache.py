"""The content-addressed cache: round trips, integrity checks, atomicity and build locks."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dpoclaims.cache import MANIFEST, Cache, read_manifest_meta, stable_hash, verify_entry
from dpoclaims.errors import CacheError
from dpoclaims.files import atomic_write_text


class CountingBuild:
    """A build that writes two files (one nested) and counts its calls."""

    def __init__(self, payload: str = "payload", meta: dict | None = None) -> None:
        self.calls = 0
        self.payload = payload
        self.meta = meta if meta is not None else {"n": 1}

    def __call__(self, tmp: Path) -> dict:
        self.calls += 1
        assert tmp.is_dir() and not any(tmp.iterdir())
        (tmp / "data.txt").write_text(self.payload)
        (tmp / "sub").mkdir()
        (tmp / "sub" / "blob.bin").write_bytes(bytes(range(256)) * 8)
        return self.meta


def _check_intact(entry: Path, payload: str = "payload") -> None:
    assert (entry / "data.txt").read_text() == payload
    assert (entry / "sub" / "blob.bin").read_bytes() == bytes(range(256)) * 8
    assert verify_entry(entry) is None


def _leftovers(cache: Cache, kind: str) -> list[str]:
    """Anything in the kind's directory other than entries and lock files."""
    parent = cache.root / kind
    if not parent.exists():
        return []
    return sorted(p.name for p in parent.iterdir() if p.name.endswith(".tmp") or p.name.startswith("."))


def test_round_trip_and_meta(tmp_path):
    cache = Cache(tmp_path)
    build = CountingBuild(meta={"answer": 42})
    entry = cache.get_or_build("things", "k1", build)
    assert entry == tmp_path / "things" / "k1"
    _check_intact(entry)
    assert read_manifest_meta(entry) == {"answer": 42}
    manifest = json.loads((entry / MANIFEST).read_text())
    assert set(manifest["files"]) == {"data.txt", "sub/blob.bin"}
    assert cache.get("things", "k1") == entry
    assert cache.get("things", "other") is None
    assert _leftovers(cache, "things") == []


def test_build_called_once_when_cached(tmp_path):
    cache = Cache(tmp_path)
    build = CountingBuild()
    first = cache.get_or_build("things", "k", build)
    second = cache.get_or_build("things", "k", build)
    third = Cache(tmp_path).get_or_build("things", "k", build)  # a new Cache object on the same root
    assert first == second == third
    assert build.calls == 1


def test_different_keys_and_kinds_are_separate(tmp_path):
    cache = Cache(tmp_path)
    a, b, c = CountingBuild("a"), CountingBuild("b"), CountingBuild("c")
    entry_a = cache.get_or_build("x", "k1", a)
    entry_b = cache.get_or_build("x", "k2", b)
    entry_c = cache.get_or_build("y", "k1", c)
    assert len({entry_a, entry_b, entry_c}) == 3
    _check_intact(entry_a, "a")
    _check_intact(entry_b, "b")
    _check_intact(entry_c, "c")


@pytest.mark.parametrize("target", ["data.txt", "sub/blob.bin"])
def test_corrupted_file_is_rebuilt(tmp_path, target):
    cache = Cache(tmp_path)
    build = CountingBuild()
    entry = cache.get_or_build("things", "k", build)
    path = entry / target
    data = bytearray(path.read_bytes())
    data[0] ^= 0xFF
    data[-1] ^= 0x01
    path.write_bytes(bytes(data))
    assert verify_entry(entry) is not None
    assert cache.get("things", "k") is None
    again = cache.get_or_build("things", "k", build)
    assert again == entry
    assert build.calls == 2
    _check_intact(again)


def test_deleted_file_is_rebuilt(tmp_path):
    cache = Cache(tmp_path)
    build = CountingBuild()
    entry = cache.get_or_build("things", "k", build)
    (entry / "sub" / "blob.bin").unlink()
    assert "missing" in verify_entry(entry)
    cache.get_or_build("things", "k", build)
    assert build.calls == 2
    _check_intact(entry)


def test_unreadable_manifest_is_rebuilt(tmp_path):
    cache = Cache(tmp_path)
    build = CountingBuild()
    entry = cache.get_or_build("things", "k", build)
    (entry / MANIFEST).write_text("{ not json")
    assert cache.get("things", "k") is None
    cache.get_or_build("things", "k", build)
    assert build.calls == 2
    _check_intact(entry)


def test_half_written_entry_is_rebuilt(tmp_path):
    cache = Cache(tmp_path)
    entry = cache.entry_dir("things", "k")
    entry.mkdir(parents=True)
    (entry / "data.txt").write_text("partial")  # no manifest: a half-written or foreign dir
    (entry / "stale.txt").write_text("should disappear")
    assert "manifest" in verify_entry(entry)
    build = CountingBuild()
    result = cache.get_or_build("things", "k", build)
    assert result == entry
    assert build.calls == 1
    _check_intact(result)
    assert not (entry / "stale.txt").exists()


class Boom(Exception):
    pass


def test_failing_build_leaves_nothing_behind(tmp_path):
    cache = Cache(tmp_path)

    def build(tmp: Path) -> dict:
        (tmp / "data.txt").write_text("half")
        (tmp / "sub").mkdir()
        (tmp / "sub" / "x").write_text("y")
        raise Boom("build failed")

    with pytest.raises(Boom, match="build failed"):
        cache.get_or_build("things", "k", build)
    assert not cache.entry_dir("things", "k").exists()
    assert cache.get("things", "k") is None
    assert _leftovers(cache, "things") == []
    assert not [p for p in (tmp_path / "things").iterdir() if p.is_dir()]
    # the next attempt builds normally
    good = CountingBuild()
    _check_intact(cache.get_or_build("things", "k", good))
    assert good.calls == 1


def test_failing_rebuild_of_corrupt_entry_leaves_no_entry(tmp_path):
    cache = Cache(tmp_path)
    entry = cache.get_or_build("things", "k", CountingBuild())
    (entry / "data.txt").write_text("tampered")

    def build(tmp: Path) -> dict:
        raise KeyboardInterrupt  # BaseException too

    with pytest.raises(KeyboardInterrupt):
        cache.get_or_build("things", "k", build)
    assert not entry.exists()
    assert _leftovers(cache, "things") == []


_WORKER = textwrap.dedent("""
    import os, sys, time
    from pathlib import Path
    from dpoclaims.cache import Cache

    root, marker, go = sys.argv[1:4]
    Path(go + f".ready.{os.getpid()}").touch()
    while not Path(go).exists():
        time.sleep(0.01)

    def build(tmp):
        with open(marker, "a") as handle:
            handle.write(f"{os.getpid()}\\n")
        time.sleep(1.5)
        (tmp / "data.txt").write_text("built by " + str(os.getpid()))
        return {"pid": os.getpid()}

    print(Cache(root).get_or_build("shared", "key", build))
""")


def test_concurrent_processes_build_once(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(_WORKER)
    marker, go = tmp_path / "builds.txt", tmp_path / "go"
    root = tmp_path / "cache"
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), str(root), str(marker), str(go)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    deadline = time.monotonic() + 60
    while len(list(tmp_path.glob("go.ready.*"))) < 2:  # both started: release them together
        assert time.monotonic() < deadline, "workers did not start"
        assert all(proc.poll() is None for proc in procs), "a worker died before starting"
        time.sleep(0.02)
    go.touch()
    outputs = [proc.communicate(timeout=60) for proc in procs]
    for proc, (_out, err) in zip(procs, outputs):
        assert proc.returncode == 0, err
    paths = {out.strip() for out, _ in outputs}
    assert paths == {str(root / "shared" / "key")}
    builders = marker.read_text().split()
    assert len(builders) == 1
    entry = Path(paths.pop())
    assert verify_entry(entry) is None
    assert (entry / "data.txt").read_text() == f"built by {builders[0]}"
    assert read_manifest_meta(entry) == {"pid": int(builders[0])}


# ------------------------------------------------------------- unusable cache directories

REMEDY = "set --cache-dir or $DPOCLAIMS_CACHE to a writable directory"


def test_cache_root_that_is_a_file_is_one_clear_error(tmp_path):
    root = tmp_path / "cache"
    root.write_text("not a directory")
    build = CountingBuild()
    with pytest.raises(CacheError) as info:
        Cache(root).get_or_build("things", "k", build)
    assert str(info.value) == f"cache directory {root} is a file, not a directory; {REMEDY}"
    assert build.calls == 0
    with pytest.raises(CacheError, match="is a file, not a directory"):
        Cache(root).check_writable()


def test_cache_subdirectory_that_is_a_file_is_one_clear_error(tmp_path):
    (tmp_path / "things").write_text("in the way")
    with pytest.raises(CacheError) as info:
        Cache(tmp_path).get_or_build("things", "k", CountingBuild())
    assert str(info.value) == f"cache directory {tmp_path / 'things'} is a file, not a directory; {REMEDY}"


def test_cache_root_under_a_file_cannot_be_created(tmp_path):
    (tmp_path / "file").write_text("x")
    root = tmp_path / "file" / "cache"
    with pytest.raises(CacheError) as info:
        Cache(root).get_or_build("things", "k", CountingBuild())
    assert str(info.value) == f"cannot create cache directory {root} (Not a directory); {REMEDY}"


def _made_read_only(path: Path) -> None:
    path.chmod(0o555)
    if os.access(path, os.W_OK):  # root ignores permission bits
        path.chmod(0o755)
        pytest.skip("chmod does not make a directory read-only for this user (running as root)")


def test_read_only_cache_root_is_one_clear_error(tmp_path):
    root = tmp_path / "cache"
    root.mkdir()
    _made_read_only(root)
    try:
        with pytest.raises(CacheError) as info:
            Cache(root).get_or_build("things", "k", CountingBuild())
    finally:
        root.chmod(0o755)
    assert str(info.value) == f"cache directory {root} is not writable (Permission denied); {REMEDY}"


def test_read_only_cache_kind_directory_is_one_clear_error(tmp_path):
    (tmp_path / "things").mkdir()
    _made_read_only(tmp_path / "things")
    try:
        with pytest.raises(CacheError) as info:
            Cache(tmp_path).get_or_build("things", "k", CountingBuild())
    finally:
        (tmp_path / "things").chmod(0o755)
    assert (
        str(info.value)
        == f"cache directory {tmp_path / 'things'} is not writable (Permission denied); {REMEDY}"
    )


def test_intact_entry_in_a_read_only_cache_is_still_read(tmp_path):
    entry = Cache(tmp_path).get_or_build("things", "k", CountingBuild())
    _made_read_only(tmp_path / "things")
    try:
        build = CountingBuild()
        assert Cache(tmp_path).get_or_build("things", "k", build) == entry
    finally:
        (tmp_path / "things").chmod(0o755)
    assert build.calls == 0


def test_file_in_place_of_an_entry_is_rebuilt(tmp_path):
    (tmp_path / "things").mkdir()
    (tmp_path / "things" / "k").write_text("not an entry")
    assert verify_entry(tmp_path / "things" / "k") == "a file, not an entry directory"
    build = CountingBuild()
    _check_intact(Cache(tmp_path).get_or_build("things", "k", build))
    assert build.calls == 1


# ------------------------------------------------------------------- orphaned builds


def _orphan(parent: Path, name: str, age_s: float) -> Path:
    orphan = parent / name
    orphan.mkdir(parents=True)
    (orphan / "data.txt").write_text("half")
    stamp = time.time() - age_s
    os.utime(orphan, (stamp, stamp))
    return orphan


def test_orphaned_build_directories_of_the_entry_are_removed(tmp_path):
    parent = tmp_path / "things"
    old = _orphan(parent, ".k.abcd_123.tmp", age_s=3600)
    newer = _orphan(parent, ".k.zzzzzzzz.tmp", age_s=-3600)  # younger than this build: not an orphan
    other_key = _orphan(parent, ".k2.abcd_123.tmp", age_s=3600)
    not_ours = _orphan(parent, ".k.toolongname.tmp", age_s=3600)
    _check_intact(Cache(tmp_path).get_or_build("things", "k", CountingBuild()))
    assert not old.exists()
    assert newer.exists() and other_key.exists() and not_ours.exists()


_KILLED_BUILD = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from dpoclaims.cache import Cache

    def build(tmp):
        (tmp / "data.txt").write_text("half written")
        Path(sys.argv[2]).touch()
        time.sleep(600)

    Cache(sys.argv[1]).get_or_build("things", "k", build)
""")


def test_build_killed_mid_way_leaves_an_orphan_that_the_next_build_removes(tmp_path):
    script = tmp_path / "killed.py"
    script.write_text(_KILLED_BUILD)
    root, started = tmp_path / "cache", tmp_path / "started"
    proc = subprocess.Popen([sys.executable, str(script), str(root), str(started)], stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while not started.exists():
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
        assert time.monotonic() < deadline, "the build did not start"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    orphans = list((root / "things").glob(".k.*.tmp"))
    assert len(orphans) == 1 and (orphans[0] / "data.txt").read_text() == "half written"
    time.sleep(0.05)  # the next build starts strictly later than the orphan's last change
    build = CountingBuild()
    _check_intact(Cache(root).get_or_build("things", "k", build))
    assert build.calls == 1
    assert _leftovers(Cache(root), "things") == []


def test_atomic_write_text(tmp_path):
    target = tmp_path / "deep" / "report.json"
    atomic_write_text(target, "one")
    atomic_write_text(target, "two")
    assert target.read_text() == "two"
    assert sorted(p.name for p in target.parent.iterdir()) == ["report.json"]


def test_default_cache_root_from_env(tmp_path, monkeypatch):
    monkeypatch.setenv("DPOCLAIMS_CACHE", str(tmp_path / "envcache"))
    assert Cache().root == tmp_path / "envcache"


# --------------------------------------------------------------------------- stable_hash

json_leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=8),
)
json_values = st.recursive(
    json_leaves,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(st.text(max_size=6), children, max_size=4)
    ),
    max_leaves=20,
)
json_dicts = st.dictionaries(st.text(max_size=6), json_values, max_size=6)


def _reorder(obj, rnd):
    """The same object with every dict's insertion order shuffled."""
    if isinstance(obj, dict):
        items = list(obj.items())
        rnd.shuffle(items)
        return {k: _reorder(v, rnd) for k, v in items}
    if isinstance(obj, list):
        return [_reorder(v, rnd) for v in obj]
    return obj


@settings(max_examples=200, deadline=None)
@given(obj=json_dicts, rnd=st.randoms(use_true_random=False))
def test_stable_hash_ignores_dict_order(obj, rnd):
    shuffled = _reorder(obj, rnd)
    assert shuffled == obj
    assert stable_hash(shuffled) == stable_hash(obj)
    assert len(stable_hash(obj)) == 16
    assert len(stable_hash(obj, length=40)) == 40
    assert stable_hash(obj, length=40).startswith(stable_hash(obj))


@settings(max_examples=200, deadline=None)
@given(a=json_dicts, b=json_dicts)
def test_stable_hash_separates_different_objects(a, b):
    # Python equality is coarser than JSON text equality (0 == 0.0 == False), so only the
    # "different objects -> different hashes" direction holds in general.
    if a != b:
        assert stable_hash(a) != stable_hash(b)


def test_stable_hash_example():
    assert stable_hash({"a": 1, "b": [1, 2]}) == stable_hash({"b": [1, 2], "a": 1})
    assert stable_hash({"a": 1}) != stable_hash({"a": 2})
    assert stable_hash([1, 2]) != stable_hash([2, 1])


def test_being_built_sees_another_holder_of_the_build_lock(tmp_path):
    from filelock import FileLock

    cache = Cache(tmp_path / "cache")
    assert not cache.being_built("capture", "k")  # nothing there yet
    (tmp_path / "cache" / "capture").mkdir(parents=True)
    holder = FileLock(str(cache.entry_dir("capture", "k")) + ".lock")
    with holder:
        assert cache.being_built("capture", "k")
    assert not cache.being_built("capture", "k")
    assert not cache.reader().being_built("capture", "k")
