"""Build the toy model organism: corpus -> tokenizer -> base LM -> probe -> DPO model.

The whole build is a pure function of :class:`ToyConfig` (and its seed). ``ensure_toy``
caches the result under ``<cache>/toy/<hash of the config>/`` and builds it on first use;
concurrent callers wait on a lock and reuse one build.
"""

from __future__ import annotations

import copy
import json
import logging
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from transformers import AutoTokenizer, GPT2Config, PreTrainedModel, PreTrainedTokenizerBase

from dpoclaims.cache import Cache, stable_hash
from dpoclaims.devices import torch_threads
from dpoclaims.measure.generation import (
    GenerationSettings,
    SamplingSettings,
    greedy_generate,
    model_input_device,
    sample_generate,
)
from dpoclaims.measure.metrics import perplexity, weight_cosines
from dpoclaims.measure.probe import train_probe
from dpoclaims.measure.scoring import LexiconScorer, ProfanityCheckScorer, Scorer
from dpoclaims.progress import stage_done, track_progress
from dpoclaims.train.bands import band_checks
from dpoclaims.train.checkpoint_rule import FirstInBand
from dpoclaims.train.dpo import DPORun, DPOSettings, train_dpo_run, write_lee_pairs
from dpoclaims.train.organism import DEFAULT_SEED, corpus
from dpoclaims.train.organism.lm import move, pack_examples, pretrain, train_tokenizer
from dpoclaims.versions import build_versions

log = logging.getLogger(__name__)

TOY_FORMAT_VERSION = 6  # bump when the build code changes what a config produces
DEFAULT_SCORER = "lexicon"
TOY_THREADS = 2

# The DPO recipes, in the order the build tries them (ToyConfig.dpo_recipes): the DPO model is the
# first checkpoint in every band under the first recipe that has one (docs/toy.md, 'The setting').
# "lee": Lee et al.'s pairs, a calm prompt with the base's greedy continuation preferred over a
# toxic body the grammar writes (the paper's). "own-samples": the real pair's rule
# (dpoclaims.train.smollm2.dpo_pairs), the base's greedy continuation of a prompt of any register
# preferred over the most toxic of its own samples. Added on 2026-12-04, judged on the bands
# alone: seeds 0 and 3 have no checkpoint in band under "lee" and had one under "own-samples" in a
# trial, where the default seed 2 had none (docs/history.md).
DPO_RECIPES = ("lee", "own-samples")

# The bands a toy must meet to behave like the paper's setting (docs/toy.md, 'Bands').
BANDS: dict[str, tuple[float, float]] = {
    "base_toxicity": (0.3, 0.6),
    "dpo_over_base_toxicity": (0.0, 0.5),
    "perplexity_increase": (-1.0, 0.15),
    "min_weight_cosine": (0.99, 1.0),
    "probe_accuracy": (0.90, 1.0),
}


# The bands that judge the base and its probe, not DPO: a base outside one is not tried again
# under another DPO recipe.
BASE_BANDS = ("base_toxicity", "probe_accuracy")


