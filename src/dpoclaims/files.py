"""Reading and writing files safely: TOML with the ``tomli`` fallback, checkpoints without
running code, and atomic writes (readers see the old or the new content, never a part).

A leaf module: it imports nothing else of dpoclaims but :mod:`dpoclaims.errors`.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dpoclaims.errors import CheckpointError

try:
    import tomllib
except ModuleNotFoundError:  # Python < 3.11
    import tomli as tomllib  # type: ignore[no-redef]

TOMLDecodeError = tomllib.TOMLDecodeError


def read_toml(path: Path) -> dict[str, Any]:
    """The parsed TOML file; raises ``OSError`` or :data:`TOMLDecodeError` as ``tomllib`` does."""
    return tomllib.loads(Path(path).read_text())


def load_checkpoint(path: Path, what: str, *, map_location: Any = "cpu") -> Any:
    """``torch.load`` with ``weights_only=True``: tensors, dicts, lists and numbers load; a
    file whose unpickling would run code is refused with a :class:`CheckpointError`."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{what} {path} does not exist")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError, EOFError, ...
        raise CheckpointError(
            f"cannot read {what} {path} (corrupt, or not a plain torch file): {exc}"
        ) from exc


def _atomic_write(path: Path, write: Callable[[str], None]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    """Write a text file atomically."""

    def write(tmp: str) -> None:
        with open(tmp, "w") as handle:
            handle.write(text)

    _atomic_write(path, write)


def atomic_torch_save(path: Path, obj: Any) -> None:
    """``torch.save`` atomically."""
    import torch

    _atomic_write(path, lambda tmp: torch.save(obj, tmp))
