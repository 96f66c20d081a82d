"""Command-line options of the claims suite, each with an environment-variable equivalent.

Options are added when pytest loads the plugin, but parsed, checked and acted on (the device,
the threads of an xdist worker, every ``DPOCLAIMS_*`` variable) only once the run uses the suite:
:func:`configured_options` does it the first time it is asked, which is when a run names
``claims/`` or collects a test that is a claim or asks for one of the suite's fixtures. A pytest
run of another project pays for none of it. So this module imports nothing heavy: what the
checks need (torch, the prompt sets, the searches) is imported inside them.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import pytest

from dpoclaims.errors import OptionError
from dpoclaims.files import PICKLE_GLOBALS_ENV, PICKLE_GLOBALS_OPTION, resolve_allowed_globals
from dpoclaims.measure.conventions import CONVENTIONS, Convention
from dpoclaims.measure.scoring import SCORERS

if TYPE_CHECKING:
    import torch

    from dpoclaims.claims.results import ClaimId, Expectation
    from dpoclaims.measure.measurements import PerplexityScope

DTYPES = frozenset({"float32", "bfloat16", "float16"})
GITHUB_REPO = re.compile(r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$")  # owner/name


def _default_search_examples() -> int:
    """The searches' default number of examples, read from where the searches define it (a heavy
    module: imported only when options are made, never at plugin load)."""
    from dpoclaims.claims.search import DEFAULT_EXAMPLES

    return DEFAULT_EXAMPLES


@dataclass(frozen=True)
class SuiteOptions:
    pair: str
    max_prompts: int | None
    cache_dir: Path | None
    reports_dir: Path
    convention: Convention
    scorer: str | None
    dtype: str
    device_map: str | None
    perplexity: PerplexityScope
    badge_repo: str | None = None  # owner/name whose badges branch the badge markdown points at
    allow_pickle_globals: str | None = None  # the option's value; $DPOCLAIMS_ALLOW_PICKLE_GLOBALS adds to it
    device: str = "cpu"  # resolved: cpu, cuda or cuda:N (an xdist worker's own GPU once configured)
    # examples each Hypothesis search draws (C1/C2/C13[search]); default the searches' own
    search_examples: int = field(default_factory=_default_search_examples)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("dpoclaims", "dpoclaims claims suite")
    group.addoption(
        "--pair",
        default=None,
        help="pair name (toy, ...) or path to a pair spec; env DPOCLAIMS_PAIR; default toy",
    )
    group.addoption(
        "--max-prompts",
        default=None,
        help="use only the first N challenge prompts; env DPOCLAIMS_MAX_PROMPTS",
    )
    group.addoption(
        "--cache-dir",
        default=None,
        help="dpoclaims cache root; env DPOCLAIMS_CACHE; default the user cache dir",
    )
    group.addoption(
        "--reports-dir", default=None, help="where reports go; env DPOCLAIMS_REPORTS; default ./reports"
    )
    group.addoption(
        "--convention",
        default=None,
        help=f"activation positions {CONVENTIONS}; env DPOCLAIMS_CONVENTION; default v1",
    )
    group.addoption(
        "--dtype",
        default=None,
        help=f"model dtype {sorted(DTYPES)}; env DPOCLAIMS_DTYPE; default float32 (analyses stay float32)",
    )
    group.addoption(
        "--device-map", default=None, help="passed to from_pretrained, e.g. auto; env DPOCLAIMS_DEVICE_MAP"
    )
    group.addoption(
        "--device",
        default=None,
        help="auto|cpu|cuda|cuda:N: where both models run (ignored with --device-map, which lets accelerate "
        "place them); under pytest-xdist with cuda, worker i uses GPU i mod the GPU count; env DPOCLAIMS_DEVICE; "
        "default auto (CUDA when available, else the CPU)",
    )
    group.addoption(
        "--perplexity",
        default=None,
        help="claims|all: held-out perplexity is measured for every intervention either way (an intervention "
        "matches DPO only within DPO's perplexity); 'all' adds the paper's Table 1 F1; env DPOCLAIMS_PERPLEXITY",
    )
    group.addoption(
        "--search-examples",
        default=None,
        help="examples each Hypothesis search (C1[search], C2[search]: ablations; C13[search]: edits) draws, "
        "each a generation pass unless cached; 0 skips them; env DPOCLAIMS_SEARCH_EXAMPLES; default the "
        "searches' own (DEFAULT_EXAMPLES in dpoclaims.claims.search; docs/running.md gives it)",
    )
    group.addoption(
        "--scorer",
        default=None,
        help=f"toxicity scorer {sorted(SCORERS)}; env DPOCLAIMS_SCORER; default lexicon",
    )
    group.addoption(
        "--badge-repo",
        default=None,
        help="owner/name of the GitHub repository whose badges branch reports/badges/README.md links to; "
        "env DPOCLAIMS_BADGE_REPO, then GITHUB_REPOSITORY; default the placeholder OWNER/REPO",
    )
    group.addoption(
        PICKLE_GLOBALS_OPTION,
        default=None,
        help="comma-separated, fully qualified pickle globals that the pair's checkpoints may use "
        f"(unpickling them can run code: only for files you trust); env {PICKLE_GLOBALS_ENV}; "
        "default none",
    )


def _value(config: pytest.Config, option: str, env: str) -> str | None:
    value = config.getoption(option)
    return value if value is not None else os.environ.get(env)


def _source(config: pytest.Config, option: str, env: str) -> str:
    """Where an option's value came from, for messages: the option, else the variable."""
    return option if config.getoption(option) is not None else f"${env}"


