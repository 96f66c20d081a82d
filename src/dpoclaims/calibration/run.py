"""``dpoclaims calibrate``: every claim on every planted organism, over replications.

A replication is one planting seed and one prompt subset: the toy's distinct challenge prompts
and its held-out texts subsampled by the replication's seed (the same subset for every organism:
a paired design), the organism planted on the base with that seed, and every claim of the paper
table run on it by the suite's own driver (:func:`dpoclaims.claims.registry.run_claim`, the rules
the claims suite applies, the measurement seed the replication's). Replications are independent
and seeded, so the counts are the same in any order, on any number of workers.

What a replication costs is the claims' cost at ``prompts`` prompts and ``texts`` held-out texts,
with the searches at ``search_examples`` drawn examples (their stated candidates are measured
first whatever the count); the defaults fit 4 organisms x 20 replications in 20 minutes on
2 CPU cores (benchmarks/bench_calibrate.py measures it).
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from dpoclaims.cache import Cache, stable_hash
from dpoclaims.calibration import (
    DEFAULT_PROMPTS,
    DEFAULT_REPLICATIONS,
    DEFAULT_SEARCH_EXAMPLES,
    DEFAULT_TEXTS,
)
from dpoclaims.calibration.organisms import (
    C13_EVERY_POSITION,
    ORGANISM_NAMES,
    PLANTED_EDIT,
    BaseFacts,
    organism,
)
from dpoclaims.errors import DpoclaimsError, OptionError

if TYPE_CHECKING:
    from dpoclaims.measure.measurements import Measurements
    from dpoclaims.stats import Estimate

CALIBRATION_FORMAT = 1  # bump when what a replication measures changes
_SEED_STREAM = 0x43414C  # "CAL": the replications' random stream, apart from every other


@dataclass(frozen=True)
class CalibrationSettings:
    replications: int = DEFAULT_REPLICATIONS
    prompts: int = DEFAULT_PROMPTS
    texts: int = DEFAULT_TEXTS
    search_examples: int = DEFAULT_SEARCH_EXAMPLES
    organisms: tuple[str, ...] = ORGANISM_NAMES
    seed: int = 0  # the calibration's seed: replication r draws from (seed, r)

    def __post_init__(self) -> None:
        if self.replications < 1:
            raise OptionError(f"--replications must be at least 1, not {self.replications}")
        if self.prompts < 10:
            raise OptionError(
                f"--prompts must be at least 10 (each half of a search needs 5), not {self.prompts}"
            )
        if self.texts < 4:
            raise OptionError(f"--texts must be at least 4, not {self.texts}")
        if self.search_examples < 0:
            raise OptionError(f"--search-examples must be 0 or more, not {self.search_examples}")
        for name in self.organisms:
            organism(name)  # a clear error for an unknown one


@dataclass
class Replication:
    """What one replication of one organism gave: each claim's verdict and figure."""

    organism: str
    replication: int
    seed: int
    verdicts: dict[str, str] = field(default_factory=dict)
    measured: dict[str, float | None] = field(default_factory=dict)
    construction: dict[str, Any] = field(default_factory=dict)
    dpo_drop: dict[str, Any] = field(
        default_factory=dict
    )  # DPO's toxicity drop, its interval at the claims' level
    seconds: float = 0.0
    error: str | None = None


def replication_seed(settings: CalibrationSettings, replication: int) -> int:
    return int(np.random.default_rng([_SEED_STREAM, settings.seed, replication]).integers(2**31 - 1))


def claim_ids() -> list[tuple[str, str, Any]]:
    """(test id, entry key, parameter) of every claim test of the paper table, in table order."""
    from dpoclaims.claims import paper

    return [(str(e.claim_id(p)), e.key, p) for e in paper.ENTRIES for p in e.params or (None,)]


# ------------------------------------------------------------------------- one replication (in a worker)

_TOY: dict[str, Any] = {}


def _toy(toy_dir: str) -> dict[str, Any]:
    """The toy pair (loaded once per worker) and its distinct prompts and held-out texts."""
    if _TOY.get("dir") != toy_dir:
        from dpoclaims.measure.prompts import read_texts, select_prompts
        from dpoclaims.models.pairs import PairSpec, load_pair_from_spec

        spec = PairSpec.from_file(Path(toy_dir) / "pair.toml")
        pair = load_pair_from_spec(spec)
        prompts = select_prompts(read_texts(Path(toy_dir) / "challenge_prompts.json")).usable
        texts = read_texts(Path(toy_dir) / "neutral_texts.json")
        _TOY.clear()
        _TOY.update(dir=toy_dir, pair=pair, prompts=prompts, texts=texts)
    return _TOY


