"""The command line: train-dpo, train-probe, build-toy and replicate on bad options and files."""

from __future__ import annotations

import json
import socket
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from bad_inputs.bench import ROOT, Bench, Case, ExitedNonZero, catalogue_test, cli, registrar, tree_bytes
from dpoclaims.errors import OptionError

CASES: list[Case] = []
case = registrar(CASES)


def _lee_pairs(b: Bench, rows: list[tuple[str, str, str]], name: str = "pairs.jsonl") -> Path:
    lines = [json.dumps({"prompt_text": p, "unpert_gen_text": c, "pert_gen_text": r}) for p, c, r in rows]
    (b.tmp / name).write_text("\n".join(lines) + "\n")
    return b.tmp / name


@case(
    "train-dpo-out-the-base-spelled-otherwise--exit-2-base-untouched",
    "error",
    ExitedNonZero,
    r"exit 2: dpoclaims: error: --out .*/sub/\.\./base_copy is the input --base .*: writing there would "
    r"overwrite it\. Give --out a new directory outside every input",
)
def train_dpo_out_the_base_spelled_otherwise(b: Bench):
    base = b.model_dir(b.files.base, "base_copy")
    (b.tmp / "sub").mkdir()
    before = tree_bytes(base)
    pairs = _lee_pairs(b, [("a", "b", "c"), ("d", "e", "f")])
    try:
        cli(b, "train-dpo", "--base", str(base), "--pairs", str(pairs), "--out", f"{b.tmp}/sub/../base_copy/")
    finally:
        assert tree_bytes(base) == before  # refused before any work: the base is untouched


@case(
    "train-dpo-out-a-symlink-holding-the-pairs--exit-2-pairs-kept",
    "error",
    ExitedNonZero,
    r"exit 2: dpoclaims: error: --out .*link contains the input --pairs .*pairs\.jsonl",
)
def train_dpo_out_a_symlink_holding_the_pairs(b: Bench):
    data = b.tmp / "data"
    data.mkdir()
    pairs = _lee_pairs(b, [("a", "b", "c"), ("d", "e", "f")], name="data/pairs.jsonl")
    (b.tmp / "link").symlink_to(data)
    try:
        cli(b, "train-dpo", "--base", str(b.files.base), "--pairs", str(pairs), "--out", str(b.tmp / "link"))
    finally:
        assert pairs.is_file()


@case(
    "train-dpo-out-holding-other-files--exit-2-files-kept",
    "error",
    ExitedNonZero,
    r"exit 2: dpoclaims: error: --out .*mine already holds files that dpoclaims train-dpo did not write; "
    r"saving the model there would overwrite them",
)
def train_dpo_out_holding_other_files(b: Bench):
    (b.tmp / "mine").mkdir()
    (b.tmp / "mine" / "config.json").write_text("{}")
    pairs = _lee_pairs(b, [("a", "b", "c"), ("d", "e", "f")])
    try:
        cli(b, "train-dpo", "--base", str(b.files.base), "--pairs", str(pairs), "--out", str(b.tmp / "mine"))
    finally:
        assert (b.tmp / "mine" / "config.json").read_text() == "{}"


@case(
    "train-probe-out-the-csv--exit-2-csv-kept",
    "error",
    ExitedNonZero,
    r"exit 2: dpoclaims: error: --out .*comments\.csv is the input --csv",
)
def train_probe_out_the_csv(b: Bench):
    csv_path = b.tmp / "comments.csv"
    csv_path.write_text("comment_text,toxic\nhello,0\nyou idiot,1\n")
    try:
        cli(b, "train-probe", "--base", str(b.files.base), "--csv", str(csv_path), "--out", str(csv_path))
    finally:
        assert csv_path.read_text().startswith("comment_text")


@case(
    "replicate-pytest-args-setting-pair--exit-2-before-any-build",
    "error",
    ExitedNonZero,
    r"exit 2: dpoclaims: error: --pytest-args may not set --pair: replicate sets --pair, --reports-dir, "
    r"--cache-dir for each cell itself",
)
def replicate_pytest_args_setting_pair(b: Bench):
    try:
        cli(b, "replicate", "--seeds", "0", "1", "--pytest-args", "--pair toy -q")
    finally:
        assert not (b.tmp / "cache").exists()  # refused before any toy was built


@case(
    "replicate-pytest-args-setting-reports-dir--exit-2-naming-it",
    "error",
    ExitedNonZero,
    r"exit 2: dpoclaims: error: --pytest-args may not set --reports-dir=elsewhere",
)
def replicate_pytest_args_setting_reports_dir(b: Bench):
    cli(b, "replicate", "--seeds", "0", "--pytest-args=--reports-dir=elsewhere")


@case(
    "replicate-pytest-args-unclosed-quote--exit-2-naming-it",
    "error",
    ExitedNonZero,
    r"exit 2: dpoclaims: error: --pytest-args '-k \"C1' cannot be split into arguments: No closing quotation",
)
def replicate_pytest_args_unclosed_quote(b: Bench):
    cli(b, "replicate", "--seeds", "0", "--pytest-args", '-k "C1')


