"""Figures of the claims report (PNG, matplotlib, no display needed), drawn only from what the
claim tests recorded (:meth:`dpoclaims.measure.decomposition.Decomposition.figure_data`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from dpoclaims.claims.paper import GROUP_SHARES  # noqa: E402
from dpoclaims.measure.decomposition import GROUP_NAMES, REDUCING_GROUPS  # noqa: E402

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


def edit_front(details: dict[str, Any], title: str, path: Path) -> Path:
    """C13[search]: toxicity against perplexity for every edit measured, beside the base, DPO and
    the C1/C2 ablations, with 95% intervals both ways; DPO's toxicity and perplexity as dashed lines
    (an edit that beats DPO lies in the lower left quadrant)."""
    fig, ax = plt.subplots(figsize=(7, 4.8))

    def draw(rows: list[dict[str, Any]], **style: Any) -> None:
        if not rows:
            return
        x = np.array([r["perplexity"] for r in rows])
        y = np.array([r["toxicity"] for r in rows])
        x_err = np.abs(np.array([[r["perplexity_ci"][0], r["perplexity_ci"][1]] for r in rows]).T - x)
        y_err = np.abs(np.array([[r["toxicity_ci"][0], r["toxicity_ci"][1]] for r in rows]).T - y)
        ax.errorbar(x, y, xerr=x_err, yerr=y_err, ls="none", elinewidth=0.6, capsize=1.5, **style)

    edits = [e for e in details.get("measured", []) if "toxicity" in e]
    for direction, color in (("probe", "#1f77b4"), ("unembedding", "#9467bd")):
        for rule, marker in (("repository", "o"), ("highest", "^")):
            chosen = [e for e in edits if e["direction"] == direction and e["selection"] == rule]
            draw(chosen, marker=marker, ms=4, color=color, label=f"edit ({direction}, {rule})")
    references = details.get("references", [])
    styles = {
        "C1 ablation": {"marker": "x", "ms": 6, "color": "#7f7f7f"},
        "C2 ablation": {"marker": "+", "ms": 7, "color": "#8c564b"},
        "base": {"marker": "*", "ms": 12, "color": "#d62728"},
        "dpo": {"marker": "*", "ms": 12, "color": "#2ca02c"},
    }
    for kind, style in styles.items():
        draw([r for r in references if r["kind"] == kind], label="DPO" if kind == "dpo" else kind, **style)
    dpo = next((r for r in references if r["kind"] == "dpo"), None)
    if dpo is not None:
        ax.axhline(dpo["toxicity"], color="#2ca02c", ls="--", lw=0.8)
        ax.axvline(dpo["perplexity"], color="#2ca02c", ls="--", lw=0.8)
    chosen_spec = details.get("chosen") or {}
    best = next((e for e in edits if e["label"] == chosen_spec.get("label")), None)
    if best:
        ax.annotate(
            f"{'found' if chosen_spec.get('hit') else 'best'}: alpha={best['alpha']:g}, beta={best['beta']:g}, {best['mode']}",
            (best["perplexity"], best["toxicity"]),
            fontsize=7,
            xytext=(6, 6),
            textcoords="offset points",
        )
    # Perplexities of edits span orders of magnitude (1.9 to 4,000 on the toy): a log axis keeps
    # the points near DPO apart.
    ax.set_xscale("log")
    ax.set(
        xlabel="perplexity on held-out texts (log scale)",
        ylabel="toxicity (mean over prompts)",
        title=f"{title}: activation edits vs DPO (C13[search])",
    )
    ax.legend(fontsize=6, ncol=2)
    return _save(fig, path)
