"""Options and the environment: the claims suite's options as pytest_configure parses them, their variables, and the expectations table."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bad_inputs.bench import Bench, Case, catalogue_test, registrar
from dpoclaims.plugin.options import suite_options

CASES: list[Case] = []
case = registrar(CASES)


class _Config:
    """What ``suite_options`` reads of a pytest config."""

    def __init__(self, rootpath: Path, **options: str) -> None:
        self.rootpath = rootpath
        self.options = {f"--{name.replace('_', '-')}": value for name, value in options.items()}

    def getoption(self, name: str) -> str | None:
        return self.options.get(name)


def _option_case(id: str, match: str, **options: str) -> None:
    @case(id, "error", pytest.UsageError, match)
    def _(b: Bench):
        suite_options(_Config(b.tmp, **options))


def _expectations(b: Bench, content: bytes | None, directory: bool = False) -> Any:
    from dpoclaims.plugin.reporting import load_expectations

    path = b.tmp / "table.toml"
    if directory:
        path.mkdir()
    elif content is not None:
        path.write_bytes(content)
    b.monkeypatch.setenv("DPOCLAIMS_EXPECTATIONS", str(path))
    return load_expectations("toy", b.tmp)


_option_case(
    "option-max-prompts-ten--usage-error-asking-for-a-number",
    r"--max-prompts must be a whole number >= 10 \(bootstrap intervals over fewer prompts are meaningless\), not 'ten'",
    max_prompts="ten",
)


_option_case(
    "option-max-prompts-3--usage-error-asking-for-10-or-more",
    r"--max-prompts must be a whole number >= 10 .*not '3'",
    max_prompts="3",
)


_option_case(
    "option-convention-v2--usage-error-listing-conventions",
    r"--convention must be one of \('v1', 'emnlp'\), not 'v2'",
    convention="v2",
)


_option_case(
    "option-scorer-vibes--usage-error-listing-scorers",
    r"--scorer must be one of \[.*'lexicon'.*\], not 'vibes'",
    scorer="vibes",
)


_option_case(
    "option-dtype-float8--usage-error-listing-dtypes",
    r"--dtype must be one of \['bfloat16', 'float16', 'float32'\], not 'float8'",
    dtype="float8",
)


_option_case(
    "option-perplexity-some--usage-error-listing-values",
    r"--perplexity must be 'claims' or 'all', not 'some'",
    perplexity="some",
)


_option_case(
    "option-allow-pickle-globals-not-importable--usage-error-naming-it",
    r"cannot allow pickle global 'nosuch\.Thing': it does not import",
    allow_pickle_globals="nosuch.Thing",
)


@case(
    "option-reports-dir-a-file--usage-error-naming-it",
    "error",
    pytest.UsageError,
    r"reports directory .*reports is a file, not a directory; set --reports-dir",
)
def option_reports_dir_a_file(b: Bench):
    (b.tmp / "reports").write_text("in the way")
    suite_options(_Config(b.tmp, reports_dir=str(b.tmp / "reports")))


@case(
    "expectations-pairs-a-number--usage-error-asking-for-a-table",
    "error",
    pytest.UsageError,
    r"the expectations table .*table\.toml \(\$DPOCLAIMS_EXPECTATIONS\): 'pairs' must be a table "
    r"\(\[pairs\.<pair name>\] sections\), not 3",
)
def expectations_pairs_a_number(b: Bench):
    _expectations(b, b"pairs = 3\n")


@case(
    "expectations-pair-entry-a-string--usage-error-asking-for-a-table",
    "error",
    pytest.UsageError,
    r"table\.toml .*: the entry of pair 'toy' must be a table of claim id = reason \(\[pairs\.toy\]\), not 'x'",
)
def expectations_pair_entry_a_string(b: Bench):
    _expectations(b, b'[pairs]\ntoy = "x"\n')


@case(
    "expectations-latin-1--usage-error-asking-for-utf-8",
    "error",
    pytest.UsageError,
    r"the expectations table .*table\.toml \(\$DPOCLAIMS_EXPECTATIONS\) is not UTF-8 text \(invalid "
    r"continuation byte at byte 21\); save it as UTF-8",
)
def expectations_latin_1(b: Bench):
    _expectations(b, b'[pairs.toy]\nC3 = "caf\xe9 au lait"\n')


@case(
    "env-expectations-empty--usage-error-naming-the-variable",
    "error",
    pytest.UsageError,
    r"DPOCLAIMS_EXPECTATIONS is set but empty; name an expectations table \(a \.toml file\) or unset it",
)
def env_expectations_empty(b: Bench):
    from dpoclaims.plugin.reporting import load_expectations

    b.monkeypatch.setenv("DPOCLAIMS_EXPECTATIONS", "")
    load_expectations("toy", b.tmp)


@case(
    "env-expectations-a-directory--usage-error-asking-for-the-file",
    "error",
    pytest.UsageError,
    r"the expectations table .*table\.toml \(\$DPOCLAIMS_EXPECTATIONS\) is a directory; name the \.toml file itself",
)
def env_expectations_a_directory(b: Bench):
    _expectations(b, None, directory=True)


_option_case(
    "option-max-prompts-superscript-digits--usage-error-asking-for-ascii-digits",
    r"--max-prompts must be a whole number >= 10 .*not '²⁰'; write it in the digits 0-9",
    max_prompts="²⁰",
)


_option_case(
    "option-search-examples-superscript-digit--usage-error-asking-for-ascii-digits",
    r"--search-examples must be a whole number \(0 skips the searches\), not '³'; write it in the digits 0-9",
    search_examples="³",
)


@case(
    "env-max-prompts-many--usage-error-naming-the-variable",
    "error",
    pytest.UsageError,
    r"\$DPOCLAIMS_MAX_PROMPTS must be a whole number >= 10 .*not 'many'",
)
def env_max_prompts_many(b: Bench):
    b.monkeypatch.setenv("DPOCLAIMS_MAX_PROMPTS", "many")
    suite_options(_Config(b.tmp))


@case(
    "env-device-map-empty--usage-error-naming-the-variable",
    "error",
    pytest.UsageError,
    r"\$DPOCLAIMS_DEVICE_MAP is set but empty; give a device map such as auto, or unset it",
)
def env_device_map_empty(b: Bench):
    b.monkeypatch.setenv("DPOCLAIMS_DEVICE_MAP", "")
    suite_options(_Config(b.tmp))


test_case = catalogue_test(CASES)
