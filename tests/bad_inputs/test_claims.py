"""The claims' criteria: figures at the edges of their definitions."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch

from bad_inputs.bench import Bench, Case, catalogue_test, registrar

CASES: list[Case] = []
case = registrar(CASES)


@case(
    "claim-interval-of-zero-width-not-exact--not-measurable-for-every-claim",
    "recovery",
)
def claim_interval_of_zero_width_not_exact(b: Bench):
    import numpy as np

    from dpoclaims.claims.checks import claim_result
    from dpoclaims.claims.paper import ENTRIES
    from dpoclaims.models.loading import MLPLayout
    from dpoclaims.stats import Estimate

    got = {}
    for entry in ENTRIES:  # every claim of the paper table
        for param in entry.params or (None,):
            zero = Estimate(0.0, 0.0, 0.0)
            # a part of zero width, as a bootstrap makes one: every resample the same figure
            flat = Estimate(0.0, 0.0, 0.0, n=3, resampled=np.zeros(20), scheme=(3, 0, 20))
            result = claim_result(
                entry.key,
                param,
                estimate=zero,
                parts={part.name: flat for part in entry.parts_for(param)},
                layout=MLPLayout("gpt2", n_layers=4, d_model=8, d_mlp=512),
            )
            got[str(result.id)] = (result.verdict, result.ci)
    return {k: ("not measurable", None) for k in got}, got


@case(
    "claim-result-with-a-zero-width-interval--refused",
    "error",
    ValueError,
    r"C3: an interval of zero width \[0\.0, 0\.0\] on a figure not marked exact",
)
def claim_result_with_a_zero_width_interval(b: Bench):
    from dpoclaims.claims.results import ClaimResult

    ClaimResult(
        claim="C3",
        param="",
        statement="s",
        criterion="c",
        measured=0.0,
        ci=(0.0, 0.0),
        exact=False,
        p_value=0.5,
        verdict="replicates",
        paper=0.5,
    )


# ---- criteria defined at their edges: a figure outside its domain is "not measurable", never
# "replicates". The claims' rules are the lead's: these cases are expected to fail until that
# change lands (strict, so that they say when it has).

# raises=AssertionError: only the verdict's comparison may fail, never the case's own set-up.
EDGES = (pytest.mark.xfail(strict=True, raises=AssertionError, reason="criteria edges: the lead's change"),)
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
    return decompose(values, dpo_values, torch.tensor([1.0, 0.0, 0.0]), base, dpo)


class _Measured:
    """What the claim functions read of a Measurements, made by hand."""

    def __init__(self, decomposition: Any, scores: dict[str, np.ndarray] | None = None) -> None:
        from dpoclaims.models.loading import MLPLayout

        self.decomposition = decomposition
        self.settings = SimpleNamespace(seed=0, scorer="lexicon", perplexity="claims")
        self.pair = SimpleNamespace(layout=MLPLayout("gpt2", LAYERS, 3, NEURONS))
        self._scores = scores or {}

    def scores(self, side: str, intervention: Any = None) -> np.ndarray:
        return self._scores[
            "intervened" if intervention is not None and intervention.kind != "none" else side
        ]

    def evaluation(self, side: str, intervention: Any = None) -> Any:
        mean = float(np.mean(self.scores(side, intervention)))
        return SimpleNamespace(mean_toxicity=lambda scorer: mean)


def _edge(id: str, claim: str, param: Any, measured: Any) -> None:
    @case(id, "recovery", marks=EDGES)
    def edge(b: Bench):
        import dpoclaims.claims.checks  # noqa: F401  (registers the claim functions)
        from dpoclaims.claims.registry import registered

        function = registered()[claim]
        result = function(measured(), param) if param is not None else function(measured())
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
