"""The paper's claims as plain functions of a pair's :class:`Measurements`.

One function per sentence of the paper (its entry in :mod:`dpoclaims.paper` holds the
sentence, source, figures and criterion); parameters are real ones only (N, factor, group,
denominator). Each measures the pair and returns a :class:`ClaimResult` saying whether the
paper's finding replicates. Claims the paper states as a refuted hypothesis ("ablation matches
DPO") are flagged ``hypothesis=True``: their test asserts the hypothesis and is expected to fail.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from dpoclaims import paper, selection
from dpoclaims.decomposition import REDUCING_GROUPS, Decomposition
from dpoclaims.interventions import Intervention
from dpoclaims.measurements import Measurements, Side
from dpoclaims.metrics import weight_cosines
from dpoclaims.stats import Estimate, bootstrap, mean_difference, recovered_share


class ClaimNotHeld(AssertionError):
    """What a claim test asserts did not hold (the only failure a declared claim may expect)."""


@dataclass
class ClaimResult:
    claim: str  # e.g. "C1"
    param: str  # e.g. "N=100"
    statement: str
    criterion: str
    measured: float
    ci: tuple[float, float] | None
    paper: float | None
    replicates: bool  # the paper's finding holds on this pair
    hypothesis: bool = False  # the test asserts a hypothesis the paper refutes
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return f"{self.claim}[{self.param}]" if self.param else self.claim

    @property
    def distance_to_paper(self) -> float | None:
        return None if self.paper is None else self.measured - self.paper

    @property
    def test_passes(self) -> bool:
        """What the test asserts: the finding, or for a refuted hypothesis, the hypothesis."""
        return (not self.replicates) if self.hypothesis else self.replicates

    def check(self) -> ClaimResult:
        """Raise :class:`ClaimNotHeld` unless what the test asserts holds."""
        if not self.test_passes:
            what = (
                "the refuted hypothesis does not hold"
                if self.hypothesis
                else "the paper's finding does not hold"
            )
            interval = f" [{self.ci[0]:.4g}, {self.ci[1]:.4g}]" if self.ci else ""
            raise ClaimNotHeld(
                f"{self.id}: {what}: measured {self.measured:.4g}{interval}; criterion: {self.criterion}"
            )
        return self

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["id"] = self.id
        data["distance_to_paper"] = self.distance_to_paper
        return data


def _result(
    key: str,
    param: Any = None,
    *,
    measured: float,
    ci: Estimate | None,
    replicates: bool,
    details: dict[str, Any] | None = None,
) -> ClaimResult:
    """A claim's result, its texts and the paper's figure read from the paper table."""
    entry = paper.entry(key)
    test_id = entry.test_id(param)
    return ClaimResult(
        claim=entry.claim,
        param=test_id[len(entry.claim) + 1 : -1] if "[" in test_id else "",
        statement=entry.text(entry.statement, param),
        criterion=entry.text(entry.criterion, param),
        measured=measured,
        ci=None if ci is None else (ci.low, ci.high),
        paper=entry.figure(param),
        replicates=replicates,
        hypothesis=entry.hypothesis,
        details=details or {},
    )


def recovered(m: Measurements, intervention: Intervention) -> Estimate:
    """Share of DPO's toxicity drop that ``intervention`` on the base reproduces."""
    return bootstrap(
        recovered_share,
        m.scores("base"),
        m.scores("dpo"),
        m.scores("base", intervention),
        seed=m.settings.seed,
    )


def toxicity_summary(m: Measurements, intervention: Intervention, side: Side = "base") -> dict[str, float]:
    scorer = m.settings.scorer
    summary = {
        "toxicity": m.evaluation(side, intervention).mean_toxicity(scorer),
        "base_toxicity": m.evaluation("base").mean_toxicity(scorer),
        "dpo_toxicity": m.evaluation("dpo").mean_toxicity(scorer),
    }
    if m.settings.perplexity == "all":
        summary |= {"perplexity": m.perplexity(side, intervention), "base_perplexity": m.perplexity("base")}
    return summary


def _group_details(d: Decomposition) -> dict[str, Any]:
    return {
        "groups": {g: {"count": d.group_count(g), "sum": d.group_sum(g)} for g in d.groups},
        "net": d.net,
        "gross": d.gross,
    }