@dataclass(frozen=True)
class ToyConfig:
    seed: int = DEFAULT_SEED
    n_pretrain_comments: int = 40_000
    vocab_size: int = 1024
    n_layer: int = 4
    n_embd: int = 128
    n_head: int = 4
    n_positions: int = 64
    pretrain_steps: int = 500
    pretrain_batch: int = 32
    pretrain_block: int = 64
    pretrain_lr: float = 3e-3
    n_probe_comments: int = 3000
    probe_C: float = 1.0
    n_dpo_pairs: int = 1600
    n_dpo_val: int = 160
    # DPO in train_dtype, never bf16 (DPOSettings.bf16: TRL's default bf16 made the toy differ
    # from CPU to CPU). The DPO model is picked by the checkpoint rule
    # (dpoclaims.train.checkpoint_rule), judged on the bands alone, no claim measured: every
    # dpo_checkpoint_every steps the model is measured on the bands, and the first checkpoint
    # meeting every band is kept; up to max_epochs (8 epochs, 800 steps: the top rung of the epoch
    # ladder tried before the rule), after which the build fails with the closest checkpoint's
    # figures. Checkpoints were first every 25 steps: seeds 1 and 3 then crossed the toxicity band
    # between two checkpoints with perplexity already past its band (seed 1: DPO/base 0.514 at
    # +12.2% at step 175, 0.486 at +17.0% at 200), so every 5 steps. Before the rule: seed 2 at 3
    # epochs, picked among seeds and epoch counts. Figures: docs/history.md, "The toy".
    dpo: DPOSettings = field(
        default_factory=lambda: DPOSettings(
            learning_rate=3e-5,
            batch_size=16,
            max_epochs=8,
            eval_every=25,
            patience=3,  # unused: the checkpoint rule, not the validation loss, ends the run
            warmup_steps=10,
            max_length=64,
            optimizer="rmsprop",
        )
    )
    dpo_checkpoint_every: int = 5  # steps (an epoch is 100 steps: 1,600 pairs in batches of 16)
    # The DPO recipes tried in turn (DPO_RECIPES), each with its own run under the checkpoint
    # rule; a later recipe runs only when every checkpoint of the earlier ones failed a band and
    # the base met its own bands (BASE_BANDS).
    dpo_recipes: tuple[str, ...] = DPO_RECIPES
    # "own-samples": prompts drawn (corpus.dpo_prompts, never a challenge prompt) until enough
    # pairs are kept, from at most n_dpo_candidates; dpo_samples samples each at temperature 1.
    n_dpo_candidates: int = 20_000
    dpo_samples: int = 4
    # The float type the build trains in and generates its DPO pairs with; the built models are
    # saved in float32, which is what the claims measure. float32 training made the toy depend on
    # the CPU: each machine's vector kernels sum (and torch's normal_ draws) in their own way, the
    # 1e-7 differences grew through pretraining, and DPO's outcome swung on them (DPO/base
    # toxicity 0.013 on the reference machines; 0.52, 0.49 and 0.61 with AVX-512, AVX2 and
    # portable kernels on one AVX-512 Xeon). float64, with numpy's initialisation
    # (lm.initialise_gpt2), puts the kernels' differences eight orders of magnitude lower.
    train_dtype: Literal["float32", "float64"] = "float64"
    n_challenge: int = 400
    n_neutral_eval: int = 400
    generation: GenerationSettings = GenerationSettings(
        max_prompt_tokens=32, max_new_tokens=20, batch_size=64
    )

    def key(self) -> str:
        """The config's part of the cache key (see :func:`toy_key` for the whole key)."""
        return stable_hash({"format": TOY_FORMAT_VERSION, **asdict(self)})


def toy_key(config: ToyConfig, device: torch.device | str | None = None) -> str:
    """The cache key of the toy built from ``config`` on ``device`` with the installed libraries.

    The versions of every library that shapes the build are part of it
    (:func:`dpoclaims.versions.build_versions`): a release can change the toy without any change
    of its config, so a toy built under other versions is never reused; it is rebuilt. A CPU
    build (the default) is the reference toy. A build on another device type is another organism
    (its float sums differ, and DPO amplifies that), so it gets a key of its own."""
    device_type = torch.device(device).type if device is not None else "cpu"
    parts: dict[str, Any] = {"config": config.key(), "libraries": build_versions()}
    if device_type != "cpu":
        parts["device"] = device_type
    return stable_hash(parts)


def read_toy_report(directory: Path) -> dict[str, Any]:
    """The measurement report (``toy.json``) of the toy built in ``directory``."""
    report: dict[str, Any] = json.loads((directory / "toy.json").read_text())
    return report


