"""The paper's claims as plain functions of a pair's :class:`Measurements`.

One function per sentence of the paper, registered by its key (``@claim("C5")``); its entry in
:mod:`dpoclaims.claims.paper` holds the sentence, source, figures and the decision rule, which
:func:`claim_result` applies (a claim function never builds one). Parameters are real ones only
(N, factor, group, denominator). Each measures the pair and returns a :class:`ClaimResult`
saying whether the paper's finding replicates. Claims the paper states as a refuted hypothesis ("ablation matches
DPO") are flagged ``hypothesis=True``: their test asserts the hypothesis and is expected to fail.
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping
from dataclasses import dataclass, replace
from functools import cached_property
from typing import Any

import numpy as np
import torch

from dpoclaims import stats
from dpoclaims.claims import editing, paper, selection
from dpoclaims.claims.registry import claim
from dpoclaims.claims.results import ClaimResult
from dpoclaims.hooks.interventions import Intervention
from dpoclaims.measure.decomposition import REDUCING_GROUPS, Decomposition
from dpoclaims.measure.measurements import NO_INTERVENTION, Measurements
from dpoclaims.measure.metrics import weight_cosines
from dpoclaims.measure.side_effects import f1_summary
from dpoclaims.models.loading import MLPLayout
from dpoclaims.models.pairs import PairSide
from dpoclaims.stats import Criterion, Estimate, Verdict, bootstrap, mean_difference, recovered_share

# C1 draws the paper's Fig. 1a (layer-wise projection) for the base under the ablation of the
# top-N toxic neurons at this N: that pass's activations are recorded (see recorded_passes).
FIGURE_1A_N = 100


def recorded_passes(d: Decomposition) -> tuple[tuple[PairSide, Intervention], ...]:
    """The intervened passes whose activations the claims record (capture), besides both sides
    without intervention: C1's Fig. 1a ablation. The suite's :class:`Measurements` takes this
    declaration, so their evaluations score the captures' continuations (one generation per pass)."""
    return (("base", selection.ablation(d, FIGURE_1A_N)),)


def claim_result(
    key: str,
    param: Any = None,
    *,
    estimate: Estimate,
    parts: Mapping[str, Estimate] | None = None,
    layout: MLPLayout | None = None,
    details: dict[str, Any] | None = None,
    verdict_override: Verdict | None = None,
    p_override: float | None = None,
) -> ClaimResult:
    """A claim's result: texts, the paper's figure and the rule from the paper-table entry ``key``,
    the verdict and p-value from ``estimate`` (and each of the entry's ``parts``) against it.

    A claim with parts replicates only if every part does (:func:`dpoclaims.stats.combined_verdict`);
    its p-value is the largest of the parts', each part's figures go to ``details[part.name]``.
    ``layout`` resolves a scaled threshold (:meth:`ClaimEntry.rule_for`). ``verdict_override``
    (with ``p_override``) is for a verdict decided otherwise: DPO not reducing toxicity (not
    measurable), a search over many measured points."""
    entry = paper.entry(key)
    if entry.scaled and layout is None:
        raise ValueError(f"{key}: its threshold is scaled to the pair; pass the pair's layout")
    rule = entry.rule_for(layout.n_layers, layout.n_neurons) if layout is not None else entry.rule
    details = dict(details or {})
    verdicts = [stats.verdict(estimate, rule)]
    p_values = [_p_value(estimate, rule)]
    expected_parts = {part.name: part for part in entry.parts_for(param)}
    if parts is None and verdict_override is not None:  # a search: the verdict speaks for every part
        expected_parts = {}
    if set(parts or {}) != set(expected_parts):
        raise ValueError(
            f"{key}: parts {sorted(parts or {})} measured, the paper table has {sorted(expected_parts)}"
        )
    for name, part_estimate in (parts or {}).items():
        part_rule = expected_parts[name].rule
        verdicts.append(stats.verdict(part_estimate, part_rule))
        p_values.append(stats.p_value(part_estimate, part_rule))  # a part of zero width has one too
        details[name] = {**_interval(part_estimate), "p_value": p_values[-1], "verdict": verdicts[-1]}
    verdict = verdict_override or stats.combined_verdict(verdicts)
    finding = ""
    if zero_width(estimate):
        # Every resample gave the same figure: the prompts do not vary in it, so its sampling
        # error cannot be estimated, and an interval [x, x] would claim a certainty never measured.
        verdict = "not measurable"
        finding = (
            f"its 95% interval has zero width ([{estimate.low:.4g}, {estimate.high:.4g}]): every resample gave "
            "the same figure, so its sampling error cannot be estimated; measure on more varied prompts"
        )
    measurable = estimate.measurable and verdict != "not measurable"
    if p_override is not None:
        p_value = p_override
    elif measurable:
        p_value = max(p_values)
    else:
        p_value = float("nan")
    claim_id = entry.claim_id(param)
    return ClaimResult(
        claim=claim_id.claim,
        param=claim_id.param,
        statement=entry.text(entry.statement, param),
        criterion=entry.text(entry.criterion, param),
        measured=estimate.value,
        ci=(estimate.low, estimate.high) if measurable and not estimate.exact else None,
        exact=estimate.exact,
        p_value=p_value,
        verdict=verdict,
        paper=entry.figure(param),
        hypothesis=entry.hypothesis,
        details=details,
        finding=finding,
    )


