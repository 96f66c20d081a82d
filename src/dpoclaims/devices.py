"""Which device to run on: ``--device auto|cpu|cuda|cuda:N``, pytest-xdist workers pinned to
GPUs, the device a (possibly dispatched) model takes its inputs on, and the CPU threads a build
runs on.

Depends on torch and :mod:`dpoclaims.errors` only, so the CLI, the pytest plugins and the
benchmarks can all import it cheaply.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager

import torch

from dpoclaims.errors import CheckpointError, OptionError

DEVICE_ENV = "DPOCLAIMS_DEVICE"
DEVICE_CHOICES = "auto, cpu, cuda or cuda:N"
_CUDA_PATTERN = re.compile(r"cuda(?::(\d+))?")
_XDIST_WORKER_PATTERN = re.compile(r"gw(\d+)")


def available_devices() -> list[str]:
    """``["cpu", "cuda:0", ...]``: what this process can run on."""
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return ["cpu"] + [f"cuda:{index}" for index in range(count)]


def _no_cuda_reason() -> str:
    if torch.version.cuda is None:
        return "this torch build has no CUDA support"
    return "torch sees no CUDA GPU (check CUDA_VISIBLE_DEVICES and the driver)"


def resolve_device(value: str | None) -> torch.device:
    """The device named by ``value`` (``auto``, ``cpu``, ``cuda`` or ``cuda:N``).

    ``None`` reads the environment variable ``DPOCLAIMS_DEVICE``, and ``auto`` when that is
    unset or empty. ``auto`` is the current CUDA device when CUDA is available, else the CPU.
    A bare ``cuda`` stays index-less (the current CUDA device; see :func:`xdist_worker_device`
    for pinning workers to GPUs). Raises :class:`OptionError`, naming what is available, for
    an unknown value, ``cuda`` where there is none, or ``cuda:N`` beyond the GPU count.
    """
    source = "--device"
    if value is None:
        from_environment = os.environ.get(DEVICE_ENV, "").strip()
        value, source = (from_environment, DEVICE_ENV) if from_environment else ("auto", source)
    name = value.strip().lower()
    available = ", ".join(available_devices())
    if name == "auto":
        return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    if name == "cpu":
        return torch.device("cpu")
    match = _CUDA_PATTERN.fullmatch(name)
    if match is None:
        raise OptionError(
            f"{source}={value!r} is not a device: choose {DEVICE_CHOICES} (available: {available})"
        )
    if not torch.cuda.is_available():
        raise OptionError(
            f"{source}={value!r} asks for CUDA, but {_no_cuda_reason()}; use --device cpu or auto "
            f"(available: {available})"
        )
    if match.group(1) is None:
        return torch.device("cuda")
    index = int(match.group(1))
    count = torch.cuda.device_count()
    if index >= count:
        raise OptionError(
            f"{source}={value!r}: there {'is' if count == 1 else 'are'} only {count} CUDA "
            f"GPU{'' if count == 1 else 's'} (available: {available})"
        )
    return torch.device("cuda", index)


def xdist_worker_device(worker_id: str, requested: torch.device) -> torch.device:
    """The device a pytest-xdist worker uses: worker ``gwI`` gets GPU ``I mod count`` when CUDA
    is requested without an index. An explicit ``cuda:N``, the CPU, and a run without xdist
    (``worker_id`` ``"master"``) keep ``requested`` as it is."""
    if requested.type != "cuda" or requested.index is not None:
        return requested
    if worker_id == "master":
        return requested
    match = _XDIST_WORKER_PATTERN.fullmatch(worker_id)
    if match is None:
        raise OptionError(f"unexpected pytest-xdist worker id {worker_id!r} (expected 'gw<N>' or 'master')")
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count == 0:
        raise OptionError(
            f"worker {worker_id} asks for CUDA, but {_no_cuda_reason()} (available: {', '.join(available_devices())})"
        )
    return torch.device("cuda", int(match.group(1)) % count)


def module_device(model: torch.nn.Module) -> torch.device:
    """The device a model takes its inputs on.

    Without a device map, the device of its first parameter. With one (``device_map="auto"``,
    the model spread over several devices by accelerate), the device of its input embedding:
    the execution device accelerate assigned to it when it has one (an offloaded embedding's
    weight sits on ``meta``), else its weight's device.
    """
    if getattr(model, "hf_device_map", None):
        get_embeddings = getattr(model, "get_input_embeddings", None)
        embedding = get_embeddings() if callable(get_embeddings) else None
        if embedding is not None:
            execution_device = getattr(getattr(embedding, "_hf_hook", None), "execution_device", None)
            if execution_device is not None:
                if isinstance(execution_device, int):
                    return torch.device("cuda", execution_device)
                return torch.device(execution_device)
            return embedding.weight.device
    try:
        return next(model.parameters()).device
    except StopIteration:
        raise CheckpointError(
            f"{type(model).__name__} has no parameters, so it has no device to take inputs on"
        ) from None


@contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """Torch runs on ``count`` CPU threads inside, on the caller's count again after. A build
    fixes its count, whatever the caller uses (e.g. a one-thread xdist worker): float sums depend
    on the thread count, and DPO amplifies such differences."""
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