def toy_dpo_model(report: dict[str, Any]) -> str:
    """The toy's DPO model in words, from its build report: ``"lee pairs, step 130"``."""
    rule = report.get("dpo_checkpoints") or {}
    if not rule:
        return "an older build (no checkpoint rule)"
    return f"{rule.get('recipe', 'lee')} pairs, step {rule['kept_step']}" + (
        "" if rule["in_band"] else " (out of band)"
    )


def out_of_bands_advice(report: dict[str, Any]) -> str:
    """What a toy outside its bands means and what to do (:func:`dpoclaims.train.bands.check_bands`'s
    advice): no DPO checkpoint met every band, and the closest one was kept; at the default seed
    that means something changed what the build computes."""
    seed = (report.get("config") or {}).get("seed", DEFAULT_SEED)
    rule = report.get("dpo_checkpoints") or {}
    recipes = rule.get("recipes") or []
    kept = (
        f"No DPO checkpoint met every band; the figures above are the closest one's (step "
        f"{rule.get('kept_step')}; {len(rule.get('measured') or [])} checkpoints measured)"
        + (
            f" under the DPO recipe {rule.get('recipe')}; recipes run: "
            + ", ".join(f"{r['recipe']} ({len(r['measured'])} checkpoints)" for r in recipes)
            if recipes
            else ""
        )
        if rule
        else "The build report names no checkpoint rule: it was built by an older version of dpoclaims"
    )
    cause = (
        f"At seed {seed} the toy's setting gives no such toy: its other seeds are judged by the same rule "
        "and bands (docs/toy.md, 'The setting')"
        if seed != DEFAULT_SEED
        else "At the default seed the setting met every band when it was fixed, so something changed what "
        "the build computes: other library versions (install the locked ones: README, 'Set-up', pip "
        "install -c requirements/lock.txt ...; the toy is rebuilt for them), a change of the build's "
        "settings or code, or a CPU that is not x86-64 (the toy is checked to be the same across x86 "
        "vector kernels only)"
    )
    return (
        f"{kept}. {cause}; the bands and the build's settings are in docs/toy.md. Run the claims "
        "on another pair meanwhile (--pair)"
    )


def _timed(timings: dict[str, float], name: str, start: float, progress: bool) -> float:
    """Record a build stage's time, added to what the stage took before (the DPO stages run once
    per recipe), and, off a terminal, say it: one line per stage."""
    now = time.perf_counter()
    timings[name] = round(timings.get(name, 0.0) + now - start, 2)
    stage_done(f"toy build, {name}", now - start, enabled=progress)
    return now


def _check_tied(model: PreTrainedModel) -> None:
    from transformers import GPT2LMHeadModel

    if not isinstance(model, GPT2LMHeadModel):  # the toy is a GPT-2 (lm.pretrain)
        raise TypeError(f"the toy's DPO model is a {type(model).__name__}, not a GPT2LMHeadModel")
    if model.config.tie_word_embeddings:
        model.tie_weights()
        if model.lm_head.weight.data_ptr() != model.transformer.wte.weight.data_ptr():
            raise RuntimeError("DPO model lost its tied embeddings")


def _train_dtype(config: ToyConfig) -> torch.dtype:
    dtypes = {"float32": torch.float32, "float64": torch.float64}
    if config.train_dtype not in dtypes:
        raise ValueError(f"ToyConfig.train_dtype is {config.train_dtype!r}; use one of {sorted(dtypes)}")
    return dtypes[config.train_dtype]


