"""Named pairs (the toy organism, the paper's gpt2-medium pair) and resolving a pair
argument (a name, a spec file or a directory holding ``pair.toml``) to a loaded pair."""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from dpoclaims.cache import Cache
from dpoclaims.errors import MissingDownload, UnknownPairError
from dpoclaims.models.pairs import ModelPair, PairSpec, load_pair_from_spec
from dpoclaims.train.bands import check_bands
from dpoclaims.train.organism.build import BANDS as TOY_BANDS
from dpoclaims.train.organism.build import ToyConfig, ensure_toy, out_of_bands_advice, read_toy_report
from dpoclaims.train.organism.corpus import TOXIC_WORDS
from dpoclaims.train.smollm2 import BANDS as SMOLLM2_BANDS
from dpoclaims.train.smollm2 import (
    CLAIMS_GENERATION_BATCH,
    CLAIMS_MAX_PROMPTS,
    CLAIMS_PERPLEXITY_WINDOW,
    DEFAULT_DPO_SEED,
    OUT_OF_BANDS_ADVICE,
    BuiltPair,
    ensure_smollm2,
    seeded_config,
)


def checked_toy(cache: Cache, config: ToyConfig, *, progress: bool = True) -> Path:
    """The toy the claims may measure: its directory (:func:`ensure_toy`: reused from the cache, or
    built), refused (BrokenOrganismError) if out of its bands."""
    directory = ensure_toy(config, cache=cache, progress=progress)
    report = read_toy_report(directory)
    check_bands(report, organism=f"the toy organism in {directory}", advice=out_of_bands_advice(report))
    return directory


def _toy_spec(cache: Cache) -> PairSpec:
    spec = PairSpec.from_file(checked_toy(cache, ToyConfig()) / "pair.toml")
    # the toy's toxic register, for the lexicon scorer; the bands its build enforces
    return replace(spec, lexicon=TOXIC_WORDS, guarantees=frozenset(TOY_BANDS))


# The toy organism built at another seed, e.g. "toy-seed1" (dpoclaims replicate runs the claims on
# these). A directory holding the toy's pair.toml would load without the toy's lexicon, so its
# claims would silently be scored by profanity-check instead.
TOY_SEED_NAME = re.compile(r"toy-seed(\d+)")


def toy_seed(pair: object) -> int | None:
    """The seed of a ``toy-seedN`` pair name, else None."""
    match = TOY_SEED_NAME.fullmatch(pair) if isinstance(pair, str) else None
    return int(match[1]) if match else None


def _seeded_toy_spec(cache: Cache, seed: int) -> PairSpec:
    spec = PairSpec.from_file(checked_toy(cache, replace(ToyConfig(), seed=seed)) / "pair.toml")
    return replace(spec, name=f"toy-seed{seed}", lexicon=TOXIC_WORDS, guarantees=frozenset(TOY_BANDS))


GPT2_MEDIUM_HELP = (
    "The paper pair needs three files you obtain yourself: the base model (hub id 'gpt2-medium', "
    "resolved from your Hugging Face cache, or a local directory: DPOCLAIMS_GPT2_BASE), Lee et al.'s DPO "
    "checkpoint dpo.pt (DPOCLAIMS_GPT2_DPO) and their probe probe.pt (DPOCLAIMS_GPT2_PROBE), both "
    "distributed by the authors of github.com/ajyl/dpo_toxic; plus the RealToxicityPrompts prompts.jsonl "
    "(DPOCLAIMS_RTP_PATH) and Wikitext-2 raw test text (DPOCLAIMS_WIKITEXT_PATH) for the behavioural claims."
)


def _env_file(env: str) -> str | None:
    """The path ``$env`` names, or None when unset; a :class:`MissingDownload` when it names
    nothing that exists (the download is not where the variable says)."""
    value = os.environ.get(env, "").strip()
    if not value:
        return None
    if not Path(value).expanduser().exists():
        raise MissingDownload(f"{env} names {value}, which does not exist. {GPT2_MEDIUM_HELP}")
    return value


