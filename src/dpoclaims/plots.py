"""Figures of the claims report (PNG, matplotlib, no display needed), drawn only from what the
claim tests recorded (:meth:`dpoclaims.decomposition.Decomposition.figure_data`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from dpoclaims.decomposition import GROUP_NAMES, REDUCING_GROUPS  # noqa: E402
from dpoclaims.paper import GROUP_SHARES  # noqa: E402

GROUP_COLORS = {
    "TP-": "#d62728",
    "TN+": "#ff9896",
    "AP+": "#1f77b4",
    "AN-": "#aec7e8",
    "TP+": "#8c564b",
    "TN-": "#c49c94",
    "AP-": "#9467bd",
    "AN+": "#c5b0d5",
}


def _save(fig: plt.Figure, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def layer_projection(projections: dict[str, list[float]], ablated_label: str, title: str, path: Path) -> Path:
    """Paper Fig. 1a: per-layer MLP output projected onto the probe."""
    fig, ax = plt.subplots(figsize=(6.5, 4))
    styles = {
        "base": ("base", "#d62728", "-"),
        "dpo": ("DPO", "#2ca02c", "-"),
        "base_ablated": (ablated_label, "#7f7f7f", "--"),
    }
    for key, values in projections.items():
        label, color, line = styles[key]
        ax.plot(range(len(values)), values, line, marker="o", color=color, label=label)
    ax.axhline(0, color="black", lw=0.5)
    ax.set(xlabel="layer", ylabel="MLP output . probe (mean)", title=title)
    ax.legend()
    return _save(fig, path)


def cumulative_contribution(data: dict[str, Any], title: str, path: Path) -> Path:
    """Paper Fig. 1b/2: cumulative contribution by neuron rank, with each group's part."""
    curves = data["cumulative"]
    fig, ax = plt.subplots(figsize=(6.5, 4))
    ax.plot(curves["rank"], curves["total"], color="black", lw=2, label="all neurons")
    for group in REDUCING_GROUPS:
        ax.plot(
            curves["rank"], curves[group], color=GROUP_COLORS[group], label=f"{group} ({GROUP_NAMES[group]})"
        )
    ax.axhline(data["net"], color="black", ls=":", lw=1, label=f"net reduction {data['net']:.3g}")
    ax.set(
        xscale="log",
        xlabel="neurons ranked by contribution D_i (largest first)",
        ylabel="cumulative D",
        title=title,
    )
    ax.legend(fontsize=7)
    return _save(fig, path)


def group_shares(data: dict[str, Any], title: str, path: Path) -> Path:
    """Each reducing group's share of the reduction, both denominators, with 95% bootstrap CIs."""
    fig, ax = plt.subplots(figsize=(6.5, 4))
    width = 0.38
    x = np.arange(len(REDUCING_GROUPS))
    for offset, denominator, hatch in ((-width / 2, "four-groups", ""), (width / 2, "gross", "//")):
        estimates = np.array(
            [data["shares"][denominator][g] for g in REDUCING_GROUPS]
        )  # [4, (value, low, high)]
        values = estimates[:, 0]
        errors = np.array([values - estimates[:, 1], estimates[:, 2] - values])
        ax.bar(
            x + offset,
            values,
            width,
            yerr=errors,
            capsize=3,
            hatch=hatch,
            edgecolor="black",
            color=[GROUP_COLORS[g] for g in REDUCING_GROUPS],
            label=f"{denominator} denominator",
        )
    ax.scatter(
        x - width / 2,
        [GROUP_SHARES[g] for g in REDUCING_GROUPS],
        marker="D",
        color="black",
        zorder=5,
        label="paper (GPT-2 medium, v1)",
    )
    ax.set_xticks(x, [f"{g}\n{GROUP_NAMES[g]}" for g in REDUCING_GROUPS], fontsize=7)
    ax.set(ylabel="share of the reduction", title=title)
    ax.legend(fontsize=7)
    return _save(fig, path)


def change_vs_cosine(data: dict[str, Any], title: str, path: Path) -> Path:
    """Activation change (base - DPO) against cosine with the probe, per neuron (a sample)."""
    points = data["change_vs_cosine"]
    fig, ax = plt.subplots(figsize=(6.5, 4))
    cos, change, groups = np.array(points["cosine"]), np.array(points["change"]), np.array(points["group"])
    for group, color in GROUP_COLORS.items():
        mask = groups == group
        ax.scatter(cos[mask], change[mask], s=3, alpha=0.5, color=color, label=group)
    r, low, high = points["r"]
    ax.set(
        xlabel="cos(value vector, probe)",
        ylabel="mean activation change (base - DPO)",
        title=f"{title}\nPearson r = {r:.3f} [{low:.3f}, {high:.3f}] (all neurons; {len(cos):,} drawn)",
    )
    ax.axhline(0, color="black", lw=0.5)
    ax.axvline(0, color="black", lw=0.5)
    ax.legend(fontsize=6, markerscale=3, ncol=2)
    return _save(fig, path)


def per_layer_groups(data: dict[str, Any], title: str, path: Path) -> Path:
    """Paper Fig. 3: contribution per layer, split by the four reducing groups."""
    layers = {k: np.array(v) for k, v in data["per_layer"].items()}
    fig, ax = plt.subplots(figsize=(6.5, 4))
    x = np.arange(len(layers["total"]))
    bottom = np.zeros(len(x))
    for group in REDUCING_GROUPS:
        ax.bar(x, layers[group], bottom=bottom, color=GROUP_COLORS[group], label=group)
        bottom += layers[group]
    ax.plot(x, layers["total"], "k-o", label="net (all neurons)")
    ax.set(xlabel="layer", ylabel="sum of D_i", title=title)
    ax.legend(fontsize=7)
    return _save(fig, path)