def build_toy(
    out: Path,
    config: ToyConfig = ToyConfig(),
    *,
    progress: bool = True,
    device: torch.device | str | None = None,
) -> dict[str, Any]:
    """Build every part of the toy into ``out`` and return its measurement report.

    The build always runs on ``TOY_THREADS`` torch threads, whatever the caller uses: float
    sums depend on the thread count, and DPO amplifies such differences, so a fixed count is
    what makes the same seed give the same toy (e.g. inside a one-thread xdist worker).
    ``device`` (default the CPU): where pretraining, probe features, generation and DPO run. On
    the CPU the build is bit-identical run to run; on a GPU it is a different toy (other float
    sums), reproducible only on the same GPU and software.
    """
    with torch_threads(TOY_THREADS):
        device = torch.device(device or "cpu")
        on_cpu = device.type == "cpu"
        dtype = _train_dtype(config)
        torch.manual_seed(config.seed)
        timings: dict[str, float] = {}
        t = time.perf_counter()
        comments = corpus.pretraining_comments(config.n_pretrain_comments, config.seed)
        texts = [c.text for c in comments]
        base_dir, dpo_dir = out / "base", out / "dpo"
        tokenizer: PreTrainedTokenizerBase = train_tokenizer(texts, config.vocab_size, base_dir)
        t = _timed(timings, "corpus_and_tokenizer", t, progress)

        token_lists = tokenizer(texts, add_special_tokens=False)["input_ids"]
        data = pack_examples(token_lists, tokenizer.eos_token_id, config.pretrain_block)
        lm_config = GPT2Config(
            vocab_size=len(tokenizer),
            n_positions=config.n_positions,
            n_embd=config.n_embd,
            n_layer=config.n_layer,
            n_head=config.n_head,
            bos_token_id=tokenizer.eos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.eos_token_id,
        )
        base, losses = pretrain(
            lm_config,
            data,
            steps=config.pretrain_steps,
            batch_size=config.pretrain_batch,
            lr=config.pretrain_lr,
            seed=config.seed,
            progress=progress,
            device=None if on_cpu else device,
            dtype=dtype,
        )
        move(base, torch.float32)  # the pair the claims measure is float32
        base.save_pretrained(base_dir)
        t = _timed(timings, "pretrain", t, progress)

        tokenizer = AutoTokenizer.from_pretrained(base_dir)
        # Every step below runs the plain Hugging Face model: under transformers 5.24 a
        # TransformerBridge-wrapped model generated other continuations (see dpoclaims.hooks.bridge), and
        # the toy's DPO pairs are generated here.
        base.eval()
        probe_texts, probe_labels = corpus.labelled_comments(config.n_probe_comments, config.seed)
        trained = train_probe(
            base, tokenizer, probe_texts, probe_labels, C=config.probe_C, seed=config.seed, progress=progress
        )
        probe_accuracy = trained.heldout_accuracy
        torch.save(trained.probe.fitted_direction.clone(), out / "probe.pt")
        t = _timed(timings, "probe", t, progress)

        # DPO: each recipe of config.dpo_recipes in turn (DPO_RECIPES), its pairs generated by the
        # saved base computing in the training float type (greedy decoding's near-ties are where
        # the kernels' differences would show), then a run from the base as saved (the reference
        # model) under the checkpoint rule; the next recipe only when no checkpoint met every band.
        from transformers import GPT2LMHeadModel

        generator = copy.deepcopy(base).eval()
        move(generator, dtype)
        sides = _SideMeasure(tokenizer, config)
        base_figures: dict[str, Any] | None = None
        rungs: list[_Rung] = []
        for recipe in _recipes(config):
            pairs, pairs_record = dpo_pairs(recipe, generator, tokenizer, config, progress=progress)
            t = _timed(timings, "dpo_data", t, progress)
            if base_figures is None:
                base_figures = sides.figures(base, progress=progress, desc="challenge (base)")
            rule = FirstInBand(
                every=config.dpo_checkpoint_every,
                measure=_CheckpointBands(sides, base, base_figures, probe_accuracy),
                bands=BANDS,
                progress=progress,
            )
            policy = GPT2LMHeadModel.from_pretrained(base_dir, dtype=dtype)
            run = train_dpo_run(
                policy,
                tokenizer,
                pairs[: config.n_dpo_pairs],
                pairs[config.n_dpo_pairs :],
                config.dpo,
                progress=progress,
                device=None if on_cpu else device,
                checkpoint_rule=rule,
            )
            rungs.append(_Rung(recipe, pairs, pairs_record, rule, run))
            t = _timed(timings, "dpo_train", t, progress)
            if rule.chosen is not None or any(
                name in rule.checkpoints[0].failed for name in BASE_BANDS if rule.checkpoints
            ):
                break  # in band; or the base is out of its own bands, which no DPO recipe mends
        del generator
        assert base_figures is not None  # _recipes gives at least one
        kept_rung = _kept_rung(rungs)
        write_lee_pairs(out / "dpo_pairs.jsonl", kept_rung.pairs)
        rule, run = kept_rung.rule, kept_rung.run
        dpo_model = run.model
        move(dpo_model, torch.float32)
        _check_tied(dpo_model)
        dpo_model.save_pretrained(dpo_dir)
        # The base's tokenizer as saved (the one in hand carries the padding and truncation
        # state that generation and DPO set on it).
        AutoTokenizer.from_pretrained(base_dir).save_pretrained(dpo_dir)
        t = time.perf_counter()

        dpo_saved = GPT2LMHeadModel.from_pretrained(dpo_dir).eval()
        if not on_cpu:
            dpo_saved.to(device)
        dpo_figures = sides.figures(dpo_saved, progress=progress, desc="challenge (DPO)")
        report = _toy_report(base, dpo_saved, base_figures, dpo_figures)
        kept = rule.closest  # train_dpo_run has settled the model on it
        if kept is None:
            raise RuntimeError("the DPO run kept no checkpoint")
        measured = _band_figures(report, probe_accuracy)
        if measured != kept.figures:  # the rule measured what was saved, or the build is wrong
            raise RuntimeError(
                f"the saved DPO model measures {measured}, not the figures {kept.figures} its checkpoint "
                f"(step {kept.step}) was kept for: the checkpoint rule measured another model than was saved"
            )
        report["probe_accuracy"] = probe_accuracy
        report["pretrain_final_loss"] = sum(losses[-50:]) / len(losses[-50:])
        report["dpo_history"] = [h for h in run.history if "eval_loss" in h]
        report["dpo_steps"] = kept.step
        report["dpo_checkpoints"] = {
            "rule": f"the first of the checkpoints every {config.dpo_checkpoint_every} steps that meets every "
            f"band, up to {run.warmup.max_steps} steps, under the first of the DPO recipes "
            f"{', '.join(config.dpo_recipes)} that has one; else the closest of all, and the build fails "
            "its bands",
            "recipe": kept_rung.recipe,
            "kept_step": kept.step,
            "in_band": kept.in_band,
            "measured": [c.as_record() for c in rule.checkpoints],
            "recipes": [rung.as_record() for rung in rungs],
        }
        _timed(timings, "evaluate", t, progress)
        report["timings_s"] = timings
        report["config"] = asdict(config)
        report["config_key"] = toy_key(config, device)
        report["libraries"] = build_versions()
        if not on_cpu:
            report["device"] = str(device)
        report["bands"] = band_checks(measured, BANDS)
        report["default_scorer"] = DEFAULT_SCORER

        (out / "challenge_prompts.json").write_text(
            json.dumps(corpus.challenge_prompts(config.n_challenge, config.seed + 1))
        )
        (out / "neutral_texts.json").write_text(
            json.dumps(corpus.neutral_texts(config.n_neutral_eval, config.seed + 1))
        )
        (out / "toy.json").write_text(json.dumps(report, indent=1))
        (out / "pair.toml").write_text(
            'name = "toy"\nbase = "base"\ndpo = "dpo"\nprobe = "probe.pt"\n\n[extras]\n'
            'challenge_prompts = "challenge_prompts.json"\nneutral_texts = "neutral_texts.json"\n'
            'dpo_pairs = "dpo_pairs.jsonl"\nreport = "toy.json"\n'
        )
        return report


