"""The fixtures of the bad-input catalogue (the bench itself: :mod:`bad_inputs.bench`)."""

from __future__ import annotations

import pytest
from tiny import PairFiles

from bad_inputs.bench import PAPER_PAIR_ENV, Bench, Measured, measure_reference
from dpoclaims.files import PICKLE_GLOBALS_ENV


@pytest.fixture(scope="session")
def measured(tmp_path_factory: pytest.TempPathFactory, gpt2_pair_files: PairFiles) -> Measured:
    return measure_reference(tmp_path_factory.mktemp("measured"), gpt2_pair_files)


@pytest.fixture
def bench(tmp_path, gpt2_pair_files, monkeypatch, request) -> Bench:
    for name in (*PAPER_PAIR_ENV, PICKLE_GLOBALS_ENV, "DPOCLAIMS_MAX_PROMPTS", "DPOCLAIMS_CONVENTION"):
        monkeypatch.delenv(name, raising=False)
    for name in ("DPOCLAIMS_SCORER", "DPOCLAIMS_DTYPE", "DPOCLAIMS_PERPLEXITY", "DPOCLAIMS_PAIR"):
        monkeypatch.delenv(name, raising=False)
    return Bench(tmp_path, gpt2_pair_files, monkeypatch, request)