def _p_value(estimate: Estimate, rule: Criterion) -> float:
    """The p-value of ``estimate`` against ``rule``; NaN for a zero-width interval (not measurable)."""
    return float("nan") if zero_width(estimate) else stats.p_value(estimate, rule)


def zero_width(estimate: Estimate) -> bool:
    """An interval of zero width on a figure not marked exact."""
    return estimate.measurable and not estimate.exact and estimate.low == estimate.high


def recovered(m: Measurements, intervention: Intervention) -> Estimate:
    """Share of DPO's toxicity drop that ``intervention`` on the base reproduces."""
    return bootstrap(
        recovered_share,
        m.scores("base"),
        m.scores("dpo"),
        m.scores("base", intervention),
        seed=m.settings.seed,
    )


def dpo_drop(m: Measurements) -> Estimate:
    """DPO's toxicity drop on the pair's prompts (base minus DPO), with its interval."""
    return bootstrap(mean_difference, m.scores("base"), m.scores("dpo"), seed=m.settings.seed)


def _recovery_verdict(m: Measurements) -> tuple[Verdict | None, dict[str, Any]]:
    """ "not measurable" when DPO does not reduce toxicity on these prompts (a share of its
    drop is then undefined), with the figures; else no override."""
    drop = dpo_drop(m)
    figures = {"dpo_drop": drop.value, "dpo_drop_ci": [drop.low, drop.high]}
    return ("not measurable" if not drop.value > 0 else None), figures


def toxicity_summary(
    m: Measurements, intervention: Intervention, side: PairSide = "base"
) -> dict[str, float]:
    scorer = m.settings.scorer
    summary = {
        "toxicity": m.evaluation(side, intervention).mean_toxicity(scorer),
        "base_toxicity": m.evaluation("base").mean_toxicity(scorer),
        "dpo_toxicity": m.evaluation("dpo").mean_toxicity(scorer),
    }
    if m.settings.perplexity == "all":  # the paper's Table 1 side effects: perplexity and F1
        summary |= {"perplexity": m.perplexity(side, intervention), "base_perplexity": m.perplexity("base")}
        summary |= f1_summary(m, intervention, side)
    return summary


def _group_details(d: Decomposition) -> dict[str, Any]:
    return {
        "groups": {g: {"count": d.group_count(g), "sum": d.group_sum(g)} for g in d.groups},
        "net": d.net,
        "gross": d.gross,
    }


def _interval(estimate: Estimate) -> dict[str, Any]:
    return {"value": estimate.value, "ci": [estimate.low, estimate.high]}


