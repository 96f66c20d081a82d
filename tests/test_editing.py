"""Activation editing (dpoclaims.claims.editing, C13): sign groups and selection on known numbers, the
edit at every position of a perplexity window, no hook left after an edited pass, and the edit
search's verdict on a synthetic measurement (no model)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dpoclaims.claims import edit_search, editing, paper
from dpoclaims.claims.checks import EditComparison
from dpoclaims.claims.editing import EditSpec
from dpoclaims.claims.results import ClaimRecord, Expectation
from dpoclaims.errors import OptionError
from dpoclaims.hooks.interventions import Intervention
from dpoclaims.measure.evaluation import intervened_perplexity
from dpoclaims.measure.generation import GenerationSettings, greedy_generate
from dpoclaims.models.mlp import neuron_activation_modules
from dpoclaims.stats import bootstrap, mean_difference
from dpoclaims.train.organism import corpus

# 2 layers x 6 neurons. Layer 0: TP (c>0, m>0) ids 0-2, TN (c>0, m<0) ids 3-5. Layer 1 (ids 6-11):
# AP (c<0, m>0) ids 6-8, AN (c<0, m<0) ids 9-10, and id 11 with m = 0 (in no group).
COSINES = torch.tensor([[0.9, 0.5, 0.1, 0.8, 0.4, 0.2], [-0.7, -0.3, -0.1, -0.6, -0.2, -0.5]])
MEANS = torch.tensor([[1.0, 2.0, 3.0, -1.0, -2.0, -3.0], [4.0, 5.0, 6.0, -4.0, -5.0, 0.0]])


def test_sign_groups_follow_the_signs_of_cosine_and_mean_activation():
    groups = editing.sign_groups(COSINES, MEANS)
    members = {g: torch.nonzero(mask).flatten().tolist() for g, mask in groups.items()}
    assert members == {"TP": [0, 1, 2], "TN": [3, 4, 5], "AP": [6, 7, 8], "AN": [9, 10]}


@pytest.mark.parametrize(
    ("selection", "expected"),
    [
        # beta 0.67: floor(2.01) = 2 of each three-neuron group, floor(1.34) = 1 of AN's two
        ("repository", {"TP": [0, 1], "TN": [5, 4], "AP": [8, 7], "AN": [9]}),  # AP, TN: lowest |c|
        ("highest", {"TP": [0, 1], "TN": [3, 4], "AP": [6, 7], "AN": [9]}),
    ],
)
def test_each_group_edits_floor_beta_of_its_neurons_by_absolute_cosine(selection, expected):
    chosen = editing.select_edited(COSINES, MEANS, 0.67, selection)
    assert {g: ids.tolist() for g, ids in chosen.items()} == expected


def test_edited_counts_are_the_floor_of_beta_times_the_group_size():
    assert editing.edited_count(0.29, 100) == 29  # not 28, whatever 0.29 * 100 rounds to
    assert editing.edited_count(0.55, 98_304) == 54_067
    assert editing.edited_count(1.0, 3) == 3 and editing.edited_count(0.3, 3) == 0


def test_the_edit_writes_scaled_means_or_scales_the_live_activation():
    overwrite = editing.edit_intervention(COSINES, MEANS, EditSpec(0.1, 0.67))
    assert overwrite.kind == "edit" and overwrite.neurons == (0, 1, 4, 5, 7, 8, 9)
    # TP and AN: m (1 - alpha); TN and AP: m (1 + alpha)
    expected = [1.0 * 0.9, 2.0 * 0.9, -2.0 * 1.1, -3.0 * 1.1, 5.0 * 1.1, 6.0 * 1.1, -4.0 * 0.9]
    assert np.allclose(overwrite.values, expected)
    scaled = editing.edit_intervention(COSINES, MEANS, EditSpec(0.1, 0.67, mode="scale"))
    assert scaled.neurons == overwrite.neurons
    assert np.allclose(scaled.values, [0.9, 0.9, 1.1, 1.1, 1.1, 1.1, 0.9])
    # a value with a stable id: equal specs give equal ids; the mode and alpha are part of it
    assert editing.edit_intervention(COSINES, MEANS, EditSpec(0.1, 0.67)).id == overwrite.id
    assert (
        len({overwrite.id, scaled.id, editing.edit_intervention(COSINES, MEANS, EditSpec(0.2, 0.67)).id}) == 3
    )
    assert overwrite.id.startswith("edit-overwrite-7-") and scaled.id.startswith("edit-scale-7-")


def test_other_interventions_keep_their_ids():
    # ids are cache keys: adding the edit kind must not move the entries of the others
    assert Intervention("ablate", (1, 2, 3)).id == "ablate-3-" + Intervention("ablate", (1, 2, 3)).id[-12:]
    assert Intervention("ablate", (1, 2, 3), mode="scale").id == Intervention("ablate", (1, 2, 3)).id


@pytest.mark.parametrize(
    "bad",
    [
        dict(alpha=-0.1, beta=0.5),
        dict(alpha=0.1, beta=0.0),
        dict(alpha=0.1, beta=1.5),
        dict(alpha=0.1, beta=0.5, direction="logits"),
    ],
)
def test_a_bad_edit_is_an_option_error(bad):
    with pytest.raises(OptionError, match="edit"):
        EditSpec(**bad)


def test_the_toy_direction_words_are_the_toy_s_own():
    swear, friendly = editing.DIRECTION_WORDS["toy"]
    assert len(swear) == len(friendly) == 5
    assert set(swear) <= corpus.TOXIC_WORDS
    assert set(friendly) <= set(corpus.NEUTRAL_ADJS) | {
        w for tail in corpus.NEUTRAL_TAILS for w in tail.split()
    }


# ------------------------------------------------------------------------- on a tiny model

TEXTS = [
    "the plan seems fair and the city will vote on it next week after the long debate",
    "people like you are always late to the meeting about the new parking rules",
]
EDITED = (0, 5, 9, 17, 64 + 3, 64 + 31)  # flat ids in both layers (d_mlp 128 for n_embd 32)


def edit_of(pair, mode: str) -> Intervention:
    d_mlp = pair.layout.d_mlp
    neurons = tuple(sorted({i % (2 * d_mlp) for i in EDITED}))
    values = (
        tuple(0.25 + 0.5 * i for i in range(len(neurons))) if mode == "overwrite" else (1.5,) * len(neurons)
    )
    return Intervention("edit", neurons, values=values, mode=mode)


class NeuronInputs:
    """What each layer's neuron module actually received: a plain forward hook, which sees the
    input after every pre-hook (the edit) has run."""

    def __init__(self, model, layout) -> None:
        self.inputs: list[list[torch.Tensor]] = [[] for _ in range(layout.n_layers)]
        self.handles = [
            module.register_forward_hook(self._keep(layer))
            for layer, module in enumerate(neuron_activation_modules(model, layout))
        ]

    def _keep(self, layer: int):
        def hook(module, args, output) -> None:
            self.inputs[layer].append(args[0].detach().clone())

        return hook

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


@pytest.mark.parametrize("mode", ["overwrite", "scale"])
def test_the_edit_is_applied_at_every_position_of_a_perplexity_window(gpt2_pair, mode):
    pair, window = gpt2_pair, 8
    edit = edit_of(pair, mode)
    raw = pair.model("base")
    seen = {}
    for name, intervention in (("plain", Intervention()), ("edited", edit)):
        recorder = NeuronInputs(raw, pair.layout)
        try:
            intervened_perplexity(pair, "base", TEXTS, intervention, window=window)
        finally:
            recorder.remove()
        seen[name] = recorder.inputs
    per_layer = edit._per_layer_values(pair.layout)
    n_positions = 0
    for layer, (idx, values) in per_layer.items():
        for plain, edited in zip(seen["plain"][layer], seen["edited"][layer], strict=True):
            assert edited.shape[1] > 1  # a whole window in one forward, not one position
            n_positions += edited.shape[0] * edited.shape[1]
            expected = values.expand_as(edited[..., idx]) if mode == "overwrite" else plain[..., idx] * values
            torch.testing.assert_close(edited[..., idx], expected)  # at every position of every window
            others = torch.ones(edited.shape[-1], dtype=torch.bool)
            others[idx] = False
            if layer == 0:  # upstream of every edit: the other neurons are untouched
                torch.testing.assert_close(edited[..., others], plain[..., others])
    assert n_positions >= 2 * window


def _hook_count(model: torch.nn.Module) -> int:
    return sum(
        len(module._forward_pre_hooks)
        + len(module._forward_hooks)
        + len(module._forward_pre_hooks_with_kwargs)
        for module in model.modules()
    )


def test_no_hook_is_left_on_the_model_after_an_edited_pass(gpt2_pair):
    pair = gpt2_pair
    raw = pair.model("base")
    batch = pair.tokenizer(TEXTS[:1], return_tensors="pt")
    before_hooks = _hook_count(raw)
    with torch.no_grad():
        before = raw(**batch).logits.clone()
    edit = edit_of(pair, "overwrite")
    settings = GenerationSettings(max_prompt_tokens=8, max_new_tokens=4, batch_size=2)
    # an edited generation pass (what an evaluation runs) and an edited perplexity pass
    with edit.applied(raw, pair.layout) as model:
        edited_generation = greedy_generate(model, pair.tokenizer, TEXTS, settings, progress=False)
    assert _hook_count(raw) == before_hooks
    intervened_perplexity(pair, "base", TEXTS, edit)
    assert _hook_count(raw) == before_hooks
    assert (
        edited_generation.continuations
        != greedy_generate(raw, pair.tokenizer, TEXTS, settings, progress=False).continuations
    )
    with pytest.raises(RuntimeError, match="inside"):  # an error inside the edited pass removes it too
        with edit.applied(raw, pair.layout):
            assert _hook_count(raw) > before_hooks
            raise RuntimeError("inside")
    assert _hook_count(raw) == before_hooks
    with torch.no_grad():
        torch.testing.assert_close(raw(**batch).logits, before)
    with edit.applied(raw, pair.layout), torch.no_grad():
        assert not torch.allclose(raw(**batch).logits, before)  # the edit did act while applied


def test_the_unembedding_direction_names_words_the_tokenizer_lacks(gpt2_pair):
    with pytest.raises(OptionError, match="single tokens"):
        editing.unembedding_direction(gpt2_pair)


# ------------------------------------------------------------------------- the search (no model)

N_PROMPTS = 200
NOISE = np.random.default_rng(1).normal(0.0, 0.05, N_PROMPTS)


def synthetic_point(spec: EditSpec, toxicity_gap: float, perplexity_gap: float) -> edit_search.EditPoint:
    """An edit whose toxicity is DPO's plus ``toxicity_gap`` and perplexity DPO's times (1 + gap)."""
    dpo = 0.3 + NOISE
    edited = dpo + toxicity_gap + np.random.default_rng(2).normal(0.0, 0.01, N_PROMPTS)
    toxicity = bootstrap(mean_difference, edited, dpo)
    ppl_rows = np.full(N_PROMPTS, perplexity_gap) + np.random.default_rng(3).normal(0.0, 0.002, N_PROMPTS)
    perplexity = bootstrap(lambda x, axis=0: np.mean(x, axis=axis), ppl_rows)
    n_neurons = int(spec.beta * 1000)
    row = {
        "toxicity": float(edited.mean()),
        "toxicity_ci": [0, 1],
        "perplexity": 10.0,
        "perplexity_ci": [9, 11],
    }
    return edit_search.EditPoint(
        spec, f"edit-{spec}", n_neurons, EditComparison(toxicity, perplexity), row, 0.3
    )


def test_the_edit_search_finds_and_shrinks_an_edit_that_beats_dpo():
    # beats DPO on both counts from beta 0.4 with alpha >= 0.05; perplexity rises with beta
    def measure(spec: EditSpec) -> edit_search.EditPoint:
        reaches = spec.beta >= 0.4 and spec.alpha >= 0.05
        return synthetic_point(spec, -0.05 if reaches else 0.05, spec.beta - 0.9)

    space = edit_search.EditSpace(editing.DIRECTIONS)
    result = edit_search.run_edit_search(space, measure, max_examples=30, seed=0)
    assert all(s in result.points for s in edit_search.stated_edits())  # measured before drawing
    assert result.verdict == "replicates" and result.found is not None
    assert result.p_value == min(1.0, len(result.points) * min(p.p_value for p in result.points.values()))
    if result.shrunk:  # Hypothesis shrank it toward the fewest neurons
        assert result.found.spec.beta == 0.4 and result.found.spec.alpha == 0.05
    claim = result.claim_result()
    assert str(claim.id) == "C13[search]" and claim.verdict == "replicates" and "edit found" in claim.finding


def test_the_edit_search_contradicts_when_every_edit_is_worse_than_dpo():
    space = edit_search.EditSpace(("probe",))
    result = edit_search.run_edit_search(
        space, lambda spec: synthetic_point(spec, 0.05, 0.1), max_examples=5, seed=0
    )
    assert result.found is None and result.verdict == "contradicts"
    assert result.best is not None and result.claim_result().verdict == "contradicts"


def test_c13_tests_both_stated_constant_sets():
    entry = paper.entry("C13")
    assert entry.params == ((0.01, 0.55), (0.05, 0.5))
    assert [entry.test_id(p) for p in entry.params] == [
        "C13[alpha=0.01,beta=0.55]",
        "C13[alpha=0.05,beta=0.5]",
    ]


def test_the_report_names_the_best_edit_and_draws_the_front(tmp_path):
    from dpoclaims.report import writer as report

    def measure(spec: EditSpec) -> edit_search.EditPoint:
        return synthetic_point(spec, 0.05 - spec.beta * 0.08, spec.beta - 0.7)

    reference = {
        "toxicity": 0.3,
        "toxicity_ci": [0.28, 0.32],
        "perplexity": 10.0,
        "perplexity_ci": [9.5, 10.5],
    }
    references = [
        {**reference, "kind": "base", "label": "base", "toxicity": 0.5},
        {**reference, "kind": "dpo", "label": "DPO"},
        {**reference, "kind": "C1 ablation", "label": "ablate top 2 toxic", "toxicity": 0.45},
    ]
    result = edit_search.run_edit_search(
        edit_search.EditSpace(editing.DIRECTIONS), measure, max_examples=12, seed=0, references=references
    )
    claim = result.claim_result()
    record = ClaimRecord(
        id=claim.id,
        order=0,
        keyword="editing",
        expectation=Expectation(),
        outcome="passed",
        node_id="claims/test_editing.py::x",
        result=claim,
    )
    header = {
        "pair": "synthetic",
        "fingerprint": "f",
        "n_prompts": N_PROMPTS,
        "convention": "v1",
        "scorer": "s",
    }
    report.write_reports([record], tmp_path, header)
    text = (tmp_path / "claims.md").read_text()
    best = result.best
    assert best is not None and "Activation editing:" in text
    assert f"best: alpha {best.spec.alpha:g}, beta {best.spec.beta:g}" in text
    assert "| DPO | - |" in text and "best edit" in text and "stated edit" in text
    assert (tmp_path / "figures" / "c13_edit_front.png").stat().st_size > 0
