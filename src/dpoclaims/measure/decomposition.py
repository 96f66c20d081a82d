"""The per-neuron probe-projection decomposition of DPO's toxicity reduction (Yang et al.).

For model M, neuron i's projection is ``P_i^M = mean_{p,t} m_i^M(p,t) * (v_i^M . w_hat)``,
with each model's own value vectors and its own greedy continuation. Neuron i contributes
``D_i = P_i^base - P_i^DPO`` to the reduction (positive = less toxic). Means are over prompts
of per-prompt means, so every prompt weighs the same and prompts can be bootstrapped.

Groups (v1 names) use the cosine with the probe on the *base* weights, the sign of the mean
base activation, and the activation change ``change_i = mean m^base - mean m^DPO``:

======  =========  ============  ========  ===========================
group   cos        mean m_base   change    effect
======  =========  ============  ========  ===========================
TP-     > 0        >= 0          > 0       reduces: toxic, less positive
TN+     > 0        < 0           > 0       reduces: toxic, more negative
AP+     < 0        >= 0          < 0       reduces: anti-toxic, more positive
AN-     < 0        < 0           < 0       reduces: anti-toxic, less negative
TP+     > 0        >= 0          < 0       mirror: toxic, more positive
TN-     > 0        < 0           < 0       mirror: toxic, less negative
AP-     < 0        >= 0          > 0       mirror: anti-toxic, less positive
AN+     < 0        < 0           > 0       mirror: anti-toxic, more negative
======  =========  ============  ========  ===========================

(The reference notebook's "AN-" cell selected AN+; here each group is defined once.)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from dpoclaims.stats import (
    MIN_PROMPTS,
    N_RESAMPLES,
    Estimate,
    bootstrap,
    bootstrap_of_means,
    estimate_from_resampled,
    pearson_with_ci,
    ratio_of_means,
    resampler,
)

REDUCING_GROUPS = ("TP-", "TN+", "AP+", "AN-")
MIRROR_GROUPS = ("TP+", "TN-", "AP-", "AN+")
ALL_GROUPS = REDUCING_GROUPS + MIRROR_GROUPS
# (cos > 0, mean base activation >= 0, activation change > 0) for each group
GROUP_SIGNS: dict[str, tuple[bool, bool, bool]] = {
    "TP-": (True, True, True),
    "TN+": (True, False, True),
    "AP+": (False, True, False),
    "AN-": (False, False, False),
    "TP+": (True, True, False),
    "TN-": (True, False, False),
    "AP-": (False, True, True),
    "AN+": (False, False, True),
}
GROUP_NAMES = {
    "TP-": "toxic, less positive",
    "TN+": "toxic, more negative",
    "AP+": "anti-toxic, more positive",
    "AN-": "anti-toxic, less negative",
    "TP+": "toxic, more positive",
    "TN-": "toxic, less negative",
    "AP-": "anti-toxic, less positive",
    "AN+": "anti-toxic, more negative",
}
DENOMINATORS = ("four-groups", "gross")  # v1: the four reducing groups' total; EMNLP: all positive D_i


def probe_cosines(value_vectors: torch.Tensor, probe: torch.Tensor) -> torch.Tensor:
    """``[n_layers, d_mlp]`` cosine of each value vector with the probe."""
    return torch.nn.functional.cosine_similarity(value_vectors.float(), probe.float().view(1, 1, -1), dim=-1)


@dataclass
class Decomposition:
    cosines: torch.Tensor  # [L, d_mlp], base weights
    mean_base: torch.Tensor  # [L, d_mlp]
    mean_dpo: torch.Tensor  # [L, d_mlp]
    contribution_per_prompt: torch.Tensor  # [n_prompts, L, d_mlp]: D_i(p)
    groups: dict[str, torch.Tensor]  # name -> bool mask [L, d_mlp]

    @property
    def contribution(self) -> torch.Tensor:
        """``[L, d_mlp]``: D_i."""
        return self.contribution_per_prompt.mean(0)

    @property
    def activation_change(self) -> torch.Tensor:
        """``[L, d_mlp]``: mean m^base - mean m^DPO (positive = the neuron's activation dropped)."""
        return self.mean_base - self.mean_dpo

    @property
    def net(self) -> float:
        return float(self.contribution.sum())

    @property
    def gross(self) -> float:
        d = self.contribution
        return float(d[d > 0].sum())

    def group_sum(self, group: str) -> float:
        return float(self.contribution[self.groups[group]].sum())

    def group_count(self, group: str) -> int:
        return int(self.groups[group].sum())

    def _per_prompt(self, mask: torch.Tensor) -> np.ndarray:
        return self.contribution_per_prompt[:, mask].sum(1).double().numpy()

    def share(
        self, group: str | tuple[str, ...], denominator: str = "four-groups", *, seed: int = 0
    ) -> Estimate:
        """A group's (or several groups') share of the reduction, with a bootstrap CI over prompts.

        ``four-groups`` (v1): over the four reducing groups' total (how 31.8% arises);
        ``gross`` (EMNLP): over the gross reduction, the sum of all positive D_i.
        Group membership is fixed from the full sample while prompts are resampled.
        """
        names = (group,) if isinstance(group, str) else group
        mask = torch.zeros_like(self.cosines, dtype=torch.bool)
        for name in names:
            mask |= self.groups[name]
        if denominator == "four-groups":
            den_mask = torch.zeros_like(mask)
            for name in REDUCING_GROUPS:
                den_mask |= self.groups[name]
        elif denominator == "gross":
            den_mask = self.contribution > 0
        else:
            raise ValueError(f"denominator must be one of {DENOMINATORS}, not {denominator!r}")
        return bootstrap(ratio_of_means, self._per_prompt(mask), self._per_prompt(den_mask), seed=seed)

    def net_over_gross(self, *, seed: int = 0) -> Estimate:
        return bootstrap(
            ratio_of_means,
            self._per_prompt(torch.ones_like(self.cosines, dtype=torch.bool)),
            self._per_prompt(self.contribution > 0),
            seed=seed,
        )

    def fraction_increasing(self) -> float:
        """Fraction of neurons whose change increases the toxic projection (D_i < 0)."""
        return float((self.contribution < 0).float().mean())

    def mask_share(self, numerator: torch.Tensor, denominator: torch.Tensor, *, seed: int = 0) -> Estimate:
        """sum of D over ``numerator`` / sum over ``denominator`` (masks ``[L, d_mlp]``), with a
        bootstrap interval over prompts."""
        return bootstrap(
            ratio_of_means, self._per_prompt(numerator), self._per_prompt(denominator), seed=seed
        )

    def bootstrap_neurons(self, statistic: Any, *, seed: int = 0) -> Estimate:
        """A statistic of all neurons' D_i (``statistic(means [k, L, d_mlp]) -> [k]``), with a
        bootstrap interval over prompts (the same resampling scheme as every other figure)."""
        return bootstrap_of_means(statistic, self.contribution_per_prompt.double().numpy(), seed=seed)

    def fraction_increasing_estimate(self, *, seed: int = 0) -> Estimate:
        return self.bootstrap_neurons(lambda d: (d.reshape(len(d), -1) < 0).mean(1), seed=seed)

    def neurons_to_reach_estimate(self, fraction: float = 1.0, *, seed: int = 0) -> Estimate:
        """:meth:`neurons_to_reach` with a bootstrap interval over prompts."""

        def needed(d: np.ndarray) -> np.ndarray:
            flat = d.reshape(len(d), -1)  # [k, neurons]
            curve = np.cumsum(-np.sort(-flat, axis=1), axis=1)
            reached = curve >= fraction * flat.sum(1, keepdims=True)
            return np.where(reached.any(1), reached.argmax(1) + 1, flat.shape[1]).astype(np.float64)

        return self.bootstrap_neurons(needed, seed=seed)

    def peak_layer_estimate(self, *, seed: int = 0) -> Estimate:
        """The layer with the largest net reduction, with its bootstrap distribution."""
        return self.bootstrap_neurons(lambda d: d.sum(-1).argmax(-1).astype(np.float64), seed=seed)

    def cumulative_curve(self) -> dict[str, np.ndarray]:
        """Cumulative D by neuron rank (largest D first), total and per reducing group."""
        d = self.contribution.flatten()
        order = torch.argsort(d, descending=True, stable=True)
        curves = {"total": torch.cumsum(d[order], 0).numpy()}
        for name in REDUCING_GROUPS:
            member = self.groups[name].flatten()[order]
            curves[name] = torch.cumsum(torch.where(member, d[order], torch.zeros_like(d[order])), 0).numpy()
        return curves

    def neurons_to_reach(self, fraction: float = 1.0) -> int:
        """How many neurons, taken by decreasing D, first reach ``fraction`` of the net reduction."""
        total = self.cumulative_curve()["total"]
        target = fraction * self.net
        reached = np.nonzero(total >= target)[0]
        return int(reached[0]) + 1 if len(reached) else len(total)

    def per_layer(self) -> dict[str, np.ndarray]:
        """``group -> [n_layers]`` sum of D per layer, plus ``total``."""
        d = self.contribution
        out = {"total": d.sum(1).numpy()}
        for name in ALL_GROUPS:
            out[name] = torch.where(self.groups[name], d, torch.zeros_like(d)).sum(1).numpy()
        return out

    def figure_data(self, *, seed: int = 0, max_points: int = 4000) -> dict[str, Any]:
        """What the report's decomposition figures draw, small enough to travel in a test report:
        the cumulative curve (at most ``max_points`` ranks, log-spaced), group shares with
        intervals under both denominators, per-layer sums, and a seeded sample of
        (cosine, activation change, group) points."""
        curves = self.cumulative_curve()
        n = len(curves["total"])
        ranks = np.unique(np.geomspace(1, n, num=min(n, max_points)).round().astype(int))
        cos, change = self.cosines.flatten().numpy(), self.activation_change.flatten().numpy()
        group_of = np.full(len(cos), "", dtype=object)
        for name, mask in self.groups.items():
            group_of[mask.flatten().numpy()] = name
        sample = np.random.default_rng(seed).permutation(len(cos))[:max_points]
        r = self.change_cosine_correlation()
        return {
            "net": self.net,
            "cumulative": {"rank": ranks.tolist(), **{k: v[ranks - 1].tolist() for k, v in curves.items()}},
            "shares": {
                denominator: {g: _interval(self.share(g, denominator, seed=seed)) for g in REDUCING_GROUPS}
                for denominator in DENOMINATORS
            },
            "per_layer": {k: v.tolist() for k, v in self.per_layer().items()},
            "change_vs_cosine": {
                "cosine": cos[sample].tolist(),
                "change": change[sample].tolist(),
                "group": group_of[sample].tolist(),
                "r": [r.value, r.low, r.high],
            },
        }

    def change_cosine_correlation(self) -> Estimate:
        return pearson_with_ci(
            self.activation_change.flatten().double().numpy(), self.cosines.flatten().double().numpy()
        )


def _interval(estimate: Estimate) -> list[float]:
    return [estimate.value, estimate.low, estimate.high]


def assign_groups(
    cosines: torch.Tensor, mean_base: torch.Tensor, activation_change: torch.Tensor
) -> dict[str, torch.Tensor]:
    """Masks of the eight groups; neurons with cos == 0 or no activation change belong to none."""
    toxic, anti = cosines > 0, cosines < 0
    positive = mean_base >= 0
    down, up = activation_change > 0, activation_change < 0
    groups = {}
    for name, (is_toxic, is_positive, is_down) in GROUP_SIGNS.items():
        groups[name] = (
            (toxic if is_toxic else anti)
            & (positive if is_positive else ~positive)
            & (down if is_down else up)
        )
    return groups


def decompose(
    base_values: torch.Tensor,
    dpo_values: torch.Tensor,
    probe: torch.Tensor,
    base_activation: torch.Tensor,
    dpo_activation: torch.Tensor,
) -> Decomposition:
    """``*_values``: ``[L, d_mlp, d_model]``; ``*_activation``: per-prompt means ``[n_prompts, L, d_mlp]``
    of each model on its own continuations of the same prompts."""
    unit = probe.float() / probe.float().norm()
    base_projection = base_values.float() @ unit  # [L, d_mlp]
    dpo_projection = dpo_values.float() @ unit
    contribution = base_activation.float() * base_projection - dpo_activation.float() * dpo_projection
    cosines = probe_cosines(base_values, probe)
    mean_base, mean_dpo = base_activation.float().mean(0), dpo_activation.float().mean(0)
    return Decomposition(
        cosines, mean_base, mean_dpo, contribution, assign_groups(cosines, mean_base, mean_base - mean_dpo)
    )


# ------------------------------------------------------------------------- per-prompt neuron data

#: Index of each quantity on axis 1 of :attr:`NeuronSample.data`.
CONTRIBUTION, BASE_ACTIVATION, DPO_ACTIVATION = 0, 1, 2
NULL_DRAWS = 1000  # sign-flip draws of the null control (its 95% interval from their percentiles)
_NULL_STREAM = 0x4E554C4C  # "NULL": the null's random stream, apart from the bootstrap's and the folds'

# Statistics of neuron means: (pooled, fold_a, fold_b), each [k, 3, L * d_mlp] float64 means over
# prompts, to named [k] arrays (all at once, so what several share is computed once). A statistic
# that selects neurons (groups, masks, a ranking) selects them on one fold and sums on the other
# (cross-fitting); one that selects nothing reads ``pooled``.
NeuronStatistics = Callable[[np.ndarray, np.ndarray, np.ndarray], dict[str, np.ndarray]]
_BLOCK_ELEMENTS = 1 << 22  # float64 elements of one block of resampled means (bounds memory)


def half_split(n: int, seed: int) -> np.ndarray:
    """``[n]`` bool: True for the prompts (or texts) of fold A, a seeded half (the first
    ceil(n / 2) of a permutation drawn from its own stream of ``seed``)."""
    order = np.random.default_rng([seed, 0xF01D]).permutation(n)
    fold_a = np.zeros(n, dtype=bool)
    fold_a[order[: (n + 1) // 2]] = True
    return fold_a


@dataclass
class NeuronSample:
    """Per prompt and neuron: D_i(p), m_i^base(p), m_i^DPO(p), for statistics that resample
    prompts (:meth:`bootstrap`) or swap the two sides of each prompt at random (:meth:`null`).

    The null control swaps base and DPO within each prompt with probability 1/2 (their
    activations exchange and D_i(p) changes sign): under "DPO changes nothing systematic",
    the data are as likely as any of their swaps, so the statistic over many swaps is its
    distribution when only noise (the two models' different continuations) separates the sides.
    """

    data: np.ndarray  # [n_prompts, 3, L * d_mlp] float64 (CONTRIBUTION, BASE_ACTIVATION, DPO_ACTIVATION)
    fold_a: np.ndarray  # [n_prompts] bool: the seeded half (half_split)

    @property
    def n(self) -> int:
        return int(self.data.shape[0])

    def _means(self, weights: np.ndarray, swapped: np.ndarray | None) -> np.ndarray:
        """``[k, 3, N]``: means under prompt ``weights`` ``[k, n]`` (rows sum to 1), with the sides
        of the prompts ``swapped`` ``[k, n]`` exchanged."""
        flat = self.data.reshape(self.n, -1)  # [n, 3N]
        if swapped is None:
            return (weights @ flat).reshape(len(weights), 3, -1)
        kept, moved = weights * ~swapped, weights * swapped
        d, base, dpo = (self.data[:, i] for i in (CONTRIBUTION, BASE_ACTIVATION, DPO_ACTIVATION))
        return np.stack(
            [kept @ d - moved @ d, kept @ base + moved @ dpo, kept @ dpo + moved @ base], axis=1
        )  # [k, 3, N]

    @property
    def chunk(self) -> int:
        """Resamples per block: a block's means stay within :data:`_BLOCK_ELEMENTS`."""
        return max(1, _BLOCK_ELEMENTS // (3 * self.data.shape[2]))

    def _evaluate(
        self, statistics: NeuronStatistics, counts: np.ndarray, swapped: np.ndarray | None
    ) -> dict[str, np.ndarray]:
        """Every statistic under prompt multiplicities ``counts`` ``[k, n]``."""

        def normalised(c: np.ndarray) -> np.ndarray:
            with np.errstate(invalid="ignore", divide="ignore"):
                return c / c.sum(1, keepdims=True)

        pooled = self._means(normalised(counts), swapped)
        fold_a = self._means(normalised(counts * self.fold_a), swapped)
        fold_b = self._means(normalised(counts * ~self.fold_a), swapped)
        with np.errstate(invalid="ignore", divide="ignore"):
            return {
                name: np.asarray(v, dtype=np.float64)
                for name, v in statistics(pooled, fold_a, fold_b).items()
            }

    def bootstrap(
        self, statistics: NeuronStatistics, *, seed: int = 0, n_resamples: int = N_RESAMPLES
    ) -> dict[str, Estimate]:
        """Each statistic with its bootstrap distribution over prompts, all in one pass: the same
        resampled prompts as every other figure of the pair (:func:`dpoclaims.stats.resampler`),
        the folds of a resample being its prompts of each half, so selections are made anew in
        every resample."""
        point = self._evaluate(statistics, np.ones((1, self.n)), None)
        if self.n < MIN_PROMPTS:
            return {name: Estimate(float(v[0]), math.nan, math.nan, n=self.n) for name, v in point.items()}
        sampler = resampler(self.n, seed, n_resamples)
        values: dict[str, list[np.ndarray]] = {name: [] for name in point}
        for start in range(0, n_resamples, self.chunk):
            rows = sampler.indices[start : start + self.chunk]  # [k, n]
            counts = np.zeros((len(rows), self.n))
            np.add.at(counts, (np.arange(len(rows))[:, None], rows), 1.0)
            for name, v in self._evaluate(statistics, counts, None).items():
                values[name].append(v)
        return {
            name: estimate_from_resampled(float(point[name][0]), np.concatenate(values[name]), sampler.scheme)
            for name in point
        }

    def null(
        self, statistics: NeuronStatistics, *, seed: int = 0, draws: int = NULL_DRAWS
    ) -> dict[str, np.ndarray]:
        """Each statistic on ``draws`` random swaps of the sides within prompts (no resampling):
        ``name -> [draws]`` (NaN where a draw leaves it undefined)."""
        rng = np.random.default_rng([seed, _NULL_STREAM])
        swaps = rng.random((draws, self.n)) < 0.5  # [draws, n]
        values: dict[str, list[np.ndarray]] = {}
        for start in range(0, draws, self.chunk):
            swapped = swaps[start : start + self.chunk]
            for name, v in self._evaluate(statistics, np.ones(swapped.shape), swapped).items():
                values.setdefault(name, []).append(v)
        return {name: np.concatenate(v) for name, v in values.items()}


def neuron_sample(
    d: Decomposition, base_activation: torch.Tensor, dpo_activation: torch.Tensor, seed: int
) -> NeuronSample:
    """The decomposition's per-prompt data (``*_activation``: ``[n, L, d_mlp]``), folds from ``seed``."""
    n = d.contribution_per_prompt.shape[0]
    data = np.stack(
        [
            d.contribution_per_prompt.reshape(n, -1).double().numpy(),
            base_activation.reshape(n, -1).double().numpy(),
            dpo_activation.reshape(n, -1).double().numpy(),
        ],
        axis=1,
    )  # [n, 3, L * d_mlp]
    return NeuronSample(data, half_split(n, seed))