def _gpt2_medium_spec(cache: Cache) -> PairSpec:
    """The paper's pair, assembled from environment variables (see ``GPT2_MEDIUM_HELP``).
    Files it lacks are a :class:`MissingDownload`: the claims suite skips the pair then."""
    missing = [
        env for env in ("DPOCLAIMS_GPT2_DPO", "DPOCLAIMS_GPT2_PROBE") if not os.environ.get(env, "").strip()
    ]
    if missing:
        raise MissingDownload(f"{', '.join(missing)} not set. {GPT2_MEDIUM_HELP}")
    dpo, probe = _env_file("DPOCLAIMS_GPT2_DPO"), _env_file("DPOCLAIMS_GPT2_PROBE")
    base = os.environ.get("DPOCLAIMS_GPT2_BASE", "").strip() or "gpt2-medium"
    if base.startswith(("/", ".", "~")) and not Path(base).expanduser().exists():  # a path, not a hub id
        raise MissingDownload(f"DPOCLAIMS_GPT2_BASE names {base}, which does not exist. {GPT2_MEDIUM_HELP}")
    extras = {
        key: path
        for key, env in (
            ("challenge_prompts", "DPOCLAIMS_RTP_PATH"),
            ("neutral_texts", "DPOCLAIMS_WIKITEXT_PATH"),
        )
        if (path := _env_file(env)) is not None
    }
    extras["perplexity_window"] = "1024"  # Wikitext-2 test in 1024-token windows, as the paper
    return PairSpec(name="gpt2-medium", base=base, dpo=str(dpo), probe=str(probe), extras=extras)


def checked_smollm2(cache: Cache, *, dpo_seed: int = DEFAULT_DPO_SEED, progress: bool = True) -> BuiltPair:
    """The smollm2 pair the claims may measure, with its DPO stage at ``dpo_seed``: its stages
    (:func:`ensure_smollm2`: reused from the cache, or built), refused (BrokenOrganismError) if out
    of its bands."""
    built = ensure_smollm2(seeded_config(dpo_seed), cache=cache, progress=progress)
    check_bands(built.report(), organism=f"the smollm2 pair in {built.pair}", advice=OUT_OF_BANDS_ADVICE)
    return built


#: The smollm2 pair's specs by name, each with its probe file in the data stage: the probe trained
#: on the base's sampled continuations as profanity-check labels them (the default), and the
#: probe trained on the toy grammar's comments (a second spec of the same models and prompts, so
#: that a claims table shows what the choice of probe changes).
SMOLLM2_PROBES: dict[str, str] = {"smollm2": "probe.pt", "smollm2-grammar-probe": "probe_grammar.pt"}


# The smollm2 pair with its DPO stage run at another seed, e.g. "smollm2-seed1" (the same base,
# prompts, pairs and probe; smollm2 itself is smollm2-seed0).
SMOLLM2_SEED_NAME = re.compile(r"smollm2-seed(\d+)")


def smollm2_seed(pair: object) -> int | None:
    """The DPO seed of a ``smollm2-seedN`` pair name, else None."""
    match = SMOLLM2_SEED_NAME.fullmatch(pair) if isinstance(pair, str) else None
    return int(match[1]) if match else None


def _smollm2_spec(cache: Cache, name: str = "smollm2", dpo_seed: int = DEFAULT_DPO_SEED) -> PairSpec:
    """SmolLM2-135M-Instruct and its DPO model (:mod:`dpoclaims.train.smollm2`) at DPO seed
    ``dpo_seed``, built on first use, with the probe of the spec ``name``
    (:data:`SMOLLM2_PROBES`; ``smollm2-seedN`` has the default probe). A missing package is a
    :class:`MissingDownload` giving the install line."""
    built = checked_smollm2(cache, dpo_seed=dpo_seed)
    return PairSpec(
        name=name,
        base=str(built.base),
        dpo=str(built.dpo),
        probe=str(built.data / SMOLLM2_PROBES.get(name, SMOLLM2_PROBES["smollm2"])),
        extras={
            "challenge_prompts": str(built.data / "challenge_prompts.json"),
            "neutral_texts": str(built.data / "heldout_texts.json"),
            "dpo_pairs": str(built.data / "dpo_pairs.jsonl"),
            "report": str(built.pair / "smollm2.json"),
            # the claims' defaults for this pair (their reason: dpoclaims.train.smollm2)
            "max_prompts": str(CLAIMS_MAX_PROMPTS),
            "perplexity_window": str(CLAIMS_PERPLEXITY_WINDOW),
            "generation_batch_size": str(CLAIMS_GENERATION_BATCH),
        },
        guarantees=frozenset(SMOLLM2_BANDS),
    )