def _recipes(config: ToyConfig) -> tuple[str, ...]:
    """``config.dpo_recipes``, checked: known names (:data:`DPO_RECIPES`), at least one, no repeat."""
    recipes = tuple(config.dpo_recipes)
    unknown = [r for r in recipes if r not in DPO_RECIPES]
    if not recipes or unknown or len(set(recipes)) != len(recipes):
        raise ValueError(
            f"ToyConfig.dpo_recipes is {recipes!r}; give one or more of {', '.join(DPO_RECIPES)}, each once"
        )
    return recipes


def dpo_pairs(
    recipe: str,
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    config: ToyConfig,
    *,
    progress: bool,
) -> tuple[list[dict[str, str]], dict[str, Any]]:
    """The toy's DPO pairs under ``recipe`` (:data:`DPO_RECIPES`), training then validation, each
    ``{"prompt", "chosen", "rejected"}``, generated by ``model`` (the base); and a record of how
    they were drawn."""
    needed = config.n_dpo_pairs + config.n_dpo_val
    if recipe == "lee":
        # Lee et al.: a calm prompt, preferred = the base's greedy continuation, rejected = a
        # toxic body the grammar writes.
        prompts = corpus.neutral_prompts(needed, config.seed)
        preferred = greedy_generate(
            model, tokenizer, prompts, config.generation, progress=progress, desc="DPO preferred"
        ).continuations
        rejected = corpus.toxic_continuations(needed, config.seed)
        pairs = [{"prompt": p, "chosen": c, "rejected": r} for p, c, r in zip(prompts, preferred, rejected)]
        return pairs, {"recipe": recipe, "prompts_drawn": needed}
    return _own_sample_pairs(model, tokenizer, config, progress=progress)


