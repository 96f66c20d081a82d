"""The pytest plugin costs nothing where it is not used: loading it imports nothing heavy, and a
run that uses no claim checks no option and no ``DPOCLAIMS_*`` variable. Its options still work
where the suite is used (also tests/test_claims_plugin.py and tests/test_device_options.py).
The time and memory it adds are measured by ``benchmarks/bench_plugin.py``."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytest_plugins = ["pytester"]

#: What the plugin must not import when pytest loads it: the model stack and the numeric one.
HEAVY = (
    "torch",
    "transformers",
    "tokenizers",
    "safetensors",
    "accelerate",
    "trl",
    "transformer_lens",
    "datasets",
    "numpy",
    "scipy",
    "sklearn",
    "matplotlib",
    "profanity_check",
    "hypothesis",
)

LOAD_AS_PYTEST_DOES = """
import importlib, json, sys
from importlib.metadata import entry_points

import pytest  # loaded first, as when pytest starts: only what the plugin adds is counted

before = set(sys.modules)
(entry,) = [e for e in entry_points(group="pytest11") if e.name == "dpoclaims"]
plugin = entry.load()
for name in getattr(plugin, "pytest_plugins", ()):  # what pytest then imports for it
    importlib.import_module(name)
print(json.dumps(sorted(set(sys.modules) - before)))
"""


def heavy_among(modules: list[str]) -> list[str]:
    return sorted({name.split(".")[0] for name in modules} & set(HEAVY))


def test_loading_the_plugin_imports_nothing_heavy():
    done = subprocess.run(
        [sys.executable, "-c", LOAD_AS_PYTEST_DOES], capture_output=True, text=True, timeout=120, check=True
    )
    added = json.loads(done.stdout)
    assert "dpoclaims.plugin.options" in added and "dpoclaims.plugin.reporting" in added  # it was loaded
    assert heavy_among(added) == []


def test_the_check_names_a_heavy_import():
    assert heavy_among(["torch.nn", "numpy", "json", "dpoclaims.plugin"]) == ["numpy", "torch"]


UNRELATED = """
import json, os, sys

def test_unrelated():
    with open(os.environ["LOADED_OUT"], "w") as out:  # every module loaded by the time a test runs
        json.dump(sorted(sys.modules), out)
"""


#: Values the suite refuses: a run that uses the suite stops on them, any other run never reads them.
BAD_ENVIRONMENT = {
    "DPOCLAIMS_DEVICE": "tpu",
    "DPOCLAIMS_MAX_PROMPTS": "many",
    "DPOCLAIMS_CONVENTION": "v9",
    "DPOCLAIMS_DTYPE": "float8",
}


@pytest.fixture
def project(pytester, monkeypatch, tmp_path):
    """A project of its own (not a dpoclaims checkout) with one unrelated test."""
    monkeypatch.setenv("LOADED_OUT", str(tmp_path / "loaded.json"))
    pytester.makepyprojecttoml("[tool.pytest.ini_options]\n")
    pytester.makepyfile(test_unrelated=UNRELATED)
    for name, value in BAD_ENVIRONMENT.items():
        monkeypatch.setenv(name, value)
    return pytester


def test_a_run_without_claims_imports_nothing_heavy_and_reads_no_setting(project, monkeypatch):
    """What the plugin adds to a run of an unrelated test: nothing heavy (other plugins of this
    environment may load numpy themselves: the run without dpoclaims is the baseline)."""
    loaded = {}
    for variant, flags in (("with", ()), ("without", ("-p", "no:dpoclaims"))):
        monkeypatch.setenv("LOADED_OUT", str(project.path / f"loaded-{variant}.json"))
        result = project.runpytest_subprocess("-p", "no:cacheprovider", *flags)
        result.assert_outcomes(passed=1)  # the bad DPOCLAIMS_* values were never read
        loaded[variant] = json.loads((project.path / f"loaded-{variant}.json").read_text())
    assert (
        "dpoclaims.plugin.options" in loaded["with"] and "dpoclaims.plugin.options" not in loaded["without"]
    )
    assert heavy_among(sorted(set(loaded["with"]) - set(loaded["without"]))) == []
    assert not (project.path / "reports").exists()  # no report either


def test_a_fixture_named_like_the_suites_from_elsewhere_does_not_switch_it_on(project):
    project.makeconftest("import pytest\n\n@pytest.fixture\ndef pair():\n    return (1, 2)\n")
    project.makepyfile(test_own_pair="def test_own_pair(pair):\n    assert pair == (1, 2)\n")
    result = project.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)


def test_a_test_using_a_suite_fixture_switches_the_suite_on_and_its_settings_are_checked(project):
    project.makepyfile(test_uses_suite="def test_uses_suite(suite_options):\n    pass\n")
    result = project.runpytest_subprocess("-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*$DPOCLAIMS_MAX_PROMPTS must be a whole number >= 10*not 'many'*"])


def test_the_options_are_documented_by_pytest_help(project):
    result = project.runpytest_subprocess("--help")
    assert result.ret == 0
    result.stdout.fnmatch_lines(
        [
            "*dpoclaims claims suite*",
            "*--pair=PAIR*",
            "*--convention=CONVENTION*",
            "*--search-examples=SEARCH_EXAMPLES*",
        ]
    )