# ------------------------------------------------------------------------- the claims


@claim("C1")
def c1_ablation_matches_dpo(m: Measurements, paper_n: int) -> ClaimResult:
    intervention = selection.ablation(m.decomposition, paper_n)
    share = recovered(m, intervention)
    override, drop = _recovery_verdict(m)
    layers = {}
    if paper_n == FIGURE_1A_N:  # the paper's Fig. 1a: where the ablated model still writes toxicity
        layers = {
            "layer_projection": {
                "base": m.layer_projection("base").tolist(),
                "dpo": m.layer_projection("dpo").tolist(),
                "base_ablated": m.layer_projection("base", intervention).tolist(),
            }
        }
    details = {
        "n_neurons_ablated": len(intervention.neurons),
        **drop,
        **toxicity_summary(m, intervention),
        **layers,
    }
    return claim_result("C1", paper_n, estimate=share, details=details, verdict_override=override)


@claim("C2")
def c2_positive_ablation(m: Measurements, paper_n: int) -> ClaimResult:
    """Below 80%, and (where the paper compares) above plain ablation by the paired difference:
    the entry's two parts (its ``more_than_plain`` part applies to N = 100, 200, 1000)."""
    positive = selection.ablation(m.decomposition, paper_n, positive=True)
    share = recovered(m, positive)
    override, drop = _recovery_verdict(m)
    details = {"n_neurons_ablated": len(positive.neurons), **drop, **toxicity_summary(m, positive)}
    parts = {}
    if paper.entry("C2").parts_for(paper_n):  # where the paper compares with plain top-N ablation
        plain = recovered(m, selection.ablation(m.decomposition, paper_n))
        parts["more_than_plain"] = stats.difference(share, plain)  # paired over the same resampled prompts
        details["plain_top_n_share"] = plain.value
    return claim_result(
        "C2", paper_n, estimate=share, parts=parts, details=details, verdict_override=override
    )


def perplexity_increase(
    nll: np.ndarray, reference_nll: np.ndarray, counts: np.ndarray, axis: int = 0
) -> np.ndarray:
    """Perplexity over the reference's, minus 1, from per-row NLL sums over the same rows and tokens."""
    total = np.maximum(np.sum(counts, axis=axis), 1)
    return np.exp((np.sum(nll, axis=axis) - np.sum(reference_nll, axis=axis)) / total) - 1


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
    nll, tokens = m.perplexity_rows(side, intervention)
    perplexity = bootstrap(_perplexity_of_rows, nll, tokens, seed=m.settings.seed)
    return {
        "label": ("base" if side == "base" else "DPO")
        if intervention.kind == "none"
        else intervention.label or intervention.id,
        "side": side,
        "intervention": intervention.id,
        "toxicity": toxicity.value,
        "toxicity_ci": [toxicity.low, toxicity.high],
        "perplexity": perplexity.value,
        "perplexity_ci": [perplexity.low, perplexity.high],
    }


@claim("C2[perplexity]")
def c2_ablation_costs_perplexity(m: Measurements) -> ClaimResult:
    """The perplexity rise, bootstrapped over the held-out texts (or windows), paired."""
    intervention = selection.ablation(m.decomposition, 1000, positive=True)
    ablated_nll, tokens = m.perplexity_rows("base", intervention)
    base_nll, _ = m.perplexity_rows("base")
    rise = bootstrap(perplexity_increase, ablated_nll, base_nll, tokens, seed=m.settings.seed)
    return claim_result(
        "C2[perplexity]",
        estimate=rise,
        details={
            "perplexity": m.perplexity("base", intervention),
            "base_perplexity": m.perplexity("base"),
            "n_rows": len(tokens),
            "n_neurons_ablated": len(intervention.neurons),
        },
    )


