"""The claims' criteria: figures at the edges of their definitions."""

from __future__ import annotations

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


test_case = catalogue_test(CASES)
