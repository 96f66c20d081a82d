"""Session fixtures: the pair, its models, cached captures and the measurements, and the
fixture that records a claim's result (and the figure data) on its test report.

Everything comes from the dpoclaims cache, so a second run computes nothing, and
pytest-xdist workers share entries (each is built once under a file lock).

Only what was not provided skips: an optional download (:class:`dpoclaims.errors.MissingDownload`)
or a prompt set the pair names no file for. A file that was given but cannot be used fails
every test that needs it, with the message; a cache that cannot be written stops the session
with one line.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from dpoclaims.errors import CacheError, DpoclaimsError, MissingDownload
from dpoclaims.files import pickle_globals_allowed
from dpoclaims.plugin.options import (
    CLAIM_ITEM_KEY,
    STATE_KEY,
    SuiteOptions,
    configured_options,
)

# The models, measurements and claims are imported inside the fixtures and hooks that use them:
# this module is loaded into every pytest run where dpoclaims is installed.
if TYPE_CHECKING:
    from dpoclaims.cache import Cache
    from dpoclaims.claims.results import ClaimResult
    from dpoclaims.measure.capture import Capture
    from dpoclaims.measure.decomposition import Decomposition
    from dpoclaims.measure.measurements import Measurements, MeasurementSettings
    from dpoclaims.models.pairs import ModelPair

CLAIM_PROPERTY = "dpoclaims_claim"  # ClaimResult.to_json()
META_PROPERTY = "dpoclaims_meta"  # the item's ClaimItem, as JSON
PAIR_PROPERTY = "dpoclaims_pair"  # pair name, fingerprint, prompt count, scorer: the report's header
FIGURES_PROPERTY = "dpoclaims_figures"  # Decomposition.figure_data, sent once per process


def default_scorer(pair: ModelPair, options: SuiteOptions) -> str:
    if options.scorer:
        return options.scorer
    return "lexicon" if pair.spec.lexicon else "profanity-check"


def load_options(options: SuiteOptions) -> dict[str, Any]:
    """How the pair loads: dtype, and either accelerate's device map or the one device."""
    import torch

    device = None if options.device_map else torch.device(options.device)
    return {"dtype": getattr(torch, options.dtype), "device_map": options.device_map, "device": device}


@pytest.fixture(scope="session")
def suite_options(pytestconfig: pytest.Config) -> SuiteOptions:
    return configured_options(pytestconfig)


@pytest.fixture(scope="session")
def dpoclaims_cache(suite_options: SuiteOptions) -> Cache:
    return suite_cache(suite_options)


def suite_cache(options: SuiteOptions) -> Cache:
    """The suite's cache. Where its directory cannot be written (a read-only mount), it is read
    only: a fully cached run needs no write and no lock, and a missing entry fails naming the
    cache and the fix (--cache-dir)."""
    from dpoclaims.cache import Cache

    cache = Cache(options.cache_dir)
    why = cache.writable()
    return cache if why is None else cache.reader(why=why)


def load_suite_pair(options: SuiteOptions, cache: Cache) -> ModelPair:
    """The suite's pair, its checkpoints loaded safely (with the pickle globals that
    ``--allow-pickle-globals`` names). Skips only when an optional download was not provided;
    any other error fails, with its message and without a traceback."""
    from dpoclaims.quiet import quiet_third_party
    from dpoclaims.train.named_pairs import load_pair

    quiet_third_party()
    try:
        with pickle_globals_allowed(options.allow_pickle_globals):
            return load_pair(options.pair, cache=cache, **load_options(options))
    except MissingDownload as exc:  # files the user has not obtained: say what is missing
        pytest.skip(f"pair {options.pair!r} is not available: {exc}")
    except DpoclaimsError as exc:  # files the user gave that cannot be used: the run is red
        pytest.fail(f"pair {options.pair!r} cannot be used: {exc}", pytrace=False)


@pytest.fixture(scope="session")
def pair(suite_options: SuiteOptions, dpoclaims_cache: Cache) -> ModelPair:
    return load_suite_pair(suite_options, dpoclaims_cache)


@pytest.fixture(scope="session")
def base_model(pair: ModelPair) -> Any:
    """The base model as a TransformerBridge (raw weights), for your own claims: booted on a copy
    of the base and checked against the plain model first (see dpoclaims.hooks.bridge.pair_bridge;
    a TransformerLens that disagrees with the installed transformers stops with the versions)."""
    from dpoclaims.hooks.bridge import pair_bridge

    try:
        return pair_bridge(pair, "base")
    except DpoclaimsError as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture(scope="session")
