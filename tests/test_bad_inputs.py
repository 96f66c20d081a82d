"""The catalogue of bad inputs and faults (issue #10): every case with its exact outcome.

Three outcome categories, one test function each, so that the test ids are the catalogue
(``pytest --collect-only -q tests/test_bad_inputs.py`` lists it):

- ``error``: a specific error (its class and a distinctive part of its message), a failed
  test with the message (``pytest.fail``), or a non-zero exit with one clear line;
- ``recovery``: the fault is repaired and the numbers are identical (bytes, ``torch.equal``)
  to those of a run without it;
- ``skip``: an optional download that was not provided skips, with the reason.

Other tests (test_pair_errors.py, test_pairs_loading.py, test_data.py, test_cache.py,
test_files.py) hold more detailed checks of some of these cases.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import pytest
import torch
from safetensors.torch import load_file, save_file
from tiny import D_MODEL, PairFiles, claim_record, write_spec

from dpoclaims.cache import MANIFEST, Cache, verify_entry
from dpoclaims.errors import (
    CacheError,
    CheckpointError,
    ConfigWeightsMismatchError,
    DegenerateProbeError,
    IdenticalModelsError,
    MissingDownload,
    NonFiniteWeightsError,
    PairMismatchError,
    ReportError,
    TooFewPromptsError,
    UnknownPairError,
    UnknownSourceError,
)
from dpoclaims.files import PICKLE_GLOBALS_ENV
from dpoclaims.measure.capture import Capture
from dpoclaims.measure.generation import GenerationSettings
from dpoclaims.measure.measurements import Measurements, MeasurementSettings
from dpoclaims.measure.prompts import MIN_USABLE_PROMPTS, UnusablePromptSet
from dpoclaims.models.pairs import ModelPair
from dpoclaims.plugin.options import SuiteOptions, suite_options
from dpoclaims.plugin.resources import load_suite_pair, suite_measurements
from dpoclaims.train.named_pairs import load_pair

ROOT = Path(__file__).resolve().parent.parent
Category = Literal["error", "recovery", "skip"]
PROMPTS = [f"the plan {i} seems" for i in range(MIN_USABLE_PROMPTS + 2)]  # [12]
NEUTRAL = ["the plan seems fair and clear", "we met at noon and talked"]
# Small batches, so that a capture runs several (a kill can land between two); part of the cache key.
BATCH_SIZE = 4
SETTINGS = MeasurementSettings(generation=GenerationSettings(batch_size=BATCH_SIZE))
PAPER_PAIR_ENV = (
    "DPOCLAIMS_GPT2_BASE",
    "DPOCLAIMS_GPT2_DPO",
    "DPOCLAIMS_GPT2_PROBE",
    "DPOCLAIMS_RTP_PATH",
    "DPOCLAIMS_WIKITEXT_PATH",
)
NOT_DOWNLOADED = "dpoclaims-tests/never-downloaded"  # a hub id no cache holds


# --------------------------------------------------------------------------- the bench


@dataclass(frozen=True)
class Measured:
    """The tiny pair with a 12-prompt challenge set, and its capture of the base side made
    without any fault (the reference every recovery is compared with)."""

    spec: Path
    pair: ModelPair
    entry: Path  # the reference capture's cache entry
    capture: Capture


@pytest.fixture(scope="module")
def measured(tmp_path_factory: pytest.TempPathFactory, gpt2_pair_files: PairFiles) -> Measured:
    root = tmp_path_factory.mktemp("measured")
    (root / "prompts.json").write_text(json.dumps(PROMPTS))
    (root / "neutral.json").write_text(json.dumps(NEUTRAL))
    spec = write_spec(
        root / "pair.toml",
        name="tiny",
        base=str(gpt2_pair_files.base),
        dpo=str(gpt2_pair_files.dpo),
        probe=str(gpt2_pair_files.probe),
        extras={"challenge_prompts": "prompts.json", "neutral_texts": "neutral.json"},
    )
    cache = Cache(root / "cache")
    pair = load_pair(spec, cache=cache)
    capture = Measurements(pair, cache, SETTINGS, progress=False).capture("base")
    (entry,) = _capture_entries(cache.root)
    return Measured(spec, pair, entry, capture)


def _capture_entries(cache_root: Path) -> list[Path]:
    return sorted(p for p in (cache_root / "capture").iterdir() if p.is_dir() and not p.name.startswith("."))


def _entry_bytes(entry: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(entry)): p.read_bytes()
        for p in sorted(entry.rglob("*"))
        if p.is_file() and p.name != MANIFEST
    }


class ExitedNonZero(Exception):
    """A command that exited non-zero: its status and output, for the error cases' match."""