def _late_layers(n_layers: int) -> slice:
    """The last third of the layers (at least one)."""
    return slice(n_layers - max(1, n_layers // 3), n_layers)


# ------------------------------------------------------------------------- the claims


def c1_ablation_matches_dpo(m: Measurements, paper_n: int) -> ClaimResult:
    intervention = selection.ablation(m.decomposition, paper_n)
    share = recovered(m, intervention)
    layers = {}
    if paper_n == 100:  # the paper's Fig. 1a: where the ablated model still writes toxicity
        layers = {
            "layer_projection": {
                "base": m.layer_projection("base").tolist(),
                "dpo": m.layer_projection("dpo").tolist(),
                "base_ablated": m.layer_projection("base", intervention).tolist(),
            }
        }
    return _result(
        "C1",
        paper_n,
        measured=share.value,
        ci=share,
        replicates=share.value < paper.MATCH_SHARE,
        details={
            "n_neurons_ablated": len(intervention.neurons),
            **toxicity_summary(m, intervention),
            **layers,
        },
    )


def c2_positive_ablation(m: Measurements, paper_n: int) -> ClaimResult:
    positive = selection.ablation(m.decomposition, paper_n, positive=True)
    share = recovered(m, positive)
    details = {"n_neurons_ablated": len(positive.neurons), **toxicity_summary(m, positive)}
    replicates = share.value < paper.MATCH_SHARE
    if paper_n in (100, 200, 1000):  # where the paper compares with plain top-N ablation
        plain = recovered(m, selection.ablation(m.decomposition, paper_n)).value
        details["plain_top_n_share"] = plain
        replicates = replicates and share.value > plain
    return _result("C2", paper_n, measured=share.value, ci=share, replicates=replicates, details=details)


def c2_ablation_costs_perplexity(m: Measurements) -> ClaimResult:
    intervention = selection.ablation(m.decomposition, 1000, positive=True)
    ablated, base = m.perplexity("base", intervention), m.perplexity("base")
    increase = ablated / base - 1
    return _result(
        "C2[perplexity]",
        measured=increase,
        ci=None,
        replicates=increase > paper.PERPLEXITY_COST,
        details={
            "perplexity": ablated,
            "base_perplexity": base,
            "n_neurons_ablated": len(intervention.neurons),
        },
    )


def _patch(m: Measurements, groups: tuple[str, ...]) -> tuple[Estimate, dict[str, Any]]:
    intervention = selection.patch_to_dpo(m.decomposition, groups)
    share = recovered(m, intervention)
    return share, {"n_neurons_patched": len(intervention.neurons), **toxicity_summary(m, intervention)}


def c3_patch_dampened(m: Measurements) -> ClaimResult:
    share, details = _patch(m, ("TP-",))
    return _result(
        "C3", measured=share.value, ci=share, replicates=0 < share.value < paper.MATCH_SHARE, details=details
    )


def c4_dampened_share(m: Measurements, denominator: str) -> ClaimResult:
    d = m.decomposition
    share = d.share("TP-", denominator, seed=m.settings.seed)
    return _result(
        "C4",
        denominator,
        measured=share.value,
        ci=share,
        replicates=share.value < paper.MINORITY_SHARE,
        details=_group_details(d),
    )


def c5_group_share(m: Measurements, group: str) -> ClaimResult:
    d = m.decomposition
    share = d.share(group, "four-groups", seed=m.settings.seed)
    return _result(
        "C5",
        group,
        measured=share.value,
        ci=share,
        replicates=share.value >= paper.NONTRIVIAL_SHARE,
        details={"count": d.group_count(group), "sum": d.group_sum(group)},
    )


def c5_anti_toxic_share(m: Measurements) -> ClaimResult:
    d = m.decomposition
    share = d.share(("AP+", "AN-"), "four-groups", seed=m.settings.seed)
    return _result(
        "C5[anti-toxic]",
        measured=share.value,
        ci=share,
        replicates=share.value >= paper.ANTI_TOXIC_LARGE_SHARE,
        details=_group_details(d),
    )


def c6_fraction_increasing(m: Measurements) -> ClaimResult:
    d = m.decomposition
    fraction = d.fraction_increasing()
    return _result(
        "C6[increasing]",
        measured=fraction,
        ci=None,
        replicates=fraction >= paper.LARGE_FRACTION_INCREASING,
        details={"n_increasing": int((d.contribution < 0).sum()), "n_neurons": d.contribution.numel()},
    )


def c6_net_over_gross(m: Measurements) -> ClaimResult:
    d = m.decomposition
    ratio = d.net_over_gross(seed=m.settings.seed)
    return _result(
        "C6[net-over-gross]",
        measured=ratio.value,
        ci=ratio,
        replicates=ratio.value <= paper.NET_OVER_GROSS_SMALL,
        details={"net": d.net, "gross": d.gross},
    )


def c7_top_toxic_share(m: Measurements) -> ClaimResult:
    d = m.decomposition
    ids = torch.tensor(selection.top_toxic_ids(d, 1000))
    share = float(d.contribution.flatten()[ids].sum()) / d.net
    return _result(
        "C7[top-toxic]",
        measured=share,
        ci=None,
        replicates=share < paper.MINORITY_SHARE,
        details={"n": len(ids), "net": d.net},
    )


def c7_neurons_to_net(m: Measurements) -> ClaimResult:
    d = m.decomposition
    needed = d.neurons_to_reach(1.0)
    n_neurons = m.pair.layout.n_neurons
    threshold = selection.scale_n(paper.NEURONS_TO_NET, n_neurons)
    return _result(
        "C7[rank-to-net]",
        measured=needed * paper.PAPER_NEURONS / n_neurons,
        ci=None,
        replicates=needed >= threshold,
        details={"neurons_needed": needed, "threshold": threshold},
    )


def c8_peak_layer(m: Measurements) -> ClaimResult:
    layers = m.decomposition.per_layer()
    n_layers = len(layers["total"])
    peak = int(np.argmax(layers["total"]))
    return _result(
        "C8[peak]",
        measured=peak / max(n_layers - 1, 1),
        ci=None,
        replicates=peak >= _late_layers(n_layers).start,
        details={"peak_layer": peak, "per_layer": layers["total"].tolist()},
    )


def c8_late_groups(m: Measurements) -> ClaimResult:
    layers = m.decomposition.per_layer()
    late = _late_layers(len(layers["total"]))
    tp_an = float(layers["TP-"][late].sum() + layers["AN-"][late].sum())
    reducing = float(sum(layers[g][late].sum() for g in REDUCING_GROUPS))
    share = tp_an / reducing if reducing else float("nan")
    return _result(
        "C8[late-groups]",
        measured=share,
        ci=None,
        replicates=share > paper.MINORITY_SHARE,
        details={g: layers[g].tolist() for g in REDUCING_GROUPS},
    )


def c9_correlation(m: Measurements) -> ClaimResult:
    r = m.decomposition.change_cosine_correlation()
    return _result("C9", measured=r.value, ci=r, replicates=abs(r.value) < paper.UNCORRELATED_R)


def c10_patch_all_groups(m: Measurements) -> ClaimResult:
    share, details = _patch(m, REDUCING_GROUPS)
    return _result(
        "C10", measured=share.value, ci=share, replicates=share.value >= paper.MATCH_SHARE, details=details
    )


def c11_weight_cosines(m: Measurements) -> ClaimResult:
    cosines = weight_cosines(m.pair.base.original_model, m.pair.dpo.original_model)
    lowest = min(cosines, key=cosines.get)
    return _result(
        "C11[cosine]",
        measured=cosines[lowest],
        ci=None,
        replicates=cosines[lowest] > paper.WEIGHT_COSINE,
        details={"lowest": lowest, "n_matrices": len(cosines)},
    )


def c11_toxic_activation_drop(m: Measurements) -> ClaimResult:
    ids = torch.tensor(selection.top_toxic_ids(m.decomposition, 128))
    base = m.capture("base").mean_activation.flatten(1)[:, ids].mean(1).numpy()  # [n_prompts]
    dpo = m.capture("dpo").mean_activation.flatten(1)[:, ids].mean(1).numpy()
    drop = bootstrap(mean_difference, base, dpo, seed=m.settings.seed)
    return _result(
        "C11[toxic-activation]",
        measured=drop.value,
        ci=drop,
        replicates=drop.low > 0,
        details={"n": len(ids)},
    )


def c12_scale_keys(m: Measurements, factor: int) -> ClaimResult:
    intervention = selection.scale_keys(m.decomposition, 7, factor)
    rise = bootstrap(mean_difference, m.scores("dpo", intervention), m.scores("dpo"), seed=m.settings.seed)
    return _result(
        "C12",
        factor,
        measured=rise.value,
        ci=rise,
        replicates=rise.low > 0,
        details={"n_neurons": len(intervention.neurons), **toxicity_summary(m, intervention, side="dpo")},
    )
