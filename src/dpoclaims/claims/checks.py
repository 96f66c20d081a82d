"""The paper's claims as plain functions of a pair's :class:`Measurements`.

One function per entry of :mod:`dpoclaims.claims.paper`, bound to it by ``@claim(key)``. Each
measures the pair and returns its figures (:class:`~dpoclaims.claims.registry.Measured`), named
as the entry's criterion names them; :func:`dpoclaims.claims.registry.run_claim` decides. Parameters
are real ones only (N, factor, group, denominator, constants).
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
import torch

from dpoclaims.claims import editing, paper, selection
from dpoclaims.claims.decision import Figure
from dpoclaims.claims.registry import Measured, claim, dpo_drop
from dpoclaims.hooks.interventions import Intervention
from dpoclaims.measure.decomposition import (
    BASE_ACTIVATION,
    CONTRIBUTION,
    DPO_ACTIVATION,
    REDUCING_GROUPS,
    Decomposition,
)
from dpoclaims.measure.measurements import NO_INTERVENTION, Measurements
from dpoclaims.measure.metrics import weight_cosines
from dpoclaims.measure.side_effects import f1_summary
from dpoclaims.models.pairs import PairSide
from dpoclaims.stats import (
    Estimate,
    StatsError,
    bootstrap,
    difference,
    mean_difference,
    ratio,
    recovered_share,
)

# C1 draws the paper's Fig. 1a (layer-wise projection) for the base under the ablation of the
# top-N toxic neurons at this N: that pass's activations are recorded (see recorded_passes).
FIGURE_1A_N = 100


def recorded_passes(d: Decomposition) -> tuple[tuple[PairSide, Intervention], ...]:
    """The intervened passes whose activations the claims record (capture), besides both sides
    without intervention: C1's Fig. 1a ablation. The suite's :class:`Measurements` takes this
    declaration, so their evaluations score the captures' continuations (one generation per pass)."""
    return (("base", selection.ablation(d, FIGURE_1A_N)),)


# ------------------------------------------------------------------------- behavioural figures


def recovered(m: Measurements, intervention: Intervention, rows: np.ndarray | None = None) -> Figure:
    """The share of DPO's toxicity drop that ``intervention`` on the base reproduces (on the
    prompts ``rows``, all by default): defined where DPO's drop is shown positive."""
    samples = [m.scores("base"), m.scores("dpo"), m.scores("base", intervention)]
    if rows is not None:
        samples = [s[rows] for s in samples]
    share = bootstrap(recovered_share, *samples, seed=m.settings.seed)
    return Figure(share, (("DPO's toxicity drop", dpo_drop(m, rows)),))


def perplexity_increase(
    nll: np.ndarray, reference_nll: np.ndarray, counts: np.ndarray, axis: int = 0
) -> np.ndarray:
    """Perplexity over the reference's, minus 1, from per-row NLL sums over the same rows and tokens
    (undefined, NaN, where no token was scored)."""
    total = np.sum(counts, axis=axis)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.exp((np.sum(nll, axis=axis) - np.sum(reference_nll, axis=axis)) / total) - 1
    return np.where(total > 0, ratio, np.nan)


def perplexity_vs(
    m: Measurements,
    side: PairSide,
    intervention: Intervention,
    reference: PairSide,
    reference_intervention: Intervention = NO_INTERVENTION,
    rows: np.ndarray | None = None,
) -> Estimate:
    """Held-out perplexity of ``side`` under ``intervention`` over ``reference``'s, minus 1, paired
    over the held-out texts (or windows; ``rows`` of them). An activation edit written at the last
    position in generation is measured at every scored position here: each position of a text
    predicts its next token, as each last position does in generation."""
    measured = intervention.at("every") if intervention.positions == "last" else intervention
    nll, tokens = m.perplexity_rows(side, measured)
    reference_nll, reference_tokens = m.perplexity_rows(reference, reference_intervention)
    if not np.array_equal(tokens, reference_tokens):  # the same tokenizer and texts: never expected to differ
        raise StatsError("the two sides scored different token counts on the held-out texts")
    if rows is not None:
        nll, reference_nll, tokens = nll[rows], reference_nll[rows], tokens[rows]
    return bootstrap(perplexity_increase, nll, reference_nll, tokens, seed=m.settings.seed)


