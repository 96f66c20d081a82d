"""DPO fine-tuning with TRL's DPOTrainer, a frozen reference and early stopping."""

from __future__ import annotations

import json
import logging
import math
import random
import tempfile
from collections.abc import Iterator, Sequence, Sized
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import EarlyStoppingCallback, PreTrainedModel, PreTrainedTokenizerBase
from transformers.trainer_callback import PrinterCallback, TrainerCallback

from dpoclaims.errors import CheckpointError, OptionError, TrainingError
from dpoclaims.files import DuplicateKeyError, loads_json, read_text_file, text_lines
from dpoclaims.progress import track_progress
from dpoclaims.train.checkpoint_rule import FirstInBand

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DPOSettings:
    beta: float = 0.1
    learning_rate: float = 1e-6
    batch_size: int = 4
    max_epochs: int = 1
    eval_every: int = 50
    patience: int = 3
    max_grad_norm: float = 10.0
    warmup_steps: int = 150
    max_length: int = 128
    optimizer: str = "rmsprop"  # Lee et al.
    seed: int = 0
    # TRL's DPOConfig turns bf16 autocast on by default, on the CPU too. bf16 kernels differ from
    # one CPU to another (emulated without AVX512-BF16/AMX), and DPO amplifies the difference:
    # the same toy build gave DPO/base toxicity 0.21 on one machine and 0.62 on another. So DPO
    # runs in the model's own float type (float32, or float64 for the toy) unless asked otherwise.
    bf16: bool = False

    def __post_init__(self) -> None:
        """Every setting finite and in its range, or an :class:`OptionError` naming it (by its
        ``dpoclaims train-dpo`` option) and why: a run on a bad setting would train a useless or
        inverted model and exit 0."""
        if not (math.isfinite(self.beta) and self.beta > 0):
            raise OptionError(
                f"--beta must be a positive, finite number, not {self.beta}: DPO's beta scales the preference "
                "margin, and at beta <= 0 the model would learn to prefer the rejected (toxic) continuations "
                "(Lee et al.: 0.1)"
            )
        if not math.isfinite(self.learning_rate):
            raise OptionError(f"--lr must be a positive, finite number, not {self.learning_rate}")
        if not self.learning_rate > 0:
            raise OptionError(
                f"--lr must be positive, not {self.learning_rate}: at {self.learning_rate} no weight would change"
            )
        if not (math.isfinite(self.max_grad_norm) and self.max_grad_norm > 0):
            raise OptionError(f"max_grad_norm must be a positive, finite number, not {self.max_grad_norm}")
        for option, value in (
            ("--batch-size", self.batch_size),
            ("--max-epochs", self.max_epochs),
            ("--eval-every", self.eval_every),
            ("--max-length", self.max_length),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise OptionError(f"{option} must be at least 1, not {value}")
        if self.warmup_steps < 0 or self.patience < 1:
            raise OptionError("--warmup-steps must be at least 0 and --patience at least 1")


class _StepBar(TrainerCallback):
    """The progress of DPO's steps, with the latest validation loss, in place of the Trainer's own
    (its bar and its log lines are switched off): a bar on a terminal, one line at the end elsewhere
    (:func:`dpoclaims.progress.track_progress`)."""

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.bar = track_progress(total=state.max_steps, desc="DPO (TRL)")

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.bar.update(1)

    def on_evaluate(
        self, args: Any, state: Any, control: Any, metrics: dict[str, float] | None = None, **kwargs: Any
    ) -> None:
        if metrics and "eval_loss" in metrics:
            self.bar.set_postfix(val_loss=f"{metrics['eval_loss']:.4f}")

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.bar.close()


@dataclass(frozen=True)
class WarmupPlan:
    """How many optimisation steps a run will have, and the warm-up it gets.

    With transformers' linear schedule, step ``k`` of a warm-up of ``w`` steps runs at
    ``k / w`` of the learning rate, so step 0 runs at 0, and a one-step run with any warm-up
    would not change the model. The warm-up is therefore clipped to ``max_steps - 1`` steps,
    so that it ends by the last step, which runs at the full learning rate.
    """

    n_train: int
    batch_size: int
    max_epochs: int
    steps_per_epoch: int
    max_steps: int
    requested: int
    effective: int

    @property
    def clipped(self) -> bool:
        return self.effective != self.requested

    def describe(self) -> str:
        """One sentence on the steps and the warm-up, saying what was clipped."""
        steps = (
            f"{_count(self.max_steps, 'optimisation step')} ({_count(self.n_train, 'training pair')} "
            f"in batches of {self.batch_size}, {_count(self.max_epochs, 'epoch')})"
        )
        if not self.clipped:
            return f"{steps}, warm-up {_count(self.effective, 'step')}"
        return (
            f"{steps}: warm-up clipped from {self.requested} to {_count(self.effective, 'step')} "
            "so that it ends by the last step"
        )


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def plan_warmup(n_train: int, settings: DPOSettings) -> WarmupPlan:
    """The steps a run on ``n_train`` pairs will have (one optimiser step per batch, the last
    batch possibly smaller) and its warm-up, clipped as :class:`WarmupPlan` explains."""
    steps_per_epoch = math.ceil(n_train / settings.batch_size)
    max_steps = steps_per_epoch * settings.max_epochs
    return WarmupPlan(
        n_train=n_train,
        batch_size=settings.batch_size,
        max_epochs=settings.max_epochs,
        steps_per_epoch=steps_per_epoch,
        max_steps=max_steps,
        requested=settings.warmup_steps,
        effective=min(settings.warmup_steps, max(max_steps - 1, 0)),
    )


@dataclass
class DPORun:
    """A finished DPO run: the trained model and what the run did."""

    model: PreTrainedModel
    history: list[dict[str, Any]]  # TRL's log history of the training itself
    warmup: WarmupPlan
    n_train: int  # training pairs used (TRL drops those whose prompt fills max_length)
    n_val: int  # validation pairs used
    steps: int  # optimisation steps run (early stopping can end a run before warmup.max_steps)
    trainer_max_steps: int  # the step count transformers planned (warmup.max_steps predicts it)
    start_val_loss: float  # validation loss of the starting model
    end_val_loss: float  # validation loss of the returned model (the best checkpoint)
    largest_change: float  # largest absolute change of any weight
    largest_change_tensor: str  # the parameter holding it

    def summary(self) -> dict[str, Any]:
        """The run's figures as JSON-ready data (the model left out)."""
        return {
            "n_train_used": self.n_train,
            "n_val_used": self.n_val,
            "steps": self.steps,
            "max_steps": self.warmup.max_steps,
            "warmup_requested": self.warmup.requested,
            "warmup_used": self.warmup.effective,
            "warmup_clipped": self.warmup.clipped,
            "start_val_loss": self.start_val_loss,
            "end_val_loss": self.end_val_loss,
            "largest_weight_change": self.largest_change,
            "largest_weight_change_tensor": self.largest_change_tensor,
        }


def _weights(model: PreTrainedModel) -> dict[str, torch.Tensor]:
    """A CPU copy of every parameter (tied ones once), to compare after training."""
    return {name: param.detach().to("cpu", copy=True) for name, param in model.named_parameters()}


def _largest_change(model: PreTrainedModel, start: dict[str, torch.Tensor]) -> tuple[float, str]:
    largest, where = 0.0, next(iter(start))
    for name, param in model.named_parameters():
        after = param.detach().to("cpu")
        if not torch.isfinite(after).all():
            raise TrainingError(
                f"DPO training produced non-finite weights in {name}; lower the learning rate (--lr)"
            )
        change = float((after.double() - start[name].double()).abs().max())
        if change > largest:
            largest, where = change, name
    return largest, where


@contextmanager
def _current_cuda_device(device: torch.device) -> Iterator[None]:
    """``device`` (``cuda:N``) as the current CUDA device inside the block: the Trainer trains on
    the current device. Nothing to do for the CPU or an index-less ``cuda``."""
    if device.type != "cuda" or device.index is None:
        yield
        return
    previous = torch.cuda.current_device()
    torch.cuda.set_device(device)
    try:
        yield
    finally:
        torch.cuda.set_device(previous)


def trainer_config(
    settings: DPOSettings, out: str | Path, device: torch.device, *, by_rule: bool = False
) -> Any:
    """TRL's ``DPOConfig`` for a run of ``settings`` writing checkpoints under ``out``. Every
    setting a release could change by moving its default is explicit.

    ``by_rule``: a :class:`dpoclaims.train.checkpoint_rule.FirstInBand` picks the checkpoint, not
    the validation loss: the learning rate stays constant after the warm-up (so the model at a
    step does not depend on the cap on steps), and no checkpoint is saved or restored."""
    from trl import DPOConfig

    return DPOConfig(
        output_dir=str(out),
        beta=settings.beta,
        learning_rate=settings.learning_rate,
        per_device_train_batch_size=settings.batch_size,
        per_device_eval_batch_size=max(settings.batch_size, 16),
        num_train_epochs=settings.max_epochs,
        max_grad_norm=settings.max_grad_norm,
        warmup_steps=settings.warmup_steps,  # clipped below, once the usable pairs are known
        # explicit: a release must not change the schedule silently
        lr_scheduler_type="constant_with_warmup" if by_rule else "linear",
        bf16=settings.bf16,  # explicit: TRL's default is True (see DPOSettings.bf16)
        fp16=False,
        weight_decay=0.0,
        optim=settings.optimizer,
        eval_strategy="steps",
        eval_steps=settings.eval_every,
        save_strategy="no" if by_rule else "steps",
        save_steps=settings.eval_every,
        save_total_limit=1,
        load_best_model_at_end=not by_rule,
        metric_for_best_model="eval_loss",
        greater_is_better=False,
        max_length=settings.max_length,
        gradient_checkpointing=False,
        report_to="none",
        use_cpu=device.type == "cpu",  # otherwise accelerate's default: the current CUDA device
        seed=settings.seed,
        data_seed=settings.seed,
        logging_steps=settings.eval_every,
        disable_tqdm=True,  # replaced by _StepBar, which does not print every log line
        dataloader_num_workers=0,
        log_level="error",
    )


@contextmanager
def _output_dir(directory: Path | None) -> Iterator[str]:
    """``directory`` (created), or a temporary directory removed on exit."""
    if directory is not None:
        directory.mkdir(parents=True, exist_ok=True)
        yield str(directory)
        return
    with tempfile.TemporaryDirectory(prefix="dpoclaims-dpo-") as out:
        yield out


def train_dpo_run(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    train_pairs: Sequence[dict[str, str]],
    val_pairs: Sequence[dict[str, str]],
    settings: DPOSettings = DPOSettings(),
    *,
    progress: bool = True,
    device: torch.device | str | None = None,
    checkpoint_dir: Path | None = None,
    checkpoint_rule: FirstInBand | None = None,
) -> DPORun:
    """Fine-tune ``model`` in place on ``{"prompt", "chosen", "rejected"}`` pairs, on ``device``
    (default the CPU; ``cuda`` or ``cuda:N`` trains on that GPU, where the run's float sums,
    and so the trained weights, differ from a CPU run's).

    The reference is a frozen copy of the model at the start. Training stops when the
    validation loss has not improved for ``patience`` evaluations, and the best checkpoint
    (lowest validation loss) is restored. The warm-up is clipped to the run's steps (see
    :class:`WarmupPlan`; a warning says so). The validation loss is measured before and after.

    ``checkpoint_dir``: where TRL writes its checkpoints (default a temporary directory, removed
    after). Given, they outlive the process, and a run started again with the same directory
    resumes from its last checkpoint (a killed build loses at most ``eval_every`` steps).

    ``checkpoint_rule``: the model kept is the one the rule picks (see
    :mod:`dpoclaims.train.checkpoint_rule`), not the lowest validation loss; no early stopping.

    Raises :class:`TrainingError` when the run changed no weight or left a non-finite one.
    """
    from datasets import Dataset
    from trl import DPOTrainer

    if not train_pairs or not val_pairs:
        raise TrainingError(
            f"DPO needs training and validation pairs; got {len(train_pairs)} and {len(val_pairs)}"
        )
    positions = getattr(model.config, "max_position_embeddings", None)
    if positions is not None and settings.max_length > positions:
        raise OptionError(
            f"max_length {settings.max_length} (--max-length) exceeds the model's {positions} positions; "
            f"set it to {positions} or less"
        )
    if checkpoint_rule is not None and checkpoint_dir is not None:
        raise ValueError("a run picked by a checkpoint rule keeps no checkpoints to resume from")
    tokenizer.padding_side = "left"
    start_weights = _weights(model)
    on = torch.device(device) if device is not None else torch.device("cpu")
    with _output_dir(checkpoint_dir) as out, _current_cuda_device(on):
        resume = checkpoint_dir is not None and any(Path(out).glob("checkpoint-*"))
        config = trainer_config(settings, out, on, by_rule=checkpoint_rule is not None)
        callbacks: list[TrainerCallback] = (
            [EarlyStoppingCallback(early_stopping_patience=settings.patience)]
            if checkpoint_rule is None
            else [checkpoint_rule]
        )
        trainer = DPOTrainer(
            model=model,
            ref_model=None,
            args=config,
            train_dataset=Dataset.from_list(list(train_pairs)),
            eval_dataset=Dataset.from_list(list(val_pairs)),
            processing_class=tokenizer,
            callbacks=callbacks,
        )
        trainer.remove_callback(PrinterCallback)
        # DPOTrainer tokenises the Datasets it is given with Dataset.map: they stay sized.
        train_dataset, eval_dataset = trainer.train_dataset, trainer.eval_dataset
        if not isinstance(train_dataset, Sized) or not isinstance(eval_dataset, Sized):
            raise TrainingError(
                f"DPOTrainer turned the pairs into a {type(train_dataset).__name__} and a "
                f"{type(eval_dataset).__name__}, which have no length: this TRL version is not supported"
            )
        usable = {"training": len(train_dataset), "validation": len(eval_dataset)}
        given = {"training": len(train_pairs), "validation": len(val_pairs)}
        for split, n_usable in usable.items():
            if n_usable < given[split]:  # TRL drops pairs whose prompt alone fills max_length
                log.warning(
                    "DPO: %d of %d %s pairs dropped: their prompt alone fills max_length %d (--max-length)",
                    given[split] - n_usable,
                    given[split],
                    split,
                    settings.max_length,
                )
            if n_usable == 0:
                raise TrainingError(
                    f"DPO has no usable {split} pair: the prompt of each of the {given[split]} fills "
                    f"max_length {settings.max_length}; raise --max-length or use shorter prompts"
                )
        plan = plan_warmup(usable["training"], settings)
        if plan.clipped:
            log.warning("DPO run of %s", plan.describe())
        # The scheduler is built in train() from args.warmup_steps.
        trainer.args.warmup_steps = plan.effective
        # Before the progress bar exists; train() starts a fresh state, so this evaluation is
        # not in the run's log history.
        start_val_loss = float(trainer.evaluate()["eval_loss"])
        bar = _StepBar() if progress else None
        if bar is not None:
            trainer.add_callback(bar)
        if resume:
            log.info("DPO resumes from the last checkpoint in %s", out)
        trainer.train(resume_from_checkpoint=True if resume else None)
        trained = trainer.model
        if not isinstance(trained, PreTrainedModel):  # DPOTrainer trains the model it was given
            raise TrainingError(f"DPOTrainer returned a {type(trained).__name__}, not a PreTrainedModel")
        if checkpoint_rule is not None:  # before the closing evaluation: it measures the kept model
            checkpoint_rule.settle(trained)
        history = list(trainer.state.log_history)
        if bar is not None:
            trainer.remove_callback(bar)
        end_val_loss = float(trainer.evaluate()["eval_loss"])
        steps, trainer_max_steps = int(trainer.state.global_step), int(trainer.state.max_steps)
    trained.eval()
    log.info("DPO settings %s", asdict(settings))
    if trainer_max_steps != plan.max_steps:
        log.warning(
            "transformers planned %d DPO steps, not the %d the warm-up was clipped for",
            trainer_max_steps,
            plan.max_steps,
        )
    largest, where = _largest_change(trained, start_weights)
    if largest == 0.0:
        raise TrainingError(
            f"DPO training changed no weight: {_count(steps, 'step')} of {plan.describe()}, learning rate "
            f"{settings.learning_rate}; validation loss {start_val_loss:.6g} before and {end_val_loss:.6g} "
            "after. Give more pairs (or pairs whose chosen and rejected texts differ), fewer warm-up "
            "steps (--warmup-steps) or a larger learning rate (--lr)"
        )
    return DPORun(
        model=trained,
        history=history,
        warmup=plan,
        n_train=usable["training"],
        n_val=usable["validation"],
        steps=steps,
        trainer_max_steps=trainer_max_steps,
        start_val_loss=start_val_loss,
        end_val_loss=end_val_loss,
        largest_change=largest,
        largest_change_tensor=where,
    )


def train_dpo(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    train_pairs: Sequence[dict[str, str]],
    val_pairs: Sequence[dict[str, str]],
    settings: DPOSettings = DPOSettings(),
    *,
    progress: bool = True,
    device: torch.device | str | None = None,
) -> tuple[PreTrainedModel, list[dict[str, Any]]]:
    """:func:`train_dpo_run`, returning the trained model and TRL's log history."""
    run = train_dpo_run(model, tokenizer, train_pairs, val_pairs, settings, progress=progress, device=device)
    return run.model, run.history


LEE_FIELDS = ("prompt_text", "unpert_gen_text", "pert_gen_text")


def write_lee_pairs(path: Path, pairs: Sequence[dict[str, str]]) -> None:
    """``{"prompt", "chosen", "rejected"}`` rows as Lee et al.'s JSONL (what :func:`read_lee_pairs` reads)."""
    with open(path, "w") as handle:
        for pair in pairs:
            row = dict(zip(LEE_FIELDS, (pair["prompt"], pair["chosen"], pair["rejected"])))
            handle.write(json.dumps(row) + "\n")


def read_lee_pairs(path: Path) -> list[dict[str, str]]:
    """DPO pairs in Lee et al.'s JSONL format, as ``{"prompt", "chosen", "rejected"}`` rows.

    ``unpert_gen_text`` (the unperturbed, greedy continuation) is preferred, ``pert_gen_text``
    (the toxic, PPLM-steered one) rejected.
    """
    if path.is_dir():
        raise CheckpointError(f"DPO pairs file {path} is a directory; name the JSONL file itself")
    if not path.is_file():
        raise CheckpointError(f"DPO pairs file {path} does not exist")
    text = read_text_file(path, "DPO pairs file")  # UTF-8/16/32, control characters refused
    rows = []
    for number, line in enumerate(text_lines(text), start=1):
        if not line.strip():
            continue
        try:
            record = loads_json(line)
        except DuplicateKeyError as exc:
            raise CheckpointError(
                f"{path}:{number} gives the key {exc.key!r} twice; give each key once"
            ) from None
        except ValueError as exc:
            raise CheckpointError(f"{path}:{number} is not JSON: {exc}") from exc
        if not isinstance(record, dict):
            raise CheckpointError(f"{path}:{number} is a JSON {type(record).__name__}, not an object")
        missing = [name for name in LEE_FIELDS if not isinstance(record.get(name), str)]
        if missing:
            raise CheckpointError(
                f"{path}:{number} lacks the text fields {missing} (needs {list(LEE_FIELDS)})"
            )
        rows.append(
            {
                "prompt": record["prompt_text"],
                "chosen": record["unpert_gen_text"],
                "rejected": record["pert_gen_text"],
            }
        )
    if len(rows) < 2:
        raise CheckpointError(f"{path} holds {len(rows)} pairs; at least 2 are needed (train and validation)")
    return rows


def split_pairs(
    pairs: Sequence[dict[str, str]], val_fraction: float, seed: int
) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """Shuffle the pairs themselves (prompt, chosen and rejected stay together) and split. The
    pairs should be distinct (:func:`distinct_pairs`): a repeated row could land on both sides."""
    order = list(range(len(pairs)))
    random.Random(seed).shuffle(order)
    n_val = _n_val(len(pairs), val_fraction)
    shuffled = [pairs[i] for i in order]
    return shuffled[n_val:], shuffled[:n_val]


def distinct_pairs(pairs: Sequence[dict[str, str]]) -> tuple[list[dict[str, str]], int]:
    """The pairs with repeats dropped (the first of each kept, in order), and how many were
    dropped: a repeated row would otherwise be trained on and validated on at once."""
    seen: set[tuple[str, str, str]] = set()
    kept = []
    for pair in pairs:
        key = (pair["prompt"], pair["chosen"], pair["rejected"])
        if key not in seen:
            seen.add(key)
            kept.append(pair)
    return kept, len(pairs) - len(kept)


def pairs_needed_for_warmup(settings: DPOSettings, val_fraction: float) -> tuple[int, int]:
    """The fewest training pairs whose run has at least ``settings.warmup_steps`` steps, and
    the fewest pairs in a file that split into that many at ``val_fraction``."""
    n_train = settings.batch_size * math.ceil(settings.warmup_steps / settings.max_epochs)
    n_file = n_train + 1
    while n_file - _n_val(n_file, val_fraction) < n_train:
        n_file += 1
    return n_train, n_file


def _n_val(n_pairs: int, val_fraction: float) -> int:
    return min(n_pairs - 1, max(1, round(val_fraction * n_pairs)))


def _warmup_unfinished(run: DPORun, settings: DPOSettings, val_fraction: float, out_dir: Path) -> str:
    plan = run.warmup
    if plan.max_steps >= plan.requested:  # enough pairs: early stopping ended the run
        cause = (
            f"training stopped early at step {run.steps} of {plan.max_steps} (validation loss did not "
            f"improve for {_count(settings.patience, 'evaluation')})"
        )
        remedy = f"set --warmup-steps below {run.steps}, or a larger --patience or --eval-every"
    else:
        n_train, n_file = pairs_needed_for_warmup(settings, val_fraction)
        cause = f"the run had {plan.describe()}"
        remedy = (
            f"give at least {n_train} training pairs ({n_file} in the file at --val-fraction {val_fraction}), "
            f"or set --warmup-steps below {plan.max_steps} (e.g. {plan.effective})"
        )
    return (
        f"DPO run too short for its warm-up: {cause}; {_count(run.steps, 'step')} "
        f"{'is' if run.steps == 1 else 'are'} fewer than the {plan.requested} warm-up steps asked for. "
        "The run moved the weights by at most "
        f"{run.largest_change:.3g} ({run.largest_change_tensor}); validation loss {run.start_val_loss:.6g} "
        f"before, {run.end_val_loss:.6g} after. Nothing was written to {out_dir}. To train: {remedy}"
    )


def train_dpo_from_files(
    base: str,
    pairs_path: Path,
    out_dir: Path,
    settings: DPOSettings,
    *,
    val_fraction: float = 0.05,
    progress: bool = True,
    device: torch.device | str | None = None,
) -> dict[str, Any]:
    """Fine-tune ``base`` (local directory or hub id) on a Lee et al. JSONL and save an HF
    directory (model + tokenizer) that loads as the DPO side of a pair.

    Refuses (:class:`TrainingError`, nothing written) a run that changed no weight, or that
    had fewer steps than the warm-up asked for (the warm-up was then clipped to the run).
    """
    from dpoclaims.models.loading import load_hf_model, load_tokenizer

    pairs, n_duplicates = distinct_pairs(read_lee_pairs(pairs_path))
    if n_duplicates:
        log.warning("%s: %d duplicate pairs dropped (each kept once)", pairs_path, n_duplicates)
    if len(pairs) < 2:
        raise CheckpointError(
            f"{pairs_path} holds {len(pairs)} distinct pair(s) ({n_duplicates} repeats dropped); at least 2 are "
            "needed (train and validation)"
        )
    train, val = split_pairs(pairs, val_fraction, settings.seed)
    tokenizer = load_tokenizer(base)
    model = load_hf_model(base)
    model.train()
    run = train_dpo_run(model, tokenizer, train, val, settings, progress=progress, device=device)
    if run.steps < settings.warmup_steps:
        raise TrainingError(_warmup_unfinished(run, settings, val_fraction, out_dir))
    out_dir.mkdir(parents=True, exist_ok=True)
    run.model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    evals = [h for h in run.history if "eval_loss" in h]
    summary = {
        "base": base,
        "pairs": str(pairs_path),
        "n_train": len(train),
        "n_val": len(val),
        "n_duplicates": n_duplicates,
        "device": str(device or "cpu"),
        "settings": asdict(settings),
        **run.summary(),
        "warmup_note": run.warmup.describe(),
        "best_eval_loss": min((h["eval_loss"] for h in evals), default=None),
        "eval_history": evals,
    }
    (out_dir / "dpo_training.json").write_text(json.dumps(summary, indent=1))
    return summary
