"""``--device`` on the claims suite and the CLI commands: a bad value, or CUDA where there is
none, is one clear error naming what is available; xdist workers are pinned to GPUs; the toy's
reference build stays on the CPU. CUDA branches run on CPU with torch.cuda patched."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from dpoclaims.cli import main
from dpoclaims.devices import DEVICE_ENV
from dpoclaims.plugin.options import SuiteOptions, _worker_device
from dpoclaims.plugin.resources import load_options
from dpoclaims.train.organism.build import ToyConfig, toy_key

ROOT = Path(__file__).resolve().parent.parent
pytest_plugins = ["pytester"]


def fake_gpus(monkeypatch: pytest.MonkeyPatch, count: int) -> list[torch.device]:
    """Make torch report ``count`` CUDA GPUs; returns the list ``set_device`` calls append to."""
    current: list[torch.device] = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: count > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
    monkeypatch.setattr(torch.cuda, "set_device", lambda device: current.append(torch.device(device)))
    return current


@pytest.fixture(autouse=True)
def no_device_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(DEVICE_ENV, raising=False)


COMMANDS = {
    "build-toy": ["build-toy", "--print-key"],
    "info": ["info", "--pair", "toy"],
    "train-dpo": ["train-dpo", "--base", "base", "--pairs", "pairs.jsonl", "--out", "out"],
    "train-probe": ["train-probe", "--base", "base", "--csv", "comments.csv", "--out", "probe.pt"],
}


@pytest.mark.parametrize("command", sorted(COMMANDS))
@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("tpu", "--device='tpu' is not a device: choose auto, cpu, cuda or cuda:N (available: cpu)"),
        ("cuda", "--device='cuda' asks for CUDA"),
        ("cuda:1", "--device='cuda:1' asks for CUDA"),
    ],
)
def test_cli_device_errors_name_what_is_available(command, value, message, tmp_path, capsys, monkeypatch):
    fake_gpus(monkeypatch, 0)
    monkeypatch.chdir(tmp_path)
    code = main(["--cache-dir", str(tmp_path / "cache"), *COMMANDS[command], "--device", value])
    captured = capsys.readouterr()
    assert code == 2 and captured.out == ""
    assert captured.err.startswith("dpoclaims: error: ") and message in captured.err
    assert "(available: cpu)" in captured.err and "Traceback" not in captured.err
    assert not (tmp_path / "cache").exists()  # refused before any work


def test_cli_reads_the_environment_except_for_the_reference_toy(tmp_path, capsys, monkeypatch):
    fake_gpus(monkeypatch, 0)
    monkeypatch.setenv(DEVICE_ENV, "cuda:2")
    assert main(["info", "--pair", "toy"]) == 2
    assert "DPOCLAIMS_DEVICE='cuda:2' asks for CUDA" in capsys.readouterr().err
    # build-toy builds the reference toy on the CPU unless --device says otherwise
    assert main(["build-toy", "--print-key"]) == 0
    assert capsys.readouterr().out.strip() == toy_key(ToyConfig())


def test_a_toy_built_on_cuda_has_its_own_key(capsys, monkeypatch):
    fake_gpus(monkeypatch, 1)
    config = ToyConfig()
    assert toy_key(config) == toy_key(config, "cpu")
    assert toy_key(config, "cuda") == toy_key(config, "cuda:0") != toy_key(config)
    assert main(["build-toy", "--print-key", "--device", "cuda"]) == 0
    assert capsys.readouterr().out.strip() == toy_key(config, "cuda")


def test_info_names_the_device(gpt2_pair_files, tmp_path, capsys):
    import json

    assert main(["info", "--pair", str(gpt2_pair_files.spec), "--device", "cpu"]) == 0
    assert json.loads(capsys.readouterr().out)["device"] == "cpu"


# --------------------------------------------------------------------------- the suite


def test_xdist_workers_are_pinned_to_gpus_round_robin(monkeypatch):
    current = fake_gpus(monkeypatch, 2)
    devices = [_worker_device({"workerid": f"gw{i}", "workercount": 4}, "cuda") for i in range(4)]
    assert devices == [torch.device("cuda", i) for i in (0, 1, 0, 1)]
    assert current == devices  # each worker's current CUDA device is its own GPU
    # an explicit index is every worker's
    assert _worker_device({"workerid": "gw3", "workercount": 4}, "cuda:1") == torch.device("cuda", 1)


def test_cpu_workers_share_the_cores(monkeypatch):
    fake_gpus(monkeypatch, 0)
    threads: list[int] = []
    monkeypatch.setattr(torch, "set_num_threads", threads.append)
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    assert _worker_device({"workerid": "gw1", "workercount": 2}, "cpu") == torch.device("cpu")
    assert threads == [4]


def options(**changes) -> SuiteOptions:
    values = dict(
        pair="toy",
        max_prompts=None,
        cache_dir=None,
        reports_dir=Path("reports"),
        convention="v1",
        scorer=None,
        dtype="bfloat16",
        device_map=None,
        perplexity="claims",
        device="cuda:1",
    )
    return SuiteOptions(**(values | changes))


def test_the_pair_loads_on_the_device_unless_a_device_map_places_it():
    assert load_options(options()) == {
        "dtype": torch.bfloat16,
        "device_map": None,
        "device": torch.device("cuda", 1),
    }
    assert load_options(options(device_map="auto"))["device"] is None


@pytest.fixture
def suite(pytester, tmp_path, monkeypatch):
    pytester.makepyfile(
        test_nothing="def test_nothing(suite_options):\n    print('device', suite_options.device)\n"
    )
    monkeypatch.setenv("DPOCLAIMS_CACHE", str(tmp_path / "cache"))
    return pytester


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (
            ["--device", "tpu"],
            None,
            "*--device='tpu' is not a device: choose auto, cpu, cuda or cuda:N (available: cpu*",
        ),
        (["--device", "cuda:99"], None, "*--device='cuda:99'*(available: cpu*"),
        ([], "cuda:99", "*DPOCLAIMS_DEVICE='cuda:99'*(available: cpu*"),
    ],
)
def test_the_suite_refuses_a_bad_device(suite, tmp_path, monkeypatch, args, env, message):
    if env:
        monkeypatch.setenv(DEVICE_ENV, env)
    result = suite.runpytest_subprocess("-p", "no:cacheprovider", "--reports-dir", str(tmp_path / "r"), *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])


def test_the_suite_runs_on_the_cpu(suite, tmp_path):
    result = suite.runpytest_subprocess(
        "-p", "no:cacheprovider", "-s", "--reports-dir", str(tmp_path / "r"), "--device", "cpu", "-n", "2"
    )
    result.assert_outcomes(passed=1)
