"""Reading and writing files safely: TOML with the ``tomli`` fallback, checkpoints without
running code, and atomic writes (readers see the old or the new content, never a part).

A leaf module: it imports nothing else of dpoclaims but :mod:`dpoclaims.errors`.
"""

from __future__ import annotations

import codecs
import gzip
import hashlib
import importlib
import json
import os
import re
import sys
import tempfile
import unicodedata
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from dpoclaims.errors import CheckpointError, OptionError, TextFileError

if sys.version_info >= (3, 11):
    import tomllib
else:  # the backport, a dependency under Python < 3.11 (pyproject.toml)
    import tomli as tomllib

TOMLDecodeError = tomllib.TOMLDecodeError


def read_toml(path: Path) -> dict[str, Any]:
    """The parsed TOML file; raises ``OSError`` or :data:`TOMLDecodeError` as ``tomllib`` does."""
    return tomllib.loads(Path(path).read_text(encoding="utf-8"))


# --------------------------------------------------------------------------- text files

#: Byte-order marks, longest first (UTF-32-LE's begins with UTF-16-LE's).
_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)
#: The control characters a text may hold: tab, line feed, carriage return.
ALLOWED_CONTROLS = frozenset("\t\n\r")


def _wide_encoding(data: bytes) -> str | None:
    """UTF-32 or UTF-16 (either byte order) without a byte-order mark, recognised by where its
    zero bytes fall (the high bytes of Latin text), if ``data`` decodes as that; else None."""
    candidates = []
    if len(data) % 4 == 0:
        units = range(0, len(data), 4)
        if all(data[i + 2] == 0 and data[i + 3] == 0 for i in units):
            candidates.append("utf-32-le")
        if all(data[i] == 0 and data[i + 1] == 0 for i in units):
            candidates.append("utf-32-be")
    if len(data) % 2 == 0:
        odd, even = data[1::2].count(0), data[0::2].count(0)
        if odd >= len(data) // 8 and even * 10 <= odd:
            candidates.append("utf-16-le")
        if even >= len(data) // 8 and odd * 10 <= even:
            candidates.append("utf-16-be")
    for encoding in candidates:
        try:
            data.decode(encoding)
        except UnicodeDecodeError:
            continue
        return encoding
    return None


def control_character(text: str) -> tuple[int, str] | None:
    """The first control character of ``text`` other than tab, line feed and carriage return
    (NUL, escape, form feed, NEL, ...), with its index; None if there is none."""
    for index, char in enumerate(text):
        if char not in ALLOWED_CONTROLS and unicodedata.category(char) == "Cc":
            return index, char
    return None


def describe_control(char: str) -> str:
    """``'a NUL character (U+0000)'`` or ``"a control character '\\x1b' (U+001B)"``."""
    what = "a NUL character" if char == "\0" else f"a control character {char!r}"
    return f"{what} (U+{ord(char):04X})"


def decode_text(data: bytes, what: str) -> str:
    """The text of a file's bytes, in the encoding they are in: UTF-8, or UTF-8, UTF-16 or UTF-32
    with a byte-order mark, or UTF-16 or UTF-32 without one (recognised by their zero bytes).
    A :class:`~dpoclaims.errors.TextFileError` naming ``what`` (e.g. "prompt file <path>")
    when the bytes are none of these, or the text holds a NUL or another control character
    (but tab and line ends): a model would be fed it as it stands."""
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            body, shown = data[len(bom) :], f"{encoding.upper()} text (it starts with a byte-order mark)"
            break
    else:
        encoding = (_wide_encoding(data) if b"\0" in data else None) or "utf-8"
        body, shown = data, "UTF-8 text"
    try:
        text = body.decode(encoding)
    except UnicodeDecodeError as exc:
        raise TextFileError(
            f"{what} is not {shown} ({exc.reason} at byte {exc.start + len(data) - len(body)}); save it as UTF-8"
        ) from None
    found = control_character(text)
    if found is not None:
        index, char = found
        line = text.count("\n", 0, index) + 1
        raise TextFileError(
            f"{what} holds {describe_control(char)} on line {line}: the model would be fed it; remove it "
            "(or, if the file is in another encoding, save it as UTF-8)"
        )
    return text