def capability(m: Measurements, intervention: Intervention, rows: np.ndarray | None = None) -> Figure:
    """The intervened base's held-out perplexity over DPO's, minus 1 (``rows``: of the held-out rows)."""
    return Figure(perplexity_vs(m, "base", intervention, "dpo", rows=rows))


def _perplexity_of_rows(nll: np.ndarray, counts: np.ndarray, axis: int = 0) -> np.ndarray:
    return np.exp(np.sum(nll, axis=axis) / np.maximum(np.sum(counts, axis=axis), 1))


def _mean(values: np.ndarray, axis: int = 0) -> np.ndarray:
    return np.mean(values, axis=axis)


def toxicity_and_perplexity(
    m: Measurements, side: PairSide, intervention: Intervention = NO_INTERVENTION
) -> dict[str, Any]:
    """Mean toxicity over prompts and perplexity on the held-out texts of ``side`` under
    ``intervention``, each with its 95% bootstrap interval (over prompts; over texts or windows)."""
    toxicity = bootstrap(_mean, m.scores(side, intervention), seed=m.settings.seed)
    scored = intervention.at("every") if intervention.positions == "last" else intervention
    nll, tokens = m.perplexity_rows(side, scored)
    perplexity = bootstrap(_perplexity_of_rows, nll, tokens, seed=m.settings.seed)
    return {
        "label": ("base" if side == "base" else "DPO")
        if intervention.kind == "none"
        else intervention.label or intervention.id,
        "side": side,
        "intervention": intervention.id,
        "positions": intervention.positions,
        "toxicity": toxicity.value,
        "toxicity_ci": [toxicity.low, toxicity.high],
        "perplexity": perplexity.value,
        "perplexity_ci": [perplexity.low, perplexity.high],
    }


def intervention_summary(
    m: Measurements, intervention: Intervention, side: PairSide = "base"
) -> dict[str, Any]:
    """Toxicity and held-out perplexity of ``side`` under ``intervention`` beside base and DPO
    (and, with ``--perplexity all``, the paper's Table 1 F1)."""
    scorer = m.settings.scorer
    scored = intervention.at("every") if intervention.positions == "last" else intervention
    summary: dict[str, Any] = {
        "toxicity": m.evaluation(side, intervention).mean_toxicity(scorer),
        "base_toxicity": m.evaluation("base").mean_toxicity(scorer),
        "dpo_toxicity": m.evaluation("dpo").mean_toxicity(scorer),
        "perplexity": m.perplexity(side, scored),
        "base_perplexity": m.perplexity("base"),
        "dpo_perplexity": m.perplexity("dpo"),
    }
    if m.settings.perplexity == "all":  # the paper's Table 1 side effects: F1 too
        summary |= f1_summary(m, intervention, side)
    return summary


def _interval(estimate: Estimate, side_alpha: float = paper.SIDE_ALPHA) -> dict[str, Any]:
    return {"value": estimate.value, "ci": list(estimate.interval(side_alpha))}


def every_position_variant(m: Measurements, intervention: Intervention) -> dict[str, Any]:
    """The same patch or edit written at every position (prompt included), reported beside the
    authors' last-position one: its recovered share (of DPO's drop) or toxicity and perplexity."""
    variant = intervention.at("every")
    share = recovered(m, variant).estimate
    return {
        "positions": "every",
        "share": _interval(share),
        "perplexity_vs_dpo": _interval(perplexity_vs(m, "base", variant, "dpo")),
        **intervention_summary(m, variant),
    }


# ------------------------------------------------------------------------- ablation (C1, C2)


@claim("C1")
def c1_ablation_matches_dpo(m: Measurements, paper_n: int) -> Measured:
    intervention = selection.ablation(m.decomposition, paper_n)
    details: dict[str, Any] = {
        "n_neurons_ablated": len(intervention.neurons),
        **intervention_summary(m, intervention),
    }
    if paper_n == FIGURE_1A_N:  # the paper's Fig. 1a: where the ablated model still writes toxicity
        details["layer_projection"] = {
            "base": m.layer_projection("base").tolist(),
            "dpo": m.layer_projection("dpo").tolist(),
            "base_ablated": m.layer_projection("base", intervention).tolist(),
        }
    figures = {paper.SHARE: recovered(m, intervention), paper.PERPLEXITY_VS_DPO: capability(m, intervention)}
    return Measured(figures, details)