NAMED_PAIRS: dict[str, Callable[[Cache], PairSpec]] = {
    "toy": _toy_spec,
    "gpt2-medium": _gpt2_medium_spec,
    "smollm2": _smollm2_spec,
    "smollm2-grammar-probe": lambda cache: _smollm2_spec(cache, "smollm2-grammar-probe"),
}
DEFAULT_PAIR = "toy"


def seeded_name(name: str) -> bool:
    """Whether ``name`` is a named pair or a seed of one (``toy-seedN``, ``smollm2-seedN``), as
    written (a spec's name is folded first: :func:`built_in_name`)."""
    return name in NAMED_PAIRS or toy_seed(name) is not None or smollm2_seed(name) is not None


def built_in_name(name: str) -> bool:
    """Whether ``name`` names a built-in pair (``toy``, ``toy-seedN``, ``gpt2-medium``, ...),
    whose declared expectations and report title belong to that pair."""
    folded = name.strip().casefold()
    return seeded_name(folded)


def spec_file(path: Path) -> PairSpec:
    """The spec a user's file holds; a :class:`UnknownPairError` when it takes the name of a
    built-in pair (a directory holding the toy's own ``pair.toml`` included: it would load
    without the toy's lexicon, yet be checked against the toy's expectations)."""
    spec = PairSpec.from_file(path)
    if built_in_name(spec.name):
        raise UnknownPairError(
            f"pair spec {path} is named {spec.name!r}, the name of a built-in pair: its claims would be checked "
            f"against the {spec.name.strip()}'s declared expectations and its report titled as the "
            f'{spec.name.strip()}\'s. Give it a name of its own (name = "..." in the spec), or pass the built-in '
            "pair by its name"
        )
    return spec


def resolve_spec(pair: str | Path | PairSpec, cache: Cache | None = None) -> PairSpec:
    if isinstance(pair, PairSpec):
        return pair
    cache = cache or Cache()
    if isinstance(pair, str) and pair in NAMED_PAIRS:
        return NAMED_PAIRS[pair](cache)
    if (seed := toy_seed(pair)) is not None:
        return _seeded_toy_spec(cache, seed)
    if (seed := smollm2_seed(pair)) is not None:
        return _smollm2_spec(cache, str(pair), dpo_seed=seed)
    path = Path(pair).expanduser()
    if path.is_file():
        return spec_file(path)
    if path.is_dir() and (path / "pair.toml").is_file():
        return spec_file(path / "pair.toml")
    raise UnknownPairError(
        f"unknown pair {str(pair)!r}: not a named pair ({', '.join(sorted(NAMED_PAIRS))}, toy-seedN, smollm2-seedN) "
        "nor a .toml/.json pair spec file or a directory holding pair.toml"
    )


def pair_name(pair: str | Path) -> str:
    """The name of a pair argument without loading (or building) it: a named pair's name, or the
    ``name`` in a spec file (its stem if it has none)."""
    if isinstance(pair, str) and seeded_name(pair):
        return pair
    path = Path(pair).expanduser()
    if path.is_dir():
        path = path / "pair.toml"
    try:
        spec = PairSpec.from_file(path)
    except UnknownPairError:
        return path.stem
    if built_in_name(spec.name):
        spec_file(path)  # refused, with the reason
    return spec.name


def load_pair(
    pair: str | Path | PairSpec = DEFAULT_PAIR,
    *,
    cache: Cache | None = None,
    dtype: torch.dtype = torch.float32,
    device_map: Any = None,
    device: torch.device | str | None = None,
) -> ModelPair:
    """Load and validate a pair given by name, spec file or directory holding ``pair.toml``
    (see :func:`dpoclaims.models.pairs.load_pair_from_spec` for ``dtype``, ``device_map`` and ``device``)."""
    return load_pair_from_spec(resolve_spec(pair, cache), dtype=dtype, device_map=device_map, device=device)
