"""requirements/lock.txt, the exact versions the README's commands and .ci/run install: it pins
every dependency pyproject.toml names (the core, the test extra, the cluster extra, which the
README's test command installs for the Ray tests, and the real extra, for the smollm2 pair) with ``==``, and under
``.ci/run`` (``DPOCLAIMS_EXPECT_LOCK=1``) every installed package the lock names has the lock's
version."""

from __future__ import annotations

import os
import re
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
LOCK = ROOT / "requirements" / "lock.txt"
PINS = ROOT / "requirements" / "pins.txt"
_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def locked() -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in LOCK.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        assert "==" in line, f"lock line {line!r} is not an exact pin"
        name, pinned = line.split("==", 1)
        pins[canonical(name)] = pinned.strip()
    return pins


def required(extra: str | None) -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = project["dependencies"] if extra is None else project["optional-dependencies"][extra]
    names = set()
    for requirement in requirements:
        if "python_version < '3.11'" in requirement and sys.version_info >= (3, 11):
            continue  # a backport the lock's Python does not install
        match = _NAME.match(requirement)
        assert match, requirement
        names.add(canonical(match[1]))
    return names


def test_the_lock_pins_every_dependency_of_the_core_and_the_test_cluster_and_real_extras():
    pins = locked()
    missing = (required(None) | required("test") | required("cluster") | required("real")) - set(pins)
    assert not missing, f"requirements/lock.txt lacks {sorted(missing)}: run bash scripts/update-lock.sh"


def test_the_lock_respects_the_documented_bounds():
    from packaging.requirements import Requirement

    pins = locked()
    for line in PINS.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        bound = Requirement(line)
        assert bound.specifier.contains(pins[canonical(bound.name)], prereleases=True), (
            f"the lock's {bound.name}=={pins[canonical(bound.name)]} breaks the bound {line!r} in pins.txt"
        )


@pytest.mark.skipif(
    not os.environ.get("DPOCLAIMS_EXPECT_LOCK"),
    reason="the installed versions are the lock's only under .ci/run",
)
def test_the_installed_versions_are_the_locks():
    different = {}
    for name, pinned in locked().items():
        try:
            installed = version(name)
        except PackageNotFoundError:
            continue  # locked for an extra that this environment did not install
        # torch is locked without its local build label (+cpu, +cu128)
        if installed.split("+", 1)[0] != pinned:
            different[name] = f"installed {installed}, locked {pinned}"
    assert not different, f"not the locked versions: {different}"