@claim("C2")
def c2_positive_ablation(m: Measurements, paper_n: int) -> Measured:
    """Not matching DPO, and (where the paper compares) above plain ablation by the paired difference."""
    positive = selection.ablation(m.decomposition, paper_n, positive=True)
    share = recovered(m, positive)
    figures = {paper.SHARE: share, paper.PERPLEXITY_VS_DPO: capability(m, positive)}
    details: dict[str, Any] = {
        "n_neurons_ablated": len(positive.neurons),
        **intervention_summary(m, positive),
    }
    if paper_n in (100, 200, 1000):  # where the paper compares with plain top-N ablation
        plain = recovered(m, selection.ablation(m.decomposition, paper_n))
        # paired over the same resampled prompts
        figures["more_than_plain"] = Figure(difference(share.estimate, plain.estimate), share.positive)
        details["plain_top_n_share"] = plain.estimate.value
    return Measured(figures, details)


@claim("C2[perplexity]")
def c2_ablation_costs_perplexity(m: Measurements) -> Measured:
    """The perplexity rise, bootstrapped over the held-out texts (or windows), paired."""
    intervention = selection.ablation(m.decomposition, 1000, positive=True)
    rise = perplexity_vs(m, "base", intervention, "base")
    details = {
        "perplexity": m.perplexity("base", intervention),
        "base_perplexity": m.perplexity("base"),
        "n_rows": len(m.perplexity_rows("base")[1]),
        "n_neurons_ablated": len(intervention.neurons),
    }
    return Measured({"perplexity_vs_base": Figure(rise)}, details)


# ------------------------------------------------------------------------- patching (C3, C10)


def _patch(m: Measurements, groups: tuple[str, ...]) -> Measured:
    """Patch ``groups`` to their DPO means at the authors' positions (the last of each forward)."""
    intervention = selection.patch_to_dpo(m.decomposition, groups, positions="last")
    details = {
        "n_neurons_patched": len(intervention.neurons),
        **intervention_summary(m, intervention),
        "every_position": every_position_variant(m, intervention),
    }
    figures = {paper.SHARE: recovered(m, intervention), paper.PERPLEXITY_VS_DPO: capability(m, intervention)}
    return Measured(figures, details)


@claim("C3")
def c3_patch_dampened(m: Measurements) -> Measured:
    return _patch(m, ("TP-",))


@claim("C10")
def c10_patch_all_groups(m: Measurements) -> Measured:
    return _patch(m, REDUCING_GROUPS)


# ------------------------------------------------------------------------- the decomposition (C4-C9)