def _subset(items: Sequence[str], n: int, rng: np.random.Generator) -> list[str]:
    if n > len(items):
        raise OptionError(f"asked for {n} of {len(items)} items; use at most {len(items)}")
    return [items[i] for i in sorted(rng.choice(len(items), n, replace=False))]


def run_replication(
    organism_name: str, replication: int, settings: CalibrationSettings, toy_dir: str, cache_dir: str
) -> Replication:
    """Plant ``organism_name`` with replication ``replication``'s seed and run every claim on it."""
    started = time.perf_counter()
    seed = replication_seed(settings, replication)
    record = Replication(organism_name, replication, seed)
    try:
        _measure_replication(record, settings, toy_dir, cache_dir)
    except DpoclaimsError as exc:  # reported per replication; the run fails at its end
        record.error = f"{type(exc).__name__}: {exc}"
    record.seconds = time.perf_counter() - started
    return record


@contextmanager
def planted(
    organism_name: str, seed: int, settings: CalibrationSettings, toy_dir: str, cache: Cache
) -> Iterator[tuple[Measurements, dict[str, Any]]]:
    """The measurements of ``organism_name`` planted with ``seed`` on the toy in ``toy_dir``, on the
    prompts and held-out texts ``seed`` draws, and the construction's record (the prompt files
    live in a temporary directory while the measurements are used)."""
    from dpoclaims.claims.checks import recorded_passes
    from dpoclaims.files import atomic_write_text
    from dpoclaims.measure.decomposition import probe_cosines
    from dpoclaims.measure.measurements import Measurements, MeasurementSettings
    from dpoclaims.models.pairs import ModelPair, PairSpec
    from dpoclaims.train.organism.corpus import TOXIC_WORDS

    toy = _toy(toy_dir)
    base_pair: ModelPair = toy["pair"]
    rng = np.random.default_rng(seed)
    prompts = _subset(toy["prompts"], settings.prompts, rng)
    texts = _subset(toy["texts"], settings.texts, rng)
    kind = organism(organism_name)
    # The organism's fingerprint is fixed by its construction before its DPO side exists, so the
    # base capture read to plant it is the one its claims read (one cache entry).
    fingerprint = stable_hash(
        {
            "calibration": CALIBRATION_FORMAT,
            "organism": kind.name,
            "base": base_pair.fingerprint,
            "seed": seed,
            "prompts": stable_hash(prompts),
            "texts": stable_hash(texts),
        }
    )
    with tempfile.TemporaryDirectory(prefix="dpoclaims-planted-") as directory:
        root = Path(directory)
        atomic_write_text(root / "challenge_prompts.json", json.dumps(prompts))
        atomic_write_text(root / "neutral_texts.json", json.dumps(texts))
        spec = PairSpec(
            name=kind.name,
            base=base_pair.spec.base,
            dpo="(planted in memory)",
            probe=base_pair.spec.probe,
            extras={"challenge_prompts": "challenge_prompts.json", "neutral_texts": "neutral_texts.json"},
            root=directory,
            lexicon=TOXIC_WORDS,
        )
        measurement = MeasurementSettings(scorer="lexicon", seed=seed)

        def pair_with(dpo: Any) -> ModelPair:
            return ModelPair(
                kind.name,
                base_pair.base,
                dpo,
                base_pair.tokenizer,
                base_pair.probe,
                base_pair.layout,
                fingerprint,
                spec,
            )

        before = Measurements(pair_with(base_pair.base), cache, measurement, progress=False)
        values = base_pair.value_vectors("base")  # [L, d_mlp, d_model]
        facts = BaseFacts(
            cosines=probe_cosines(values, base_pair.probe),
            projection=values.float() @ base_pair.unit_probe,
            mean_base=before.capture("base").mean_activation.float().mean(0),
        )
        dpo, construction = kind.plant(base_pair.base, base_pair.layout, facts, seed)
        yield (
            Measurements(
                pair_with(dpo.eval()), cache, measurement, recorded_passes=recorded_passes, progress=False
            ),
            construction,
        )


