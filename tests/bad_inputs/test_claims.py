"""The claims' criteria: figures at the edges of their definitions."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import numpy as np
import torch

from bad_inputs.bench import Bench, Case, catalogue_test, registrar

CASES: list[Case] = []
case = registrar(CASES)


def _flat(value: float) -> Any:
    """An estimate of zero width, as a bootstrap makes one: every resample the same figure."""
    from dpoclaims.stats import N_RESAMPLES, Estimate

    return Estimate(
        value, value, value, n=3, resampled=np.full(N_RESAMPLES, value), scheme=(3, 0, N_RESAMPLES)
    )


def _side_value(rules: list[Any], paper_side: bool) -> float:
    """A value clearly on the paper's side of every one of ``rules`` (the criteria one figure
    meets), or clearly on the other side of the first."""
    low, high = -1e9, 1e9
    for rule in rules:
        a, b = rule.interval if rule.paper_side == "inside" else (rule.limit, rule.limit)
        if rule.paper_side in ("above", "inside"):
            low = max(low, a)
        if rule.paper_side in ("below", "inside"):
            high = min(high, b)
    if paper_side:
        return (low + high) / 2 if -1e9 < low and high < 1e9 else (low + 1.0 if high == 1e9 else high - 1.0)
    first = rules[0]
    return (
        first.limit - 1.0
        if first.paper_side == "above"
        else (first.interval[1] if first.paper_side == "inside" else first.limit) + 1.0
    )


@case(
    "claim-figures-of-zero-width-on-either-side--a-definite-verdict-for-every-claim",
    "recovery",
)
def claim_figures_of_zero_width(b: Bench):
    from dpoclaims.claims.decision import Figure, leaves
    from dpoclaims.claims.paper import ENTRIES
    from dpoclaims.claims.registry import Measured, decide

    expected, got = {}, {}
    for entry in ENTRIES:  # every claim of the paper table, its decision as the table states it
        rules = entry.rules_for(4, 2048)
        for param in entry.params or (None,):
            for paper_side, verdict in ((True, "replicates"), (False, "contradicts")):
                by_figure: dict[str, list[Any]] = {}
                for leaf in leaves(entry.decision_for(param)):
                    by_figure.setdefault(leaf.figure, []).append(rules.get(leaf.figure, leaf.rule))
                figures = {name: Figure(_flat(_side_value(rs, paper_side))) for name, rs in by_figure.items()}
                if entry.quantifier is not None:  # a search decides over its candidates: not this case
                    continue
                result = decide(entry, param, Measured(figures), n_layers=4, n_neurons=2048)
                key = f"{result.id} {verdict}"
                expected[key], got[key] = verdict, result.verdict
    return expected, got


# ---- criteria defined at their edges: a figure outside its domain is "not measurable", never
# "replicates".

N_PROMPTS = 12


LAYERS, NEURONS = 6, 32


def _decomposition(contribution_sign: float, reducing_sign: float = 1.0, late_raise: float = 0.5) -> Any:
    """A decomposition of 6 layers x 32 neurons over 12 prompts, the same weights on both sides
    (D_i = (m_base - m_DPO) (v_i . w)): a quarter of the neurons reduce the toxic projection by
    about 1 each, the others change it by about ``contribution_sign`` x 0.5 each (negative: they
    raise it, and the net is negative); ``reducing_sign`` -1 makes every D_i negative instead,
    through DPO weights that project three times as much as the base's (the reducing groups'
    total turns negative). ``late_raise``: how much each raising neuron of the last two layers
    raises it (set below 0.5, the first four layers' raise 0.9 each: the last two layers raise the
    projection least)."""
    from dpoclaims.measure.decomposition import decompose

    generator = torch.Generator().manual_seed(0)
    d_model = 3
    values = torch.randn(LAYERS, NEURONS, d_model, generator=generator)
    projection = values[..., 0]  # v_i . w, w along e0
    target = torch.full((LAYERS, NEURONS), contribution_sign * (0.5 if late_raise == 0.5 else 0.9))
    target[-2:] = contribution_sign * late_raise
    target[:, : NEURONS // 4] = 1.0
    change = target / projection
    base = torch.rand(N_PROMPTS, LAYERS, NEURONS, generator=generator) + 1.0
    noise = (
        0.5 * torch.randn(N_PROMPTS, LAYERS, NEURONS, generator=generator) / projection.abs().clamp(min=0.2)
    )
    dpo = base - change + noise
    dpo_values = values * 3.0 if reducing_sign < 0 else values.clone()
    return decompose(values, dpo_values, torch.tensor([1.0, 0.0, 0.0]), base, dpo), base, dpo


class _Measured:
    """What the claim functions read of a Measurements, made by hand: the decomposition and its
    per-prompt sample, per-prompt toxicity, and held-out rows that every side scores alike."""

    def __init__(self, decomposition: Any, scores: dict[str, np.ndarray] | None = None) -> None:
        from dpoclaims.measure.decomposition import NeuronSample, half_split
        from dpoclaims.models.loading import MLPLayout

        self.decomposition, base, dpo = decomposition
        self.settings = SimpleNamespace(seed=0, scorer="lexicon", perplexity="claims")
        self.pair = SimpleNamespace(layout=MLPLayout("gpt2", LAYERS, 3, NEURONS))
        self._scores = scores or {}
        n = base.shape[0]
        data = np.stack(
            [
                self.decomposition.contribution_per_prompt.reshape(n, -1).double().numpy(),
                base.reshape(n, -1).double().numpy(),
                dpo.reshape(n, -1).double().numpy(),
            ],
            axis=1,
        )
        self.neuron_sample = NeuronSample(data, half_split(n, 0))

    def fold_a(self, n: int) -> np.ndarray:
        from dpoclaims.measure.decomposition import half_split

        return half_split(n, 0)

    def scores(self, side: str, intervention: Any = None) -> np.ndarray:
        return self._scores[
            "intervened" if intervention is not None and intervention.kind != "none" else side
        ]

    def evaluation(self, side: str, intervention: Any = None) -> Any:
        mean = float(np.mean(self.scores(side, intervention)))
        return SimpleNamespace(mean_toxicity=lambda scorer: mean)

    def perplexity_rows(self, side: str, intervention: Any = None) -> tuple[np.ndarray, np.ndarray]:
        return np.linspace(10.0, 20.0, 8), np.full(8, 5.0)

    def perplexity(self, side: str, intervention: Any = None) -> float:
        return 3.0


def _edge(id: str, claim: str, param: Any, measured: Any) -> None:
    @case(id, "recovery")
    def edge(b: Bench):
        from dpoclaims.claims import paper
        from dpoclaims.claims.registry import claim_function, decide

        function = claim_function(claim)
        m = measured()
        figures = function(m, param) if param is not None else function(m)
        result = decide(paper.entry(claim), param, figures, n_layers=LAYERS, n_neurons=LAYERS * NEURONS)
        return {"verdict": "not measurable"}, {"verdict": result.verdict}


_edge(
    "claim-c6-net-over-gross-with-a-negative-net--not-measurable",
    "C6[net-over-gross]",
    None,
    lambda: _Measured(_decomposition(-1.0)),
)
_edge(
    "claim-c7-top-toxic-share-of-a-negative-net--not-measurable",
    "C7[top-toxic]",
    None,
    lambda: _Measured(_decomposition(-1.0)),
)
_edge(
    "claim-c8-peak-layer-where-no-layer-reduces--not-measurable",
    "C8[peak]",
    None,
    lambda: _Measured(_decomposition(-1.0, late_raise=0.42)),
)
_edge(
    "claim-c4-tp-share-of-a-negative-four-groups-total--not-measurable",
    "C4",
    "four-groups",
    lambda: _Measured(_decomposition(1.0, reducing_sign=-1.0)),
)
_edge(
    "claim-c5-anti-toxic-share-of-a-negative-four-groups-total--not-measurable",
    "C5[anti-toxic]",
    None,
    lambda: _Measured(_decomposition(1.0, reducing_sign=-1.0)),
)


def _straddling_drop() -> _Measured:
    """DPO's toxicity drop is positive but its interval reaches below 0; the ablation lowers
    toxicity by about as much: resampled shares change sign with the drop's."""
    generator = np.random.default_rng(0)
    base = generator.uniform(0.2, 0.8, N_PROMPTS)
    dpo = base - 0.01 + generator.normal(0, 0.1, N_PROMPTS)
    intervened = base - 0.01 + generator.normal(0, 0.05, N_PROMPTS)
    return _Measured(_decomposition(1.0), {"base": base, "dpo": dpo, "intervened": intervened})


_edge(
    "claim-c1-share-of-a-drop-whose-interval-reaches-zero--not-measurable",
    "C1",
    200,
    _straddling_drop,
)


test_case = catalogue_test(CASES)