@dataclass
class Bench:
    tmp: Path
    files: PairFiles
    monkeypatch: pytest.MonkeyPatch
    request: pytest.FixtureRequest

    @property
    def cache(self) -> Cache:
        return Cache(self.tmp / "cache")

    @property
    def measured(self) -> Measured:
        return self.request.getfixturevalue("measured")

    def spec(self, name: str = "pair.toml", **overrides: Any) -> Path:
        """A spec of the tiny pair (absolute paths) with ``overrides``; None removes a key."""
        keys: dict[str, Any] = dict(
            name="bad",
            base=str(self.files.base),
            dpo=str(self.files.dpo),
            probe=str(self.files.probe),
            tokenizer=str(self.files.tokenizer),
        )
        keys.update(overrides)
        return write_spec(self.tmp / name, **{k: v for k, v in keys.items() if v is not None})

    def raw_spec(self, text: str, name: str = "pair.toml") -> Path:
        path = self.tmp / name
        path.write_text(text)
        return path

    def load(self, pair: str | Path) -> ModelPair:
        return load_pair(pair, cache=self.cache)

    def options(self, pair: str | Path, **overrides: Any) -> SuiteOptions:
        values: dict[str, Any] = dict(
            pair=str(pair),
            max_prompts=None,
            cache_dir=self.tmp / "cache",
            reports_dir=self.tmp / "reports",
            convention="v1",
            scorer=None,
            dtype="float32",
            device_map=None,
            perplexity="claims",
        )
        values.update(overrides)
        return SuiteOptions(**values)

    def suite_pair(self, pair: str | Path, **overrides: Any) -> ModelPair:
        """The claims suite's ``pair`` fixture, as it runs."""
        return load_suite_pair(self.options(pair, **overrides), self.cache)

    def dpo_pt(
        self, state: dict[str, torch.Tensor] | None = None, name: str = "dpo.pt", **extra: Any
    ) -> Path:
        """Lee et al.'s format: the tiny DPO model's state dict (or ``state``) under "state"."""
        if state is None:
            state = torch.load(self.files.dpo_pt, weights_only=True)["state"]
        torch.save({"state": state, **extra}, self.tmp / name)
        return self.tmp / name

    def model_dir(self, source: Path, name: str) -> Path:
        """A copy of an HF model directory, to be damaged."""
        target = self.tmp / name
        shutil.copytree(source, target)
        return target

    def probe(self, value: Any) -> Path:
        torch.save(value, self.tmp / "probe.pt")
        return self.tmp / "probe.pt"

    def prompts_pair(self, challenge: str | list[str] | None, filename: str = "prompts.json") -> ModelPair:
        """The measured pair with a challenge prompt file of ``challenge`` (a list is written
        as JSON, a string as is; None names no file)."""
        pair = self.measured.pair
        extras = {"neutral_texts": str(pair.extra_path("neutral_texts"))}
        if challenge is not None:
            path = self.tmp / filename
            path.write_text(challenge if isinstance(challenge, str) else json.dumps(challenge))
            extras["challenge_prompts"] = str(path)
        return replace(pair, spec=replace(pair.spec, extras=extras))

    def measurements(self, pair: ModelPair, settings: MeasurementSettings = SETTINGS) -> Measurements:
        return Measurements(pair, self.cache, settings, progress=False)

    def run(self, command: list[str], timeout: float = 300) -> str:
        """Run ``command`` at the repository root; its output if it exits 0, else ExitedNonZero
        with the status and the output. Either way, no traceback may be in the output."""
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
        output = done.stdout + done.stderr
        assert "Traceback" not in output and "INTERNALERROR" not in output, output[-3000:]
        if done.returncode != 0:
            raise ExitedNonZero(f"exit {done.returncode}: {output.strip()}")
        return output

    def pytest_command(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", *args]


@pytest.fixture
def bench(tmp_path, gpt2_pair_files, monkeypatch, request) -> Bench:
    for name in (*PAPER_PAIR_ENV, PICKLE_GLOBALS_ENV, "DPOCLAIMS_MAX_PROMPTS", "DPOCLAIMS_CONVENTION"):
        monkeypatch.delenv(name, raising=False)
    for name in ("DPOCLAIMS_SCORER", "DPOCLAIMS_DTYPE", "DPOCLAIMS_PERPLEXITY", "DPOCLAIMS_PAIR"):
        monkeypatch.delenv(name, raising=False)
    return Bench(tmp_path, gpt2_pair_files, monkeypatch, request)


# --------------------------------------------------------------------------- the cases


@dataclass(frozen=True)
class Case:
    id: str
    category: Category
    act: Callable[[Bench], Any]
    raises: type[BaseException] | None = None  # error and skip: what the act must raise
    match: str = ""  # a distinctive part of its message (a regular expression)


CASES: list[Case] = []


def case(id: str, category: Category, raises: type[BaseException] | None = None, match: str = ""):
    def register(act: Callable[[Bench], Any]) -> Callable[[Bench], Any]:
        CASES.append(Case(id, category, act, raises, match))
        return act

    return register


# ---- specs


@case(
    "spec-missing-keys",
    "error",
    UnknownPairError,
    r"lacks the required keys \['dpo'\] \(needs base, dpo, probe\)",
)
def _(b: Bench):
    b.load(b.spec(dpo=None))


@case("spec-unknown-keys", "error", UnknownPairError, r"has unknown keys \['checkpoint', 'colour'\]; known:")
def _(b: Bench):
    b.load(b.spec(checkpoint="x", colour="blue"))


@case(
    "spec-extras-as-list", "error", UnknownPairError, r"'extras' must be a table of name = \"path\" entries"
)
def _(b: Bench):
    b.load(b.raw_spec('base = "b"\ndpo = "d"\nprobe = "p.pt"\nextras = ["prompts.json"]\n'))


@case("spec-extras-as-list-in-dpoclaims-info", "error", ExitedNonZero, r"exit 2: .*'extras' must be a table")
def _(b: Bench):
    spec = b.raw_spec('base = "b"\ndpo = "d"\nprobe = "p.pt"\nextras = ["prompts.json"]\n')
    b.run(
        [
            sys.executable,
            "-m",
            "dpoclaims.cli",
            "--cache-dir",
            str(b.tmp / "cache"),
            "info",
            "--pair",
            str(spec),
        ]
    )


@case(
    "spec-value-not-a-string",
    "error",
    UnknownPairError,
    r"'base' must be a non-empty string \(a path or hub id\), not 3",
)
def _(b: Bench):
    b.load(b.raw_spec('base = 3\ndpo = "d"\nprobe = "p.pt"\n'))


@case("spec-bad-toml", "error", UnknownPairError, r"cannot read pair spec .*pair\.toml: ")
def _(b: Bench):
    b.load(b.raw_spec('base = ["unclosed\n'))


@case("spec-bad-json", "error", UnknownPairError, r"cannot read pair spec .*pair\.json: Expecting")
def _(b: Bench):
    b.load(b.raw_spec("{not json", name="pair.json"))


@case(
    "spec-wrong-suffix", "error", UnknownPairError, r"pair spec .*pair\.yaml must be a \.toml or \.json file"
)
def _(b: Bench):
    b.load(b.raw_spec("base: x\n", name="pair.yaml"))


@case(
    "spec-unknown-pair-name",
    "error",
    UnknownPairError,
    r"unknown pair 'no_such_pair': not a named pair \(gpt2-medium, smollm2, toy, toy-seedN\)",
)
def _(b: Bench):
    b.monkeypatch.chdir(b.tmp)
    b.load("no_such_pair")


@case(
    "spec-relative-path-outside-spec-dir",
    "error",
    CheckpointError,
    r"'base' is not in the spec's directory .*a 'base' exists in the current directory",
)
def _(b: Bench):
    cwd = b.tmp / "elsewhere"
    shutil.copytree(b.files.base, cwd / "base")
    b.monkeypatch.chdir(cwd)
    (b.tmp / "spec").mkdir()
    b.load(b.spec(name="spec/pair.toml", base="base"))


@case(
    "spec-relative-path-in-a-missing-subdirectory",
    "error",
    CheckpointError,
    r"model checkpoint '.*/models/base' does not exist",
)
def _(b: Bench):
    """Taken as a path, not as the hub id 'models/base': the spec's directory holds 'models'."""
    (b.tmp / "models").mkdir()
    b.load(b.spec(base="models/base"))


def _online_without_network(b: Bench) -> list[str]:
    """The hub flags say online, but every connection fails at once; returns the log of
    connection attempts."""
    import socket

    import huggingface_hub.constants

    b.monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        b.monkeypatch.setenv(name, "0")
    attempts: list[str] = []

    def refuse(*args: Any, **kwargs: Any) -> Any:
        attempts.append(repr(args[:1]))
        raise OSError("network unreachable")

    b.monkeypatch.setattr(socket, "create_connection", refuse)
    b.monkeypatch.setattr(socket.socket, "connect", refuse)
    b.monkeypatch.setattr(socket, "getaddrinfo", refuse)
    return attempts


@case(
    "spec-bare-name-not-found",
    "error",
    UnknownSourceError,
    r"model checkpoint 'mybase' is neither an existing path nor a hub id",
)
def _(b: Bench):
    """Refused before any network access, with the hub flags saying online."""
    attempts = _online_without_network(b)
    b.monkeypatch.chdir(b.tmp)
    try:
        b.load(b.spec(base="mybase"))
    finally:
        assert attempts == []


@case(
    "spec-hub-id-not-downloaded-no-network",
    "error",
    MissingDownload,
    r"model 'dpoclaims-tests/never-downloaded' is not in the local Hugging Face cache and there is no "
    r"network \(cannot reach https?://",
)
def _(b: Bench):
    """Said at once instead of the download client's retries (1 + 2 + 4 + 8 + 8 s of back-off):
    a quick look at the hub (huggingface_hub may make one request of its own while building
    headers for the local-cache lookup)."""
    attempts = _online_without_network(b)
    started = time.monotonic()
    try:
        b.load(b.spec(base=NOT_DOWNLOADED))
    finally:
        assert 1 <= len(attempts) <= 2 and time.monotonic() - started < 15, attempts


@case(
    "spec-hub-id-offline-not-downloaded",
    "error",
    MissingDownload,
    r"model 'dpoclaims-tests/never-downloaded' is not in the local Hugging Face cache and the hub is offline",
)
def _(b: Bench):
    b.load(b.spec(base=NOT_DOWNLOADED))


def _hub_cache_with_the_base(b: Bench, *repo_ids: str) -> None:
    """A Hugging Face cache (the layout ``from_pretrained`` reads) holding the tiny base under
    ``repo_ids``, made the cache of this test."""
    import huggingface_hub.constants

    commit = "0" * 40
    for repo_id in repo_ids:
        repo = b.tmp / "hub" / ("models--" + repo_id.replace("/", "--"))
        shutil.copytree(b.files.base, repo / "snapshots" / commit)
        (repo / "refs").mkdir()
        (repo / "refs" / "main").write_text(commit)
    b.monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(b.tmp / "hub"))


@case("spec-hub-id-from-the-local-cache-offline", "recovery")
def _(b: Bench):
    _hub_cache_with_the_base(b, "dpoclaims-tests/tiny-base")
    pair = b.load(b.spec(base="dpoclaims-tests/tiny-base", tokenizer="dpoclaims-tests/tiny-base"))
    return {"fingerprint": b.measured.pair.fingerprint}, {"fingerprint": pair.fingerprint}


@case("spec-bare-name-found-in-the-local-cache", "recovery")
def _(b: Bench):
    """A bare name is a hub id when the local cache holds it (the cache decides, offline)."""
    _hub_cache_with_the_base(b, "tinybase")
    b.monkeypatch.chdir(b.tmp)
    pair = b.load(b.spec(base="tinybase", tokenizer="tinybase"))
    return {"fingerprint": b.measured.pair.fingerprint}, {"fingerprint": pair.fingerprint}


# ---- checkpoints