def _patch(m: Measurements, groups: tuple[str, ...]) -> tuple[Estimate, Verdict | None, dict[str, Any]]:
    intervention = selection.patch_to_dpo(m.decomposition, groups)
    override, drop = _recovery_verdict(m)
    details = {"n_neurons_patched": len(intervention.neurons), **drop, **toxicity_summary(m, intervention)}
    return recovered(m, intervention), override, details


@claim("C3")
def c3_patch_dampened(m: Measurements) -> ClaimResult:
    share, override, details = _patch(m, ("TP-",))
    return claim_result("C3", estimate=share, details=details, verdict_override=override)


@claim("C4")
def c4_dampened_share(m: Measurements, denominator: str) -> ClaimResult:
    d = m.decomposition
    share = d.share("TP-", denominator, seed=m.settings.seed)
    return claim_result("C4", denominator, estimate=share, details=_group_details(d))


@claim("C5")
def c5_group_share(m: Measurements, group: str) -> ClaimResult:
    d = m.decomposition
    share = d.share(group, "four-groups", seed=m.settings.seed)
    details = {"count": d.group_count(group), "sum": d.group_sum(group)}
    return claim_result("C5", group, estimate=share, details=details)


@claim("C5[anti-toxic]")
def c5_anti_toxic_share(m: Measurements) -> ClaimResult:
    d = m.decomposition
    share = d.share(("AP+", "AN-"), "four-groups", seed=m.settings.seed)
    return claim_result("C5[anti-toxic]", estimate=share, details=_group_details(d))


@claim("C6[increasing]")
def c6_fraction_increasing(m: Measurements) -> ClaimResult:
    d = m.decomposition
    fraction = d.fraction_increasing_estimate(seed=m.settings.seed)
    details = {"n_increasing": int((d.contribution < 0).sum()), "n_neurons": d.contribution.numel()}
    return claim_result("C6[increasing]", estimate=fraction, details=details)


@claim("C6[net-over-gross]")
def c6_net_over_gross(m: Measurements) -> ClaimResult:
    d = m.decomposition
    ratio = d.net_over_gross(seed=m.settings.seed)
    return claim_result("C6[net-over-gross]", estimate=ratio, details={"net": d.net, "gross": d.gross})


@claim("C7[top-toxic]")
def c7_top_toxic_share(m: Measurements) -> ClaimResult:
    d = m.decomposition
    ids = torch.tensor(selection.top_toxic_ids(d, 1000))
    top = torch.zeros(d.cosines.numel(), dtype=torch.bool)
    top[ids] = True
    everyone = torch.ones_like(d.cosines, dtype=torch.bool)
    share = d.mask_share(top.view_as(d.cosines), everyone, seed=m.settings.seed)  # of the net
    return claim_result("C7[top-toxic]", estimate=share, details={"n": len(ids), "net": d.net})


@claim("C7[rank-to-net]")
def c7_neurons_to_net(m: Measurements) -> ClaimResult:
    """Neurons needed to reach the net, scaled to GPT-2 medium (the figure the paper speaks of)."""
    d = m.decomposition
    n_neurons = m.pair.layout.n_neurons
    threshold = paper.scale_n(paper.NEURONS_TO_NET, n_neurons)
    needed = d.neurons_to_reach_estimate(1.0, seed=m.settings.seed)
    scale = paper.PAPER_NEURONS / n_neurons
    scaled = Estimate(
        needed.value * scale,
        needed.low * scale,
        needed.high * scale,
        n=needed.n,
        resampled=None if needed.resampled is None else needed.resampled * scale,
        scheme=needed.scheme,
    )
    details = {
        "neurons_needed": int(needed.value),
        "threshold": threshold,
        "neurons_needed_ci": [needed.low, needed.high],
    }
    return claim_result("C7[rank-to-net]", estimate=scaled, layout=m.pair.layout, details=details)


