"""Which neurons an intervention touches: the top toxic neurons, positively-activated toxic
neurons, or whole groups of the decomposition, with the paper's neuron counts scaled to the pair.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from dpoclaims.claims.paper import scale_n
from dpoclaims.hooks.interventions import Intervention
from dpoclaims.hooks.neurons import Positions
from dpoclaims.measure.decomposition import Decomposition


def top_toxic(
    cosines: torch.Tensor, n: int, *, mean_base_activation: torch.Tensor | None = None
) -> torch.Tensor:
    """Flat ids of the ``n`` neurons with the largest cosine; with ``mean_base_activation``,
    only positively-activated toxic neurons (cos > 0 and mean activation > 0) qualify."""
    flat = cosines.flatten().clone()  # [L * d_mlp]
    if mean_base_activation is not None:
        eligible = (flat > 0) & (mean_base_activation.flatten() > 0)
        flat[~eligible] = -float("inf")
        n = min(n, int(eligible.sum()))
    return torch.argsort(flat, descending=True, stable=True)[:n]


def top_toxic_ids(d: Decomposition, paper_n: int, *, positive: bool = False) -> tuple[int, ...]:
    """The paper's top-``paper_n`` (positively-activated) toxic neurons, scaled to the pair."""
    n = scale_n(paper_n, d.cosines.numel())
    ids = top_toxic(d.cosines, n, mean_base_activation=d.mean_base if positive else None)
    return tuple(int(i) for i in ids)


def ablation(d: Decomposition, paper_n: int, *, positive: bool = False) -> Intervention:
    """Zero the paper's top-``paper_n`` (positively-activated) toxic neurons."""
    n = scale_n(paper_n, d.cosines.numel())
    label = f"ablate top {n} {'positively-activated ' if positive else ''}toxic"
    return Intervention("ablate", top_toxic_ids(d, paper_n, positive=positive), label=label)


def patch_to_dpo(d: Decomposition, groups: Sequence[str], positions: Positions = "every") -> Intervention:
    """Set every neuron of ``groups`` to its mean DPO activation, at ``positions`` of each forward."""
    mask = torch.zeros_like(d.cosines, dtype=torch.bool)  # [L, d_mlp]
    for group in groups:
        mask |= d.groups[group]
    flat = torch.nonzero(mask.flatten()).flatten()
    values = d.mean_dpo.flatten()[flat]
    return Intervention(
        "patch",
        tuple(int(i) for i in flat),
        values=tuple(float(v) for v in values),
        positions=positions,
        label=f"patch {'+'.join(groups)} to DPO means"
        + ("" if positions == "every" else f" ({positions} position)"),
    )


def scale_keys(d: Decomposition, paper_n: int, factor: float) -> Intervention:
    """Multiply the key vectors of the paper's top-``paper_n`` toxic neurons by ``factor``."""
    neurons = top_toxic_ids(d, paper_n)
    return Intervention(
        "scale_keys",
        neurons,
        factor=float(factor),
        label=f"scale keys of top {len(neurons)} toxic x{factor:g}",
    )