@case("train-dpo-repeated-rows--deduplicated-none-in-both-splits", "recovery")
def train_dpo_repeated_rows(b: Bench):
    from dpoclaims.train.dpo import distinct_pairs, read_lee_pairs, split_pairs

    rows = [(f"prompt {i % 7}", f"nice {i % 7}", f"rude {i % 7}") for i in range(40)]  # 7 distinct, repeated
    rows += [("prompt 0", "another nice", "another rude")]  # same prompt, other texts: a pair of its own
    pairs, n_duplicates = distinct_pairs(read_lee_pairs(_lee_pairs(b, rows)))
    train, val = split_pairs(pairs, 0.3, 0)
    as_rows = [{(p["prompt"], p["chosen"], p["rejected"]) for p in side} for side in (train, val)]
    return {"duplicates": 33, "pairs": 8, "validation rows trained on": set()}, {
        "duplicates": n_duplicates,
        "pairs": len(train) + len(val),
        "validation rows trained on": as_rows[0] & as_rows[1],
    }


@case(
    "train-dpo-one-pair-repeated--exit-2-too-few-distinct",
    "error",
    ExitedNonZero,
    r"exit 2: dpoclaims: error: .*pairs\.jsonl holds 1 distinct pair\(s\) \(5 repeats dropped\); at least 2",
)
def train_dpo_one_pair_repeated(b: Bench):
    pairs = _lee_pairs(b, [("a", "b", "c")] * 6)
    cli(b, "train-dpo", "--base", str(b.files.base), "--pairs", str(pairs), "--out", str(b.tmp / "out"))


@case(
    "build-toy-seed-minus-1--exit-2-naming-the-range",
    "error",
    ExitedNonZero,
    r"exit 2: dpoclaims: error: --seed must be a whole number from 0 to 4294967295, not -1",
)
def build_toy_seed_minus_1(b: Bench):
    cli(b, "build-toy", "--seed", "-1")


@case(
    "build-toy-report-a-directory--exit-2-before-building",
    "error",
    ExitedNonZero,
    r"exit 2: dpoclaims: error: --report .*out is a directory; name a file",
)
def build_toy_report_a_directory(b: Bench):
    (b.tmp / "out").mkdir()
    try:
        cli(b, "build-toy", "--report", str(b.tmp / "out"))
    finally:
        assert not (b.tmp / "cache").exists()  # refused before the toy was built


@case(
    "build-toy-report-under-a-file--exit-2-naming-it",
    "error",
    ExitedNonZero,
    r"exit 2: dpoclaims: error: cannot create the directory of --report .*file/reports \(Not a directory\)",
)
def build_toy_report_under_a_file(b: Bench):
    (b.tmp / "file").write_text("x")
    cli(b, "build-toy", "--report", str(b.tmp / "file" / "reports" / "toy.json"))


@case(
    "train-probe-c-0--exit-2-asking-for-positive",
    "error",
    ExitedNonZero,
    r"exit 2: dpoclaims: error: --C \(inverse regularisation strength\) must be a positive, finite number, not 0\.0",
)
def train_probe_c_0(b: Bench):
    cli(
        b,
        "train-probe",
        "--base",
        str(b.files.base),
        "--csv",
        "x.csv",
        "--out",
        str(b.tmp / "p.pt"),
        "--C",
        "0",
    )


@case(
    "train-dpo-pairs-latin-1--exit-2-asking-for-utf-8",
    "error",
    ExitedNonZero,
    r"exit 2: dpoclaims: error: DPO pairs file .*pairs\.jsonl is not UTF-8 text \(invalid start byte at byte 17\)",
)
def train_dpo_pairs_latin_1(b: Bench):
    (b.tmp / "pairs.jsonl").write_bytes(b'{"prompt_text": "\xff"}\n')
    cli(
        b,
        "train-dpo",
        "--base",
        str(b.files.base),
        "--pairs",
        str(b.tmp / "pairs.jsonl"),
        "--out",
        str(b.tmp / "out"),
        "--device",
        "cpu",
    )


# ---- training settings and numeric options: finite and in range, one clear line


def _no_training(b: Bench) -> None:
    """Training (or a sweep's cells) must not start: a refusal comes first."""

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the work started: the option was not refused before it")

    b.monkeypatch.setattr("dpoclaims.train.dpo.train_dpo_from_files", refuse)
    b.monkeypatch.setattr("dpoclaims.runs.sweep.run_local", refuse)


def _train_dpo_option(id: str, option: str, value: str, match: str) -> None:
    @case(id, "error", ExitedNonZero, match)
    def train_dpo_option(b: Bench):
        _no_training(b)
        pairs = _lee_pairs(b, [("a", "b", "c"), ("d", "e", "f")])
        cli(b, "train-dpo", "--base", str(b.files.base), "--pairs", str(pairs), "--out", str(b.tmp / "out"),
            option, value)  # fmt: skip


