"""The library's architecture: imports flow one way (no cycle, also through imports inside
functions), the model side's leaves stay leaves, and docs/claims.md agrees with the paper table."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from dpoclaims.claims import paper

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "src" / "dpoclaims"


def module_name(path: Path, package_dir: Path) -> str:
    parts = path.relative_to(package_dir.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, package_dir: Path, known: set[str]) -> set[str]:
    """Every module of the package that ``path`` imports, at any depth of its code."""
    name = module_name(path, package_dir)
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative import
                base = name.split(".")
                base = base if is_package else base[:-1]
                base = base[: len(base) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            targets = [module] + [f"{module}.{alias.name}" for alias in node.names]
        else:
            continue
        for target in targets:
            if target in known and target != name:
                found.add(target)
    return found


def import_graph(package_dir: Path) -> dict[str, set[str]]:
    files = sorted(package_dir.rglob("*.py"))
    known = {module_name(f, package_dir) for f in files}
    return {module_name(f, package_dir): imported_modules(f, package_dir, known) for f in files}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path ``[a, b, ..., a]``, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_library_has_no_import_cycle():
    cycle = find_cycle(import_graph(PACKAGE))
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_cycle_check_finds_a_cycle_hidden_inside_a_function(tmp_path):
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from pkg.b import thing\n")
    (package / "b.py").write_text("def thing():\n    from pkg import c\n")
    (package / "c.py").write_text("import pkg.a\n")
    assert find_cycle(import_graph(package)) == ["pkg.a", "pkg.b", "pkg.c", "pkg.a"]
    (package / "c.py").write_text("")
    assert find_cycle(import_graph(package)) is None


@pytest.mark.parametrize(
    ("module", "forbidden"),
    [
        (
            "dpoclaims.models.loading",
            {"dpoclaims.models.pairs", "dpoclaims.train.named_pairs", "dpoclaims.train.organism"},
        ),
        ("dpoclaims.models.pairs", {"dpoclaims.train.named_pairs", "dpoclaims.train.organism"}),
        ("dpoclaims.measure.scoring", {"dpoclaims.train.organism", "dpoclaims.train.organism.corpus"}),
        (
            "dpoclaims.report.records",
            {"dpoclaims.models.pairs", "dpoclaims.train.named_pairs", "dpoclaims.measure.measurements"},
        ),
    ],
)
def test_leaves_stay_leaves(module, forbidden):
    assert not import_graph(PACKAGE)[module] & forbidden


def test_the_organism_imports_models_never_pairs():
    graph = import_graph(PACKAGE)
    organism = [m for m in graph if m.startswith("dpoclaims.train.organism")]
    assert organism
    for module in organism:
        assert not graph[module] & {"dpoclaims.models.pairs", "dpoclaims.train.named_pairs"}, module


def test_the_measurements_know_nothing_of_the_claims():
    """measure/ is a layer below claims/: the claims declare what they need measured (e.g. which
    passes record activations), the measurements never import them."""
    graph = import_graph(PACKAGE)
    measure = [m for m in graph if m.startswith("dpoclaims.measure")]
    assert "dpoclaims.measure.measurements" in measure
    for module in measure:
        assert not {m for m in graph[module] if m.startswith("dpoclaims.claims")}, module


def test_docs_claims_md_is_generated_from_the_paper_table():
    assert (ROOT / "docs" / "claims.md").read_text() == paper.claims_markdown(), (
        "docs/claims.md is stale: run `python -m dpoclaims.claims.paper > docs/claims.md`"
    )


def test_every_claims_test_reads_its_entry_from_the_paper_table():
    used = set()
    for path in (ROOT / "claims").glob("test_*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "claim_test":
                used.add(node.args[0].value)
    assert used == set(paper.TABLE)