def dpo_model(pair: ModelPair) -> Any:
    """The DPO model as a TransformerBridge (raw weights), for your own claims (see base_model)."""
    from dpoclaims.hooks.bridge import pair_bridge

    try:
        return pair_bridge(pair, "dpo")
    except DpoclaimsError as exc:
        pytest.fail(str(exc), pytrace=False)


def measurement_settings(pair: ModelPair, options: SuiteOptions) -> MeasurementSettings:
    from dpoclaims.measure.generation import GenerationSettings
    from dpoclaims.measure.measurements import MeasurementSettings

    declared = pair.spec.extras.get("max_prompts")  # the pair's default, checked when its spec was read
    batch = pair.spec.extras.get("generation_batch_size")  # likewise checked
    return MeasurementSettings(
        max_prompts=options.max_prompts or (int(declared) if declared is not None else None),
        generation=GenerationSettings(batch_size=int(batch)) if batch is not None else GenerationSettings(),
        convention=options.convention,
        scorer=default_scorer(pair, options),
        perplexity=options.perplexity,
    )


def suite_measurements(pair: ModelPair, cache: Cache, options: SuiteOptions) -> Measurements:
    """The pair's measurements. Skips when the pair names no file for a prompt set; a prompt
    file that was given but cannot be used (unreadable, fewer than the minimum of usable
    prompts) fails, with its message."""
    from dpoclaims.claims.checks import recorded_passes
    from dpoclaims.errors import ContextWindowError
    from dpoclaims.measure.measurements import Measurements
    from dpoclaims.measure.prompts import MissingPromptSet

    try:
        return Measurements(pair, cache, measurement_settings(pair, options), recorded_passes=recorded_passes)
    except MissingPromptSet as exc:
        pytest.skip(str(exc))
    except ContextWindowError as exc:  # the models' positions, not the prompt files
        pytest.fail(str(exc), pytrace=False)
    except DpoclaimsError as exc:
        pytest.fail(f"the prompt sets of pair {pair.name!r} cannot be used: {exc}", pytrace=False)


@pytest.fixture(scope="session")
def measurements(pair: ModelPair, dpoclaims_cache: Cache, suite_options: SuiteOptions) -> Measurements:
    """Everything the claims measure on the pair, cached (see :mod:`dpoclaims.measure.measurements`)."""
    return suite_measurements(pair, dpoclaims_cache, suite_options)


@pytest.fixture(scope="session")
def base_capture(measurements: Measurements) -> Capture:
    """Per-prompt mean activations of the base model on its own continuations (cached)."""
    return measurements.capture("base")


@pytest.fixture(scope="session")
def dpo_capture(measurements: Measurements) -> Capture:
    return measurements.capture("dpo")


@pytest.fixture(scope="session")
def decomposition(measurements: Measurements) -> Decomposition:
    """The per-neuron probe-projection decomposition of DPO's reduction."""
    return measurements.decomposition


@pytest.fixture
def check_claim(request: pytest.FixtureRequest) -> Callable[[ClaimResult], ClaimResult]:
    """Record a claim's result on the test report (xdist carries it to the controller), with,
    when the test uses ``measurements``, the pair's header and (once per process) the
    decomposition's figure data: the reports are built from these alone. Then assert what the
    test asserts: the item's :class:`~dpoclaims.claims.results.Expectation` (the paper's finding,
    or the verdict the pair's table declares)."""

    def check(result: ClaimResult) -> ClaimResult:
        node = request.node
        from dpoclaims.claims.results import Expectation

        node.user_properties.append((CLAIM_PROPERTY, result.to_json()))
        if "measurements" in request.fixturenames:
            _record_pair(request, node)
        claim_item = node.stash.get(CLAIM_ITEM_KEY, None)
        if claim_item is not None and result.id != claim_item.id:  # never an expected failure
            raise RuntimeError(
                f"test {node.nodeid} (claim {claim_item.id}) recorded the result of {result.id}"
            )
        return (claim_item.expectation if claim_item else Expectation()).check(result)

    return check


