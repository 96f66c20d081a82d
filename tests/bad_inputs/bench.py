"""The bench of the bad-input catalogue: the tiny pair and its reference capture, the helpers
that damage inputs, and the cases' shape.

A case is data: its id (``<what it feeds in>--<what it must get back>``, so that
``pytest -k <id>`` runs it alone), its outcome category and the exact outcome, and the act that
feeds the input in. Three outcome categories:

- ``error``: a specific error (its class and a distinctive part of its message), a failed
  test with the message (``pytest.fail``), or a non-zero exit with one clear line;
- ``recovery``: the fault is repaired and the numbers are identical (bytes, ``torch.equal``)
  to those of a run without it;
- ``skip``: an optional download that was not provided skips, with the reason.

``pytest --collect-only -q tests/bad_inputs`` lists the catalogue. Other tests
(test_pair_errors.py, test_pairs_loading.py, test_data.py, test_cache.py, test_files.py) hold
more detailed checks of some of these cases.
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import pytest
import torch
from tiny import PairFiles, write_spec

from dpoclaims.cache import MANIFEST, Cache
from dpoclaims.measure.capture import Capture
from dpoclaims.measure.generation import GenerationSettings
from dpoclaims.measure.measurements import Measurements, MeasurementSettings
from dpoclaims.measure.prompts import MIN_USABLE_PROMPTS
from dpoclaims.models.pairs import ModelPair
from dpoclaims.plugin.options import SuiteOptions
from dpoclaims.plugin.resources import load_suite_pair
from dpoclaims.train.named_pairs import load_pair

ROOT = Path(__file__).resolve().parent.parent.parent
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
#: The suite's plugins, for a pytest run of fake claim tests outside the checkout.
SUITE_PLUGINS = (
    "-p",
    "dpoclaims.plugin.options",
    "-p",
    "dpoclaims.plugin.resources",
    "-p",
    "dpoclaims.plugin.reporting",
)


# --------------------------------------------------------------------------- the cases


@dataclass(frozen=True)
class Case:
    id: str  # <what it feeds in>--<what it must get back>
    category: Category
    act: Callable[[Bench], Any]
    raises: type[BaseException] | None = None  # error and skip: what the act must raise
    match: str = ""  # a distinctive part of its message (a regular expression)
    marks: tuple[Any, ...] = ()  # pytest marks of the case (an expected failure)

    def check(self, bench: Bench) -> None:
        """Feed the input in and assert the exact outcome of the case's category."""
        if self.category == "error":
            assert self.raises is not None and self.match
            with pytest.raises(self.raises, match=self.match):
                self.act(bench)
        elif self.category == "recovery":
            expected, got = self.act(bench)
            assert expected and set(got) == set(expected)
            for key, value in expected.items():
                if isinstance(value, torch.Tensor):
                    assert torch.equal(got[key], value), key
                else:
                    assert got[key] == value, key
        else:
            with pytest.raises(pytest.skip.Exception, match=self.match):
                self.act(bench)


def registrar(cases: list[Case]) -> Callable[..., Callable[[Callable[[Bench], Any]], Callable[[Bench], Any]]]:
    """``case(id, category, raises, match, marks=())``: a decorator that adds its act to ``cases``."""

    def case(
        id: str,
        category: Category,
        raises: type[BaseException] | None = None,
        match: str = "",
        marks: tuple[Any, ...] = (),
    ) -> Callable[[Callable[[Bench], Any]], Callable[[Bench], Any]]:
        def register(act: Callable[[Bench], Any]) -> Callable[[Bench], Any]:
            cases.append(Case(id, category, act, raises, match, marks))
            return act

        return register

    return case


def catalogue_test(cases: list[Case]) -> Callable[..., None]:
    """The test of a surface's cases, one per case, with the case's id as the test id."""

    @pytest.mark.parametrize("case", [pytest.param(c, id=c.id, marks=c.marks) for c in cases])
    def test_case(case: Case, bench: Bench) -> None:
        case.check(bench)

    return test_case


# --------------------------------------------------------------------------- the bench


@dataclass(frozen=True)
class Measured:
    """The tiny pair with a 12-prompt challenge set, and its capture of the base side made
    without any fault (the reference every recovery is compared with)."""

    spec: Path
    pair: ModelPair
    entry: Path  # the reference capture's cache entry
    capture: Capture


def measure_reference(root: Path, files: PairFiles) -> Measured:
    (root / "prompts.json").write_text(json.dumps(PROMPTS))
    (root / "neutral.json").write_text(json.dumps(NEUTRAL))
    spec = write_spec(
        root / "pair.toml",
        name="tiny",
        base=str(files.base),
        dpo=str(files.dpo),
        probe=str(files.probe),
        extras={"challenge_prompts": "prompts.json", "neutral_texts": "neutral.json"},
    )
    cache = Cache(root / "cache")
    pair = load_pair(spec, cache=cache)
    capture = Measurements(pair, cache, SETTINGS, progress=False).capture("base")
    (entry,) = capture_entries(cache.root)
    return Measured(spec, pair, entry, capture)


def capture_entries(cache_root: Path) -> list[Path]:
    return sorted(p for p in (cache_root / "capture").iterdir() if p.is_dir() and not p.name.startswith("."))


def entry_bytes(entry: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(entry)): p.read_bytes()
        for p in sorted(entry.rglob("*"))
        if p.is_file() and p.name != MANIFEST
    }


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


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


# --------------------------------------------------------------------------- shared damage and commands


def truncated_dpo_pt(b: Bench) -> Path:
    """The tiny DPO model's state-dict file, cut in half."""
    data = b.files.dpo_pt.read_bytes()
    (b.tmp / "dpo.pt").write_bytes(data[: len(data) // 2])
    return b.tmp / "dpo.pt"


def with_config(b: Bench, name: str, **changes: Any) -> Path:
    """A copy of the tiny DPO directory whose config.json has ``changes``."""
    directory = b.model_dir(b.files.dpo, name)
    config = json.loads((directory / "config.json").read_text())
    config.update(changes)
    (directory / "config.json").write_text(json.dumps(config))
    return directory


def cli(b: Bench, *args: str) -> str:
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


def wait_for(condition: Callable[[], bool], procs: list[subprocess.Popen[str]], what: str) -> None:
    deadline = time.monotonic() + 120
    while not condition():
        for proc in procs:
            if proc.poll() is not None:
                raise AssertionError(f"a process ended before {what}: {proc.communicate()[1][-3000:]}")
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.05)