class DecompositionStatistics:
    """The statistics C4-C9 read, as functions of resampled neuron means
    (:data:`dpoclaims.measure.decomposition.NeuronStatistic`): sums that select neurons from the
    data are cross-fitted (selected on one fold, summed on the other, both ways, averaged), the
    rest read the pooled means. Computed for every resample, and every null draw, in one pass."""

    def __init__(self, d: Decomposition) -> None:
        self.cosines = d.cosines.flatten().double().numpy()  # [N], base weights: fixed
        self.n_layers, self.d_mlp = d.cosines.shape
        top = np.zeros(self.cosines.size, dtype=bool)
        top[list(selection.top_toxic_ids(d, 1000))] = True
        self.top_toxic = top
        late = np.zeros((self.n_layers, self.d_mlp), dtype=bool)
        late[paper.late_layers(self.n_layers)] = True
        self.late = late.flatten()

    def groups(self, means: np.ndarray) -> dict[str, np.ndarray]:
        """The four reducing groups ``[k, N]`` of resampled means ``[k, 3, N]`` (the decomposition's
        definitions: dpoclaims.measure.decomposition.GROUP_SIGNS), the anti-toxic pair, all four,
        and the D_i > 0 mask of the gross."""
        base, change = means[:, BASE_ACTIVATION], means[:, BASE_ACTIVATION] - means[:, DPO_ACTIVATION]
        toxic, anti = self.cosines > 0, self.cosines < 0
        positive = base >= 0
        down, up = change > 0, change < 0
        found = {
            "TP-": toxic & positive & down,
            "TN+": toxic & ~positive & down,
            "AP+": anti & positive & up,
            "AN-": anti & ~positive & up,
        }
        found["anti-toxic"] = found["AP+"] | found["AN-"]
        found["reducing"] = found["TP-"] | found["TN+"] | found["anti-toxic"]
        found["late TP-/AN-"] = (found["TP-"] | found["AN-"]) & self.late
        found["late reducing"] = found["reducing"] & self.late
        found["gross"] = means[:, CONTRIBUTION] > 0
        return found

    @staticmethod
    def half_gross_count(rank_on: np.ndarray, sum_on: np.ndarray) -> np.ndarray:
        """Neurons, ranked by D_i on one fold, whose D_i on the other first reach half of the
        sum over the first fold's D_i > 0 (all neurons when never reached): ``[k]``."""
        ranking, summed = rank_on[:, CONTRIBUTION], sum_on[:, CONTRIBUTION]  # [k, N]
        order = np.argsort(-ranking, axis=1, kind="stable")
        curve = np.cumsum(np.take_along_axis(summed, order, axis=1), axis=1)
        half = 0.5 * (summed * (ranking > 0)).sum(-1, keepdims=True)
        reached = curve >= half
        return np.where(reached.any(1), reached.argmax(1) + 1, ranking.shape[1]).astype(np.float64)

    def __call__(self, pooled: np.ndarray, fold_a: np.ndarray, fold_b: np.ndarray) -> dict[str, np.ndarray]:
        """Every statistic C4-C9 read (names as in :class:`DecompositionFigures`); the sums over
        selected neurons are cross-fitted: selected on one fold, summed on the other, both ways,
        averaged."""
        on_a, on_b = self.groups(fold_a), self.groups(fold_b)
        d_a, d_b, d = fold_a[:, CONTRIBUTION], fold_b[:, CONTRIBUTION], pooled[:, CONTRIBUTION]
        out = {name: ((on_a[name] * d_b).sum(-1) + (on_b[name] * d_a).sum(-1)) / 2 for name in on_a}
        change = pooled[:, BASE_ACTIVATION] - pooled[:, DPO_ACTIVATION]  # [k, N]
        change = change - change.mean(1, keepdims=True)
        cos = self.cosines - self.cosines.mean()
        per_layer = d.reshape(len(d), self.n_layers, -1).sum(-1)  # [k, L]
        return out | {
            "net": d.sum(-1),
            "top toxic": (d * self.top_toxic).sum(-1),
            "fraction increasing": (d < 0).mean(-1),
            "half-gross count": (
                self.half_gross_count(fold_a, fold_b) + self.half_gross_count(fold_b, fold_a)
            )
            / 2,
            "peak position": per_layer.argmax(-1) / max(self.n_layers - 1, 1),
            "peak reduction": per_layer.max(-1),  # the peak layer's net reduction: a peak must reduce
            # Pearson r over neurons between the activation change and the cosine
            "r": (change @ cos) / (np.linalg.norm(change, axis=1) * np.linalg.norm(cos)),
        }


@dataclass
class DecompositionFigures:
    """Every C4-C9 statistic of a pair, with its bootstrap distribution and its null draws."""

    estimates: dict[str, Estimate]
    null: dict[str, np.ndarray]

    def ratio(self, numerator: str, denominator: str) -> Estimate:
        return ratio(self.estimates[numerator], self.estimates[denominator])

    def null_ratio(self, numerator: str, denominator: str) -> np.ndarray:
        """The ratio on each null draw; NaN where the denominator is not positive."""
        num, den = self.null[numerator], self.null[denominator]
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(den > 0, num / den, np.nan)


_DECOMPOSITION_FIGURES: weakref.WeakKeyDictionary[Measurements, DecompositionFigures] = (
    weakref.WeakKeyDictionary()
)


def decomposition_figures(m: Measurements) -> DecompositionFigures:
    """The C4-C9 statistics of ``m``'s pair (computed once per measurements: one bootstrap pass
    and one null pass over the per-prompt neuron data)."""
    if m not in _DECOMPOSITION_FIGURES:
        statistics = DecompositionStatistics(m.decomposition)
        sample = m.neuron_sample
        _DECOMPOSITION_FIGURES[m] = DecompositionFigures(
            sample.bootstrap(statistics, seed=m.settings.seed), sample.null(statistics, seed=m.settings.seed)
        )
    return _DECOMPOSITION_FIGURES[m]


