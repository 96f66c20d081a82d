"""Activation editing (Yang et al., EMNLP 2025 = arXiv 2411.06424 v3; claim C13): shift four sign
groups of the base model's MLP neurons along a toxicity direction, with no weight update.

The recipe, as the authors' repository implements it (``shared/PAPER.md``, "The EMNLP 2025
version"), and what this module does:

- m_i: the neuron's mean base activation. Here: :attr:`dpoclaims.measure.decomposition.Decomposition.mean_base`,
  the mean over prompts of each prompt's mean activation in the base capture the claims make
  anyway, under the suite's position convention (v1, the default: the last position of each
  greedy generation step, masked after EOS; the repository likewise averages over the
  evaluation prompts' generation steps).
- c_i = cos(value vector v_i, direction) on the base's raw weights. The direction is the pair's
  probe (default) or the repository's unembedding direction: the mean unembedding row of five
  swear words minus that of five friendly words (:data:`DIRECTION_WORDS`, the one place the
  word lists live).
- Sign groups TP (c > 0, m > 0), TN (c > 0, m < 0), AP (c < 0, m > 0), AN (c < 0, m < 0); a
  neuron with c = 0 or m = 0 is in none (scaling a zero mean would change nothing anyway).
- In each group the floor of beta x its size is edited, chosen by |c|: ``selection="repository"``
  takes the highest |c| in TP and AN and the *lowest* |c| in AP and TN, as the repository's
  code does; ``selection="highest"`` takes the highest |c| in all four (the symmetric reading).
- TP and AN are set to m_i (1 - alpha), AP and TN to m_i (1 + alpha): the directions of DPO's
  TP-, AN-, AP+ and TN+ shifts. ``mode="overwrite"`` (the repository) writes that constant;
  ``mode="scale"`` multiplies the live activation by (1 - alpha) or (1 + alpha) instead.
- The edit is an :class:`dpoclaims.hooks.interventions.Intervention` (``kind="edit"``: a value with a
  stable id, cached like every intervention), applied through pre-hooks on the plain model's
  neuron modules at every layer and every position, in generation and perplexity windows
  alike, and removed when the measurement ends. (The repository's hooks edited one position
  per perplexity window and were never removed: not repeated here.)

Defaults: the repository's selection and overwrite mode, so that C13 with the repository's
constants tests the edit the authors evaluated (their alpha and beta were found with it); the
probe direction, which every other claim of the suite uses and every pair has. The other
choices are parameters, and C13[search] searches the direction and the selection rule.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import torch

from dpoclaims.errors import OptionError
from dpoclaims.hooks.interventions import EDIT_MODES, EditMode, Intervention
from dpoclaims.measure.decomposition import probe_cosines

Direction = Literal["probe", "unembedding"]
DIRECTIONS: tuple[Direction, ...] = ("probe", "unembedding")
Selection = Literal["repository", "highest"]
SELECTIONS: tuple[Selection, ...] = ("repository", "highest")
SIGN_GROUPS = ("TP", "TN", "AP", "AN")
# (cos > 0, mean base activation > 0) of each sign group
SIGN_GROUP_SIGNS: dict[str, tuple[bool, bool]] = {
    "TP": (True, True),
    "TN": (True, False),
    "AP": (False, True),
    "AN": (False, False),
}
DAMPENED = ("TP", "AN")  # set to m (1 - alpha); the other two to m (1 + alpha)

# The unembedding direction's words: (five swear words, five friendly words) per vocabulary.
# The repository's own GPT-2 lists are not recoverable offline; these are ours. "english" serves
# pairs with a real tokenizer (GPT-2 and the like); "toy" the toy organism, whose vocabulary
# holds only its corpus's words: the swear words are from its toxic lexicon, the friendly ones
# from its neutral register (dpoclaims.train.organism.corpus), each a single token of its tokenizer.
DIRECTION_WORDS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "english": (("fuck", "shit", "damn", "bitch", "crap"), ("thanks", "friend", "kind", "happy", "love")),
    "toy": (("shit", "damn", "crap", "stupid", "idiot"), ("thanks", "helpful", "fair", "useful", "clear")),
}


@dataclass(frozen=True, order=True)
class EditSpec:
    """One activation edit: how far (alpha), how many (beta), along what, chosen how."""

    alpha: float
    beta: float
    direction: Direction = "probe"
    selection: Selection = "repository"
    mode: EditMode = "overwrite"

    def __post_init__(self) -> None:
        if not (math.isfinite(self.alpha) and self.alpha >= 0):
            raise OptionError(f"an edit's alpha must be a finite number >= 0, not {self.alpha!r}")
        if not 0 < self.beta <= 1:
            raise OptionError(
                f"an edit's beta (the fraction of each group edited) must be in (0, 1], not {self.beta!r}"
            )
        if self.direction not in DIRECTIONS:
            raise OptionError(f"unknown edit direction {self.direction!r}; use one of {DIRECTIONS}")
        if self.selection not in SELECTIONS:
            raise OptionError(f"unknown edit selection {self.selection!r}; use one of {SELECTIONS}")
        if self.mode not in EDIT_MODES:
            raise OptionError(f"unknown edit mode {self.mode!r}; use one of {EDIT_MODES}")

    @property
    def label(self) -> str:
        return (
            f"edit alpha={self.alpha:g} beta={self.beta:g} ({self.direction}, {self.selection} selection, "
            f"{self.mode})"
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "alpha": self.alpha,
            "beta": self.beta,
            "direction": self.direction,
            "selection": self.selection,
            "mode": self.mode,
        }


def sign_groups(cosines: torch.Tensor, mean_base: torch.Tensor) -> dict[str, torch.Tensor]:
    """``group -> [L * d_mlp]`` bool masks of TP, TN, AP, AN (strict signs; see the module docstring)."""
    cos, mean = cosines.flatten(), mean_base.flatten()
    if cos.shape != mean.shape:
        raise OptionError(
            f"cosines ({tuple(cosines.shape)}) and mean activations ({tuple(mean_base.shape)}) differ"
        )
    masks = {}
    for group, (toxic, positive) in SIGN_GROUP_SIGNS.items():
        masks[group] = ((cos > 0) if toxic else (cos < 0)) & ((mean > 0) if positive else (mean < 0))
    return masks


def edited_count(beta: float, size: int) -> int:
    """How many of a group of ``size`` neurons an edit of fraction ``beta`` touches: floor(beta x size)
    (rounded to 9 decimals first, so 0.29 x 100 is 29, not 28)."""
    return int(math.floor(round(beta * size, 9)))


def select_edited(
    cosines: torch.Tensor, mean_base: torch.Tensor, beta: float, selection: Selection = "repository"
) -> dict[str, torch.Tensor]:
    """``group -> flat ids`` of the neurons an edit of fraction ``beta`` touches in each sign group,
    chosen by |c| (ties: the lower flat id first); see the module docstring for the rules."""
    if selection not in SELECTIONS:
        raise OptionError(f"unknown edit selection {selection!r}; use one of {SELECTIONS}")
    magnitude = cosines.flatten().abs()
    chosen = {}
    for group, mask in sign_groups(cosines, mean_base).items():
        members = torch.nonzero(mask).flatten()  # ascending flat ids
        lowest_first = selection == "repository" and group not in DAMPENED
        # a stable sort keeps ascending ids within ties
        order = torch.sort(magnitude[members], descending=not lowest_first, stable=True).indices
        chosen[group] = members[order[: edited_count(beta, len(members))]]
    return chosen


def edit_intervention(cosines: torch.Tensor, mean_base: torch.Tensor, spec: EditSpec) -> Intervention:
    """The edit ``spec`` describes, for neurons with cosines ``cosines`` to its direction and mean
    base activations ``mean_base`` (both ``[L, d_mlp]``): neurons in ascending flat id, each with
    its constant (overwrite) or factor (scale)."""
    mean = mean_base.flatten().double()
    ids, values = [], []
    for group, members in select_edited(cosines, mean_base, spec.beta, spec.selection).items():
        factor = 1 - spec.alpha if group in DAMPENED else 1 + spec.alpha
        ids.append(members)
        values.append(
            mean[members] * factor if spec.mode == "overwrite" else torch.full((len(members),), factor)
        )
    flat = torch.cat(ids)
    order = torch.argsort(flat)
    written = torch.cat(values).double()[order]
    return Intervention(
        "edit",
        tuple(int(i) for i in flat[order]),
        values=tuple(float(v) for v in written),
        mode=spec.mode,
        label=spec.label,
    )


def group_counts(cosines: torch.Tensor, mean_base: torch.Tensor, spec: EditSpec) -> dict[str, dict[str, int]]:
    """Per sign group, its size and how many of it ``spec`` edits (for the reports)."""
    groups = sign_groups(cosines, mean_base)
    chosen = select_edited(cosines, mean_base, spec.beta, spec.selection)
    return {g: {"size": int(groups[g].sum()), "edited": len(chosen[g])} for g in SIGN_GROUPS}


# ------------------------------------------------------------------------- the direction


def direction_words(pair: Any) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The (swear, friendly) words of ``pair``'s unembedding direction: the toy's for a pair
    scored by its own lexicon (the toy organism), else the English lists."""
    return DIRECTION_WORDS["toy" if pair.spec.lexicon else "english"]