def _truncated(b: Bench) -> Path:
    data = b.files.dpo_pt.read_bytes()
    (b.tmp / "dpo.pt").write_bytes(data[: len(data) // 2])
    return b.tmp / "dpo.pt"


@case(
    "checkpoint-truncated-dpo-pt",
    "error",
    CheckpointError,
    r"cannot read state-dict file .*dpo\.pt \(corrupt, or not a plain torch file\)",
)
def _(b: Bench):
    b.load(b.spec(dpo=str(_truncated(b))))


class _WritesAMarker:
    """Unpickling this would create a directory: code run by merely loading the file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.makedirs, (str(self.marker),))


@case(
    "checkpoint-dpo-pt-carrying-code",
    "error",
    CheckpointError,
    r"dpo\.pt needs pickle globals that safe loading refuses: os\.makedirs\. Unpickling them can run code",
)
def _(b: Bench):
    marker = b.tmp / "code-ran"
    path = b.dpo_pt(payload=_WritesAMarker(marker))
    try:
        b.load(b.spec(dpo=str(path)))
    finally:
        assert not marker.exists()


@case(
    "checkpoint-dpo-identical-to-base",
    "error",
    IdenticalModelsError,
    r"the DPO model .*base' has exactly the weights of the base .*: there is no fine-tune to study",
)
def _(b: Bench):
    b.load(b.spec(dpo=str(b.files.base)))


@case(
    "checkpoint-dpo-pt-identical-to-base",
    "error",
    IdenticalModelsError,
    r"the DPO model .*dpo\.pt' has exactly the weights of the base",
)
def _(b: Bench):
    from transformers import AutoModelForCausalLM

    base_state = AutoModelForCausalLM.from_pretrained(b.files.base).state_dict()
    b.load(b.spec(dpo=str(b.dpo_pt(base_state))))


@case(
    "checkpoint-nan-dpo-weights",
    "error",
    NonFiniteWeightsError,
    r"the DPO model .*dpo\.pt' has NaN or infinite weights in 1 tensors: transformer\.h\.0\.mlp\.c_proj\.weight \(4096 of 4096 entries\)",
)
def _(b: Bench):
    state = torch.load(b.files.dpo_pt, weights_only=True)["state"]
    state["transformer.h.0.mlp.c_proj.weight"] = torch.full_like(
        state["transformer.h.0.mlp.c_proj.weight"], float("nan")
    )
    b.load(b.spec(dpo=str(b.dpo_pt(state))))


@case(
    "checkpoint-inf-base-weight",
    "error",
    NonFiniteWeightsError,
    r"the base model .*base_inf' has NaN or infinite weights in 1 tensors: transformer\.h\.1\.attn\.c_attn\.weight \(1 of",
)
def _(b: Bench):
    base = b.model_dir(b.files.base, "base_inf")
    weights = load_file(str(base / "model.safetensors"))
    weights["transformer.h.1.attn.c_attn.weight"][3, 5] = float("inf")
    save_file(weights, str(base / "model.safetensors"), metadata={"format": "pt"})
    b.load(b.spec(base=str(base)))


def _with_config(b: Bench, name: str, **changes: Any) -> Path:
    directory = b.model_dir(b.files.dpo, name)
    config = json.loads((directory / "config.json").read_text())
    config.update(changes)
    (directory / "config.json").write_text(json.dumps(config))
    return directory


@case(
    "checkpoint-config-weights-shape-mismatch",
    "error",
    ConfigWeightsMismatchError,
    r"its config\.json does not describe its weights: 6 tensors have another shape in the weights than in the config, e\.g\. transformer\.h\.0\.mlp\.c_fc\.bias: weights \(128,\), config \(64,\)",
)
def _(b: Bench):
    b.load(b.spec(dpo=str(_with_config(b, "dpo_n_inner", n_inner=64))))


@case(
    "checkpoint-config-fewer-layers-than-weights",
    "error",
    ConfigWeightsMismatchError,
    r"11 tensors in the weights have no place in the config's architecture, e\.g\. \['transformer\.h\.1\.",
)
def _(b: Bench):
    b.load(b.spec(dpo=str(_with_config(b, "dpo_n_layer", n_layer=1))))


@case(
    "checkpoint-weights-lack-a-tensor",
    "error",
    ConfigWeightsMismatchError,
    r"1 tensors are missing from the weights, e\.g\. \['transformer\.h\.1\.mlp\.c_proj\.weight'\]",
)
def _(b: Bench):
    directory = b.model_dir(b.files.dpo, "dpo_lacking")
    weights = load_file(str(directory / "model.safetensors"))
    del weights["transformer.h.1.mlp.c_proj.weight"]
    save_file(weights, str(directory / "model.safetensors"), metadata={"format": "pt"})
    b.load(b.spec(dpo=str(directory)))


@case(
    "checkpoint-dir-without-config",
    "error",
    CheckpointError,
    r"dpo_noconfig' is not a Hugging Face model directory \(no config\.json\)",
)
def _(b: Bench):
    directory = b.model_dir(b.files.dpo, "dpo_noconfig")
    (directory / "config.json").unlink()
    b.load(b.spec(dpo=str(directory)))


@case("checkpoint-corrupt-safetensors", "error", CheckpointError, r"cannot load model .*dpo_corrupt'")
def _(b: Bench):
    directory = b.model_dir(b.files.dpo, "dpo_corrupt")
    (directory / "model.safetensors").write_bytes(bytes(range(256)) * 8)
    b.load(b.spec(dpo=str(directory)))


@case(
    "checkpoint-dpo-pt-without-state-dict",
    "error",
    CheckpointError,
    r"dpo\.pt holds no state dict \(expected a dict of tensors, or one under 'state'\)",
)
def _(b: Bench):
    torch.save({"state": {"a": 1}, "step": 3}, b.tmp / "dpo.pt")
    b.load(b.spec(dpo=str(b.tmp / "dpo.pt")))


@case("checkpoint-other-architecture", "error", PairMismatchError, r"n_layers differs: base 2, DPO 3")
def _(b: Bench):
    make_gpt2 = b.request.getfixturevalue("make_gpt2")
    make_gpt2(5, n_layer=3).save_pretrained(b.tmp / "dpo_3_layers")
    b.load(b.spec(dpo=str(b.tmp / "dpo_3_layers")))


@case(
    "checkpoint-missing-file", "error", CheckpointError, r"state-dict file .*dpo_missing\.pt does not exist"
)
def _(b: Bench):
    b.load(b.spec(dpo=str(b.tmp / "dpo_missing.pt")))


# ---- probes


@case(
    "probe-wrong-size",
    "error",
    PairMismatchError,
    rf"probe\.pt' has {D_MODEL + 3} entries \(shape \({D_MODEL + 3},\)\); the models have d_model = {D_MODEL}",
)
def _(b: Bench):
    b.load(b.spec(probe=str(b.probe(torch.randn(D_MODEL + 3)))))


@case(
    "probe-nan",
    "error",
    DegenerateProbeError,
    rf"probe\.pt' has 1 of {D_MODEL} entries NaN or infinite: it defines no direction",
)
def _(b: Bench):
    probe = torch.randn(D_MODEL)
    probe[7] = float("nan")
    b.load(b.spec(probe=str(b.probe(probe))))


@case(
    "probe-zero",
    "error",
    DegenerateProbeError,
    r"probe\.pt' is all zeros: it defines no direction; retrain the probe",
)
def _(b: Bench):
    b.load(b.spec(probe=str(b.probe(torch.zeros(D_MODEL)))))


@case(
    "probe-not-a-tensor",
    "error",
    CheckpointError,
    r"probe\.pt' holds a list, not a tensor: save the probe direction itself",
)
def _(b: Bench):
    b.load(b.spec(probe=str(b.probe([1.0] * D_MODEL))))


@case(
    "probe-corrupt-file",
    "error",
    CheckpointError,
    r"cannot read probe .*probe\.pt \(corrupt, or not a plain torch file\)",
)
def _(b: Bench):
    (b.tmp / "probe.pt").write_bytes(b"\x00not a torch file" * 20)
    b.load(b.spec(probe=str(b.tmp / "probe.pt")))


# ---- prompt sets


@case(
    "prompts-empty-json-list",
    "error",
    CheckpointError,
    r"no challenge prompts in .*prompts\.json: it holds none; fill it with the challenge prompts",
)
def _(b: Bench):
    b.measurements(b.prompts_pair([]))


@case(
    "prompts-empty-text-file",
    "error",
    CheckpointError,
    r"no challenge prompts in .*prompts\.txt: it holds none",
)
def _(b: Bench):
    b.measurements(b.prompts_pair("\n\n", filename="prompts.txt"))


@case(
    "prompts-only-empty-strings",
    "error",
    TooFewPromptsError,
    r"has 0 usable prompts \(3 prompts; 3 of them empty or whitespace-only \(dropped\)\); the claims need at least 10",
)
def _(b: Bench):
    b.measurements(b.prompts_pair(["", "  ", "\n"]))


@case(
    "prompts-fewer-than-the-minimum",
    "error",
    TooFewPromptsError,
    r"has 6 usable prompts \(7 prompts; 1 of them empty .*\); the claims need at least 10: their bootstrap intervals resample prompts",
)
def _(b: Bench):
    b.measurements(b.prompts_pair(PROMPTS[:6] + [""]))


@case(
    "prompts-limit-below-the-minimum",
    "error",
    TooFewPromptsError,
    r"has 5 usable prompts \(12 prompts; a limit of 5 kept 5 of the 12 usable ones\).* or raise the limit \(--max-prompts\)",
)
def _(b: Bench):
    b.measurements(b.prompts_pair(PROMPTS), replace(SETTINGS, max_prompts=5))


@case("prompts-bad-json", "error", CheckpointError, r"prompts\.json is not JSON")
def _(b: Bench):
    b.measurements(b.prompts_pair("[not json"))


@case(
    "prompts-json-not-strings",
    "error",
    CheckpointError,
    r"prompts\.json must hold a JSON list of prompt strings",
)
def _(b: Bench):
    b.measurements(b.prompts_pair("[1, 2, 3]"))


@case(
    "prompts-jsonl-without-text-field",
    "error",
    CheckpointError,
    r"prompts\.jsonl line 1: no prompt text \(expected 'prompt': \{'text': \.\.\.\}, 'prompt' or 'text'\)",
)
def _(b: Bench):
    b.measurements(b.prompts_pair('{"title": "no text here"}\n', filename="prompts.jsonl"))


@case(
    "prompts-missing-file",
    "error",
    CheckpointError,
    r"RealToxicityPrompts is not available \(.*gone\.json does not exist\)",
)
def _(b: Bench):
    pair = b.prompts_pair(None)
    extras = {**pair.spec.extras, "challenge_prompts": str(b.tmp / "gone.json")}
    b.measurements(replace(pair, spec=replace(pair.spec, extras=extras)))


@case(
    "prompts-neutral-texts-all-empty",
    "error",
    UnusablePromptSet,
    r"the neutral text set .*neutral\.json of pair 'tiny' holds no text \(2 empty entries\)",
)
def _(b: Bench):
    pair = b.prompts_pair(PROMPTS)
    (b.tmp / "neutral.json").write_text(json.dumps(["", " "]))
    extras = {**pair.spec.extras, "neutral_texts": str(b.tmp / "neutral.json")}
    # read when a measurement first needs them (issue #18: only the claims that read them are affected)
    _ = b.measurements(replace(pair, spec=replace(pair.spec, extras=extras))).neutral_texts


@case("prompts-empty-strings-dropped", "recovery")
def _(b: Bench):
    with_empty = b.measurements(b.prompts_pair(["", *PROMPTS[:6], "   ", *PROMPTS[6:], ""])).prompts
    return {"prompts": PROMPTS}, {"prompts": with_empty}


# ---- options (the claims suite's, as pytest_configure parses them)


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


_option_case(
    "option-max-prompts-not-a-number",
    r"--max-prompts must be a whole number >= 10 \(bootstrap intervals over fewer prompts are meaningless\), not 'ten'",
    max_prompts="ten",
)
_option_case(
    "option-max-prompts-below-the-minimum",
    r"--max-prompts must be a whole number >= 10 .*not '3'",
    max_prompts="3",
)
_option_case(
    "option-convention-unknown", r"--convention must be one of \('v1', 'emnlp'\), not 'v2'", convention="v2"
)
_option_case(
    "option-scorer-unknown", r"--scorer must be one of \[.*'lexicon'.*\], not 'vibes'", scorer="vibes"
)
_option_case(
    "option-dtype-unknown",
    r"--dtype must be one of \['bfloat16', 'float16', 'float32'\], not 'float8'",
    dtype="float8",
)
_option_case(
    "option-perplexity-unknown", r"--perplexity must be 'claims' or 'all', not 'some'", perplexity="some"
)
_option_case(
    "option-allow-pickle-globals-not-importable",
    r"cannot allow pickle global 'nosuch\.Thing': it does not import",
    allow_pickle_globals="nosuch.Thing",
)


@case(
    "option-reports-dir-is-a-file",
    "error",
    pytest.UsageError,
    r"reports directory .*reports is a file, not a directory; set --reports-dir",
)
def _(b: Bench):
    (b.tmp / "reports").write_text("in the way")
    suite_options(_Config(b.tmp, reports_dir=str(b.tmp / "reports")))


# ---- cache faults


def _rebuilt_capture(b: Bench, damage: Callable[[Path], None]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Copy the reference capture entry into a fresh cache, ``damage`` it, measure again."""
    reference = b.measured
    entry = b.cache.root / "capture" / reference.entry.name
    shutil.copytree(reference.entry, entry)
    damage(entry)
    capture = b.measurements(reference.pair).capture("base")
    expected = {
        **_entry_bytes(reference.entry),
        "mean_activation": reference.capture.mean_activation,
        "entry verified": None,
    }
    got = {
        **_entry_bytes(entry),
        "mean_activation": capture.mean_activation,
        "entry verified": verify_entry(entry),
    }
    return expected, got


def _flip_a_byte(entry: Path) -> None:
    path = entry / "capture.safetensors"
    data = bytearray(path.read_bytes())
    data[-5] ^= 0xFF
    path.write_bytes(bytes(data))


@case("cache-corrupt-entry-rebuilt", "recovery")
def _(b: Bench):
    return _rebuilt_capture(b, _flip_a_byte)


@case("cache-half-written-entry-rebuilt", "recovery")
def _(b: Bench):
    return _rebuilt_capture(b, lambda entry: (entry / MANIFEST).unlink())


@case("cache-file-in-place-of-an-entry-rebuilt", "recovery")
def _(b: Bench):
    def replace_by_a_file(entry: Path) -> None:
        shutil.rmtree(entry)
        entry.write_text("not an entry")

    return _rebuilt_capture(b, replace_by_a_file)


@case("cache-orphaned-build-directory-removed", "recovery")
def _(b: Bench):
    orphans: list[Path] = []

    def leave_an_orphan(entry: Path) -> None:
        orphan = entry.parent / f".{entry.name}.abcd_123.tmp"
        orphan.mkdir()
        (orphan / "capture.safetensors").write_bytes(b"half")
        os.utime(orphan, (time.time() - 3600, time.time() - 3600))
        shutil.rmtree(entry)
        orphans.append(orphan)

    expected, got = _rebuilt_capture(b, leave_an_orphan)
    return {**expected, "orphan exists": False}, {**got, "orphan exists": orphans[0].exists()}


@case(
    "cache-dir-is-a-file",
    "error",
    CacheError,
    r"cache directory .*cache is a file, not a directory; set --cache-dir or \$DPOCLAIMS_CACHE",
)
def _(b: Bench):
    (b.tmp / "cache").write_text("in the way")
    b.measurements(b.measured.pair).capture("base")


@case(
    "cache-dir-under-a-file",
    "error",
    CacheError,
    r"cannot create cache directory .*file/cache \(Not a directory\); set --cache-dir",
)
def _(b: Bench):
    (b.tmp / "file").write_text("x")
    Measurements(b.measured.pair, Cache(b.tmp / "file" / "cache"), SETTINGS, progress=False).capture("base")


@case(
    "suite-cache-dir-is-a-file",
    "error",
    ExitedNonZero,
    r"exit 4: ERROR: cache directory .*cachefile is a file, not a directory; set --cache-dir",
)
def _(b: Bench):
    """The default toy and claims/: stopped at session start with one line, no INTERNALERROR."""
    (b.tmp / "cachefile").write_text("in the way")
    b.run(b.pytest_command("claims/", "--cache-dir", str(b.tmp / "cachefile"), "--pair", "toy"))


@case(
    "suite-cache-dir-cannot-be-created",
    "error",
    ExitedNonZero,
    r"exit 4: ERROR: cannot create cache directory .*file/cache \(Not a directory\)",
)
def _(b: Bench):
    """Read-only in effect: the cache's place is under a file."""
    (b.tmp / "file").write_text("x")
    b.run(b.pytest_command("claims/", "--cache-dir", str(b.tmp / "file" / "cache"), "--pair", "toy"))


# ---- concurrent builds and a kill mid-capture (subprocesses)

_CAPTURE_SCRIPT = textwrap.dedent("""
    import hashlib, os, sys, time
    from pathlib import Path

    import torch

    torch.set_num_threads(1)  # as in the tests' process: the same sums, bit for bit
    import dpoclaims.measure.capture
    import dpoclaims.measure.measurements
    from dpoclaims.cache import Cache
    from dpoclaims.measure.generation import GenerationSettings
    from dpoclaims.measure.measurements import Measurements, MeasurementSettings
    from dpoclaims.train.named_pairs import load_pair

    spec, root, mode, marks = sys.argv[1], Path(sys.argv[2]), sys.argv[3], Path(sys.argv[4])
    cache = Cache(root)
    pair = load_pair(spec, cache=cache)
    settings = MeasurementSettings(generation=GenerationSettings(batch_size={batch_size}))
    measurements = Measurements(pair, cache, settings, progress=False)
    if mode == "kill":
        generated = dpoclaims.measure.capture._Recorder.generated

        def pause_after_the_first_batch(self, *args):
            generated(self, *args)
            (marks / "first-batch-done").touch()
            time.sleep(600)

        dpoclaims.measure.capture._Recorder.generated = pause_after_the_first_batch
    else:
        capture = dpoclaims.measure.measurements.capture

        def counted(*args, **kwargs):
            with open(marks / "builds.txt", "a") as handle:
                handle.write(f"{{os.getpid()}}\\n")
            time.sleep(1.0)  # hold the entry's lock while the other process asks for it
            return capture(*args, **kwargs)

        dpoclaims.measure.measurements.capture = counted
        (marks / f"ready.{{os.getpid()}}").touch()
        while not (marks / "go").exists():
            time.sleep(0.02)
    result = measurements.capture("base")
    print(hashlib.sha256(result.mean_activation.numpy().tobytes()).hexdigest())
""").format(batch_size=BATCH_SIZE)


def _sha256(tensor: torch.Tensor) -> str:
    return hashlib.sha256(tensor.numpy().tobytes()).hexdigest()


def _start_capture(b: Bench, root: Path, mode: str) -> subprocess.Popen[str]:
    script = b.tmp / "capture_script.py"
    script.write_text(_CAPTURE_SCRIPT)
    command = [sys.executable, str(script), str(b.measured.spec), str(root), mode, str(b.tmp)]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(condition: Callable[[], bool], procs: list[subprocess.Popen[str]], what: str) -> None:
    deadline = time.monotonic() + 120
    while not condition():
        for proc in procs:
            if proc.poll() is not None:
                raise AssertionError(f"a process ended before {what}: {proc.communicate()[1][-3000:]}")
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.05)


@case("concurrent-runs-share-one-build", "recovery")
def _(b: Bench):
    root = b.tmp / "shared_cache"
    procs = [_start_capture(b, root, "concurrent") for _ in range(2)]
    _wait_for(lambda: len(list(b.tmp.glob("ready.*"))) == 2, procs, "both processes were ready")
    (b.tmp / "go").touch()
    outputs = [proc.communicate(timeout=300) for proc in procs]
    for proc, (_, err) in zip(procs, outputs):
        assert proc.returncode == 0, err[-3000:]
    (entry,) = _capture_entries(root)
    reference = b.measured
    expected = {
        "builds": 1,
        "activations read": [_sha256(reference.capture.mean_activation)] * 2,
        **_entry_bytes(reference.entry),
    }
    got = {
        "builds": len((b.tmp / "builds.txt").read_text().split()),
        "activations read": [out.strip() for out, _ in outputs],
        **_entry_bytes(entry),
    }
    return expected, got


@case("kill-9-mid-capture-then-rerun", "recovery")
def _(b: Bench):
    root = b.tmp / "killed_cache"
    proc = _start_capture(b, root, "kill")
    _wait_for(lambda: (b.tmp / "first-batch-done").exists(), [proc], "the first batch was captured")
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    # (the killed build's lock files stay: its lock, and the note of its holder's process id)
    left = [p.name for p in (root / "capture").iterdir() if not p.name.endswith((".lock", ".lock.owner"))]
    assert len(left) == 1 and left[0].endswith(".tmp"), left  # only the interrupted build's directory
    time.sleep(0.05)  # the rerun starts strictly after the orphan's last change
    reference = b.measured
    rerun = Measurements(reference.pair, Cache(root), SETTINGS, progress=False).capture("base")
    (entry,) = _capture_entries(root)
    expected = {
        "mean_activation": reference.capture.mean_activation,
        "n_positions": reference.capture.n_positions,
        "continuations": reference.capture.continuation_ids,
        "left over": [],
        **_entry_bytes(reference.entry),
    }
    got = {
        "mean_activation": rerun.mean_activation,
        "n_positions": rerun.n_positions,
        "continuations": rerun.continuation_ids,
        "left over": [p.name for p in (root / "capture").iterdir() if p.name.endswith(".tmp")],
        **_entry_bytes(entry),
    }
    return expected, got


# ---- the claims suite: skip only what was not provided, fail on what was given and is broken


@case(
    "suite-paper-pair-without-its-files",
    "skip",
    match=r"pair 'gpt2-medium' is not available: DPOCLAIMS_GPT2_DPO, DPOCLAIMS_GPT2_PROBE not set\. The paper pair needs",
)
def _(b: Bench):
    b.suite_pair("gpt2-medium")


@case(
    "suite-paper-pair-env-names-a-missing-file",
    "skip",
    match=r"DPOCLAIMS_GPT2_DPO names .*nowhere/dpo\.pt, which does not exist\. The paper pair needs",
)
def _(b: Bench):
    b.monkeypatch.setenv("DPOCLAIMS_GPT2_DPO", str(b.tmp / "nowhere" / "dpo.pt"))
    b.monkeypatch.setenv("DPOCLAIMS_GPT2_PROBE", str(b.files.probe))
    b.suite_pair("gpt2-medium")


@case(
    "suite-paper-pair-prompts-env-names-a-missing-file",
    "skip",
    match=r"DPOCLAIMS_RTP_PATH names .*prompts\.jsonl, which does not exist",
)
def _(b: Bench):
    b.monkeypatch.setenv("DPOCLAIMS_GPT2_BASE", str(b.files.base))
    b.monkeypatch.setenv("DPOCLAIMS_GPT2_DPO", str(b.files.dpo_pt))
    b.monkeypatch.setenv("DPOCLAIMS_GPT2_PROBE", str(b.files.probe))
    b.monkeypatch.setenv("DPOCLAIMS_RTP_PATH", str(b.tmp / "prompts.jsonl"))
    b.suite_pair("gpt2-medium")


@case(
    "suite-paper-pair-base-not-downloaded-offline",
    "skip",
    match=r"pair 'gpt2-medium' is not available: tokenizer 'dpoclaims-tests/never-downloaded' is not in the local Hugging Face cache and the hub is offline",
)
def _(b: Bench):
    b.monkeypatch.setenv("DPOCLAIMS_GPT2_BASE", NOT_DOWNLOADED)
    b.monkeypatch.setenv("DPOCLAIMS_GPT2_DPO", str(b.files.dpo_pt))
    b.monkeypatch.setenv("DPOCLAIMS_GPT2_PROBE", str(b.files.probe))
    b.suite_pair("gpt2-medium")


@case(
    "suite-pair-names-no-challenge-prompts",
    "skip",
    match=r"pair 'tiny' names no 'challenge_prompts' file; add it under \[extras\]",
)
def _(b: Bench):
    suite_measurements(b.prompts_pair(None), b.cache, b.options("unused"))


def _suite_fail(id: str, match: str) -> Callable[[Callable[[Bench], Path]], Callable[[Bench], Path]]:
    """A case where the suite's pair fixture must fail (not skip) on a spec ``make(bench)`` writes."""

    def register(make: Callable[[Bench], Path]) -> Callable[[Bench], Path]:
        @case(id, "error", pytest.fail.Exception, match)
        def _(b: Bench):
            b.suite_pair(make(b))

        return make

    return register


@_suite_fail(
    "suite-truncated-dpo-pt-fails",
    r"pair '.*pair\.toml' cannot be used: cannot read state-dict file .*dpo\.pt \(corrupt",
)
def _(b: Bench) -> Path:
    return b.spec(dpo=str(_truncated(b)))


@_suite_fail(
    "suite-nan-probe-fails", r"cannot be used: probe .*probe\.pt' has 32 of 32 entries NaN or infinite"
)
def _(b: Bench) -> Path:
    return b.spec(probe=str(b.probe(torch.full((D_MODEL,), float("nan")))))


@_suite_fail("suite-zero-probe-fails", r"cannot be used: probe .*probe\.pt' is all zeros")
def _(b: Bench) -> Path:
    return b.spec(probe=str(b.probe(torch.zeros(D_MODEL))))


@_suite_fail("suite-wrong-size-probe-fails", r"cannot be used: probe .*probe\.pt' has 35 entries")
def _(b: Bench) -> Path:
    return b.spec(probe=str(b.probe(torch.randn(D_MODEL + 3))))


@_suite_fail(
    "suite-config-weights-mismatch-fails",
    r"cannot be used: model .*dpo_n_inner': its config\.json does not describe its weights",
)
def _(b: Bench) -> Path:
    return b.spec(dpo=str(_with_config(b, "dpo_n_inner", n_inner=64)))


@_suite_fail(
    "suite-dpo-identical-to-base-fails",
    r"cannot be used: the DPO model .* has exactly the weights of the base",
)
def _(b: Bench) -> Path:
    return b.spec(dpo=str(b.files.base))


@_suite_fail(
    "suite-bare-name-not-found-fails",
    r"cannot be used: model checkpoint 'mybase' is neither an existing path nor a hub id",
)
def _(b: Bench) -> Path:
    b.monkeypatch.chdir(b.tmp)
    return b.spec(base="mybase")


@_suite_fail(
    "suite-pickle-global-without-the-opt-in-fails",
    r"dpo\.pt needs pickle globals that safe loading refuses: fractions\.Fraction\. .*allow exactly these with --allow-pickle-globals fractions\.Fraction",
)
def _(b: Bench) -> Path:
    import fractions

    return b.spec(dpo=str(b.dpo_pt(step=fractions.Fraction(1, 3))))


@case("suite-pickle-global-allowed-by-the-option", "recovery")
def _(b: Bench):
    import fractions

    clean = b.suite_pair(b.spec(name="clean.toml", dpo=str(b.dpo_pt(name="clean.pt"))))
    needs_global = b.spec(
        name="fraction.toml", dpo=str(b.dpo_pt(name="fraction.pt", step=fractions.Fraction(1, 3)))
    )
    allowed = b.suite_pair(needs_global, allow_pickle_globals="fractions.Fraction")
    return {"fingerprint": clean.fingerprint}, {"fingerprint": allowed.fingerprint}


@case(
    "suite-paper-pair-corrupt-dpo-pt-fails",
    "error",
    pytest.fail.Exception,
    r"pair 'gpt2-medium' cannot be used: cannot read state-dict file .*dpo\.pt \(corrupt",
)
def _(b: Bench):
    """Given through the environment, but broken: an error, unlike a file not given."""
    b.monkeypatch.setenv("DPOCLAIMS_GPT2_BASE", str(b.files.base))
    b.monkeypatch.setenv("DPOCLAIMS_GPT2_DPO", str(_truncated(b)))
    b.monkeypatch.setenv("DPOCLAIMS_GPT2_PROBE", str(b.files.probe))
    b.suite_pair("gpt2-medium")


@case(
    "suite-prompt-file-of-empty-strings-fails",
    "error",
    pytest.fail.Exception,
    r"the prompt sets of pair 'tiny' cannot be used: .* has 0 usable prompts \(3 prompts; 3 of them empty",
)
def _(b: Bench):
    suite_measurements(b.prompts_pair(["", "", ""]), b.cache, b.options("unused"))


_NEEDS_THE_PAIR = """
def test_needs_the_pair(pair):
    pass
"""


@case(
    "suite-run-on-a-truncated-dpo-pt-is-red",
    "error",
    ExitedNonZero,
    r"exit 1: .*cannot be used: cannot read state-dict file .*dpo\.pt \(corrupt.*1 error",
)
def _(b: Bench):
    """A whole pytest run: exit 1 and an error, never 'skipped'."""
    spec = b.spec(dpo=str(_truncated(b)))
    (b.tmp / "test_needs_the_pair.py").write_text(_NEEDS_THE_PAIR)
    plugins = ["-p", "dpoclaims.plugin.options", "-p", "dpoclaims.plugin.resources", "--rootdir", str(b.tmp)]
    try:
        b.run(b.pytest_command(str(b.tmp / "test_needs_the_pair.py"), *plugins, "--pair", str(spec)))
    except ExitedNonZero as exc:
        assert "skipped" not in str(exc)
        raise ExitedNonZero(" ".join(str(exc).split())) from None  # one line, for the match


# ---- issue 18: never overwrite or delete what the user owns


def _cli(b: Bench, *args: str) -> str:
    """``dpoclaims ARGS`` in this process (no model loads before the checks these cases reach):
    its output if it exits 0, else ExitedNonZero with the status and the output."""
    from dpoclaims.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["--cache-dir", str(b.tmp / "cache"), *args])
    output = out.getvalue() + err.getvalue()
    assert "Traceback" not in output, output
    if code != 0:
        raise ExitedNonZero(f"exit {code}: {output.strip()}")
    return output


