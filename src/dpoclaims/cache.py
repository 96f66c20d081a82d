"""A content-addressed on-disk cache with atomic writes, integrity checks and build locks.

An entry is a directory ``<root>/<kind>/<key>/`` holding the built files and a
``manifest.json`` with the SHA-256 of every file. Entries are built in a temporary sibling
directory and renamed into place, so a reader never sees a half-written entry; an entry
whose files do not match its manifest is deleted and rebuilt. A file lock per entry makes
concurrent processes (pytest-xdist workers, two shells) build it once and share it.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import re
import shutil
import socket
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from dpoclaims.errors import CacheError
from dpoclaims.files import ensure_writable_dir

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
CACHE_ENV = "DPOCLAIMS_CACHE"
#: What to do when the cache root cannot be written (the same option and variable in pytest).
CACHE_REMEDY = f"set --cache-dir or ${CACHE_ENV} to a writable directory"


def default_cache_root() -> Path:
    """``$DPOCLAIMS_CACHE`` if set, else the user's cache directory."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("dpoclaims"))


def stable_hash(obj: Any, length: int = 16) -> str:
    """Hash of a JSON-serialisable object, independent of dict ordering."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _entry_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("*") if p.is_file() and p.name != MANIFEST)


def write_manifest(directory: Path, meta: dict[str, Any] | None = None) -> None:
    files = {str(p.relative_to(directory)): file_sha256(p) for p in _entry_files(directory)}
    payload = {"files": files, "meta": meta or {}, "created": time.time()}
    (directory / MANIFEST).write_text(json.dumps(payload, indent=1, sort_keys=True))


def verify_entry(directory: Path) -> str | None:
    """None if the entry is intact, else a sentence saying what is wrong with it."""
    manifest_path = directory / MANIFEST
    if not directory.is_dir():
        return "a file, not an entry directory" if directory.exists() else "missing"
    if not manifest_path.is_file():
        return "no manifest (half-written or foreign directory)"
    try:
        recorded = json.loads(manifest_path.read_text())["files"]
        if not isinstance(recorded, dict):
            raise TypeError("'files' is not a mapping")
    except (ValueError, KeyError, TypeError) as exc:
        return f"unreadable manifest ({exc})"
    present = {str(p.relative_to(directory)) for p in _entry_files(directory)}
    missing = set(recorded) - present
    if missing:
        return f"missing files {sorted(missing)}"
    for name, digest in recorded.items():
        if file_sha256(directory / name) != digest:
            return f"content hash mismatch in {name}"
    return None


def read_manifest_meta(directory: Path) -> dict[str, Any]:
    return json.loads((directory / MANIFEST).read_text()).get("meta", {})


class NotCached(CacheError):
    """A read-only cache was asked for an entry it does not hold."""


class Cache:
    """Entries addressed by ``(kind, key)``; see the module docstring.

    A ``read_only`` cache never builds, locks or writes: a missing or corrupt entry raises
    :class:`NotCached` (saying ``why`` the cache is read-only, when given).
    """

    def __init__(self, root: Path | str | None = None, *, read_only: bool = False, why: str = "") -> None:
        self.root = Path(root).expanduser() if root is not None else default_cache_root()
        self.read_only = read_only
        self.why = why  # why a read-only cache is read-only (e.g. its directory is not writable)

    def reader(self, why: str = "") -> Cache:
        return Cache(self.root, read_only=True, why=why)

    def writable(self) -> str | None:
        """None when entries can be built here, else why not (one line, with what to do)."""
        try:
            self.check_writable()
        except CacheError as exc:
            return str(exc)
        return None

    def entry_dir(self, kind: str, key: str) -> Path:
        return self.root / kind / key

    def get(self, kind: str, key: str) -> Path | None:
        directory = self.entry_dir(kind, key)
        return directory if verify_entry(directory) is None else None

    def being_built(self, kind: str, key: str) -> bool:
        """Whether some process holds the build lock of ``(kind, key)`` at this moment: a hint for
        the order of independent builds (e.g. two pytest-xdist workers that both need two
        entries each build one), never a guarantee."""
        directory = self.entry_dir(kind, key)
        if self.read_only or not directory.parent.is_dir() or (directory / MANIFEST).is_file():
            return False  # (a built entry needs no lock to be read)
        lock = FileLock(str(directory) + ".lock", timeout=0)
        try:
            lock.acquire()
        except Timeout:
            return True
        except OSError:  # a lock file cannot be made here (a read-only cache): nobody builds here
            return False
        lock.release()
        return False

    def check_writable(self, kind: str | None = None) -> None:
        """Create the root (and ``<root>/<kind>``) if missing; a :class:`CacheError` naming the
        path and what to do when it is a file, cannot be created, or is not writable."""
        ensure_writable_dir(self.root, "cache directory", CACHE_REMEDY, CacheError)
        if kind is not None:
            ensure_writable_dir(self.root / kind, "cache directory", CACHE_REMEDY, CacheError)

    def get_or_build(
        self,
        kind: str,
        key: str,
        build: Callable[[Path], dict[str, Any] | None],
    ) -> Path:
        """Return the intact entry, building it with ``build(tmp_dir)`` if needed.

        ``build`` writes its files into the directory it is given and may return metadata
        for the manifest. If it raises, nothing is left behind and the error propagates.
        Temporary build directories of this entry left by killed builds are removed.
        """
        directory = self.entry_dir(kind, key)
        if verify_entry(directory) is None:
            return directory
        if self.read_only:
            raise NotCached(
                f"{kind}/{key} is not in the cache at {self.root}" + (f", and {self.why}" if self.why else "")
            )
        self.check_writable(kind)
        with self._build_lock(directory):
            started = time.time()
            _remove_orphaned_builds(directory, older_than=started)
            problem = verify_entry(directory)
            if problem is None:  # another process built it while we waited
                return directory
            if problem != "missing":
                log.warning("cache entry %s/%s is corrupt (%s); rebuilding", kind, key, problem)
                _remove(directory)
            try:
                tmp = Path(tempfile.mkdtemp(prefix=f".{key}.", suffix=TMP_SUFFIX, dir=directory.parent))
            except OSError as exc:
                disk_error = self._write_error(kind, key, exc)
                if disk_error is None:  # not a failure to write (another OSError): as it came
                    raise
                raise disk_error from None
            try:
                meta = build(tmp)
                write_manifest(tmp, meta)
                os.replace(tmp, directory)
            except BaseException as exc:
                shutil.rmtree(tmp, ignore_errors=True)
                disk_error = self._write_error(kind, key, exc)
                if disk_error is not None:
                    raise disk_error from None
                raise
        if (problem := verify_entry(directory)) is not None:
            raise CacheError(f"cache entry {directory} failed verification right after build: {problem}")
        return directory

    def _write_error(self, kind: str, key: str, exc: BaseException) -> CacheError | None:
        """A :class:`CacheError` naming the cache and a remedy when ``exc`` is a failure to write
        to the disk (full, read-only, no permission, quota), else None (a build's own error)."""
        if isinstance(exc, OSError) and exc.errno in _DISK_ERRNOS:
            reason = exc.strerror or str(exc)
        elif type(exc).__name__ == "SafetensorError" and _DISK_WORDS.search(str(exc)):
            reason = str(exc)  # safetensors reports an I/O error as its own exception type
        else:
            return None
        return CacheError(
            f"cannot write cache entry {kind}/{key} in the cache directory {self.root} ({reason}); "
            f"free space there, or {CACHE_REMEDY}"
        )

    def _build_lock(self, directory: Path) -> _OwnedLock:
        return _OwnedLock(Path(str(directory) + ".lock"))


_DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EPERM, errno.EDQUOT, errno.EIO})
_DISK_WORDS = re.compile(r"No space|StorageFull|ReadOnly|Read-only|PermissionDenied|os error", re.IGNORECASE)
#: How long a process waits for an entry's build lock before saying who holds it.
LOCK_NOTICE_S = 2.0