def _fold_details(m: Measurements) -> dict[str, Any]:
    fold_a = m.neuron_sample.fold_a
    return {"cross_fit_folds": [int(fold_a.sum()), int((~fold_a).sum())]}


def _share_claim(m: Measurements, numerator: str, denominator: str, what: str) -> Measured:
    f = decomposition_figures(m)
    figure = Figure(f.ratio(numerator, denominator), ((what, f.estimates[denominator]),))
    details = {
        "numerator": _interval(f.estimates[numerator]),
        "denominator": _interval(f.estimates[denominator]),
        **_fold_details(m),
    }
    return Measured({paper.SHARE: figure}, details, null=f.null_ratio(numerator, denominator))


_DENOMINATORS = {
    "four-groups": ("reducing", "the four reducing groups' cross-fitted reduction"),
    "gross": ("gross", "the cross-fitted gross reduction"),
}


@claim("C4")
def c4_dampened_share(m: Measurements, denominator: str) -> Measured:
    name, what = _DENOMINATORS[denominator]
    measured = _share_claim(m, "TP-", name, what)
    d = m.decomposition
    measured.details["in_sample"] = d.group_sum("TP-") / (
        sum(d.group_sum(g) for g in REDUCING_GROUPS) if denominator == "four-groups" else d.gross
    )
    return measured


@claim("C5")
def c5_group_share(m: Measurements, group: str) -> Measured:
    measured = _share_claim(m, group, *_DENOMINATORS["four-groups"])
    measured.details |= {
        "count": m.decomposition.group_count(group),
        "in_sample_sum": m.decomposition.group_sum(group),
    }
    return measured


@claim("C5[anti-toxic]")
def c5_anti_toxic_share(m: Measurements) -> Measured:
    return _share_claim(m, "anti-toxic", *_DENOMINATORS["four-groups"])


@claim("C6[increasing]")
def c6_fraction_increasing(m: Measurements) -> Measured:
    f = decomposition_figures(m)
    d = m.decomposition
    details = {"n_increasing": int((d.contribution < 0).sum()), "n_neurons": d.contribution.numel()}
    return Measured(
        {"fraction": Figure(f.estimates["fraction increasing"])}, details, null=f.null["fraction increasing"]
    )


@claim("C6[net-over-gross]")
def c6_net_over_gross(m: Measurements) -> Measured:
    f = decomposition_figures(m)
    positive = (
        ("the net reduction", f.estimates["net"]),
        ("the cross-fitted gross reduction", f.estimates["gross"]),
    )
    details = {
        "net": _interval(f.estimates["net"]),
        "gross": _interval(f.estimates["gross"]),
        **_fold_details(m),
    }
    details["in_sample"] = m.decomposition.net / m.decomposition.gross if m.decomposition.gross else None
    return Measured(
        {"ratio": Figure(f.ratio("net", "gross"), positive)}, details, null=f.null_ratio("net", "gross")
    )


@claim("C7[top-toxic]")
def c7_top_toxic_share(m: Measurements) -> Measured:
    f = decomposition_figures(m)
    figure = Figure(f.ratio("top toxic", "net"), (("the net reduction", f.estimates["net"]),))
    details = {"n": len(selection.top_toxic_ids(m.decomposition, 1000)), "net": _interval(f.estimates["net"])}
    return Measured({paper.SHARE: figure}, details, null=f.null_ratio("top toxic", "net"))


@claim("C7[to-half-gross]")
def c7_neurons_to_half_gross(m: Measurements) -> Measured:
    """Neurons that carry half the gross, scaled to GPT-2 medium (the figure the paper speaks of)."""
    f = decomposition_figures(m)
    n_neurons = m.pair.layout.n_neurons
    scale = paper.PAPER_NEURONS / n_neurons
    count = f.estimates["half-gross count"]
    scaled = ratio(count, _constant_like(count, 1 / scale))
    details = {
        "neurons_needed": count.value,
        "neurons_needed_ci": list(count.interval(paper.SIDE_ALPHA)),
        "threshold": paper.scale_n(paper.NEURONS_TO_HALF_GROSS, n_neurons),
        **_fold_details(m),
    }
    figure = Figure(scaled, (("the cross-fitted gross reduction", f.estimates["gross"]),))
    return Measured({"count": figure}, details, null=f.null["half-gross count"] * scale)