def _lee_pairs(b: Bench, rows: list[tuple[str, str, str]], name: str = "pairs.jsonl") -> Path:
    lines = [json.dumps({"prompt_text": p, "unpert_gen_text": c, "pert_gen_text": r}) for p, c, r in rows]
    (b.tmp / name).write_text("\n".join(lines) + "\n")
    return b.tmp / name


def _tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@case(
    "train-dpo-out-is-the-base-under-another-spelling",
    "error",
    ExitedNonZero,
    r"exit 2: dpoclaims: error: --out .*/sub/\.\./base_copy is the input --base .*: writing there would "
    r"overwrite it\. Give --out a new directory outside every input",
)
def _(b: Bench):
    base = b.model_dir(b.files.base, "base_copy")
    (b.tmp / "sub").mkdir()
    before = _tree_bytes(base)
    pairs = _lee_pairs(b, [("a", "b", "c"), ("d", "e", "f")])
    try:
        _cli(
            b, "train-dpo", "--base", str(base), "--pairs", str(pairs), "--out", f"{b.tmp}/sub/../base_copy/"
        )
    finally:
        assert _tree_bytes(base) == before  # refused before any work: the base is untouched


@case(
    "train-dpo-out-contains-the-pairs-file-through-a-symlink",
    "error",
    ExitedNonZero,
    r"exit 2: dpoclaims: error: --out .*link contains the input --pairs .*pairs\.jsonl",
)
def _(b: Bench):
    data = b.tmp / "data"
    data.mkdir()
    pairs = _lee_pairs(b, [("a", "b", "c"), ("d", "e", "f")], name="data/pairs.jsonl")
    (b.tmp / "link").symlink_to(data)
    try:
        _cli(b, "train-dpo", "--base", str(b.files.base), "--pairs", str(pairs), "--out", str(b.tmp / "link"))
    finally:
        assert pairs.is_file()


