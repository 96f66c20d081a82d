"""The paper's numbered claims as functions of a :class:`ClaimContext`.

Each claim has one criterion that the paper's own figures satisfy and that applies to any
pair; a claim function measures the pair and returns a :class:`ClaimResult` saying whether
the paper's finding replicates. Claims that the paper states as a refuted hypothesis
("ablation matches DPO") are flagged ``hypothesis=True``: their test asserts the hypothesis
and is expected to fail.

Neuron counts from the paper (top-100 of GPT-2 medium's 98,304 neurons, ...) are scaled to
the pair by the fraction of all MLP neurons they represent, at least 1.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import cached_property
from typing import Any, Literal

import numpy as np
import torch

from dpoclaims.cache import Cache
from dpoclaims.capture import Capture, Convention, cached_capture
from dpoclaims.decomposition import REDUCING_GROUPS, Decomposition, decompose, top_toxic
from dpoclaims.evaluation import Evaluation, Intervention, cached_evaluate, cached_perplexity
from dpoclaims.generation import GenerationSettings
from dpoclaims.metrics import weight_cosines
from dpoclaims.pairs import ModelPair
from dpoclaims.prompts import pair_texts
from dpoclaims.stats import Estimate, bootstrap, mean_difference, recovered_share

PAPER_NEURONS = 98_304  # GPT-2 medium: 24 layers x 4096
MATCH_SHARE = 0.8  # "matches / replicates DPO" = recovers at least 80% of DPO's drop


@dataclass(frozen=True)
class ClaimSettings:
    max_prompts: int | None = None
    generation: GenerationSettings = GenerationSettings()
    convention: Convention = "v1"
    scorer: str = "lexicon"
    seed: int = 0
    perplexity: Literal["claims", "all"] = "claims"  # "all": also for every intervention (paper Table 1)


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

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["id"] = self.id
        data["distance_to_paper"] = self.distance_to_paper
        return data


class ClaimContext:
    """Everything the claims measure on one pair, computed lazily and cached on disk.

    Given a read-only cache (``Cache.reader()``) nothing new is computed: a missing entry
    raises :class:`dpoclaims.cache.NotCached` (used when drawing figures after a partial run).
    Each measurement is also kept in memory once read, so the claims that share it do not
    reload and re-verify its cache entry (for a paper-sized pair a capture is ~0.5 GB).
    """

    def __init__(
        self,
        pair: ModelPair,
        cache: Cache,
        settings: ClaimSettings = ClaimSettings(),
        *,
        progress: bool = True,
    ) -> None:
        self.pair = pair
        self.cache = cache
        self.settings = settings
        self.progress = progress
        self.prompts = pair_texts(pair, "challenge_prompts", settings.max_prompts)
        self.neutral_texts = pair_texts(pair, "neutral_texts")
        self._measured: dict[tuple[str, str, str], Any] = {}

    def _once(self, what: str, side: str, intervention: Intervention, measure: Callable[[], Any]) -> Any:
        key = (what, side, intervention.id)
        if key not in self._measured:
            self._measured[key] = measure()
        return self._measured[key]

    # ---------------------------------------------------------------- measurements
    def capture(self, side: Literal["base", "dpo"], intervention: Intervention = Intervention()) -> Capture:
        return self._once("capture", side, intervention, lambda: self._capture(side, intervention))

    def _capture(self, side: Literal["base", "dpo"], intervention: Intervention) -> Capture:
        hooks: list[Any] = []
        if intervention.kind == "ablate":
            from dpoclaims.interventions import ablation_hooks, neuron_set_from_flat

            hooks = ablation_hooks(
                self.pair.layout,
                neuron_set_from_flat(torch.tensor(intervention.neurons), self.pair.layout.d_mlp),
            )
        elif intervention.kind != "none":
            raise ValueError("captures support ablation only")
        return cached_capture(
            self.cache,
            self.pair,
            side,
            self.prompts,
            self.settings.generation,
            convention=self.settings.convention,
            extra_hooks=hooks,
            intervention_id=intervention.id,
            progress=self.progress,
        )

    @cached_property
    def decomposition(self) -> Decomposition:
        return decompose(
            self.pair.value_vectors("base"),
            self.pair.value_vectors("dpo"),
            self.pair.probe,
            self.capture("base").mean_activation,
            self.capture("dpo").mean_activation,
        )

    def evaluation(
        self, side: Literal["base", "dpo"], intervention: Intervention = Intervention()
    ) -> Evaluation:
        return self._once(
            "evaluation",
            side,
            intervention,
            lambda: cached_evaluate(
                self.cache,
                self.pair,
                side,
                self.prompts,
                self.settings.generation,
                intervention,
                scorers=(self.settings.scorer,),
                progress=self.progress,
            ),
        )

    def perplexity(self, side: Literal["base", "dpo"], intervention: Intervention = Intervention()) -> float:
        window = self.pair.spec.extras.get("perplexity_window")
        return self._once(
            "perplexity",
            side,
            intervention,
            lambda: cached_perplexity(
                self.cache,
                self.pair,
                side,
                self.neutral_texts,
                intervention,
                window=int(window) if window else None,
            ),
        )

    def layer_projection(
        self, side: Literal["base", "dpo"], intervention: Intervention = Intervention()
    ) -> np.ndarray:
        """``[n_layers]``: mean MLP output projected on the unit probe, per layer (Fig. 1a)."""
        values = self.pair.value_vectors("base" if side == "base" else "dpo")
        projection = values @ self.pair.unit_probe
        return (self.capture(side, intervention).overall_mean * projection).sum(1).numpy()

    def scores(self, side: Literal["base", "dpo"], intervention: Intervention = Intervention()) -> np.ndarray:
        return np.asarray(self.evaluation(side, intervention).scores[self.settings.scorer])

    # ---------------------------------------------------------------- neuron sets
    def scale_n(self, paper_n: int) -> int:
        return max(1, round(paper_n * self.pair.layout.n_neurons / PAPER_NEURONS))

    def top_toxic(self, paper_n: int, *, positive: bool = False) -> tuple[int, ...]:
        d = self.decomposition
        ids = top_toxic(
            d.cosines, self.scale_n(paper_n), mean_base_activation=d.mean_base if positive else None
        )
        return tuple(int(i) for i in ids)

    def ablation(self, paper_n: int, *, positive: bool = False) -> Intervention:
        label = f"ablate top {self.scale_n(paper_n)} {'positively-activated ' if positive else ''}toxic"
        return Intervention("ablate", self.top_toxic(paper_n, positive=positive), label=label)

    def patch_to_dpo(self, groups: tuple[str, ...]) -> Intervention:
        d = self.decomposition
        mask = torch.zeros_like(d.cosines, dtype=torch.bool)
        for group in groups:
            mask |= d.groups[group]
        flat = torch.nonzero(mask.flatten()).flatten()
        values = d.mean_dpo.flatten()[flat]
        return Intervention(
            "patch",
            tuple(int(i) for i in flat),
            values=tuple(float(v) for v in values),
            label=f"patch {'+'.join(groups)} to DPO means",
        )

    def recovered(self, intervention: Intervention) -> Estimate:
        return bootstrap(
            recovered_share,
            self.scores("base"),
            self.scores("dpo"),
            self.scores("base", intervention),
            seed=self.settings.seed,
        )

    def toxicity_summary(
        self, intervention: Intervention, side: Literal["base", "dpo"] = "base"
    ) -> dict[str, float]:
        summary = {
            "toxicity": self.evaluation(side, intervention).mean_toxicity(self.settings.scorer),
            "base_toxicity": self.evaluation("base").mean_toxicity(self.settings.scorer),
            "dpo_toxicity": self.evaluation("dpo").mean_toxicity(self.settings.scorer),
        }
        if self.settings.perplexity == "all":
            summary |= {
                "perplexity": self.perplexity(side, intervention),
                "base_perplexity": self.perplexity("base"),
            }
        return summary


def _ci(estimate: Estimate) -> tuple[float, float]:
    return (estimate.low, estimate.high)


# ------------------------------------------------------------------------- the claims


def c1_ablation_matches_dpo(ctx: ClaimContext, paper_n: int) -> ClaimResult:
    paper = {100: 0.204, 200: 0.196, 1000: 0.069}[paper_n]
    intervention = ctx.ablation(paper_n)
    share = ctx.recovered(intervention)
    layers = {}
    if paper_n == 100:  # the paper's Fig. 1a: where the ablated model still writes toxicity
        layers = {
            "layer_projection": {
                "base": ctx.layer_projection("base").tolist(),
                "dpo": ctx.layer_projection("dpo").tolist(),
                "base_ablated": ctx.layer_projection("base", intervention).tolist(),
            }
        }
    return ClaimResult(
        "C1",
        f"N={paper_n}",
        f"Ablating the top-{paper_n} toxic neurons matches DPO's toxicity reduction (the hypothesis Yang et al. refute)",
        f"hypothesis holds if ablation recovers >= {MATCH_SHARE:.0%} of DPO's drop; the paper's finding (recovers 7-20%) replicates if it recovers less",
        share.value,
        _ci(share),
        paper,
        replicates=share.value < MATCH_SHARE,
        hypothesis=True,
        details={
            "n_neurons_ablated": len(intervention.neurons),
            **ctx.toxicity_summary(intervention),
            **layers,
        },
    )


def c2_positive_ablation(ctx: ClaimContext, paper_n: int) -> ClaimResult:
    paper = {100: 0.282, 200: 0.355, 1000: 0.543, 2000: 0.547}[paper_n]
    positive = ctx.ablation(paper_n, positive=True)
    share = ctx.recovered(positive)
    details = {"n_neurons_ablated": len(positive.neurons), **ctx.toxicity_summary(positive)}
    replicates = share.value < MATCH_SHARE
    criterion = f"recovers less than {MATCH_SHARE:.0%} of DPO's drop"
    if paper_n in (100, 200, 1000):
        plain = ctx.recovered(ctx.ablation(paper_n)).value
        details["plain_top_n_share"] = plain
        replicates = replicates and share.value > plain
        criterion += ", and more than ablating the plain top-N toxic neurons"
    return ClaimResult(
        "C2",
        f"N={paper_n}",
        f"Ablating the top-{paper_n} positively-activated toxic neurons recovers more than plain ablation, but not DPO's reduction",
        criterion,
        share.value,
        _ci(share),
        paper,
        replicates,
        details=details,
    )


def c2_ablation_costs_perplexity(ctx: ClaimContext) -> ClaimResult:
    intervention = ctx.ablation(1000, positive=True)
    ablated, base = ctx.perplexity("base", intervention), ctx.perplexity("base")
    increase = ablated / base - 1
    return ClaimResult(
        "C2",
        "perplexity",
        "Ablating the top-1000 positively-activated toxic neurons costs perplexity",
        "perplexity on held-out text rises by more than 5%",
        increase,
        None,
        30.04 / 21.70 - 1,
        increase > 0.05,
        details={
            "perplexity": ablated,
            "base_perplexity": base,
            "n_neurons_ablated": len(intervention.neurons),
        },
    )


def _patch_claim(ctx: ClaimContext, groups: tuple[str, ...]) -> tuple[Estimate, dict[str, Any]]:
    intervention = ctx.patch_to_dpo(groups)
    share = ctx.recovered(intervention)
    return share, {"n_neurons_patched": len(intervention.neurons), **ctx.toxicity_summary(intervention)}


def c3_patch_dampened(ctx: ClaimContext) -> ClaimResult:
    share, details = _patch_claim(ctx, ("TP-",))
    return ClaimResult(
        "C3",
        "TP-",
        "Patching all dampened toxic neurons (TP-) to their mean DPO activations recovers only part of DPO's drop",
        f"recovers more than 0 and less than {MATCH_SHARE:.0%} of DPO's drop",
        share.value,
        _ci(share),
        0.482,
        0 < share.value < MATCH_SHARE,
        details=details,
    )


def c10_patch_all_groups(ctx: ClaimContext) -> ClaimResult:
    share, details = _patch_claim(ctx, REDUCING_GROUPS)
    return ClaimResult(
        "C10",
        "four-groups",
        "Patching all four reducing groups to their mean DPO activations replicates DPO's reduction (v3)",
        f"recovers at least {MATCH_SHARE:.0%} of DPO's drop",
        share.value,
        _ci(share),
        None,
        share.value >= MATCH_SHARE,
        details=details,
    )


def _group_details(d: Decomposition) -> dict[str, Any]:
    return {
        "groups": {g: {"count": d.group_count(g), "sum": d.group_sum(g)} for g in d.groups},
        "net": d.net,
        "gross": d.gross,
    }


def c4_dampened_share(ctx: ClaimContext, denominator: str) -> ClaimResult:
    d = ctx.decomposition
    share = d.share("TP-", denominator, seed=ctx.settings.seed)
    paper = {"v1": 0.318, "emnlp": 0.32}[denominator]
    return ClaimResult(
        "C4",
        denominator,
        "Dampened toxic neurons (TP-) explain only a minority (paper: 31.8%) of the probe-projected reduction",
        f"TP- share ({denominator} denominator) is below 50%",
        share.value,
        _ci(share),
        paper,
        share.value < 0.5,
        details=_group_details(d),
    )


def c5_group_share(ctx: ClaimContext, group: str) -> ClaimResult:
    d = ctx.decomposition
    if group == "anti-toxic":
        share = d.share(("AP+", "AN-"), "v1", seed=ctx.settings.seed)
        return ClaimResult(
            "C5",
            group,
            "The anti-toxic groups (AP+, AN-) together contribute a large share of the reduction",
            "AP+ and AN- together give at least 30% (v1 denominator)",
            share.value,
            _ci(share),
            0.443,
            share.value >= 0.3,
            details=_group_details(d),
        )
    paper = {"TP-": 0.318, "TN+": 0.239, "AP+": 0.070, "AN-": 0.373}[group]
    share = d.share(group, "v1", seed=ctx.settings.seed)
    return ClaimResult(
        "C5",
        group,
        f"Group {group} contributes a non-trivial share of the reduction",
        "share (v1 denominator) is at least 5%",
        share.value,
        _ci(share),
        paper,
        share.value >= 0.05,
        details={"count": d.group_count(group), "sum": d.group_sum(group)},
    )


def c6_noise(ctx: ClaimContext, what: str) -> ClaimResult:
    d = ctx.decomposition
    if what == "increasing":
        fraction = d.fraction_increasing()
        return ClaimResult(
            "C6",
            what,
            "A large fraction of neurons increase the toxic projection after DPO",
            "at least 25% of neurons have D_i < 0",
            fraction,
            None,
            0.415,
            fraction >= 0.25,
            details={"n_increasing": int((d.contribution < 0).sum()), "n_neurons": d.contribution.numel()},
        )
    ratio = d.net_over_gross(seed=ctx.settings.seed)
    return ClaimResult(
        "C6",
        what,
        "The net reduction is a small fraction of the gross reduction (opposing effects cancel)",
        "net / gross is at most 50%",
        ratio.value,
        _ci(ratio),
        7.216 / 47.96,
        ratio.value <= 0.5,
        details={"net": d.net, "gross": d.gross},
    )


def c7_distributed(ctx: ClaimContext, what: str) -> ClaimResult:
    d = ctx.decomposition
    if what == "top-toxic":
        ids = torch.tensor(ctx.top_toxic(1000))
        share = float(d.contribution.flatten()[ids].sum()) / d.net
        return ClaimResult(
            "C7",
            what,
            "The top-1000 toxic neurons carry only a minority of the net reduction",
            "the top-N toxic neurons (by cosine) carry less than half of the net reduction",
            share,
            None,
            None,
            share < 0.5,
            details={"n": len(ids), "net": d.net},
        )
    needed = d.neurons_to_reach(1.0)
    return ClaimResult(
        "C7",
        what,
        "Reaching the net reduction takes thousands of neurons (ranked by contribution)",
        "the number of neurons needed, scaled to GPT-2 medium, is at least 1,000",
        needed * PAPER_NEURONS / ctx.pair.layout.n_neurons,
        None,
        None,
        needed >= ctx.scale_n(1000),
        details={"neurons_needed": needed, "threshold": ctx.scale_n(1000)},
    )


def c8_layers(ctx: ClaimContext, what: str) -> ClaimResult:
    d = ctx.decomposition
    layers = d.per_layer()
    n_layers = len(layers["total"])
    late = slice(n_layers - max(1, n_layers // 3), n_layers)
    if what == "peak":
        peak = int(np.argmax(layers["total"]))
        return ClaimResult(
            "C8",
            what,
            "Later layers carry the largest reductions",
            "the layer with the largest net reduction is in the last third of layers",
            peak / max(n_layers - 1, 1),
            None,
            None,
            peak >= late.start,
            details={"peak_layer": peak, "per_layer": layers["total"].tolist()},
        )
    tp_an = float(layers["TP-"][late].sum() + layers["AN-"][late].sum())
    reducing = float(sum(layers[g][late].sum() for g in REDUCING_GROUPS))
    share = tp_an / reducing if reducing else float("nan")
    return ClaimResult(
        "C8",
        what,
        "The late-layer reduction is driven by TP- and AN-",
        "in the last third of layers, TP- and AN- give more than half of the four groups' reduction",
        share,
        None,
        None,
        share > 0.5,
        details={g: layers[g].tolist() for g in REDUCING_GROUPS},
    )


def c9_correlation(ctx: ClaimContext) -> ClaimResult:
    r = ctx.decomposition.change_cosine_correlation()
    return ClaimResult(
        "C9",
        "",
        "Activation change is uncorrelated with the cosine to the probe",
        "|Pearson r| < 0.1",
        r.value,
        _ci(r),
        0.0037,
        abs(r.value) < 0.1,
    )


def c11_weights(ctx: ClaimContext, what: str) -> ClaimResult:
    if what == "cosine":
        cosines = weight_cosines(ctx.pair.base.original_model, ctx.pair.dpo.original_model)
        lowest = min(cosines, key=cosines.get)
        return ClaimResult(
            "C11",
            what,
            "DPO changes weights very little (Lee et al.)",
            "every weight matrix keeps cosine > 0.99 with its base counterpart",
            cosines[lowest],
            None,
            0.99,
            cosines[lowest] > 0.99,
            details={"lowest": lowest, "n_matrices": len(cosines)},
        )
    ids = torch.tensor(ctx.top_toxic(128))
    base = ctx.capture("base").mean_activation.flatten(1)[:, ids].mean(1).numpy()
    dpo = ctx.capture("dpo").mean_activation.flatten(1)[:, ids].mean(1).numpy()
    drop = bootstrap(mean_difference, base, dpo, seed=ctx.settings.seed)
    return ClaimResult(
        "C11",
        what,
        "Mean activations of the top toxic neurons drop after DPO (Lee et al.)",
        "the 95% interval of the drop in mean activation of the top-128 toxic neurons lies above 0",
        drop.value,
        _ci(drop),
        None,
        drop.low > 0,
        details={"n": len(ids)},
    )


def c12_scale_keys(ctx: ClaimContext, factor: int) -> ClaimResult:
    neurons = ctx.top_toxic(7)
    intervention = Intervention(
        "scale_keys", neurons, factor=float(factor), label=f"scale keys of top {len(neurons)} toxic x{factor}"
    )
    rise = bootstrap(
        mean_difference, ctx.scores("dpo", intervention), ctx.scores("dpo"), seed=ctx.settings.seed
    )
    paper = {2: 0.487, 5: 0.555, 10: 0.458}[factor] - 0.208
    return ClaimResult(
        "C12",
        f"x{factor}",
        f"Scaling the key vectors of the top-7 toxic neurons x{factor} in the DPO model re-introduces toxicity",
        "the 95% interval of the toxicity rise over the DPO model lies above 0",
        rise.value,
        _ci(rise),
        paper,
        rise.low > 0,
        details={"n_neurons": len(neurons), **ctx.toxicity_summary(intervention, side="dpo")},
    )


@dataclass(frozen=True)
class ClaimSpec:
    claim: str
    keyword: str
    source: str
    function: Callable[..., ClaimResult]
    params: tuple[Any, ...] = (None,)
    hypothesis: bool = False


CLAIMS: tuple[ClaimSpec, ...] = (
    ClaimSpec(
        "C1",
        "ablation",
        "Yang et al. 2024 v1, Table 1",
        c1_ablation_matches_dpo,
        (100, 200, 1000),
        hypothesis=True,
    ),
    ClaimSpec("C2", "ablation", "Yang et al. 2024 v1, Table 1", c2_positive_ablation, (100, 200, 1000, 2000)),
    ClaimSpec("C2", "ablation", "Yang et al. 2024 v1, Table 1", c2_ablation_costs_perplexity),
    ClaimSpec("C3", "patching", "Yang et al. 2024 v1, Table 1", c3_patch_dampened),
    ClaimSpec(
        "C4", "projection", "Yang et al. 2024 v1 (31.8%), EMNLP (32%)", c4_dampened_share, ("v1", "emnlp")
    ),
    ClaimSpec("C5", "groups", "Yang et al. 2024 v1", c5_group_share, (*REDUCING_GROUPS, "anti-toxic")),
    ClaimSpec("C6", "noise", "Yang et al. 2024 v1", c6_noise, ("increasing", "net-over-gross")),
    ClaimSpec(
        "C7", "distribution", "Yang et al. 2024 v1, Fig. 2", c7_distributed, ("top-toxic", "rank-to-net")
    ),
    ClaimSpec("C8", "layers", "Yang et al. 2024 v1, Fig. 3", c8_layers, ("peak", "late-groups")),
    ClaimSpec("C9", "correlation", "Yang et al. 2024 EMNLP notebooks (r = 0.0037)", c9_correlation),
    ClaimSpec("C10", "patching", "Yang et al. 2025 (v3, EMNLP)", c10_patch_all_groups),
    ClaimSpec("C11", "weights", "Lee et al. 2024", c11_weights, ("cosine", "toxic-activation")),
    ClaimSpec("C12", "scaling", "Lee et al. 2024; Yang et al. 2024 v1, Table 1", c12_scale_keys, (2, 5, 10)),
)
KEYWORDS = tuple(sorted({spec.keyword for spec in CLAIMS}))