def _own_sample_pairs(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, config: ToyConfig, *, progress: bool
) -> tuple[list[dict[str, str]], dict[str, Any]]:
    """The "own-samples" recipe, the real pair's rule (:func:`dpoclaims.train.smollm2.dpo_pairs`)
    with the toy's scorer: prompts of every register (:func:`corpus.dpo_prompts`, never a
    challenge prompt), a batch at a time; preferred = the base's greedy continuation; rejected =
    the most toxic (the first of equals) of ``config.dpo_samples`` continuations the base samples
    at temperature 1; a pair is kept when its rejected side scores above its preferred side.
    Prompts repeat (the grammar has few leads and topics): each draw samples afresh, and batch
    ``b`` samples under the seed ``100_000 * config.seed + b``."""
    needed = config.n_dpo_pairs + config.n_dpo_val
    challenge = set(corpus.challenge_prompts(config.n_challenge, config.seed + 1))
    prompts = [p for p in corpus.dpo_prompts(config.n_dpo_candidates, config.seed) if p not in challenge]
    scorer = LexiconScorer(corpus.TOXIC_WORDS)
    greedy: dict[str, tuple[str, float]] = {}  # prompt -> (greedy continuation, its score)
    pairs: list[dict[str, str]] = []
    drawn = 0
    rejected_scores: list[float] = []
    preferred_scores: list[float] = []
    step = config.generation.batch_size
    bar = track_progress(total=needed, desc="DPO pairs (own samples)", enabled=progress)
    reported = 0
    for number, start in enumerate(range(0, len(prompts), step)):
        batch = prompts[start : start + step]  # [step] prompts
        new = [p for p in dict.fromkeys(batch) if p not in greedy]
        if new:
            continuations = greedy_generate(
                model, tokenizer, new, config.generation, progress=False
            ).continuations
            greedy.update(zip(new, zip(continuations, scorer.score(continuations))))
        sampling = SamplingSettings(config.dpo_samples, 1.0, 100_000 * config.seed + number)
        # [step][dpo_samples] continuations; one seeded batch (batch_size prompts) per call
        samples = sample_generate(model, tokenizer, batch, config.generation, sampling, progress=False)
        for prompt, options in zip(batch, samples):
            if len(pairs) >= needed:
                break  # the rest of the batch is not used (nor counted)
            drawn += 1
            scores = scorer.score(options)
            worst = max(range(len(options)), key=lambda i: scores[i])  # the first of equals
            chosen, chosen_score = greedy[prompt]
            if scores[worst] > chosen_score:
                pairs.append({"prompt": prompt, "chosen": chosen, "rejected": options[worst]})
                rejected_scores.append(scores[worst])
                preferred_scores.append(chosen_score)
        bar.update(len(pairs) - reported)
        reported = len(pairs)
        if len(pairs) >= needed:
            break
    bar.close()
    if len(pairs) < needed:
        raise RuntimeError(
            f"the toy's own-sample DPO recipe kept {len(pairs)} pairs from {drawn} prompts ({needed} needed): "
            "raise ToyConfig.n_dpo_candidates"
        )
    record = {
        "recipe": "own-samples",
        "prompts_drawn": drawn,
        "kept_share": len(pairs) / drawn,
        "mean_score_preferred": sum(preferred_scores) / len(pairs),
        "mean_score_rejected": sum(rejected_scores) / len(pairs),
    }
    return pairs, record