@case(
    "train-dpo-out-holds-other-files",
    "error",
    ExitedNonZero,
    r"exit 2: dpoclaims: error: --out .*mine already holds files that dpoclaims train-dpo did not write; "
    r"saving the model there would overwrite them",
)
def _(b: Bench):
    (b.tmp / "mine").mkdir()
    (b.tmp / "mine" / "config.json").write_text("{}")
    pairs = _lee_pairs(b, [("a", "b", "c"), ("d", "e", "f")])
    try:
        _cli(b, "train-dpo", "--base", str(b.files.base), "--pairs", str(pairs), "--out", str(b.tmp / "mine"))
    finally:
        assert (b.tmp / "mine" / "config.json").read_text() == "{}"


@case(
    "train-probe-out-is-the-csv",
    "error",
    ExitedNonZero,
    r"exit 2: dpoclaims: error: --out .*comments\.csv is the input --csv",
)
def _(b: Bench):
    csv_path = b.tmp / "comments.csv"
    csv_path.write_text("comment_text,toxic\nhello,0\nyou idiot,1\n")
    try:
        _cli(b, "train-probe", "--base", str(b.files.base), "--csv", str(csv_path), "--out", str(csv_path))
    finally:
        assert csv_path.read_text().startswith("comment_text")


def _report_record(claim_id: str, measured: float = 0.5) -> Any:
    return claim_record(claim_id, measured=measured)