def pair_header(measurements: Measurements) -> dict[str, Any]:
    """The report header's part about the pair and its prompts (what was dropped and why)."""
    pair = measurements.pair
    return {
        "pair": pair.name,
        "fingerprint": pair.fingerprint,
        "n_prompts": len(measurements.prompts),
        "prompts_dropped": measurements.prompts_dropped,
        "prompt_selection": measurements.prompts_note,
        "scorer": measurements.settings.scorer,
        "seed": measurements.settings.seed,
        "n_layers": pair.layout.n_layers,  # resolve the criteria stated for GPT-2 medium (the page's lines)
        "n_neurons": pair.layout.n_neurons,
    }


def _record_pair(request: pytest.FixtureRequest, node: pytest.Item) -> None:
    """The pair's header (with what the run's manifest takes from the process that measured: its
    device and thread count) and, once per process, the decomposition's figure data."""
    import torch

    measurements: Measurements = request.getfixturevalue("measurements")
    options = configured_options(request.config)
    pair = measurements.pair
    header = {
        **pair_header(measurements),
        "device": f"device map {options.device_map}" if options.device_map else options.device,
        "threads": torch.get_num_threads(),
    }
    node.user_properties.append((PAIR_PROPERTY, header))
    computed = "decomposition" in vars(measurements)  # never compute it only for a figure
    sent = request.config.stash[STATE_KEY].figures_sent
    if computed and pair.fingerprint not in sent:
        data = measurements.decomposition.figure_data(seed=measurements.settings.seed)
        node.user_properties.append((FIGURES_PROPERTY, data))
        sent.add(pair.fingerprint)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Any:
    """A prompt set a claim reads lazily (the neutral texts): the claim skips when the pair names
    no file for it, and fails with the message (no traceback) when the file cannot be used. Other
    claims of the pair are unaffected. A cache that cannot be written stops the run."""
    try:
        return (yield)
    except DpoclaimsError as exc:  # only the library raises these: other tests pass through as they are
        from dpoclaims.errors import ContextWindowError
        from dpoclaims.measure.prompts import MissingPromptSet, UnusablePromptSet

        if isinstance(exc, MissingPromptSet):
            raise pytest.skip.Exception(str(exc), _use_item_location=True) from None
        if isinstance(exc, (UnusablePromptSet, ContextWindowError)):
            raise pytest.fail.Exception(str(exc), pytrace=False) from None
        if isinstance(exc, CacheError):
            raise _cache_failure(item, exc) from None
        raise


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Any:
    try:
        return (yield)
    except CacheError as exc:
        raise _cache_failure(item, exc) from None


def _cache_failure(item: pytest.Item, exc: CacheError) -> BaseException:
    """A cache entry that cannot be written (a full or read-only disk): this test fails with the
    message, naming the cache and a remedy, and the run stops instead of failing every test."""
    item.session.shouldstop = f"the cache cannot be written: {exc}"
    return pytest.fail.Exception(str(exc), pytrace=False)


#: Skip reasons that mean the pair's files were not provided (load_suite_pair, suite_measurements,
#: a lazily read prompt set): a run in which every claim skips for them measured nothing.
MISSING_FILES = re.compile(r"pair '[^']*' is not available: |names no '\w+' file")