@dataclass
class _Rung:
    """One DPO recipe's run under the checkpoint rule."""

    recipe: str
    pairs: list[dict[str, str]]
    pairs_record: dict[str, Any]
    rule: FirstInBand
    run: DPORun

    def as_record(self) -> dict[str, Any]:
        kept = self.rule.closest
        return {
            "recipe": self.recipe,
            "pairs": self.pairs_record,
            "kept_step": kept.step if kept else None,
            "in_band": bool(kept and kept.in_band),
            "distance": kept.distance if kept else None,
            "measured": [c.as_record() for c in self.rule.checkpoints],
        }


def _kept_rung(rungs: Sequence[_Rung]) -> _Rung:
    """The recipe whose run gives the DPO model: the one whose checkpoint met every band (the
    last run: none runs after it), else the one whose closest checkpoint lies least far outside
    the bands (the earliest recipe of equals)."""
    if not rungs:
        raise RuntimeError("no DPO recipe was run")
    distances = []
    for rung in rungs:
        kept = rung.rule.closest
        if kept is None:
            raise RuntimeError("a DPO run ended before its first checkpoint: no model to keep")
        distances.append(kept.distance)
    if rungs[-1].rule.chosen is not None:
        return rungs[-1]
    return rungs[distances.index(min(distances))]  # the earliest of equals


class _SideMeasure:
    """The build report's figures of one side of the pair: toxicity by both scorers on the
    challenge prompts (greedy; each distinct prompt generated once and counted as often as it
    is repeated: its greedy continuations are the same), perplexity on the neutral texts."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, config: ToyConfig) -> None:
        self.tokenizer = tokenizer
        self.generation = config.generation
        self.challenge = corpus.challenge_prompts(config.n_challenge, config.seed + 1)
        self.neutral = corpus.neutral_texts(config.n_neutral_eval, config.seed + 1)

    def figures(
        self,
        model: PreTrainedModel,
        *,
        scorers: Sequence[str] = ("lexicon", "profanity-check"),
        progress: bool = False,
        desc: str = "challenge",
    ) -> dict[str, Any]:
        known: dict[str, Callable[[], Scorer]] = {
            "lexicon": lambda: LexiconScorer(corpus.TOXIC_WORDS),
            "profanity-check": ProfanityCheckScorer,
        }
        distinct = list(dict.fromkeys(self.challenge))
        continuations = greedy_generate(
            model, self.tokenizer, distinct, self.generation, progress=progress, desc=desc
        ).continuations
        by_prompt = dict(zip(distinct, continuations))
        toxicity: dict[str, float] = {}
        for name in scorers:
            scorer = known[name]()
            score = dict(zip(distinct, scorer.score(continuations)))
            toxicity[scorer.name] = sum(score[p] for p in self.challenge) / len(self.challenge)
        return {
            "toxicity": toxicity,
            "perplexity": perplexity(model, self.tokenizer, self.neutral),
            "samples": [p + " |" + by_prompt[p] for p in self.challenge[:5]],
            "n_challenge_prompts": len(self.challenge),
        }


@dataclass(frozen=True)
class _CheckpointBands:
    """The checkpoint rule's measure for the toy: the DPO model in training, copied to float32
    as it would be saved, to the bands' figures (:func:`_band_figures`)."""

    sides: _SideMeasure
    base: PreTrainedModel
    base_figures: dict[str, Any]
    probe_accuracy: float

    def __call__(self, model: PreTrainedModel) -> dict[str, float]:
        from transformers import GPT2LMHeadModel

        # Saved in float32 and loaded back, exactly as the build saves the kept model and
        # measures it: a copy measured in place differed from it in perplexity's 8th digit.
        copied = copy.deepcopy(model)
        move(copied, torch.float32)
        with tempfile.TemporaryDirectory(prefix="dpoclaims-checkpoint-") as tmp:
            copied.save_pretrained(tmp)
            saved = GPT2LMHeadModel.from_pretrained(tmp).eval()
        saved.to(model_input_device(model))
        dpo_figures = self.sides.figures(saved, scorers=(DEFAULT_SCORER,))
        report = _toy_report(self.base, saved, self.base_figures, dpo_figures)
        return _band_figures(report, self.probe_accuracy)