_HEADER = {"pair": "p", "fingerprint": "f", "n_prompts": 12, "convention": "v1", "scorer": "lexicon"}


@case("reports-keep-other-tools-badges-and-remove-only-their-own", "recovery")
def _(b: Bench):
    from dpoclaims.report.writer import write_reports

    reports = b.tmp / "site"
    (reports / "badges").mkdir(parents=True)
    (reports / "badges" / "coverage.json").write_text('{"label": "coverage"}')
    write_reports([_report_record("C3"), _report_record("C4[v1]")], reports, _HEADER)
    write_reports([_report_record("C3")], reports, _HEADER)  # C4[v1] not run now: its badge goes
    expected = {"badges": ["C3.json", "README.md", "coverage.json"], "coverage": b'{"label": "coverage"}'}
    got = {
        "badges": sorted(p.name for p in (reports / "badges").iterdir()),
        "coverage": (reports / "badges" / "coverage.json").read_bytes(),
    }
    return expected, got


@case(
    "reports-full-disk-leaves-the-previous-report",
    "error",
    ReportError,
    r"cannot write the reports in .*reports \(No space left on device\); set --reports-dir",
)
def _(b: Bench):
    from dpoclaims.report.writer import write_reports

    reports = b.tmp / "reports"
    write_reports([_report_record("C3"), _report_record("C4[v1]")], reports, _HEADER)
    before = _tree_bytes(reports)
    real_write_text = Path.write_text

    def full_after_the_first(path: Path, *args: Any, **kwargs: Any) -> int:
        if path.name == "claims.md":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write_text(path, *args, **kwargs)

    b.monkeypatch.setattr(Path, "write_text", full_after_the_first)
    try:
        write_reports([_report_record("C3", 0.7)], reports, _HEADER)
    finally:
        b.monkeypatch.undo()
        assert _tree_bytes(reports) == before


@case(
    "reports-full-disk-found-before-the-tests",
    "error",
    ReportError,
    r"cannot write the reports in .*reports \(No space left on device\); set --reports-dir",
)
def _(b: Bench):
    from dpoclaims.report.writer import check_reports_dir

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    b.monkeypatch.setattr(os, "fsync", full)
    check_reports_dir(b.tmp / "reports")


_FAKE_CLAIMS = """
import os
import pytest
from dpoclaims.claims.results import ClaimResult


def _result(claim, param):
    return ClaimResult(claim=claim, param=param, statement="s", criterion="c", measured=0.5, ci=(0.4, 0.6),
                       exact=False, p_value=0.01, verdict="replicates", paper=0.5)


@pytest.mark.noise
@pytest.mark.claim("C6", param="one")
def test_one(check_claim):
    open(os.environ["RAN_MARK"], "a").write("one\\n")
    check_claim(_result("C6", "one"))


@pytest.mark.noise
@pytest.mark.claim("C6", param="two")
def test_two(check_claim):
    if os.environ.get("INTERRUPT"):
        raise KeyboardInterrupt
    check_claim(_result("C6", "two"))
"""


def _fake_suite(b: Bench, *args: str, **env: str) -> str:
    """pytest on two fake claim tests with the suite's plugins; reports in ``b.tmp/reports``."""
    (b.tmp / "test_fake_claims.py").write_text(_FAKE_CLAIMS)
    (b.tmp / "table.toml").write_text("[pairs]\n")
    for name, value in {
        "RAN_MARK": str(b.tmp / "ran.txt"),
        "DPOCLAIMS_EXPECTATIONS": str(b.tmp / "table.toml"),
        **env,
    }.items():
        b.monkeypatch.setenv(name, value)
    plugins = [
        "-p",
        "dpoclaims.plugin.options",
        "-p",
        "dpoclaims.plugin.resources",
        "-p",
        "dpoclaims.plugin.reporting",
    ]
    command = b.pytest_command(
        str(b.tmp / "test_fake_claims.py"),
        *plugins,
        "--rootdir",
        str(b.tmp),
        "--cache-dir",
        str(b.tmp / "cache"),
        *args,
    )
    return b.run(command, timeout=120)


@case("suite-interrupted-leaves-the-previous-complete-report", "recovery")
def _(b: Bench):
    reports = b.tmp / "reports"
    _fake_suite(b, "--reports-dir", str(reports))
    before = _tree_bytes(reports)
    try:
        _fake_suite(b, "--reports-dir", str(reports), INTERRUPT="1")
        status = "exit 0"
    except ExitedNonZero as exc:
        status = str(exc).split(":")[0]
        said = "previous complete report in" in str(exc)
    return {"status": "exit 2", "said so": True, "report": before}, {
        "status": status,
        "said so": said,
        "report": _tree_bytes(reports),
    }


@case("suite-interrupted-without-a-report-marks-it-incomplete", "recovery")
def _(b: Bench):
    reports = b.tmp / "reports"
    with contextlib.suppress(ExitedNonZero):
        _fake_suite(b, "--reports-dir", str(reports), INTERRUPT="1")
    header = json.loads((reports / "claims.json").read_text())["header"]
    badge = json.loads((reports / "badges" / "C6-one.json").read_text())
    return {
        "json": "the run was interrupted (Ctrl-C); 1 of 2 selected claims ran.",
        "md": True,
        "badge": "interrupted: replicates (0.50)",
    }, {
        "json": header["incomplete"],
        "md": "**Incomplete report: the run was interrupted" in (reports / "claims.md").read_text(),
        "badge": badge["message"],
    }


@case(
    "suite-reports-dir-a-dangling-symlink-stops-before-the-tests",
    "error",
    ExitedNonZero,
    r"exit 4: [\s\S]*ERROR: reports directory .*reports is a symbolic link to .*nowhere, which does not exist",
)
def _(b: Bench):
    (b.tmp / "reports").symlink_to(b.tmp / "nowhere")
    try:
        _fake_suite(b, "--reports-dir", str(b.tmp / "reports"))
    finally:
        assert not (b.tmp / "ran.txt").exists()  # no test ran


@case(
    "suite-every-claim-skipped-for-want-of-files-is-red",
    "error",
    ExitedNonZero,
    r"exit 1: .*every selected claim skipped for want of the pair's files: pair 'gpt2-medium' is not "
    r"available: DPOCLAIMS_GPT2_DPO, DPOCLAIMS_GPT2_PROBE not set",
)
def _(b: Bench):
    (b.tmp / "test_needs_the_pair.py").write_text(
        "import pytest\n\n\n@pytest.mark.noise\n@pytest.mark.claim('C6', param='x')\n"
        "def test_needs_the_pair(pair):\n    pass\n"
    )
    (b.tmp / "table.toml").write_text("[pairs]\n")
    b.monkeypatch.setenv("DPOCLAIMS_EXPECTATIONS", str(b.tmp / "table.toml"))
    plugins = [
        "-p",
        "dpoclaims.plugin.options",
        "-p",
        "dpoclaims.plugin.resources",
        "-p",
        "dpoclaims.plugin.reporting",
    ]
    command = b.pytest_command(
        str(b.tmp / "test_needs_the_pair.py"),
        *plugins,
        "--rootdir",
        str(b.tmp),
        "--pair",
        "gpt2-medium",
        "--reports-dir",
        str(b.tmp / "reports"),
        "--cache-dir",
        str(b.tmp / "cache"),
    )
    try:
        b.run(command, timeout=120)
    except ExitedNonZero as exc:
        raise ExitedNonZero(" ".join(str(exc).split())) from None


# ---- issue 18: intervals mean what they say


@case(
    "prompts-one-prompt-twenty-times-is-too-few",
    "error",
    TooFewPromptsError,
    r"has 1 usable prompts \(20 prompts; 19 repeats of an earlier prompt \(dropped\)\); the claims need at "
    r"least 10: their bootstrap intervals resample prompts, and over fewer distinct usable prompts",
)
def _(b: Bench):
    b.measurements(b.prompts_pair([PROMPTS[0]] * 20))


@case(
    "prompts-invisible-only-are-unusable",
    "error",
    TooFewPromptsError,
    r"has 0 usable prompts \(12 prompts; 12 of them only invisible characters such as zero-width spaces or "
    r"byte-order marks \(dropped\)\)",
)
def _(b: Bench):
    b.measurements(b.prompts_pair(["\u200b", "\ufeff", "\u200b\u200d", "\u2060\ufeff"] * 3))