def _ascii_hint(value: str) -> str:
    return "; write it in the digits 0-9" if value.isdigit() and not value.isascii() else ""


def _whole_number(value: str) -> bool:
    """ASCII digits only: ``str.isdigit`` also accepts superscripts (``²⁰``) that ``int`` refuses."""
    return value.isascii() and value.isdigit()


def suite_options(config: pytest.Config) -> SuiteOptions:
    """The options, parsed and checked: a :class:`pytest.UsageError` naming the option (or the
    variable) and what it accepts. Use :func:`configured_options` in the plugin: it parses once."""
    from dpoclaims.devices import resolve_device
    from dpoclaims.measure.prompts import MIN_USABLE_PROMPTS

    max_prompts = _value(config, "--max-prompts", "DPOCLAIMS_MAX_PROMPTS")
    if max_prompts is not None and (not _whole_number(max_prompts) or int(max_prompts) < MIN_USABLE_PROMPTS):
        raise pytest.UsageError(
            f"{_source(config, '--max-prompts', 'DPOCLAIMS_MAX_PROMPTS')} must be a whole number >= "
            f"{MIN_USABLE_PROMPTS} (bootstrap intervals over fewer prompts are meaningless), not {max_prompts!r}"
            + _ascii_hint(max_prompts)
        )
    convention = _value(config, "--convention", "DPOCLAIMS_CONVENTION") or "v1"
    if convention not in CONVENTIONS:
        raise pytest.UsageError(f"--convention must be one of {CONVENTIONS}, not {convention!r}")
    scorer = _value(config, "--scorer", "DPOCLAIMS_SCORER")
    if scorer is not None and scorer not in SCORERS:
        raise pytest.UsageError(f"--scorer must be one of {sorted(SCORERS)}, not {scorer!r}")
    dtype = _value(config, "--dtype", "DPOCLAIMS_DTYPE") or "float32"
    if dtype not in DTYPES:
        raise pytest.UsageError(f"--dtype must be one of {sorted(DTYPES)}, not {dtype!r}")
    perplexity = _value(config, "--perplexity", "DPOCLAIMS_PERPLEXITY") or "claims"
    if perplexity not in ("claims", "all"):
        raise pytest.UsageError(f"--perplexity must be 'claims' or 'all', not {perplexity!r}")
    badge_repo = _value(config, "--badge-repo", "DPOCLAIMS_BADGE_REPO") or os.environ.get("GITHUB_REPOSITORY")
    if badge_repo and not GITHUB_REPO.match(badge_repo):
        raise pytest.UsageError(
            f"--badge-repo must be a GitHub owner/name such as octo/dpoclaims, not {badge_repo!r}"
        )
    allow_pickle_globals = config.getoption(PICKLE_GLOBALS_OPTION)
    try:  # every name must import now, not when the pair loads
        resolve_allowed_globals(allow_pickle_globals)
    except OptionError as exc:
        raise pytest.UsageError(str(exc)) from None
    try:  # the option, else $DPOCLAIMS_DEVICE, else auto; an error names what is available
        device = resolve_device(config.getoption("--device"))
    except OptionError as exc:
        raise pytest.UsageError(str(exc)) from None
    search_examples = _value(config, "--search-examples", "DPOCLAIMS_SEARCH_EXAMPLES")
    if search_examples is not None and not _whole_number(search_examples):
        raise pytest.UsageError(
            f"{_source(config, '--search-examples', 'DPOCLAIMS_SEARCH_EXAMPLES')} must be a whole number "
            f"(0 skips the searches), not {search_examples!r}" + _ascii_hint(search_examples)
        )
    device_map = _value(config, "--device-map", "DPOCLAIMS_DEVICE_MAP")
    if device_map is not None and not device_map.strip():
        raise pytest.UsageError(
            f"{_source(config, '--device-map', 'DPOCLAIMS_DEVICE_MAP')} is set but empty; give a device map "
            "such as auto, or unset it (then both models run on --device)"
        )
    cache_dir = _value(config, "--cache-dir", "DPOCLAIMS_CACHE")
    reports_dir = _value(config, "--reports-dir", "DPOCLAIMS_REPORTS") or str(
        Path(config.rootpath) / "reports"
    )
    if Path(reports_dir).expanduser().is_file():  # found now, not after every test has run
        from dpoclaims.report.writer import REPORTS_REMEDY

        raise pytest.UsageError(
            f"reports directory {reports_dir} is a file, not a directory; {REPORTS_REMEDY}"
        )
    return SuiteOptions(
        pair=_value(config, "--pair", "DPOCLAIMS_PAIR") or "toy",
        max_prompts=int(max_prompts) if max_prompts else None,
        cache_dir=Path(cache_dir).expanduser() if cache_dir else None,
        reports_dir=Path(reports_dir).expanduser(),
        convention=cast("Convention", convention),  # checked against CONVENTIONS above
        scorer=scorer,
        dtype=dtype,
        device_map=device_map.strip() if device_map else None,
        perplexity=cast("PerplexityScope", perplexity),  # checked above
        badge_repo=badge_repo or None,
        allow_pickle_globals=allow_pickle_globals,
        device=str(device),
        search_examples=int(search_examples) if search_examples is not None else _default_search_examples(),
    )


