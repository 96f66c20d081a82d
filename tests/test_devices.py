"""Device selection: ``auto|cpu|cuda|cuda:N`` (and DPOCLAIMS_DEVICE), xdist workers pinned to
GPUs, and the input device of a model. CUDA branches run on CPU with torch.cuda patched."""

from __future__ import annotations

import pytest
import torch

from dpoclaims.devices import (
    DEVICE_ENV,
    available_devices,
    module_device,
    resolve_device,
    xdist_worker_device,
)
from dpoclaims.errors import CheckpointError, OptionError


def fake_gpus(monkeypatch: pytest.MonkeyPatch, count: int) -> None:
    """Make torch report ``count`` CUDA GPUs (0: none) without touching a real one."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: count > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)


@pytest.fixture(autouse=True)
def no_device_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(DEVICE_ENV, raising=False)


@pytest.mark.parametrize("value", ["cpu", "CPU", " cpu "])
def test_cpu_is_always_available(monkeypatch, value):
    fake_gpus(monkeypatch, 0)
    assert resolve_device(value) == torch.device("cpu")


def test_auto_is_cpu_without_cuda_and_cuda_with_it(monkeypatch):
    fake_gpus(monkeypatch, 0)
    assert resolve_device("auto") == torch.device("cpu")
    fake_gpus(monkeypatch, 2)
    assert resolve_device("auto") == torch.device("cuda")


def test_none_reads_the_environment_then_defaults_to_auto(monkeypatch):
    fake_gpus(monkeypatch, 2)
    assert resolve_device(None) == torch.device("cuda")
    monkeypatch.setenv(DEVICE_ENV, "cpu")
    assert resolve_device(None) == torch.device("cpu")
    monkeypatch.setenv(DEVICE_ENV, "cuda:1")
    assert resolve_device(None) == torch.device("cuda", 1)
    monkeypatch.setenv(DEVICE_ENV, "")
    assert resolve_device(None) == torch.device("cuda")
    assert resolve_device("cpu") == torch.device("cpu")  # an explicit value wins over the environment


def test_cuda_and_cuda_index(monkeypatch):
    fake_gpus(monkeypatch, 2)
    assert resolve_device("cuda") == torch.device("cuda")
    assert resolve_device("cuda:0") == torch.device("cuda", 0)
    assert resolve_device("cuda:1") == torch.device("cuda", 1)


@pytest.mark.parametrize("value", ["cuda", "cuda:0"])
def test_cuda_without_a_gpu_names_what_is_available(monkeypatch, value):
    fake_gpus(monkeypatch, 0)
    with pytest.raises(OptionError, match=r"asks for CUDA.*\(available: cpu\)"):
        resolve_device(value)


def test_cuda_index_beyond_the_count_names_the_gpus(monkeypatch):
    fake_gpus(monkeypatch, 2)
    with pytest.raises(OptionError, match=r"only 2 CUDA GPUs \(available: cpu, cuda:0, cuda:1\)"):
        resolve_device("cuda:2")
    fake_gpus(monkeypatch, 1)
    with pytest.raises(OptionError, match=r"only 1 CUDA GPU \(available: cpu, cuda:0\)"):
        resolve_device("cuda:1")


@pytest.mark.parametrize("value", ["gpu", "mps", "cuda:", "cuda:x", "cuda:-1", "cuda0", "", "cpu:0"])
def test_bad_values_name_the_choices_and_what_is_available(monkeypatch, value):
    fake_gpus(monkeypatch, 1)
    with pytest.raises(
        OptionError, match=r"is not a device: choose auto, cpu, cuda or cuda:N \(available: cpu, cuda:0\)"
    ):
        resolve_device(value)


def test_a_bad_environment_value_is_reported_as_the_environment_variable(monkeypatch):
    fake_gpus(monkeypatch, 0)
    monkeypatch.setenv(DEVICE_ENV, "gpu")
    with pytest.raises(OptionError, match=f"{DEVICE_ENV}='gpu' is not a device"):
        resolve_device(None)


def test_available_devices(monkeypatch):
    fake_gpus(monkeypatch, 0)
    assert available_devices() == ["cpu"]
    fake_gpus(monkeypatch, 3)
    assert available_devices() == ["cpu", "cuda:0", "cuda:1", "cuda:2"]


def test_xdist_workers_are_pinned_to_gpus_round_robin(monkeypatch):
    fake_gpus(monkeypatch, 2)
    cuda = torch.device("cuda")
    assert [xdist_worker_device(f"gw{i}", cuda) for i in range(5)] == [
        torch.device("cuda", i % 2) for i in range(5)
    ]
    assert xdist_worker_device("master", cuda) == cuda  # no xdist: the current device
    assert xdist_worker_device("gw3", torch.device("cuda", 1)) == torch.device(
        "cuda", 1
    )  # explicit index kept
    assert xdist_worker_device("gw3", torch.device("cpu")) == torch.device("cpu")


def test_xdist_worker_device_errors(monkeypatch):
    fake_gpus(monkeypatch, 0)
    assert xdist_worker_device("gw1", torch.device("cpu")) == torch.device("cpu")
    with pytest.raises(OptionError, match=r"available: cpu"):
        xdist_worker_device("gw1", torch.device("cuda"))
    fake_gpus(monkeypatch, 1)
    with pytest.raises(OptionError, match="unexpected pytest-xdist worker id"):
        xdist_worker_device("worker-1", torch.device("cuda"))


def test_module_device_is_the_first_parameter_device():
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 2))
    assert module_device(model) == torch.device("cpu")
    model[0].to("meta")
    assert module_device(model) == torch.device("meta")


class _Dispatched(torch.nn.Module):
    """A model with a device map: its first parameter is elsewhere than its input embedding."""

    def __init__(self, embedding_device: str) -> None:
        super().__init__()
        self.head = torch.nn.Linear(2, 2, device="meta")  # registered first
        self.embed = torch.nn.Embedding(4, 2, device=embedding_device)
        self.hf_device_map = {"head": "disk", "embed": embedding_device}

    def get_input_embeddings(self) -> torch.nn.Module:
        return self.embed


class _ExecutionHook:
    def __init__(self, execution_device: object) -> None:
        self.execution_device = execution_device


def test_module_device_with_a_device_map_is_the_embedding_device():
    model = _Dispatched("cpu")
    assert next(model.parameters()).device == torch.device("meta")
    assert module_device(model) == torch.device("cpu")


@pytest.mark.parametrize(
    ("execution_device", "expected"),
    [
        (0, torch.device("cuda", 0)),
        ("cuda:1", torch.device("cuda", 1)),
        (torch.device("cpu"), torch.device("cpu")),
    ],
)
def test_module_device_prefers_accelerates_execution_device(execution_device, expected):
    model = _Dispatched("meta")  # an offloaded embedding: its weight is a meta placeholder
    model.embed._hf_hook = _ExecutionHook(execution_device)
    assert module_device(model) == expected


def test_module_device_of_a_model_without_parameters():
    with pytest.raises(CheckpointError, match="has no parameters"):
        module_device(torch.nn.ReLU())