def uses_suite(item: pytest.Item) -> bool:
    """Whether a collected test uses the suite: it is a claim, or asks for a fixture defined here
    (``pair``, ``measurements``, ``suite_options``, ...; one of the same name from elsewhere does
    not count)."""
    if item.get_closest_marker("claim") is not None:
        return True
    # pytest's record of which definition each of the test's fixture names resolves to (not
    # public API, but the only place that says where a fixture comes from); items other than
    # Python test functions (doctests) have none, and ask for no fixture of ours.
    resolved = getattr(getattr(item, "_fixtureinfo", None), "name2fixturedefs", {})
    return any(
        getattr(definitions[-1].func, "__module__", None) == __name__
        for definitions in resolved.values()
        if definitions
    )


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The options are parsed and checked (and an xdist worker pinned to its device) once the
    run is found to use the suite; a run that does not is left alone. The searches run first
    (:func:`searches_first`)."""
    if any(uses_suite(item) for item in items):
        configured_options(config)
        items[:] = searches_first(items)


def searches_first(items: list[pytest.Item]) -> list[pytest.Item]:
    """``items`` with the searches (marked ``search``) first, the rest in their order. A search is
    the longest test of a run (on smollm2 at 80 prompts, cold: C13[search] 1,235 s of a 2,278 s
    run, the next longest test 279 s): started last, it kept one worker busy while the other
    idled. Under ``--dist loadfile`` their files then start first (see
    :func:`pytest_configure`). No verdict depends on the order: each measurement is
    cached under what shaped it, whoever computes it first."""
    return sorted(items, key=lambda item: item.get_closest_marker("search") is None)


def pytest_configure(config: pytest.Config) -> None:
    """On a claims run, pytest-xdist's ``loadfile`` hands out files in collection order (the
    searches' first, :func:`searches_first`), not reordered by their number of tests: its default,
    which put the searches' one- and two-test files last. That is ``--no-loadscope-reorder``, set
    for the run; nothing else is touched, and a run that is not a claims run is left alone."""
    if runs_claims(config) and hasattr(config.option, "loadscopereorder"):
        config.option.loadscopereorder = False


def runs_claims(config: pytest.Config) -> bool:
    """Whether the run selects the claims suite (``claims/`` under the run's root directory, or
    a file in it)."""
    return _runs_claims(config)


def _runs_claims(config: pytest.Config) -> bool:
    claims_dir = (config.rootpath / "claims").resolve()
    for arg in config.args:
        path = Path(str(arg).split("::")[0]).resolve()
        if path == claims_dir or claims_dir in path.parents:
            return True
    return False


@pytest.hookimpl(tryfirst=True)
def pytest_sessionstart(session: pytest.Session) -> None:
    """Build the pair the project builds itself (the toy, smollm2) before any test (and before
    xdist workers start), with visible progress bars: inside a test or a worker its minutes
    would pass in silence."""
    config = session.config
    if hasattr(config, "workerinput") or not _runs_claims(config):
        return
    options = configured_options(config)  # the run names claims/: its options are checked now
    if built_here(options.pair) is None:
        return
    if config.option.collectonly:  # collecting needs no model: `--collect-only` stays instant
        return
    from dpoclaims.cache import Cache

    try:  # a cache that cannot be written, a missing package: one line and a non-zero exit
        _build_pair(config, Cache(options.cache_dir), options.pair)
    except DpoclaimsError as exc:
        raise pytest.UsageError(str(exc)) from None


#: The pairs built on first use, and what their first build takes on 2 CPU cores.
BUILT_HERE = {
    "toy": "about 5 minutes",
    "smollm2": "about 60 minutes",
    "smollm2-grammar-probe": "about 60 minutes",
}
#: smollm2 at another DPO seed (dpoclaims.train.named_pairs.SMOLLM2_SEED_NAME, kept here as a
#: pattern so that the plugin imports nothing heavy): its own DPO and measurement stages.
SMOLLM2_SEEDED = re.compile(r"smollm2-seed(\d+)")


def built_here(name: str) -> str | None:
    """What the first build of the pair ``name`` takes, if the project builds it on first use."""
    if name in BUILT_HERE:
        return BUILT_HERE[name]
    if SMOLLM2_SEEDED.fullmatch(name):
        return "about 25 minutes, 60 without smollm2's data stage"
    return None


def _build_pair(config: pytest.Config, cache: Cache, name: str) -> None:
    from dpoclaims.train.named_pairs import checked_smollm2, checked_toy
    from dpoclaims.train.organism.build import ToyConfig, toy_key
    from dpoclaims.train.smollm2 import DEFAULT_DPO_SEED, STAGES, cached_stages, locate_gguf, seeded_config

    seeded = SMOLLM2_SEEDED.fullmatch(name)
    dpo_seed = int(seeded[1]) if seeded else DEFAULT_DPO_SEED

    def build() -> None:  # each refuses a build outside its bands (BrokenOrganismError)
        if name == "toy":
            checked_toy(cache, ToyConfig())
        else:
            checked_smollm2(cache, dpo_seed=dpo_seed)

    if name == "toy":
        if cache.get("toy", toy_key(ToyConfig())) is not None:
            build()  # the toy is cached: only its bands are checked (out of them, the run stops here)
            return
    else:
        locate_gguf()  # a missing package: the install line, before anything else
        if STAGES[-1] in cached_stages(cache, seeded_config(dpo_seed)):
            build()  # every stage is cached: only the bands are checked
            return
    cache.check_writable()
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(
            f"dpoclaims: building the {name} pair into {cache.root} (first use: {built_here(name)} on 2 CPU cores)"
        )
    capture = config.pluginmanager.get_plugin("capturemanager")
    from dpoclaims.quiet import quiet_third_party

    quiet_third_party()
    if capture is not None:
        with capture.global_and_fixture_disabled():
            build()
    else:
        build()