def pytest_configure(config: pytest.Config) -> None:
    """Register the suite's markers (so ``--strict-markers`` accepts them in claims files), and
    nothing else: the options are parsed when the run uses the suite (:func:`configured_options`)."""
    config.stash[STATE_KEY] = SuiteState()
    for keyword, text in KEYWORD_MARKERS.items():
        config.addinivalue_line("markers", f"{keyword}: {text}")
    config.addinivalue_line(
        "markers",
        "claim(id, param=None, hypothesis=False): a numbered claim of the paper table (docs/claims.md)",
    )
    # Not a keyword marker: the reports name the searches by their keyword (ablation, editing).
    config.addinivalue_line("markers", "search: Hypothesis searches (C1[search], C2[search], C13[search])")


def configured_options(config: pytest.Config) -> SuiteOptions:
    """The run's options, parsed and checked the first time the run uses the suite (a bad value
    is a :class:`pytest.UsageError` then), and stashed: every later call returns the same frozen
    value. An xdist worker is pinned to its device here (its GPU, or its share of the CPU cores)."""
    options = config.stash.get(OPTIONS_KEY, None)
    if options is None:
        options = suite_options(config)
        workerinput = getattr(config, "workerinput", None)
        if workerinput is not None:
            options = replace(options, device=str(_worker_device(workerinput, options.device)))
        config.stash[OPTIONS_KEY] = options
    return options


def _worker_device(workerinput: dict[str, Any], requested: str) -> torch.device:
    """A pytest-xdist worker's device: on CUDA, worker ``gwI`` is pinned to GPU ``I`` mod the GPU
    count (made its current device); on the CPU the workers share the cores instead of
    oversubscribing them."""
    import torch

    from dpoclaims.devices import xdist_worker_device

    try:
        device = xdist_worker_device(str(workerinput["workerid"]), torch.device(requested))
    except OptionError as exc:
        raise pytest.UsageError(str(exc)) from None
    if device.type == "cuda":
        torch.cuda.set_device(device)
    else:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(workerinput["workercount"])))
    return device


@dataclass(frozen=True)
class ClaimItem:
    """A claim test's ``claim`` marker and the pair's expectation, parsed once at collection."""

    id: ClaimId
    order: int  # collection order
    keyword: str  # the keyword marker that selects it (ablation, patching, ...)
    expectation: Expectation


@dataclass
class SuiteState:
    """What the plugin keeps for one pytest process."""

    figures_sent: set[str] = field(default_factory=set)  # pairs whose figure data this process sent


OPTIONS_KEY = pytest.StashKey[SuiteOptions]()
CLAIM_ITEM_KEY = pytest.StashKey[ClaimItem]()  # on each claim test item
STATE_KEY = pytest.StashKey[SuiteState]()  # on the config
KEYWORD_MARKERS = {
    "ablation": "claims about ablating toxic neurons",
    "patching": "claims about patching neuron activations to DPO levels",
    "projection": "claims about the probe-projection decomposition",
    "groups": "claims about the four neuron groups",
    "noise": "claims about opposing, noisy neuron changes",
    "distribution": "claims about how widely the reduction is spread",
    "layers": "claims about layer-wise contributions",
    "correlation": "claims about activation change vs cosine",
    "weights": "claims about weight and activation changes (Lee et al.)",
    "scaling": "claims about scaling key vectors (Lee et al.)",
    "editing": "claims about editing activations with no weight update (v3, EMNLP)",
}
