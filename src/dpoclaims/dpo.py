"""DPO fine-tuning with TRL's DPOTrainer, a frozen reference and early stopping."""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
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

    def on_evaluate(self, args: Any, state: Any, control: Any, metrics: dict[str, float] | None = None, **kwargs: Any) -> None:
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
