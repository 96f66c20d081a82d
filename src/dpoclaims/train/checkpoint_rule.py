"""Which DPO checkpoint a build keeps: the first that meets every band of the pair's setting.

The rule (docs/toy.md, 'The setting'), fixed before any claim is measured on what it picks:
every ``every`` optimisation steps DPO's model is measured as the build report measures it (the
bands' figures, nothing a claim reads); the first checkpoint whose figures meet every band is the
DPO model, and training stops there. A run that reaches its last step without one keeps the
*closest* checkpoint, the one whose figures lie least far outside the bands (summed over the
bands it fails, each distance in units of its band's width), and its build fails its bands
with those figures. With the rule the learning rate is constant after the warm-up
(:func:`dpoclaims.train.dpo.trainer_config`), so the model at step ``s`` is the same whatever the
cap on steps: the pick does not depend on how long the run might have gone on.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import PreTrainedModel
from transformers.trainer_callback import TrainerCallback

from dpoclaims.progress import stage_done
from dpoclaims.train.bands import band_checks

#: What a checkpoint is measured by: the DPO model as it stands (training float type, train
#: mode) to the bands' figures, by name (a copy is measured; the model itself is left as it is).
Measure = Callable[[PreTrainedModel], dict[str, float]]


def distance_outside(value: float, band: tuple[float, float]) -> float:
    """How far ``value`` lies outside ``band`` in units of the band's width (0 inside)."""
    low, high = band
    width = high - low
    return max(low - value, value - high, 0.0) / width


@dataclass(frozen=True)
class Checkpoint:
    """One measured checkpoint: its step, its figures, the bands it fails, its distance."""

    step: int
    figures: dict[str, float]
    failed: tuple[str, ...]
    distance: float

    @property
    def in_band(self) -> bool:
        return not self.failed

    def as_record(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "figures": self.figures,
            "failed": list(self.failed),
            "distance": self.distance,
        }


@dataclass
class FirstInBand(TrainerCallback):
    """The rule as a Trainer callback: measures every ``every`` steps, stops training at the
    first checkpoint in every band, and otherwise keeps a copy of the closest one's weights for
    :meth:`settle` to put back."""

    every: int
    measure: Measure
    bands: dict[str, tuple[float, float]]
    progress: bool = True
    checkpoints: list[Checkpoint] = field(default_factory=list)
    _closest_weights: dict[str, torch.Tensor] | None = None

    def __post_init__(self) -> None:
        if isinstance(self.every, bool) or not isinstance(self.every, int) or self.every < 1:
            raise ValueError(f"the checkpoint rule measures every N >= 1 steps, not {self.every!r}")

    @property
    def chosen(self) -> Checkpoint | None:
        """The first checkpoint in every band, if any."""
        return next((c for c in self.checkpoints if c.in_band), None)

    @property
    def closest(self) -> Checkpoint | None:
        """The chosen checkpoint, else the one least far outside the bands (the earliest of equals)."""
        if not self.checkpoints:
            return None
        return self.chosen or min(self.checkpoints, key=lambda c: (c.distance, c.step))

    def on_step_end(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        step = int(state.global_step)
        if step % self.every or self.chosen is not None:
            return
        if not isinstance(model, PreTrainedModel):
            raise TypeError(f"the checkpoint rule got a {type(model).__name__}, not a PreTrainedModel")
        began = time.perf_counter()
        figures = self.measure(model)
        missing = sorted(set(self.bands) - set(figures))
        if missing:
            raise KeyError(f"the checkpoint measure gave no figure for the bands {missing}")
        checks = band_checks(figures, self.bands)  # the build report's own judgement of the bands
        failed = tuple(name for name, check in checks.items() if not check["ok"])
        distance = sum(distance_outside(figures[name], band) for name, band in self.bands.items())
        checkpoint = Checkpoint(step, figures, failed, distance)
        previous = self.closest
        self.checkpoints.append(checkpoint)
        stage_done(
            f"DPO checkpoint {step} measured ("
            + ", ".join(f"{k} {v:.4f}" for k, v in figures.items())
            + ("; every band met: kept)" if checkpoint.in_band else f"; outside: {', '.join(failed)})"),
            time.perf_counter() - began,
            enabled=self.progress,
        )
        if checkpoint.in_band:
            control.should_training_stop = True
            self._closest_weights = None
        elif previous is None or (checkpoint.distance, step) < (previous.distance, previous.step):
            self._closest_weights = {
                k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()
            }

    def settle(self, model: PreTrainedModel) -> Checkpoint:
        """Put the kept checkpoint's weights into ``model`` (the model training ended with) and
        return that checkpoint. In band, training stopped at it, so nothing is put back; else the
        closest one's weights are loaded."""
        kept = self.closest
        if kept is None:
            raise RuntimeError(
                f"the DPO run ended before its first checkpoint (every {self.every} steps): no model to keep"
            )
        if not kept.in_band:
            if self._closest_weights is None:
                raise RuntimeError("the closest checkpoint's weights were not kept")
            model.load_state_dict(self._closest_weights)
        return kept