def _constant_like(estimate: Estimate, value: float) -> Estimate:
    """A constant with ``estimate``'s resampling scheme (to scale it by :func:`ratio`)."""
    assert estimate.resampled is not None and estimate.scheme is not None
    resampled = np.full_like(estimate.resampled, value)
    return Estimate(value, value, value, n=estimate.n, resampled=resampled, scheme=estimate.scheme)


@claim("C8[peak]")
def c8_peak_layer(m: Measurements) -> Measured:
    """The peak layer's position (0 = first, 1 = last layer), its interval from where the peak
    falls across resamples."""
    f = decomposition_figures(m)
    layers = m.decomposition.per_layer()
    n_layers = len(layers["total"])
    position = f.estimates["peak position"]
    late = paper.late_layers(n_layers)
    details = {
        "peak_layer": round(position.value * max(n_layers - 1, 1)),
        "fraction_in_last_third": position.fraction(lambda p: p * max(n_layers - 1, 1) >= late.start - 0.5),
        "last_third_from_layer": late.start,
        "per_layer": layers["total"].tolist(),
    }
    reduces = (("the largest per-layer net reduction", f.estimates["peak reduction"]),)
    return Measured({"position": Figure(position, reduces)}, details, null=f.null["peak position"])


@claim("C8[late-groups]")
def c8_late_groups(m: Measurements) -> Measured:
    measured = _share_claim(
        m, "late TP-/AN-", "late reducing", "the four groups' cross-fitted reduction in the last third"
    )
    layers = m.decomposition.per_layer()
    measured.details |= {g: layers[g].tolist() for g in REDUCING_GROUPS}
    return measured


@claim("C9")
def c9_correlation(m: Measurements) -> Measured:
    f = decomposition_figures(m)
    return Measured(
        {"r": Figure(f.estimates["r"])}, {"n_neurons": m.decomposition.cosines.numel()}, null=f.null["r"]
    )


# ------------------------------------------------------------------------- weights and scaling (C11, C12)


@claim("C11[cosine]")
def c11_weight_cosines(m: Measurements) -> Measured:
    cosines = weight_cosines(m.pair.base, m.pair.dpo)
    lowest = min(cosines, key=lambda name: cosines[name])
    details = {"lowest": lowest, "n_matrices": len(cosines)}
    return Measured({"cosine": Figure(Estimate.exact_value(cosines[lowest]))}, details)


@claim("C11[toxic-activation]")
def c11_toxic_activation_drop(m: Measurements) -> Measured:
    ids = torch.tensor(selection.top_toxic_ids(m.decomposition, 128))
    base = m.capture("base").mean_activation.flatten(1)[:, ids].mean(1).numpy()  # [n_prompts]
    dpo = m.capture("dpo").mean_activation.flatten(1)[:, ids].mean(1).numpy()
    drop = bootstrap(mean_difference, base, dpo, seed=m.settings.seed)
    return Measured({"drop": Figure(drop)}, {"n": len(ids)})


@claim("C12")
def c12_scale_keys(m: Measurements, factor: int) -> Measured:
    intervention = selection.scale_keys(m.decomposition, 7, factor)
    rise = bootstrap(mean_difference, m.scores("dpo", intervention), m.scores("dpo"), seed=m.settings.seed)
    details = {
        "n_neurons": len(intervention.neurons),
        **intervention_summary(m, intervention, side="dpo"),
        "perplexity_vs_dpo": _interval(perplexity_vs(m, "dpo", intervention, "dpo")),
    }
    return Measured({"rise": Figure(rise)}, details)


# ------------------------------------------------------------------------- activation editing (C13)

_UNEMBEDDING_COSINES: weakref.WeakKeyDictionary[Measurements, torch.Tensor] = weakref.WeakKeyDictionary()