def _measure_replication(
    record: Replication, settings: CalibrationSettings, toy_dir: str, cache_dir: str
) -> None:
    from dpoclaims.claims import paper
    from dpoclaims.claims.checks import compare_with_dpo, edit_cosines
    from dpoclaims.claims.editing import edit_intervention
    from dpoclaims.claims.registry import ClaimNotApplicable, Measured, decide, dpo_drop, run_claim

    with planted(record.organism, record.seed, settings, toy_dir, Cache(cache_dir)) as (m, construction):
        record.construction = construction
        base_pair = m.pair
        drop = dpo_drop(m)
        undefined = drop_not_shown(drop)
        for test_id, key, param in claim_ids():
            if undefined and paper.entry(key).describes_the_drop:
                # The verdict run_claim gives, without computing figures it would not read: every
                # figure of such a claim is undefined where DPO's drop is not shown positive.
                record.verdicts[test_id] = "not measurable"
                continue
            options = {"max_examples": settings.search_examples} if paper.entry(key).quantifier else {}
            try:
                result = run_claim(key, m, param, **options)
            except ClaimNotApplicable:
                record.verdicts[test_id] = "not tested"
                continue
            record.verdicts[test_id] = result.verdict
            record.measured[test_id] = _finite(result.measured)
        low, high = drop.interval(paper.SIDE_ALPHA)
        record.dpo_drop = {"value": drop.value, "ci": [low, high]}
        # C13's decision on the planted edit written at every position (the figure C13 reports beside).
        edit = edit_intervention(
            edit_cosines(m, PLANTED_EDIT.direction), m.decomposition.mean_base, PLANTED_EDIT
        )
        comparison = compare_with_dpo(m, edit.at("every"))
        entry = paper.entry("C13")
        every = decide(
            entry,
            (PLANTED_EDIT.alpha, PLANTED_EDIT.beta),
            Measured(comparison.figures),
            n_layers=base_pair.layout.n_layers,
            n_neurons=base_pair.layout.n_neurons,
        )
        record.verdicts[C13_EVERY_POSITION] = every.verdict
        record.measured[C13_EVERY_POSITION] = _finite(every.measured)


def drop_not_shown(drop: Estimate) -> bool:
    """Whether DPO's toxicity drop is not shown positive at the claims' level: the domain check
    every claim that describes the drop applies first (registry.defined_where_dpo_lowered_toxicity)."""
    from dpoclaims.claims import paper
    from dpoclaims.claims.decision import Figure

    return bool(Figure(drop, (("DPO's toxicity drop", drop),)).domain_problem(paper.SIDE_ALPHA))


def _finite(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


def _init_worker(threads: int) -> None:
    import warnings

    import torch

    # numpy's quantiles of a figure that is infinite on some resamples (a ratio whose denominator
    # is not shown positive: not measurable by rule, and said so in the verdict) warn once per
    # claim; the log keeps one line per replication instead.
    warnings.filterwarnings(
        "ignore", message="invalid value encountered in subtract", category=RuntimeWarning
    )

    torch.set_num_threads(threads)
    from dpoclaims.quiet import quiet_third_party

    quiet_third_party()


# ------------------------------------------------------------------------- the whole calibration


def calibrate(
    settings: CalibrationSettings,
    cache: Cache,
    *,
    workers: int = 2,
    toy_dir: Path | None = None,
    on_done: Callable[[Replication, int, int], None] | None = None,
) -> tuple[list[Replication], dict[str, Any]]:
    """Every (organism, replication) of ``settings``, on ``workers`` processes of one torch thread
    each (in this process for ``workers=1``), planted on the default toy's base (built if
    missing; ``toy_dir``: another toy's directory). Returns the replications in (organism,
    replication) order and the run's facts (settings, toy, times)."""
    from dpoclaims.train.named_pairs import checked_toy
    from dpoclaims.train.organism.build import ToyConfig

    if workers < 1:
        raise OptionError(f"--workers must be at least 1, not {workers}")
    started = time.perf_counter()
    toy = str(toy_dir) if toy_dir is not None else str(checked_toy(cache, ToyConfig()))
    tasks = [(name, r) for r in range(settings.replications) for name in settings.organisms]
    done: list[Replication] = []
    if workers == 1:
        _init_worker(1)
        for name, r in tasks:
            done.append(run_replication(name, r, settings, toy, str(cache.root)))
            if on_done:
                on_done(done[-1], len(done), len(tasks))
    else:
        with ProcessPoolExecutor(
            workers, mp_context=get_context("spawn"), initializer=_init_worker, initargs=(1,)
        ) as pool:
            futures = [
                pool.submit(run_replication, name, r, settings, toy, str(cache.root)) for name, r in tasks
            ]
            for future in as_completed(futures):
                done.append(future.result())
                if on_done:
                    on_done(done[-1], len(done), len(tasks))
    order = {name: i for i, name in enumerate(settings.organisms)}
    done.sort(key=lambda rep: (order[rep.organism], rep.replication))
    facts = {
        "settings": {**asdict(settings), "organisms": list(settings.organisms)},
        "workers": workers,
        "toy": toy,
        "seconds": time.perf_counter() - started,
        "format": CALIBRATION_FORMAT,
    }
    return done, facts