@case("prompts-repeats-and-invisible-dropped-and-counted", "recovery")
def _(b: Bench):
    messy = [*PROMPTS[:4], PROMPTS[0], "\u200b\ufeff", *PROMPTS[4:], PROMPTS[5] + "\u200b", " ", PROMPTS[1]]
    measurements = b.measurements(b.prompts_pair(messy))
    expected = {"prompts": PROMPTS, "dropped": {"empty": 2, "repeated": 3}}
    return expected, {"prompts": measurements.prompts, "dropped": measurements.prompts_dropped}


@case("probe-norm-overflow-rescaled-exactly", "recovery")
def _(b: Bench):
    from dpoclaims.models.pairs import load_probe

    reference = torch.load(b.files.probe, weights_only=True).reshape(-1).float()
    huge = b.probe(reference * 2.0**120)  # finite entries, a float32 norm of inf
    rescaled = load_probe(str(huge), D_MODEL)
    unit = reference / reference.norm()
    return {"unit probe": unit, "finite norm": True}, {
        "unit probe": rescaled / rescaled.norm(),
        "finite norm": bool(torch.isfinite(rescaled.norm())),
    }


@case(
    "probe-two-rows-refused-naming-both-shapes",
    "error",
    PairMismatchError,
    rf"probe .*probe\.pt' has {D_MODEL} entries \(shape \(2, {D_MODEL // 2}\)\); the models have d_model = "
    rf"{D_MODEL}, so a probe must have shape \({D_MODEL},\) or \(1, {D_MODEL}\)",
)
def _(b: Bench):
    b.load(b.spec(probe=str(b.probe(torch.randn(2, D_MODEL // 2)))))


@case("probe-row-and-linear-state-dict-accepted", "recovery")
def _(b: Bench):
    from dpoclaims.models.pairs import load_probe

    reference = torch.randn(D_MODEL)
    row = load_probe(str(b.probe(reference.reshape(1, -1))), D_MODEL)
    layer = load_probe(str(b.probe({"weight": reference.reshape(1, -1), "bias": torch.zeros(1)})), D_MODEL)
    return {"row": reference, "linear layer": reference}, {"row": row, "linear layer": layer}


@case(
    "probe-column-refused",
    "error",
    PairMismatchError,
    rf"shape \({D_MODEL}, 1\)\); .* must have shape \({D_MODEL},\) or \(1, {D_MODEL}\)",
)
def _(b: Bench):
    b.load(b.spec(probe=str(b.probe(torch.randn(D_MODEL, 1)))))


@case(
    "claim-zero-width-interval-not-marked-exact-is-not-measurable",
    "recovery",
)
def _(b: Bench):
    import numpy as np

    from dpoclaims.claims.checks import claim_result
    from dpoclaims.claims.paper import ENTRIES
    from dpoclaims.models.loading import MLPLayout
    from dpoclaims.stats import Estimate

    got = {}
    for entry in ENTRIES:  # every claim of the paper table
        for param in entry.params or (None,):
            zero = Estimate(0.0, 0.0, 0.0)
            # a part of zero width, as a bootstrap makes one: every resample the same figure
            flat = Estimate(0.0, 0.0, 0.0, n=3, resampled=np.zeros(20), scheme=(3, 0, 20))
            result = claim_result(
                entry.key,
                param,
                estimate=zero,
                parts={part.name: flat for part in entry.parts_for(param)},
                layout=MLPLayout("gpt2", n_layers=4, d_model=8, d_mlp=512),
            )
            got[str(result.id)] = (result.verdict, result.ci)
    return {k: ("not measurable", None) for k in got}, got


@case(
    "claim-result-with-a-zero-width-interval-refused",
    "error",
    ValueError,
    r"C3: an interval of zero width \[0\.0, 0\.0\] on a figure not marked exact",
)
def _(b: Bench):
    from dpoclaims.claims.results import ClaimResult

    ClaimResult(
        claim="C3",
        param="",
        statement="s",
        criterion="c",
        measured=0.0,
        ci=(0.0, 0.0),
        exact=False,
        p_value=0.5,
        verdict="replicates",
        paper=0.5,
    )


# ---- issue 18: shapes and keys checked, not coerced


@case(
    "spec-misspelled-extras-key",
    "error",
    UnknownPairError,
    r"unknown \[extras\] key 'challenge_prompt'; did you mean 'challenge_prompts'\? known keys: "
    r"challenge_prompts, dpo_pairs, max_prompts, neutral_texts, perplexity_window, report",
)
def _(b: Bench):
    b.load(b.spec(extras={"challenge_prompt": "prompts.json"}))


@case(
    "spec-perplexity-window-not-a-number",
    "error",
    UnknownPairError,
    r"perplexity_window must be a positive whole number of tokens \(e\.g\. 1024\), not '1k'",
)
def _(b: Bench):
    b.load(b.spec(extras={"perplexity_window": "1k"}))


@case(
    "replicate-pytest-args-overriding-the-pair",
    "error",
    ExitedNonZero,
    r"exit 2: dpoclaims: error: --pytest-args may not set --pair: replicate sets --pair, --reports-dir, "
    r"--cache-dir for each cell itself",
)
def _(b: Bench):
    try:
        _cli(b, "replicate", "--seeds", "0", "1", "--pytest-args", "--pair toy -q")
    finally:
        assert not (b.tmp / "cache").exists()  # refused before any toy was built


@case(
    "replicate-pytest-args-overriding-the-reports-dir",
    "error",
    ExitedNonZero,
    r"exit 2: dpoclaims: error: --pytest-args may not set --reports-dir=elsewhere",
)
def _(b: Bench):
    _cli(b, "replicate", "--seeds", "0", "--pytest-args=--reports-dir=elsewhere")


@case(
    "replicate-pytest-args-unclosed-quote",
    "error",
    ExitedNonZero,
    r"exit 2: dpoclaims: error: --pytest-args '-k \"C1' cannot be split into arguments: No closing quotation",
)
def _(b: Bench):
    _cli(b, "replicate", "--seeds", "0", "--pytest-args", '-k "C1')


@case("train-dpo-repeated-rows-kept-out-of-validation", "recovery")
def _(b: Bench):
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
    "cli-train-dpo-one-pair-repeated",
    "error",
    ExitedNonZero,
    r"exit 2: dpoclaims: error: .*pairs\.jsonl holds 1 distinct pair\(s\) \(5 repeats dropped\); at least 2",
)
def _(b: Bench):
    pairs = _lee_pairs(b, [("a", "b", "c")] * 6)
    _cli(b, "train-dpo", "--base", str(b.files.base), "--pairs", str(pairs), "--out", str(b.tmp / "out"))


# ---- issue 18: a run that measures nothing is not green


@case("spec-without-neutral-texts-loses-only-what-reads-them", "recovery")
def _(b: Bench):
    from dpoclaims.measure.prompts import MissingPromptSet

    pair = b.prompts_pair(PROMPTS)
    pair = replace(
        pair, spec=replace(pair.spec, extras={"challenge_prompts": pair.spec.extras["challenge_prompts"]})
    )
    measurements = b.measurements(pair)  # the prompts load: the claims that need no neutral text run
    try:
        _ = measurements.neutral_texts
        neutral = "read"
    except MissingPromptSet as exc:
        neutral = str(exc)
    return {
        "prompts": PROMPTS,
        "neutral": "pair 'tiny' names no 'neutral_texts' file; add it under [extras] in the pair spec "
        "(a JSON list, JSONL or text file)",
    }, {"prompts": measurements.prompts, "neutral": neutral}


_READS_NEUTRAL = """
import pytest
from dpoclaims.claims.results import ClaimResult


@pytest.mark.noise
@pytest.mark.claim("C6", param="prompts")
def test_reads_the_prompts(measurements, check_claim):
    assert len(measurements.prompts) == 12
    check_claim(ClaimResult(claim="C6", param="prompts", statement="s", criterion="c", measured=0.5,
                             ci=(0.4, 0.6), exact=False, p_value=0.01, verdict="replicates", paper=0.5))


@pytest.mark.noise
@pytest.mark.claim("C6", param="neutral")
def test_reads_the_neutral_texts(measurements):
    measurements.neutral_texts
"""


@case("suite-spec-without-neutral-texts-skips-only-the-claim-reading-them", "recovery")
def _(b: Bench):
    (b.tmp / "prompts.json").write_text(json.dumps(PROMPTS))
    spec = b.spec(extras={"challenge_prompts": str(b.tmp / "prompts.json")})
    (b.tmp / "test_reads.py").write_text(_READS_NEUTRAL)
    (b.tmp / "table.toml").write_text("[pairs]\n")
    b.monkeypatch.setenv("DPOCLAIMS_EXPECTATIONS", str(b.tmp / "table.toml"))
    plugins = [
        "-p",
        "dpoclaims.plugin.options",
        "-p",
        "dpoclaims.plugin.resources",
        "-p",
        "dpoclaims.plugin.reporting",
    ]
    reports = b.tmp / "reports"
    command = b.pytest_command(
        str(b.tmp / "test_reads.py"), *plugins, "--rootdir", str(b.tmp), "--pair", str(spec),
        "--reports-dir", str(reports), "--cache-dir", str(b.tmp / "cache"), "--device", "cpu",
    )  # fmt: skip
    output = b.run(command, timeout=300)
    records = {r["id"]: r for r in json.loads((reports / "claims.json").read_text())["claims"]}
    return {
        "exit": "0",
        "outcomes": {"C6[prompts]": "passed", "C6[neutral]": "skipped"},
        "reason": True,
    }, {
        "exit": "0" if "1 passed, 1 skipped" in output else output[-500:],
        "outcomes": {k: r["outcome"] for k, r in records.items()},
        "reason": "names no 'neutral_texts' file" in records["C6[neutral]"]["skip_reason"],
    }


# ---- issue 18: every bad value one message naming its source


@case(
    "prompts-neutral-texts-not-utf8",
    "error",
    UnusablePromptSet,
    r"the neutral texts of pair 'tiny' cannot be used: prompt file .*neutral\.txt is not UTF-8 text "
    r"\(invalid start byte at byte 5\); save it as UTF-8",
)
def _(b: Bench):
    pair = b.prompts_pair(PROMPTS)
    (b.tmp / "neutral.txt").write_bytes(b"hello\xff world\n")
    extras = {**pair.spec.extras, "neutral_texts": str(b.tmp / "neutral.txt")}
    _ = b.measurements(replace(pair, spec=replace(pair.spec, extras=extras))).neutral_texts


@case(
    "spec-base-a-directory-without-a-model",
    "error",
    CheckpointError,
    r"tokenizer source '.*specs/\.\./etc' \(.*/etc\) is a directory without tokenizer files \(none of tokenizer\.json",
)
def _(b: Bench):
    (b.tmp / "etc").mkdir()
    (b.tmp / "etc" / "hosts").write_text("127.0.0.1 localhost\n")
    (b.tmp / "specs").mkdir()
    b.load(b.spec(name="specs/pair.toml", base="../etc", tokenizer=None))


def _expectations(b: Bench, content: bytes | None, directory: bool = False) -> Any:
    from dpoclaims.plugin.reporting import load_expectations

    path = b.tmp / "table.toml"
    if directory:
        path.mkdir()
    elif content is not None:
        path.write_bytes(content)
    b.monkeypatch.setenv("DPOCLAIMS_EXPECTATIONS", str(path))
    return load_expectations("toy", b.tmp)


@case(
    "expectations-pairs-not-a-table",
    "error",
    pytest.UsageError,
    r"the expectations table .*table\.toml \(\$DPOCLAIMS_EXPECTATIONS\): 'pairs' must be a table "
    r"\(\[pairs\.<pair name>\] sections\), not 3",
)
def _(b: Bench):
    _expectations(b, b"pairs = 3\n")


@case(
    "expectations-pair-entry-a-string",
    "error",
    pytest.UsageError,
    r"table\.toml .*: the entry of pair 'toy' must be a table of claim id = reason \(\[pairs\.toy\]\), not 'x'",
)
def _(b: Bench):
    _expectations(b, b'[pairs]\ntoy = "x"\n')


@case(
    "expectations-not-utf8",
    "error",
    pytest.UsageError,
    r"the expectations table .*table\.toml \(\$DPOCLAIMS_EXPECTATIONS\) is not UTF-8 text \(invalid "
    r"continuation byte at byte 21\); save it as UTF-8",
)
def _(b: Bench):
    _expectations(b, b'[pairs.toy]\nC3 = "caf\xe9 au lait"\n')


@case(
    "expectations-env-empty",
    "error",
    pytest.UsageError,
    r"DPOCLAIMS_EXPECTATIONS is set but empty; name an expectations table \(a \.toml file\) or unset it",
)
def _(b: Bench):
    from dpoclaims.plugin.reporting import load_expectations

    b.monkeypatch.setenv("DPOCLAIMS_EXPECTATIONS", "")
    load_expectations("toy", b.tmp)


@case(
    "expectations-env-a-directory",
    "error",
    pytest.UsageError,
    r"the expectations table .*table\.toml \(\$DPOCLAIMS_EXPECTATIONS\) is a directory; name the \.toml file itself",
)
def _(b: Bench):
    _expectations(b, None, directory=True)


_option_case(
    "option-max-prompts-unicode-digits",
    r"--max-prompts must be a whole number >= 10 .*not '²⁰'; write it in the digits 0-9",
    max_prompts="²⁰",
)
_option_case(
    "option-search-examples-unicode-digits",
    r"--search-examples must be a whole number \(0 skips the searches\), not '³'; write it in the digits 0-9",
    search_examples="³",
)


@case(
    "env-max-prompts-named-as-the-source",
    "error",
    pytest.UsageError,
    r"\$DPOCLAIMS_MAX_PROMPTS must be a whole number >= 10 .*not 'many'",
)
def _(b: Bench):
    b.monkeypatch.setenv("DPOCLAIMS_MAX_PROMPTS", "many")
    suite_options(_Config(b.tmp))


@case(
    "env-device-map-empty",
    "error",
    pytest.UsageError,
    r"\$DPOCLAIMS_DEVICE_MAP is set but empty; give a device map such as auto, or unset it",
)
def _(b: Bench):
    b.monkeypatch.setenv("DPOCLAIMS_DEVICE_MAP", "")
    suite_options(_Config(b.tmp))


@case(
    "cache-disk-full-names-the-cache-and-a-remedy",
    "error",
    CacheError,
    r"cannot write cache entry things/k in the cache directory .*cache \(No space left on device\); free "
    r"space there, or set --cache-dir or \$DPOCLAIMS_CACHE to a writable directory",
)
def _(b: Bench):
    def fill_the_disk(directory: Path) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    try:
        b.cache.get_or_build("things", "k", fill_the_disk)
    finally:
        assert [p.name for p in (b.tmp / "cache" / "things").iterdir() if p.name.endswith(".tmp")] == []


@case("cache-a-build-error-stays-itself", "error", ZeroDivisionError, r"division by zero")
def _(b: Bench):
    """Only write failures become a CacheError: a bug in a build is not blamed on the disk."""
    b.cache.get_or_build("things", "k", lambda directory: 1 / 0)


_HOLD_THE_LOCK = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from dpoclaims.cache import _OwnedLock

    with _OwnedLock(Path(sys.argv[1])):
        Path(sys.argv[2]).touch()
        time.sleep(float(sys.argv[3]))
""")


@case("cache-waiting-on-a-lock-says-whose-within-seconds", "recovery")
def _(b: Bench):
    from dpoclaims.cache import LOCK_NOTICE_S

    root = b.tmp / "cache"
    (root / "things").mkdir(parents=True)
    script = b.tmp / "hold.py"
    script.write_text(_HOLD_THE_LOCK)
    holder = subprocess.Popen(
        [sys.executable, str(script), str(root / "things" / "k.lock"), str(b.tmp / "held"), "6"]
    )
    try:
        _wait_for(lambda: (b.tmp / "held").exists(), [holder], "the other process held the lock")
        err = io.StringIO()
        started = time.monotonic()
        with contextlib.redirect_stderr(err):
            b.cache.get_or_build("things", "k", lambda d: (d / "x").write_text("built"))
        said = err.getvalue()
    finally:
        holder.wait(timeout=60)
    return {"said": True, "built": "built", "waited": True}, {
        "said": f"waiting for process {holder.pid}, which holds the build lock" in said,
        "built": (root / "things" / "k" / "x").read_text(),
        "waited": time.monotonic() - started > LOCK_NOTICE_S,
    }


@case(
    "cli-build-toy-negative-seed",
    "error",
    ExitedNonZero,
    r"exit 2: dpoclaims: error: --seed must be a whole number from 0 to 4294967295, not -1",
)
def _(b: Bench):
    _cli(b, "build-toy", "--seed", "-1")


@case(
    "cli-build-toy-report-a-directory",
    "error",
    ExitedNonZero,
    r"exit 2: dpoclaims: error: --report .*out is a directory; name a file",
)
def _(b: Bench):
    (b.tmp / "out").mkdir()
    try:
        _cli(b, "build-toy", "--report", str(b.tmp / "out"))
    finally:
        assert not (b.tmp / "cache").exists()  # refused before the toy was built


@case(
    "cli-build-toy-report-unwritable",
    "error",
    ExitedNonZero,
    r"exit 2: dpoclaims: error: cannot create the directory of --report .*file/reports \(Not a directory\)",
)
def _(b: Bench):
    (b.tmp / "file").write_text("x")
    _cli(b, "build-toy", "--report", str(b.tmp / "file" / "reports" / "toy.json"))


@case(
    "cli-train-probe-c-zero",
    "error",
    ExitedNonZero,
    r"exit 2: dpoclaims: error: --C \(inverse regularisation strength\) must be a positive, finite number, not 0\.0",
)
def _(b: Bench):
    _cli(
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
    "cli-train-dpo-pairs-not-utf8",
    "error",
    ExitedNonZero,
    r"exit 2: dpoclaims: error: DPO pairs file .*pairs\.jsonl is not UTF-8 text \(invalid start byte at byte 17\)",
)
def _(b: Bench):
    (b.tmp / "pairs.jsonl").write_bytes(b'{"prompt_text": "\xff"}\n')
    _cli(
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


# --------------------------------------------------------------------------- the three outcome tests


def _cases(category: Category) -> list[Any]:
    return [pytest.param(c, id=c.id) for c in CASES if c.category == category]


@pytest.mark.parametrize("case", _cases("error"))
def test_bad_input_is_a_clear_error(case: Case, bench: Bench):
    assert case.raises is not None and case.match
    with pytest.raises(case.raises, match=case.match):
        case.act(bench)


@pytest.mark.parametrize("case", _cases("recovery"))
def test_fault_is_recovered_with_identical_numbers(case: Case, bench: Bench):
    expected, got = case.act(bench)
    assert expected and set(got) == set(expected)
    for key, value in expected.items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(got[key], value), key
        else:
            assert got[key] == value, key


@pytest.mark.parametrize("case", _cases("skip"))
def test_input_not_provided_is_a_skip_with_the_reason(case: Case, bench: Bench):
    with pytest.raises(pytest.skip.Exception, match=case.match):
        case.act(bench)


def test_the_catalogue():
    """Unique ids, every category present, at least 30 cases (issue #10)."""
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids)) and len(ids) >= 30
    assert {c.category for c in CASES} == {"error", "recovery", "skip"}
    assert all(re.fullmatch(r"[a-z0-9-]+", i) for i in ids)