def read_text_file(path: Path, what: str) -> str:
    """The text of the file ``path`` (gunzipped when its name ends in ``.gz``, any case), decoded
    by :func:`decode_text`; a :class:`~dpoclaims.errors.TextFileError` naming ``what`` and the
    path when it cannot be read."""
    path = Path(path)
    shown = f"{what} {path}"
    try:
        data = path.read_bytes()
        if path.suffix.lower() == ".gz":
            data = gzip.decompress(data)
    except (OSError, EOFError) as exc:
        raise TextFileError(f"cannot read {shown}: {getattr(exc, 'strerror', None) or exc}") from None
    return decode_text(data, shown)


def text_lines(text: str) -> list[str]:
    """The lines of ``text``, ended by a line feed, a carriage return or both only (not by the
    other characters ``str.splitlines`` takes as line ends, such as U+2028 inside a prompt)."""
    return text.replace("\r\n", "\n").replace("\r", "\n").split("\n")


def toml_key_given_twice(exc: Exception) -> bool:
    """Whether a :data:`TOMLDecodeError` is about a key or table given twice (TOML refuses both)."""
    return "Cannot overwrite a value" in str(exc) or ("Cannot declare" in str(exc) and "twice" in str(exc))


class DuplicateKeyError(ValueError):
    """A JSON object that gives one key twice (``json`` would silently keep the last value)."""

    def __init__(self, key: str) -> None:
        super().__init__(f"the key {key!r} is given twice")
        self.key = key


def _refuse_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise DuplicateKeyError(key)
        seen[key] = value
    return seen


def loads_json(text: str) -> Any:
    """``json.loads`` that refuses an object giving a key twice, at any depth, with a
    :class:`DuplicateKeyError` (a ``ValueError``) naming the key."""
    return json.loads(text, object_pairs_hook=_refuse_duplicate_keys)


#: Comma-separated, fully qualified names of pickle globals a checkpoint may use (off by default).
PICKLE_GLOBALS_ENV = "DPOCLAIMS_ALLOW_PICKLE_GLOBALS"
#: The command-line option (``dpoclaims`` and pytest) that extends the same allow-list.
PICKLE_GLOBALS_OPTION = "--allow-pickle-globals"


def allowed_global_names(value: str | Iterable[str] | None = None) -> tuple[str, ...]:
    """The pickle globals the user allowed: ``value`` (a comma-separated string or a list of
    names, e.g. from ``--allow-pickle-globals``) followed by ``$DPOCLAIMS_ALLOW_PICKLE_GLOBALS``;
    empty when neither is set, which is the default."""
    parts: list[str] = []
    for source in (value, os.environ.get(PICKLE_GLOBALS_ENV)):
        if source is None:
            continue
        items = source.split(",") if isinstance(source, str) else list(source)
        parts.extend(item.strip() for item in items)
    return tuple(dict.fromkeys(name for name in parts if name))


def resolve_allowed_globals(value: str | Iterable[str] | None = None) -> dict[str, Any]:
    """Each allowed name (see :func:`allowed_global_names`) mapped to the object it names,
    imported; an :class:`OptionError` for a name that is not a fully qualified, importable one."""
    return {name: _import_global(name) for name in allowed_global_names(value)}


def _import_global(name: str) -> Any:
    parts = name.split(".")
    hint = (
        f"give fully qualified names such as collections.OrderedDict in {PICKLE_GLOBALS_OPTION} "
        f"or ${PICKLE_GLOBALS_ENV} (comma-separated)"
    )
    if len(parts) < 2 or not all(part.isidentifier() for part in parts):
        raise OptionError(f"cannot allow pickle global {name!r}: not a fully qualified name; {hint}")
    for split in range(len(parts) - 1, 0, -1):  # the longest importable module prefix
        module_name = ".".join(parts[:split])
        try:
            found: Any = importlib.import_module(module_name)
        except ImportError:
            continue
        try:
            for attribute in parts[split:]:
                found = getattr(found, attribute)
        except AttributeError:
            break
        return found
    raise OptionError(f"cannot allow pickle global {name!r}: it does not import; {hint}")