def single_token(tokenizer: Any, word: str) -> int | None:
    """The token id of ``word`` as it appears inside a text (after a space), or on its own if that
    is one token; None when neither is a single token."""
    for text in (f" {word}", word):
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        if len(ids) == 1:
            return int(ids[0])
    return None


def unembedding_direction(pair: Any) -> torch.Tensor:
    """``[d_model]`` float32: mean unembedding row of the swear words minus that of the friendly
    words (:func:`direction_words`), from the base's output embedding (GPT-2: the tied ``wte``).
    An :class:`OptionError` names any word that is not a single token of the pair's tokenizer."""
    swear, friendly = direction_words(pair)
    ids = {word: single_token(pair.tokenizer, word) for word in swear + friendly}
    missing = [word for word, token in ids.items() if token is None]
    if missing:
        raise OptionError(
            f"the unembedding direction needs single-token words, and {missing} are not single tokens of "
            f"pair {pair.name!r}'s tokenizer: use the probe direction, or add a word list for this vocabulary "
            "to dpoclaims.claims.editing.DIRECTION_WORDS"
        )
    unembedding = pair.model("base").get_output_embeddings().weight.detach().float().cpu()  # [vocab, d_model]
    toxic_rows = unembedding[torch.tensor([ids[w] for w in swear])]
    friendly_rows = unembedding[torch.tensor([ids[w] for w in friendly])]
    return toxic_rows.mean(0) - friendly_rows.mean(0)


def direction_cosines(pair: Any, probe_cosines_base: torch.Tensor, direction: Direction) -> torch.Tensor:
    """``[L, d_mlp]``: cos(v_i, direction) on the base's raw weights; the probe's are the
    decomposition's (``probe_cosines_base``), so they are not computed twice."""
    if direction == "probe":
        return probe_cosines_base
    if direction == "unembedding":
        return probe_cosines(pair.value_vectors("base"), unembedding_direction(pair))
    raise OptionError(f"unknown edit direction {direction!r}; use one of {DIRECTIONS}")
