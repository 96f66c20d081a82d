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


#: The library's layers, lowest first: a module imports from its own layer or lower ones only.
LAYERS: tuple[tuple[str, ...], ...] = (
    (
        "errors",
        "files",
        "cache",
        "versions",
        "devices",
        "quiet",
        "progress",
        "phases",
        "stats",
    ),  # infrastructure
    ("models",),  # loading models, where the MLP neurons are, pairs
    ("hooks",),  # reaching the neurons: hooks, interventions, the bridge
    ("measure",),  # generation, scoring, captures, decomposition, the measurement cache
    ("train",),  # DPO, the toy organism, named pairs built on first use
    ("claims",),  # the paper table, the claim functions, the searches
    ("report",),  # reports from claim records
    ("runs",),  # replication, the sweep
    ("calibration",),  # the planted organisms and the calibration of the verdicts
    ("plugin",),  # the pytest plugin
    ("cli",),
)


def layer(module: str) -> int:
    """The layer of ``dpoclaims.<name>[...]`` (the package's own ``__init__``: below all)."""
    parts = module.split(".")
    if len(parts) == 1:
        return -1
    for index, names in enumerate(LAYERS):
        if parts[1] in names:
            return index
    raise AssertionError(f"{module} is in no layer of LAYERS: add it to one")


def test_imports_flow_down_the_layers_only():
    upward = [
        f"{module} (layer {layer(module)}) imports {target} (layer {layer(target)})"
        for module, targets in sorted(import_graph(PACKAGE).items())
        for target in sorted(targets)
        if layer(target) > layer(module)
    ]
    assert not upward, "\n".join(upward)


def test_the_layer_check_finds_an_upward_import(tmp_path):
    package = tmp_path / "dpoclaims"
    (package / "models").mkdir(parents=True)
    (package / "claims").mkdir()
    for init in (package, package / "models", package / "claims"):
        (init / "__init__.py").write_text("")
    (package / "claims" / "c.py").write_text("")
    (package / "models" / "m.py").write_text("def f():\n    from dpoclaims.claims import c\n")
    graph = import_graph(package)
    assert graph["dpoclaims.models.m"] == {"dpoclaims.claims", "dpoclaims.claims.c"}
    assert layer("dpoclaims.claims.c") > layer("dpoclaims.models.m")


@pytest.mark.parametrize(
    ("package", "forbidden"),
    [
        # the reports are written from claim records alone: no model, no measurement
        ("dpoclaims.report", ("dpoclaims.models", "dpoclaims.measure.measurements", "dpoclaims.train")),
        # the toy is built from models, never from pair loading
        ("dpoclaims.train.organism", ("dpoclaims.models.pairs", "dpoclaims.train.named_pairs")),
    ],
)
def test_leaves_stay_leaves(package, forbidden):
    graph = import_graph(PACKAGE)
    modules = [m for m in graph if m == package or m.startswith(package + ".")]
    assert modules
    for module in modules:
        bad = {t for t in graph[module] if any(t == f or t.startswith(f + ".") for f in forbidden)}
        assert not bad, f"{module} imports {sorted(bad)}"


def test_every_paper_table_entry_has_one_registered_claim_function():
    import importlib

    from dpoclaims.claims import registry

    for module in registry.CLAIM_MODULES:
        importlib.import_module(module)
    assert set(registry.registered()) == set(paper.TABLE)


def test_docs_claims_md_is_generated_from_the_paper_table():
    assert (ROOT / "docs" / "claims.md").read_text() == paper.docs_markdown(), (
        "docs/claims.md is stale: run `python -m dpoclaims.claims.paper > docs/claims.md`"
    )


def test_every_claims_file_is_a_family_of_the_paper_table_and_every_entry_has_its_file():
    """A claim is one entry (and one function): the claims files only generate the tests of
    their family, and every entry's family has its file."""
    from dpoclaims.claims.registry import registered
    from dpoclaims.plugin.claim_tests import family_tests

    files = {path.stem.removeprefix("test_") for path in (ROOT / "claims").glob("test_*.py")}
    assert files == {entry.family for entry in paper.ENTRIES}
    for path in (ROOT / "claims").glob("test_*.py"):
        body = [
            node
            for node in ast.parse(path.read_text()).body
            if not isinstance(node, ast.ImportFrom)
            and not (isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant))
        ]
        assert len(body) == 1 and "family_tests(__name__)" in ast.unparse(body[0]), path
    generated = {name for family in files for name in family_tests(f"claims.test_{family}")}
    assert len(generated) == len(paper.ENTRIES)
    assert set(registered()) == set(paper.TABLE)  # one function bound to each entry