_train_dpo_option(
    "train-dpo-beta-minus-0-5--exit-2-saying-it-would-prefer-the-rejected",
    "--beta",
    "-0.5",
    r"^exit 2: dpoclaims: error: --beta must be a positive, finite number, not -0\.5: DPO's beta scales the "
    r"preference margin, and at beta <= 0 the model would learn to prefer the rejected \(toxic\) continuations",
)
_train_dpo_option(
    "train-dpo-beta-0--exit-2-naming-it",
    "--beta",
    "0",
    r"^exit 2: dpoclaims: error: --beta must be a positive",
)
_train_dpo_option(
    "train-dpo-beta-nan--exit-2-one-line",
    "--beta",
    "nan",
    r"^exit 2: dpoclaims: error: --beta must be a positive, finite number, not nan[^\n]*$",
)
_train_dpo_option(
    "train-dpo-lr-nan--exit-2-without-the-zero-hint",
    "--lr",
    "nan",
    r"^exit 2: dpoclaims: error: --lr must be a positive, finite number, not nan$",
)
_train_dpo_option(
    "train-dpo-lr-inf--exit-2-naming-it",
    "--lr",
    "inf",
    r"^exit 2: dpoclaims: error: --lr must be a positive, finite number, not inf$",
)
_train_dpo_option(
    "train-dpo-max-length-0--exit-2-naming-it",
    "--max-length",
    "0",
    r"^exit 2: dpoclaims: error: --max-length must be at least 1, not 0$",
)


@case(
    "dpo-settings-beta-minus-1-in-the-library--refused-naming-it",
    "error",
    OptionError,
    r"--beta must be a positive, finite number, not -1\.0",
)
def dpo_settings_beta_minus_1_in_the_library(b: Bench):
    from dpoclaims.train.dpo import DPOSettings

    DPOSettings(beta=-1.0)


def _sweep_option(id: str, match: str, *options: str) -> None:
    @case(id, "error", ExitedNonZero, match)
    def sweep_option(b: Bench):
        _no_training(b)
        cli(
            b,
            "sweep",
            "--reports-dir",
            str(b.tmp / "reports"),
            "--claims-dir",
            str(ROOT / "claims"),
            *options,
        )

    return None


_sweep_option(
    "sweep-cpus-per-cell-nan--exit-2-one-line",
    r"^exit 2: dpoclaims: error: --cpus-per-cell must be positive and finite \(the CPU threads of each cell\), "
    r"not nan$",
    "--cpus-per-cell",
    "nan",
)
_sweep_option(
    "sweep-cpus-per-cell-inf--exit-2-one-line",
    r"^exit 2: dpoclaims: error: --cpus-per-cell must be positive and finite",
    "--cpus-per-cell",
    "inf",
)
_sweep_option(
    "sweep-gpus-per-cell-nan--exit-2-one-line",
    r"^exit 2: dpoclaims: error: --gpus-per-cell must be at least 0 and finite, not nan$",
    "--gpus-per-cell",
    "nan",
)
_sweep_option(
    "sweep-max-retries-minus-1--exit-2-naming-it",
    r"^exit 2: dpoclaims: error: --max-retries must be at least 0, not -1$",
    "--max-retries",
    "-1",
)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@case(
    "sweep-ray-address-answering-nothing--exit-2-within-30-s-naming-it",
    "error",
    ExitedNonZero,
    r"^exit 2: dpoclaims: error: no Ray cluster answers at 127\.0\.0\.1:\d+ \(Connection refused within 10 s\)",
)
def sweep_ray_address_answering_nothing(b: Bench):
    pytest.importorskip("ray", reason="the Ray engine needs ray: pip install -e '.[cluster]'")
    address = f"127.0.0.1:{_free_port()}"
    started = time.monotonic()
    try:
        b.run(
            [sys.executable, "-m", "dpoclaims.cli", "--cache-dir", str(b.tmp / "cache"), "sweep", "--engine", "ray",
             "--address", address, "--reports-dir", str(b.tmp / "reports"), "--claims-dir", str(ROOT / "claims")],
            timeout=60,
        )  # fmt: skip
    finally:
        assert time.monotonic() - started < 30


@case(
    "sweep-ray-address-not-host-and-port--exit-2-naming-the-forms",
    "error",
    ExitedNonZero,
    r"^exit 2: dpoclaims: error: --address must be host:port or ray://host:port \(or auto\), not 'head-node:port'",
)
def sweep_ray_address_not_host_and_port(b: Bench):
    pytest.importorskip("ray", reason="the Ray engine needs ray: pip install -e '.[cluster]'")
    _no_training(b)
    cli(b, "sweep", "--engine", "ray", "--address", "head-node:port", "--reports-dir", str(b.tmp / "reports"),
        "--claims-dir", str(ROOT / "claims"))  # fmt: skip


test_case = catalogue_test(CASES)