@contextmanager
def pickle_globals_allowed(value: str | Iterable[str] | None = None) -> Iterator[tuple[str, ...]]:
    """Within the block, every ``weights_only`` load (this package's and transformers') also
    accepts the globals named by ``value`` and ``$DPOCLAIMS_ALLOW_PICKLE_GLOBALS``; yields the
    names. With neither set this changes nothing."""
    import torch

    allowed = resolve_allowed_globals(value)
    already = set(torch.serialization.get_safe_globals())
    added = [obj for obj in allowed.values() if obj not in already]
    with torch.serialization.safe_globals(added):
        yield tuple(allowed)


def unsafe_globals_in_checkpoint(path: Path) -> list[str]:
    """The pickle globals in a ``torch.save`` file that safe loading refuses, found without
    unpickling it (names already allowed are not listed). Empty for a file torch cannot parse
    this way (not a zip-format checkpoint)."""
    import torch

    try:
        return sorted(torch.serialization.get_unsafe_globals_in_checkpoint(str(path)))
    except Exception:  # not a zip checkpoint, truncated, ...: the load error says what is wrong
        return []


_REFUSED_GLOBAL = re.compile(r"GLOBAL ([\w.]+) was not an allowed global")
#: The first opcodes of a legacy (pre-zip) torch.save file: a pickled magic number.
_LEGACY_TORCH_MAGIC = b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19"


def _pickle_globals(data: bytes) -> list[str]:
    """The globals a pickle names (found by reading its opcodes, never by unpickling it)."""
    import io
    import pickletools

    names: list[str] = []
    strings: list[str] = []
    try:
        for opcode, arg, _ in pickletools.genops(io.BytesIO(data)):
            if isinstance(arg, str) and "UNICODE" in opcode.name:
                strings.append(arg)
            elif opcode.name == "GLOBAL" and isinstance(arg, str):
                names.append(arg.replace(" ", "."))
            elif opcode.name == "STACK_GLOBAL" and len(strings) >= 2:
                names.append(f"{strings[-2]}.{strings[-1]}")
    except Exception:  # a truncated or damaged pickle: what was read so far
        pass
    return list(dict.fromkeys(names))