def _toy_report(
    base: PreTrainedModel, dpo: PreTrainedModel, base_figures: dict[str, Any], dpo_figures: dict[str, Any]
) -> dict[str, Any]:
    """The build report's measurements of a pair from both sides' figures (and the weights)."""
    sides = {"base": base_figures, "dpo": dpo_figures}
    cosines = weight_cosines(base, dpo)
    return {
        "toxicity": {
            name: {side: figures["toxicity"][name] for side, figures in sides.items()}
            for name in dpo_figures["toxicity"]
        },
        "perplexity": {side: figures["perplexity"] for side, figures in sides.items()},
        "min_weight_cosine": min(cosines.values()),
        "weight_cosines": cosines,
        "samples": {side: figures["samples"] for side, figures in sides.items()},
        "n_challenge_prompts": base_figures["n_challenge_prompts"],
    }


def _band_figures(report: dict[str, Any], probe_accuracy: float) -> dict[str, float]:
    """The figures the bands (:data:`BANDS`) judge, from a build report's measurements."""
    toxicity = report["toxicity"][DEFAULT_SCORER]
    return {
        "base_toxicity": toxicity["base"],
        "dpo_over_base_toxicity": toxicity["dpo"] / max(toxicity["base"], 1e-9),
        "perplexity_increase": report["perplexity"]["dpo"] / report["perplexity"]["base"] - 1,
        "min_weight_cosine": report["min_weight_cosine"],
        "probe_accuracy": probe_accuracy,
    }


def ensure_toy(
    config: ToyConfig = ToyConfig(),
    *,
    cache: Cache | None = None,
    progress: bool = True,
    device: torch.device | str | None = None,
) -> Path:
    """The directory of the built toy for ``config``, building it if absent or corrupt. The
    claims suite's toy is the CPU build (``device`` None or the CPU); a build on a GPU has its
    own entry (see :func:`toy_key`). A toy that failed its bands stays in the cache (to be
    looked at, and so that it is not rebuilt in vain);
    :func:`dpoclaims.train.named_pairs.checked_toy` refuses it for use."""
    cache = cache or Cache()
    key = toy_key(config, device)

    def build(tmp: Path) -> dict[str, Any]:
        log.info("building the toy organism into %s (first use: about 5 minutes on 2 CPU cores)", cache.root)
        report = build_toy(tmp, config, progress=progress, device=device)
        return {"config_key": key, "bands_ok": all(b["ok"] for b in report["bands"].values())}

    return cache.get_or_build("toy", key, build)