class _OwnedLock:
    """An entry's build lock (``filelock``) that records its holder's process id beside it, so
    that a process waiting for it can say, within seconds, which process it waits for."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.owner = Path(str(path) + ".owner")
        self.lock = FileLock(str(path))

    def __enter__(self) -> _OwnedLock:
        try:
            self.lock.acquire(timeout=LOCK_NOTICE_S)
        except Timeout:
            import sys

            holder = self._holder()
            print(
                f"dpoclaims: waiting for {holder}, which holds the build lock of the cache entry "
                f"{self.path.with_suffix('')}; this run goes on when it finishes (a stopped or suspended "
                "process holds it until it ends)",
                file=sys.stderr,
                flush=True,
            )
            log.warning("waiting for the build lock %s held by %s", self.path, holder)
            self.lock.acquire()
        try:
            self.owner.write_text(f"{os.getpid()} {socket.gethostname()}\n")
        except OSError:
            pass  # only a courtesy for waiting processes
        return self

    def __exit__(self, *exc_info: Any) -> None:
        try:
            self.owner.unlink(missing_ok=True)
        except OSError:
            pass
        self.lock.release()

    def _holder(self) -> str:
        try:
            pid, host = self.owner.read_text().split()[:2]
        except (OSError, ValueError):
            return "another process"
        return f"process {pid}" + ("" if host == socket.gethostname() else f" on {host}")


TMP_SUFFIX = ".tmp"


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()


def _remove_orphaned_builds(directory: Path, older_than: float) -> int:
    """Remove the temporary build directories of the entry ``directory`` last modified before
    ``older_than`` (a time stamp); return how many. Call only under the entry's lock: no
    build of this entry is running then, so such directories are left by killed builds."""
    # tempfile.mkdtemp names: the prefix, 8 characters from [a-z0-9_], the suffix.
    pattern = re.compile(re.escape(f".{directory.name}.") + r"[a-z0-9_]{8}" + re.escape(TMP_SUFFIX))
    removed = 0
    for candidate in directory.parent.iterdir():
        if not (pattern.fullmatch(candidate.name) and candidate.is_dir() and not candidate.is_symlink()):
            continue
        if candidate.stat().st_mtime >= older_than:
            continue
        log.info("removing %s, left by an interrupted cache build", candidate)
        shutil.rmtree(candidate, ignore_errors=True)
        removed += 1
    return removed