def describe_file(path: Path) -> str:
    """What a file that ``torch.load`` cannot read is, from its first bytes (nothing is
    unpickled): a Python pickle, a NumPy ``.npy`` file, a safetensors file, a zip archive,
    a text file, or binary data."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(1 << 16)
    except OSError as exc:
        return f"unreadable ({exc.strerror or exc})"
    if not head:
        return "empty"
    if head.startswith(_LEGACY_TORCH_MAGIC):
        return "a legacy torch.save file that torch cannot read (truncated or damaged)"
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        names = [name for name in _pickle_globals(head) if not name.startswith("copy_reg.")]
        needs = f" that needs {', '.join(names[:3])}" if names else " of plain values"
        return f"a Python pickle (written by pickle.dump){needs}"
    if head.startswith(b"\x93NUMPY"):
        return "a NumPy .npy file (np.save)"
    if head.startswith(b"PK\x03\x04"):
        return "a zip archive that torch cannot read (truncated, damaged or not torch's)"
    if len(head) > 8 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < len(head) + (1 << 27):
        return "a safetensors file (load it with safetensors.torch.load_file)"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        text = ""
    if not text.strip() or control_character(text) is not None:
        return "binary data of an unknown format"
    return f"a text file beginning {text.strip().splitlines()[0][:40]!r}"


def _starts_with(path: Path, prefix: bytes) -> bool:
    try:
        with open(path, "rb") as handle:
            return handle.read(len(prefix)) == prefix
    except OSError:
        return False


def load_checkpoint(
    path: Path,
    what: str,
    *,
    map_location: Any = "cpu",
    allow_globals: str | Iterable[str] | None = None,
    expected: str = "",
) -> Any:
    """``torch.load`` with ``weights_only=True``: tensors, dicts, lists and numbers load; a
    file whose unpickling needs other globals (and so could run code) is refused with a
    :class:`CheckpointError` that names them and the opt-in. A file torch cannot read at all
    is refused saying what it is (:func:`describe_file`) and what is ``expected`` there.

    The opt-in: ``allow_globals`` (names as for :func:`allowed_global_names`, e.g. the value of
    ``--allow-pickle-globals``) and ``$DPOCLAIMS_ALLOW_PICKLE_GLOBALS`` allow exactly the named
    globals, through ``torch.serialization.safe_globals``; loading stays ``weights_only``.
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{what} {path} does not exist")
    with pickle_globals_allowed(allow_globals):
        try:
            return torch.load(path, map_location=map_location, weights_only=True)
        except Exception as exc:  # torch raises UnpicklingError, RuntimeError, EOFError, ...
            # A legacy (pre-zip) file cannot be scanned; torch's message names its first refused global.
            refused = unsafe_globals_in_checkpoint(path) or [
                name if "." in name else f"builtins.{name}" for name in _REFUSED_GLOBAL.findall(str(exc))
            ]
            torch_file = _starts_with(path, b"PK\x03\x04") or _starts_with(path, _LEGACY_TORCH_MAGIC)
            if refused and torch_file:
                names = ",".join(refused)
                raise CheckpointError(
                    f"{what} {path} needs pickle globals that safe loading refuses: {', '.join(refused)}. "
                    "Unpickling them can run code from the file. If you trust this file, allow exactly "
                    f"these with {PICKLE_GLOBALS_OPTION} {names} or {PICKLE_GLOBALS_ENV}={names}"
                ) from None
            if torch_file:
                reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                raise CheckpointError(
                    f"cannot read {what} {path} (corrupt, or not a plain torch file): {reason}. {expected}".rstrip()
                ) from None
            raise CheckpointError(
                f"cannot read {what} {path} (corrupt, or not a plain torch file): it is {describe_file(path)}, not "
                f"a file torch.save wrote. {expected}".rstrip()
            ) from None


