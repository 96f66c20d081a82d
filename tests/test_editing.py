"""Activation editing (dpoclaims.claims.editing, C13): sign groups and selection on known numbers, the
edit at every position of a perplexity window or at the authors' one position, no hook left after
an edited pass. The edit search is the searches' driver: tests/test_search.py."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dpoclaims.claims import editing, paper
from dpoclaims.claims.editing import EditSpec
from dpoclaims.errors import OptionError
from dpoclaims.hooks.interventions import Intervention
from dpoclaims.measure.evaluation import intervened_perplexity
from dpoclaims.measure.generation import GenerationSettings, greedy_generate
from dpoclaims.models.mlp import neuron_activation_modules
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


# ------------------------------------------------------------------------- the authors' positions


@pytest.mark.parametrize("positions", ["last", "first"])
def test_an_edit_at_one_position_writes_only_that_position_of_each_forward(gpt2_pair, positions):
    """ "last" (the authors' generation hooks): the prompt's last token, then each new token (a
    one-token forward with the KV cache); "first": position 0 of each forward. Every other
    position of a forward reads the plain activation."""
    pair = gpt2_pair
    raw = pair.model("base")
    edit = edit_of(pair, "overwrite").at(positions)
    settings = GenerationSettings(max_prompt_tokens=8, max_new_tokens=3, batch_size=2)
    recorder = NeuronInputs(raw, pair.layout)
    try:
        with edit.applied(raw, pair.layout) as model:
            greedy_generate(model, pair.tokenizer, TEXTS[:2], settings, progress=False)
    finally:
        recorder.remove()
    idx, values = edit._per_layer_values(pair.layout)[0]
    forwards = recorder.inputs[0]
    assert len(forwards) >= 2 and forwards[0].shape[1] > 1 and forwards[1].shape[1] == 1
    prompt = forwards[0][..., idx]  # [batch, prompt_len, edited]
    written = -1 if positions == "last" else 0
    torch.testing.assert_close(prompt[:, written], values.expand_as(prompt[:, written]))
    others = [p for p in range(prompt.shape[1]) if p != prompt.shape[1] + written and p != written]
    assert others and not torch.allclose(prompt[:, others], values.expand_as(prompt[:, others]))
    for step in forwards[1:]:  # one token per forward: its only position is both the first and the last
        torch.testing.assert_close(step[..., idx][:, 0], values.expand_as(step[..., idx][:, 0]))


def test_an_intervention_at_other_positions_has_its_own_id():
    every = Intervention("edit", (1, 2), values=(0.5, 0.5))
    assert every.id != every.at("last").id != every.at("first").id
    assert every.at("last").at("every") == every
    with pytest.raises(OptionError, match="every position"):
        Intervention("scale_keys", (1,), factor=2.0, positions="last")


def test_c13_tests_both_stated_constant_sets():
    entry = paper.entry("C13")
    assert entry.params == ((0.01, 0.55), (0.05, 0.5))
    assert [entry.test_id(p) for p in entry.params] == [
        "C13[alpha=0.01,beta=0.55]",
        "C13[alpha=0.05,beta=0.5]",
    ]
