"""DPO fine-tuning with TRL's DPOTrainer, a frozen reference and early stopping."""

from __future__ import annotations

import json
import logging
import random
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from transformers import EarlyStoppingCallback, PreTrainedModel, PreTrainedTokenizerBase
from transformers.trainer_callback import PrinterCallback, TrainerCallback

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


class _StepBar(TrainerCallback):
    """One progress bar for DPO steps, with the latest validation loss."""

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        from tqdm.auto import tqdm

        self.bar = tqdm(total=state.max_steps, desc="DPO (TRL)", leave=False)

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.bar.update(1)

    def on_evaluate(
        self, args: Any, state: Any, control: Any, metrics: dict[str, float] | None = None, **kwargs: Any
    ) -> None:
        if metrics and "eval_loss" in metrics:
            self.bar.set_postfix(val_loss=f"{metrics['eval_loss']:.4f}")

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.bar.close()


def train_dpo(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    train_pairs: Sequence[dict[str, str]],
    val_pairs: Sequence[dict[str, str]],
    settings: DPOSettings = DPOSettings(),
    *,
    progress: bool = True,
) -> tuple[PreTrainedModel, list[dict[str, Any]]]:
    """Fine-tune ``model`` in place on ``{"prompt", "chosen", "rejected"}`` pairs.

    The reference is a frozen copy of the model at the start. Training stops when the
    validation loss has not improved for ``patience`` evaluations, and the best checkpoint
    (lowest validation loss) is restored. Returns the model and TRL's log history.
    """
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    tokenizer.padding_side = "left"
    with tempfile.TemporaryDirectory(prefix="dpoclaims-dpo-") as out:
        config = DPOConfig(
            output_dir=out,
            beta=settings.beta,
            learning_rate=settings.learning_rate,
            per_device_train_batch_size=settings.batch_size,
            per_device_eval_batch_size=max(settings.batch_size, 16),
            num_train_epochs=settings.max_epochs,
            max_grad_norm=settings.max_grad_norm,
            warmup_steps=settings.warmup_steps,
            optim=settings.optimizer,
            eval_strategy="steps",
            eval_steps=settings.eval_every,
            save_strategy="steps",
            save_steps=settings.eval_every,
            save_total_limit=1,
            load_best_model_at_end=True,
            metric_for_best_model="eval_loss",
            greater_is_better=False,
            max_length=settings.max_length,
            gradient_checkpointing=False,
            report_to="none",
            use_cpu=True,
            seed=settings.seed,
            data_seed=settings.seed,
            logging_steps=settings.eval_every,
            disable_tqdm=True,  # replaced by _StepBar, which does not print every log line
            dataloader_num_workers=0,
            log_level="error",
        )
        trainer = DPOTrainer(
            model=model,
            ref_model=None,
            args=config,
            train_dataset=Dataset.from_list(list(train_pairs)),
            eval_dataset=Dataset.from_list(list(val_pairs)),
            processing_class=tokenizer,
            callbacks=[EarlyStoppingCallback(early_stopping_patience=settings.patience)],
        )
        trainer.remove_callback(PrinterCallback)
        if progress:
            trainer.add_callback(_StepBar())
        trainer.train()
        trained = trainer.model
    trained.eval()
    log.info("DPO settings %s", asdict(settings))
    return trained, list(trainer.state.log_history)


LEE_FIELDS = ("prompt_text", "unpert_gen_text", "pert_gen_text")


def read_lee_pairs(path: Path) -> list[dict[str, str]]:
    """DPO pairs in Lee et al.'s JSONL format, as ``{"prompt", "chosen", "rejected"}`` rows.

    ``unpert_gen_text`` (the unperturbed, greedy continuation) is preferred, ``pert_gen_text``
    (the toxic, PPLM-steered one) rejected.
    """
    from dpoclaims.errors import CheckpointError

    if not path.is_file():
        raise CheckpointError(f"DPO pairs file {path} does not exist")
    rows = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError as exc:
            raise CheckpointError(f"{path}:{number} is not JSON: {exc}") from exc
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
    """Shuffle the pairs themselves (prompt, chosen and rejected stay together) and split."""
    order = list(range(len(pairs)))
    random.Random(seed).shuffle(order)
    n_val = min(len(pairs) - 1, max(1, round(val_fraction * len(pairs))))
    shuffled = [pairs[i] for i in order]
    return shuffled[n_val:], shuffled[:n_val]


def train_dpo_from_files(
    base: str,
    pairs_path: Path,
    out_dir: Path,
    settings: DPOSettings,
    *,
    val_fraction: float = 0.05,
    progress: bool = True,
) -> dict[str, Any]:
    """Fine-tune ``base`` (local directory or hub id) on a Lee et al. JSONL and save an HF
    directory (model + tokenizer) that loads as the DPO side of a pair."""
    from dpoclaims.models import load_hf_model, load_tokenizer

    train, val = split_pairs(read_lee_pairs(pairs_path), val_fraction, settings.seed)
    tokenizer = load_tokenizer(base)
    model = load_hf_model(base)
    model.train()
    trained, history = train_dpo(model, tokenizer, train, val, settings, progress=progress)
    out_dir.mkdir(parents=True, exist_ok=True)
    trained.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    evals = [h for h in history if "eval_loss" in h]
    summary = {
        "base": base,
        "pairs": str(pairs_path),
        "n_train": len(train),
        "n_val": len(val),
        "settings": asdict(settings),
        "steps": max((h.get("step", 0) for h in history), default=0),
        "best_eval_loss": min((h["eval_loss"] for h in evals), default=None),
        "eval_history": evals,
    }
    (out_dir / "dpo_training.json").write_text(json.dumps(summary, indent=1))
    return summary