def ensure_writable_dir(path: Path, what: str, remedy: str, error: type[Exception]) -> Path:
    """Create the directory ``path`` if it is missing and check that a file can be created in
    it; otherwise raise ``error`` (a :class:`~dpoclaims.errors.DpoclaimsError` subclass) with
    one line naming ``what`` and ``path`` and ending in ``remedy`` (what to do)."""
    path = Path(path)
    if path.is_symlink() and not path.exists():
        raise error(
            f"{what} {path} is a symbolic link to {os.readlink(path)}, which does not exist; "
            f"create that directory or {remedy[0].lower() + remedy[1:]}"
        )
    if path.exists() and not path.is_dir():
        raise error(f"{what} {path} is a file, not a directory; {remedy}")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise error(f"cannot create {what} {path} ({exc.strerror or exc}); {remedy}") from None
    try:  # os.access cannot see a read-only mount or an ACL; creating a file can
        fd, probe = tempfile.mkstemp(prefix=".write-check-", dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise error(f"{what} {path} is not writable ({exc.strerror or exc}); {remedy}") from None
    return path


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


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write a binary file atomically."""

    def write(tmp: str) -> None:
        with open(tmp, "wb") as handle:
            handle.write(data)

    _atomic_write(path, write)


def atomic_torch_save(path: Path, obj: Any) -> None:
    """``torch.save`` atomically."""
    import torch

    _atomic_write(path, lambda tmp: torch.save(obj, tmp))


def refuse_output_over_inputs(out: Path, option: str, inputs: dict[str, str | Path | None]) -> None:
    """An :class:`OptionError` when the output ``out`` (given as ``option``) is one of the
    ``inputs`` (``{option: path}``) or a directory holding one, under any spelling of the paths
    (relative, ``..``, ``~``, symbolic links, a trailing slash): writing it would overwrite
    or delete what the command reads. Inputs that are not existing paths (a hub id) are skipped."""
    target = Path(out).expanduser().resolve()
    for name, value in inputs.items():
        if value is None or not str(value).strip():
            continue
        source = Path(value).expanduser()
        if not source.exists():
            continue
        resolved = source.resolve()
        same = target == resolved or (target.exists() and os.path.samefile(target, resolved))
        if same or target in resolved.parents:
            relation = "is" if same else "contains"
            raise OptionError(
                f"{option} {out} {relation} the input {name} {value} ({resolved}): writing there would "
                f"overwrite it. Give {option} a new directory outside every input"
            )


# --------------------------------------------------------------------------- outputs a writer owns


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def owned_outputs(directory: Path, manifest: str) -> dict[str, str | None]:
    """The files (paths relative to ``directory``) that a dpoclaims writer recorded in its
    ``manifest`` there as written by it, each with the SHA-256 it wrote (None in a manifest of an
    older version, which kept no digests); empty without a readable manifest."""
    try:
        data = json.loads((Path(directory) / manifest).read_text())
        files = data["files"]
        digests = data.get("sha256") or {}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}
    if not isinstance(files, list) or not isinstance(digests, dict):
        return {}
    return {
        name: digests.get(name) if isinstance(digests.get(name), str) else None
        for name in files
        if isinstance(name, str) and ".." not in Path(name).parts and not Path(name).is_absolute()
    }


def outputs_not_owned(directory: Path, manifest: str, names: Iterable[str]) -> dict[str, str]:
    """Of ``names`` (paths relative to ``directory``; one naming a directory covers every file in
    it), those where something stands that the writer of ``manifest`` did not write, each with
    why: ``"which dpoclaims did not write"`` or ``"which was changed since dpoclaims wrote it"``.
    Writing there would overwrite a file of the user's."""
    directory = Path(directory)
    owned = owned_outputs(directory, manifest)
    found: dict[str, str] = {}
    for name in names:
        path = directory / name
        if not (path.exists() or path.is_symlink()):
            continue
        if path.is_dir() and not path.is_symlink():
            inside = sorted(p for p in path.rglob("*") if not p.is_dir() or p.is_symlink())
            found.update(
                outputs_not_owned(directory, manifest, [str(p.relative_to(directory)) for p in inside])
            )
        elif name not in owned or path.is_symlink():
            found[name] = "which dpoclaims did not write"
        elif owned[name] is not None and _file_sha256(path) != owned[name]:
            found[name] = "which was changed since dpoclaims wrote it"
    return found


def refuse_overwriting(
    directory: Path,
    manifest: str,
    names: Iterable[str],
    *,
    what: str,
    remedy: str,
    error: type[Exception],
) -> None:
    """``error`` (one line naming the files and ``remedy``) when writing ``what`` (e.g. "the
    report") into ``directory`` would overwrite one of ``names`` that its writer did not write
    (see :func:`outputs_not_owned`)."""
    found = [f"{name}, {why}" for name, why in outputs_not_owned(directory, manifest, names).items()]
    if found:
        shown = ", and ".join(found[:3]) + (f", and {len(found) - 3} more" if len(found) > 3 else "")
        them = "it" if len(found) == 1 else "them"
        raise error(
            f"the reports directory {directory} holds {shown}: writing {what} would overwrite {them}. "
            f"Move {them} away, or {remedy}"
        )


def owned_manifest(directory: Path, names: Iterable[str], **fields: Any) -> str:
    """The JSON of a writer's manifest for the files ``names`` it has just written into
    ``directory`` (with their SHA-256, which :func:`outputs_not_owned` compares) and ``fields``."""
    directory = Path(directory)
    files = sorted(set(names))
    digests = {name: _file_sha256(directory / name) for name in files if (directory / name).is_file()}
    return json.dumps({"files": files, "sha256": digests, **fields}, indent=1)