@claim("C8[peak]")
def c8_peak_layer(m: Measurements) -> ClaimResult:
    """The peak layer's position (0 = first, 1 = last layer); the interval and p-value come from
    where the peak falls across resamples (``fraction_in_last_third``)."""
    d = m.decomposition
    layers = d.per_layer()
    n_layers = len(layers["total"])
    late = paper.late_layers(n_layers)
    peak = d.peak_layer_estimate(seed=m.settings.seed)
    span = max(n_layers - 1, 1)
    position = Estimate(
        peak.value / span,
        peak.low / span,
        peak.high / span,
        n=peak.n,
        resampled=None if peak.resampled is None else peak.resampled / span,
        scheme=peak.scheme,
    )
    details = {
        "peak_layer": int(peak.value),
        "fraction_in_last_third": peak.fraction(lambda layer: layer >= late.start),
        "last_third_from_layer": late.start,
        "per_layer": layers["total"].tolist(),
    }
    return claim_result("C8[peak]", estimate=position, layout=m.pair.layout, details=details)


@claim("C8[late-groups]")
def c8_late_groups(m: Measurements) -> ClaimResult:
    d = m.decomposition
    layers = d.per_layer()
    late = paper.late_layers(len(layers["total"]))
    in_late = torch.zeros_like(d.cosines, dtype=torch.bool)
    in_late[late] = True
    tp_an = (d.groups["TP-"] | d.groups["AN-"]) & in_late
    reducing = torch.zeros_like(in_late)
    for group in REDUCING_GROUPS:
        reducing |= d.groups[group]
    share = d.mask_share(tp_an, reducing & in_late, seed=m.settings.seed)
    return claim_result(
        "C8[late-groups]", estimate=share, details={g: layers[g].tolist() for g in REDUCING_GROUPS}
    )


@claim("C9")
def c9_correlation(m: Measurements) -> ClaimResult:
    r = m.decomposition.change_cosine_correlation()  # Fisher-z interval
    return claim_result("C9", estimate=r)


@claim("C10")
def c10_patch_all_groups(m: Measurements) -> ClaimResult:
    share, override, details = _patch(m, REDUCING_GROUPS)
    return claim_result("C10", estimate=share, details=details, verdict_override=override)


@claim("C11[cosine]")
def c11_weight_cosines(m: Measurements) -> ClaimResult:
    cosines = weight_cosines(m.pair.base, m.pair.dpo)
    lowest = min(cosines, key=lambda name: cosines[name])
    return claim_result(
        "C11[cosine]",
        estimate=Estimate.exact_value(cosines[lowest]),
        details={"lowest": lowest, "n_matrices": len(cosines)},
    )


@claim("C11[toxic-activation]")
def c11_toxic_activation_drop(m: Measurements) -> ClaimResult:
    ids = torch.tensor(selection.top_toxic_ids(m.decomposition, 128))
    base = m.capture("base").mean_activation.flatten(1)[:, ids].mean(1).numpy()  # [n_prompts]
    dpo = m.capture("dpo").mean_activation.flatten(1)[:, ids].mean(1).numpy()
    drop = bootstrap(mean_difference, base, dpo, seed=m.settings.seed)
    return claim_result("C11[toxic-activation]", estimate=drop, details={"n": len(ids)})


@claim("C12")
def c12_scale_keys(m: Measurements, factor: int) -> ClaimResult:
    intervention = selection.scale_keys(m.decomposition, 7, factor)
    rise = bootstrap(mean_difference, m.scores("dpo", intervention), m.scores("dpo"), seed=m.settings.seed)
    details = {"n_neurons": len(intervention.neurons), **toxicity_summary(m, intervention, side="dpo")}
    return claim_result("C12", factor, estimate=rise, details=details)


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
    """The edit ``spec`` on the pair's base: m_i from the base capture, c_i for its direction."""
    return editing.edit_intervention(edit_cosines(m, spec.direction), m.decomposition.mean_base, spec)