def edit_cosines(m: Measurements, direction: editing.Direction) -> torch.Tensor:
    """``[L, d_mlp]`` cos(v_i, direction) on the base weights (computed once per pair's measurements)."""
    if direction == "probe":
        return m.decomposition.cosines
    if m not in _UNEMBEDDING_COSINES:
        _UNEMBEDDING_COSINES[m] = editing.direction_cosines(m.pair, m.decomposition.cosines, direction)
    return _UNEMBEDDING_COSINES[m]


def activation_edit(m: Measurements, spec: editing.EditSpec) -> Intervention:
    """The edit ``spec`` on the pair's base at the authors' positions (the last of each forward):
    m_i from the base capture, c_i for its direction."""
    edit = editing.edit_intervention(edit_cosines(m, spec.direction), m.decomposition.mean_base, spec)
    return edit.at("last")


@dataclass(frozen=True)
class EditComparison:
    """An edited base against DPO: C13's figures (paired estimates), on all prompts and held-out
    rows or on the rows given."""

    toxicity: Estimate  # edited minus DPO, mean over prompts
    perplexity: Estimate  # edited over DPO, minus 1, every scored position edited

    @cached_property
    def figures(self) -> dict[str, Figure]:
        return {"toxicity_vs_dpo": Figure(self.toxicity), paper.PERPLEXITY_VS_DPO: Figure(self.perplexity)}

    def describe(self) -> str:
        t, p = self.toxicity, self.perplexity
        (tl, th), (pl, ph) = t.interval(paper.SIDE_ALPHA), p.interval(paper.SIDE_ALPHA)
        return (
            f"toxicity minus DPO's {t.value:+.4f} [{tl:+.4f}, {th:+.4f}]; perplexity over DPO's "
            f"{p.value:+.2%} [{pl:+.2%}, {ph:+.2%}]"
        )


def compare_with_dpo(m: Measurements, intervention: Intervention) -> EditComparison:
    """``intervention`` on the base against DPO, paired over prompts (toxicity) and over texts or
    windows (perplexity, at every scored position): one generation pass and one perplexity pass."""
    return EditComparison(toxicity_vs_dpo(m, intervention), perplexity_vs(m, "base", intervention, "dpo"))


def toxicity_vs_dpo(
    m: Measurements, intervention: Intervention, prompts: np.ndarray | None = None
) -> Estimate:
    """The intervened base's toxicity minus DPO's, mean over the prompts (``prompts``: of them), paired."""
    edited, dpo = m.scores("base", intervention), m.scores("dpo")
    if prompts is not None:
        edited, dpo = edited[prompts], dpo[prompts]
    return bootstrap(mean_difference, edited, dpo, seed=m.settings.seed)


@claim("C13")
def c13_editing_beats_dpo(m: Measurements, constants: tuple[float, float]) -> Measured:
    """The repository's edit (probe direction by default: see dpoclaims.claims.editing) with
    constants ``(alpha, beta)`` at the authors' positions; its perplexity with every scored
    position edited (the decision) and at position 0 of each window (the repository's figure)."""
    alpha, beta = constants
    spec = editing.EditSpec(alpha, beta)
    intervention = activation_edit(m, spec)
    comparison = compare_with_dpo(m, intervention)
    cosines = edit_cosines(m, spec.direction)
    repository = perplexity_vs(m, "base", intervention.at("first"), "dpo")
    every = intervention.at("every")
    details = {
        "edit": spec.to_json(),
        "n_neurons_edited": len(intervention.neurons),
        "groups": editing.group_counts(cosines, m.decomposition.mean_base, spec),
        "perplexity_vs_dpo_repository": {
            **_interval(repository),
            "positions": "first (position 0 of each window)",
        },
        "every_position": {
            "toxicity_vs_dpo": _interval(compare_with_dpo(m, every).toxicity),
            **toxicity_and_perplexity(m, "base", every),
        },
        "table": {
            "base": toxicity_and_perplexity(m, "base"),
            "dpo": toxicity_and_perplexity(m, "dpo"),
            "edited": toxicity_and_perplexity(m, "base", intervention),
        },
    }
    low, high = repository.interval(paper.SIDE_ALPHA)
    finding = (
        f"{comparison.describe()} with every scored position edited; as the repository measured it (position 0 "
        f"of each window): {repository.value:+.2%} [{low:+.2%}, {high:+.2%}]"
    )
    return Measured(comparison.figures, details, finding=finding)
