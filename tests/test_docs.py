"""The README is a short manual and the rest is a site: README.md has at most 250 lines, its set-up
commands are the ones .ci/run installs, its relative links resolve, and every page under docs/ is
in the nav of mkdocs.yml (and every nav entry is a page). `mkdocs build --strict` in .ci/run checks
the links between pages; these checks need no mkdocs. Each check is also run on a broken copy."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
README_MAX_LINES = 250
_LINK = re.compile(r"\]\(([^)\s]+)\)")


def readme_too_long(text: str) -> str | None:
    lines = len(text.splitlines())
    return f"README.md has {lines} lines, more than {README_MAX_LINES}" if lines > README_MAX_LINES else None


def nav_pages(nav: Any) -> list[str]:
    """Every page a mkdocs nav names, at any depth (``- Title: page.md``, ``- page.md``, sections)."""
    if isinstance(nav, str):
        return [] if "://" in nav else [nav]
    if isinstance(nav, list):
        return [page for entry in nav for page in nav_pages(entry)]
    if isinstance(nav, dict):
        return [page for value in nav.values() for page in nav_pages(value)]
    raise AssertionError(f"unexpected nav entry {nav!r}")


def nav_problems(config: dict[str, Any], docs: Path) -> list[str]:
    named = nav_pages(config.get("nav"))
    pages = {path.relative_to(docs).as_posix() for path in docs.rglob("*.md")}
    problems = [f"docs/{page} is not in the mkdocs.yml nav" for page in sorted(pages - set(named))]
    problems += [
        f"the nav names {page}, which is not a page under docs/" for page in named if page not in pages
    ]
    problems += [f"the nav names {page} twice" for page in sorted({p for p in named if named.count(p) > 1})]
    return problems


def broken_links(text: str, root: Path) -> list[str]:
    """Relative links of a markdown file at ``root`` whose target file does not exist."""
    broken = []
    for target in _LINK.findall(text):
        if "://" in target or target.startswith(("#", "mailto:")):
            continue
        path = target.split("#", 1)[0]
        if not (root / path).exists():
            broken.append(target)
    return broken


def load_config(path: Path) -> dict[str, Any]:
    config: dict[str, Any] = yaml.safe_load(path.read_text())
    return config


def test_the_readme_has_at_most_250_lines():
    assert readme_too_long((ROOT / "README.md").read_text()) is None


def test_the_line_limit_catches_a_long_readme():
    assert readme_too_long("line\n" * README_MAX_LINES) is None
    assert readme_too_long("line\n" * (README_MAX_LINES + 1)) == "README.md has 251 lines, more than 250"


def test_every_docs_page_is_in_the_nav_and_every_nav_entry_is_a_page():
    config = load_config(ROOT / "mkdocs.yml")
    assert config["docs_dir"] == "docs"
    assert not nav_problems(config, ROOT / "docs"), "\n".join(nav_problems(config, ROOT / "docs"))


def test_the_nav_check_finds_a_missing_and_a_stray_page(tmp_path):
    docs = tmp_path / "docs"
    (docs / "sub").mkdir(parents=True)
    for page in ("index.md", "toy.md", "sub/deep.md"):
        (docs / page).write_text("# page\n")
    nav = [
        {"Home": "index.md"},
        {"Section": [{"Deep": "sub/deep.md"}, "gone.md"]},
        {"Out": "https://example.org/"},
    ]
    assert nav_problems({"nav": nav}, docs) == [
        "docs/toy.md is not in the mkdocs.yml nav",
        "the nav names gone.md, which is not a page under docs/",
    ]


def test_the_readme_links_resolve():
    assert not broken_links((ROOT / "README.md").read_text(), ROOT)


def test_the_link_check_finds_a_broken_link(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "toy.md").write_text("# toy\n")
    text = "[toy](docs/toy.md#bands) [gone](docs/gone.md) [web](https://example.org/a) [here](#set-up)"
    assert broken_links(text, tmp_path) == ["docs/gone.md"]


def test_the_readme_test_command_installs_what_ci_installs():
    """.ci/run runs the README's test command's installs; the README keeps that command whole."""
    readme = (ROOT / "README.md").read_text()
    commands = re.findall(r"^python3 -m venv .*$", readme, flags=re.MULTILINE)
    assert len(commands) == 2, f"README.md holds {len(commands)} set-up commands, not 2"
    test_command = next(c for c in commands if "pytest tests" in c)
    installs = test_command.split(" && ", 2)[2].rsplit(" && ", 1)[0]  # between the venv and pytest
    assert installs in (ROOT / ".ci" / "run").read_text(), (
        ".ci/run does not install what the README's test command does"
    )


def test_ci_builds_the_docs_strictly_and_fails_with_them():
    run = (ROOT / ".ci" / "run").read_text()
    assert re.search(r"^mkdocs build --strict\b.*\|\| exit 1", run, flags=re.MULTILINE), (
        ".ci/run must run `mkdocs build --strict ... || exit 1`"
    )