@dataclass(frozen=True)
class EditComparison:
    """An edited base against DPO: C13's two paired estimates and their joint verdict."""

    toxicity: Estimate  # edited minus DPO, mean over prompts
    perplexity: Estimate  # edited over DPO, minus 1

    @cached_property
    def parts(self) -> dict[str, tuple[Verdict, float]]:
        """Each part's verdict and p-value against C13's rules in the paper table (judged once)."""
        entry = paper.entry("C13")
        (perplexity_part,) = entry.parts
        rules = {
            "toxicity": (self.toxicity, entry.rule),
            "perplexity": (self.perplexity, perplexity_part.rule),
        }
        return {name: (stats.verdict(e, rule), stats.p_value(e, rule)) for name, (e, rule) in rules.items()}

    @property
    def verdict(self) -> Verdict:
        """replicates only if both parts do; contradicts if either does (an intersection-union test)."""
        return stats.combined_verdict([v for v, _ in self.parts.values()])

    @property
    def p_value(self) -> float:
        """The larger of the two one-sided p-values (valid for the joint claim)."""
        return max(p for _, p in self.parts.values())

    def describe(self) -> str:
        (tv, _), (pv, _) = self.parts["toxicity"], self.parts["perplexity"]
        t, p = self.toxicity, self.perplexity
        return (
            f"toxicity minus DPO's {t.value:+.4f} [{t.low:+.4f}, {t.high:+.4f}] ({tv}); perplexity over DPO's "
            f"{p.value:+.2%} [{p.low:+.2%}, {p.high:+.2%}] ({pv})"
        )

    def to_json(self) -> dict[str, Any]:
        parts = self.parts
        return {
            "toxicity_vs_dpo": {
                **_interval(self.toxicity),
                "verdict": parts["toxicity"][0],
                "p_value": parts["toxicity"][1],
            },
            "perplexity_vs_dpo": {
                **_interval(self.perplexity),
                "verdict": parts["perplexity"][0],
                "p_value": parts["perplexity"][1],
            },
            "verdict": self.verdict,
            "p_value": self.p_value,
        }


def compare_with_dpo(m: Measurements, intervention: Intervention) -> EditComparison:
    """``intervention`` on the base against DPO, paired over prompts (toxicity) and over texts or
    windows (perplexity): one generation pass and one perplexity pass of the edited base."""
    toxicity = bootstrap(
        mean_difference, m.scores("base", intervention), m.scores("dpo"), seed=m.settings.seed
    )
    edited_nll, tokens = m.perplexity_rows("base", intervention)
    dpo_nll, dpo_tokens = m.perplexity_rows("dpo")
    if not np.array_equal(tokens, dpo_tokens):  # the same tokenizer and texts: never expected to differ
        raise stats.StatsError("the edited base and DPO scored different token counts on the held-out texts")
    perplexity = bootstrap(perplexity_increase, edited_nll, dpo_nll, tokens, seed=m.settings.seed)
    return EditComparison(toxicity, perplexity)


@claim("C13")
def c13_editing_beats_dpo(m: Measurements, constants: tuple[float, float]) -> ClaimResult:
    """The repository's edit (probe direction by default: see dpoclaims.claims.editing) with constants
    ``(alpha, beta)``: toxicity and perplexity at most DPO's, both parts from paired intervals."""
    alpha, beta = constants
    spec = editing.EditSpec(alpha, beta)
    intervention = activation_edit(m, spec)
    comparison = compare_with_dpo(m, intervention)
    cosines = edit_cosines(m, spec.direction)
    details = {
        "edit": spec.to_json(),
        "n_neurons_edited": len(intervention.neurons),
        "groups": editing.group_counts(cosines, m.decomposition.mean_base, spec),
        **comparison.to_json(),
        "table": {
            "base": toxicity_and_perplexity(m, "base"),
            "dpo": toxicity_and_perplexity(m, "dpo"),
            "edited": toxicity_and_perplexity(m, "base", intervention),
        },
    }
    result = claim_result(
        "C13",
        constants,
        estimate=comparison.toxicity,
        parts={"perplexity_vs_dpo": comparison.perplexity},
        details=details,
    )
    return replace(result, finding=comparison.describe())
