"""Linear toxicity probe on the last-layer residual stream, mean-pooled over real tokens.

The residual read is the output of the last decoder layer, before the final layer norm (what
TransformerLens names ``blocks.{L-1}.hook_resid_post``), the space that MLP value vectors write
into, so ``cos(v_i, w)`` is meaningful. It is read from the plain Hugging Face model with a
forward hook on that layer. Padding is masked out of the mean (the reference code averaged
over padding too).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from dpoclaims.devices import module_device
from dpoclaims.models.mlp import decoder_layers
from dpoclaims.progress import track_progress


@torch.no_grad()
def pooled_residuals(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    *,
    batch_size: int = 32,
    max_tokens: int = 128,
    progress: bool = True,
) -> torch.Tensor:
    """``[len(texts), d_model]`` float32 on the CPU: the mean of the last decoder layer's output
    over non-padding positions. Inputs go to the model's device; the pooling is done in float32.

    Empty texts are refused: they have no position to average over.
    """
    if any(not text.strip() for text in texts):
        raise ValueError("pooled_residuals got an empty text; drop empty texts first")
    captured: dict[str, torch.Tensor] = {}

    def keep(module: torch.nn.Module, args: Any, output: Any) -> None:
        # A decoder layer returns its hidden states, alone or first in a tuple (by release).
        hidden = output[0] if isinstance(output, tuple) else output
        captured["resid"] = hidden.detach()

    tokenizer.padding_side = "right"  # absolute positions start at 0 for every text
    device = module_device(model)
    model.eval()
    rows = []
    batches = range(0, len(texts), batch_size)
    handle = decoder_layers(model)[-1].register_forward_hook(keep)
    try:
        for start in track_progress(batches, desc="probe features", enabled=progress and len(batches) >= 2):
            batch = tokenizer(
                list(texts[start : start + batch_size]),
                return_tensors="pt",
                padding=True,
                truncation=True,
                max_length=max_tokens,
                add_special_tokens=False,
            )
            input_ids = batch["input_ids"].to(device)  # [batch, seq]
            attention_mask = batch["attention_mask"].to(device)
            model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
            resid = captured.pop("resid").float()  # [batch, seq, d_model], on the last layer's device
            mask = attention_mask.to(resid.device).unsqueeze(-1).float()
            rows.append(((resid * mask).sum(1) / mask.sum(1).clamp(min=1)).cpu())
    finally:
        handle.remove()
    return torch.cat(rows)


@dataclass
class LinearProbe:
    """Logistic regression; ``direction`` is the probe vector ``w`` in residual space."""

    C: float = 1.0
    seed: int = 0
    direction: torch.Tensor | None = field(default=None, repr=False)
    bias: float = 0.0
    # Fit on standardized features with classes weighted to balance (for rare toxic texts); the
    # direction and bias are then folded back into the raw residual space, so decision_function
    # and cos(v_i, w) read raw residuals as for an unstandardized probe.
    standardize: bool = False
    balanced: bool = False

    def fit(self, features: torch.Tensor, labels: Sequence[int]) -> LinearProbe:
        from sklearn.linear_model import LogisticRegression

        x = features.numpy().astype(np.float64)  # [n, d_model]
        mean, scale = np.zeros(x.shape[1]), np.ones(x.shape[1])
        if self.standardize:
            mean, scale = x.mean(0), x.std(0)
            scale[scale == 0] = 1.0
        model = LogisticRegression(
            C=self.C,
            max_iter=2000,
            random_state=self.seed,
            class_weight="balanced" if self.balanced else None,
        )
        model.fit((x - mean) / scale, np.asarray(labels))
        coef = model.coef_[0] / scale  # w on raw features: w . x + b == coef . (x - mean) / scale + intercept
        self.direction = torch.tensor(coef, dtype=torch.float32)
        self.bias = float(model.intercept_[0] - coef @ mean)
        return self

    @property
    def fitted_direction(self) -> torch.Tensor:
        """``direction`` once :meth:`fit` has set it ``[d_model]``; a RuntimeError before."""
        if self.direction is None:
            raise RuntimeError("the probe is not fitted; call fit() first")
        return self.direction

    def decision_function(self, features: torch.Tensor) -> torch.Tensor:
        return features.float() @ self.fitted_direction + self.bias

    def accuracy(self, features: torch.Tensor, labels: Sequence[int]) -> float:
        predictions = (self.decision_function(features) > 0).long()
        return float((predictions == torch.as_tensor(labels)).float().mean())


#: The share of a build's probe texts the probe is fitted on (the first ones); the rest are held out.
TRAIN_SHARE = 0.8


@dataclass(frozen=True)
class TrainedProbe:
    """A probe fitted on the first ``n_train`` texts, with its accuracy on them and on the
    ``n_heldout`` after them (NaN where there are none)."""

    probe: LinearProbe
    n_train: int
    n_heldout: int
    train_accuracy: float
    heldout_accuracy: float


def train_probe(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    labels: Sequence[int],
    *,
    n_train: int | None = None,
    C: float = 1.0,
    seed: int = 0,
    batch_size: int = 32,
    max_tokens: int = 128,
    progress: bool = True,
) -> TrainedProbe:
    """Fit a :class:`LinearProbe` on the pooled residuals (:func:`pooled_residuals`) of the first
    ``n_train`` of ``texts`` (default: the first ``TRAIN_SHARE`` of them) and measure it on those
    and on the rest, held out. ``labels``: 1 toxic, 0 not, one per text."""
    if len(labels) != len(texts):
        raise ValueError(f"train_probe got {len(texts)} texts and {len(labels)} labels")
    if n_train is None:
        n_train = int(TRAIN_SHARE * len(texts))
    features = pooled_residuals(
        model, tokenizer, texts, batch_size=batch_size, max_tokens=max_tokens, progress=progress
    )  # [len(texts), d_model]
    train_features, train_labels = features[:n_train], labels[:n_train]
    heldout_features, heldout_labels = features[n_train:], labels[n_train:]
    probe = LinearProbe(C=C, seed=seed).fit(train_features, train_labels)
    return TrainedProbe(
        probe=probe,
        n_train=n_train,
        n_heldout=len(heldout_labels),
        train_accuracy=probe.accuracy(train_features, train_labels),
        heldout_accuracy=probe.accuracy(heldout_features, heldout_labels)
        if len(heldout_labels)
        else float("nan"),
    )
