"""Planted organisms: pairs whose "DPO" side is the toy's base with a weight edit, so that which
claims hold is known before anything is measured.

One class per kind (:data:`ORGANISMS`), each holding its construction and, beside it, its truth
table: the claims the construction determines, the right verdict and why. Everything a claim the
table names is not determined (see :attr:`PlantedOrganism.undetermined`). The tables were written
from the constructions alone, before any planted organism was measured, and are never adjusted to
an outcome: a rule that fails them is fixed, never the organism.

A truth is one of
- ``replicates`` / ``contradicts``: the paper's finding holds / does not hold on the organism, so
  the opposite definite verdict is wrong;
- ``inconclusive``: the organism has no effect for the claim to find (the null), so the right
  verdict is no definite one (inconclusive or not measurable) and either definite verdict is wrong.
Not measurable and inconclusive are never wrong: they are the rule's lack of power.

What every construction reads from the base: the probe cosines of its value vectors, their
projections on the unit probe, and the mean base activation of each neuron on the replication's
prompts (the base capture the claims use, so that a planted set is the set a claim selects).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from transformers import PreTrainedModel

from dpoclaims.claims import paper
from dpoclaims.claims.editing import EditSpec, edit_intervention, sign_groups
from dpoclaims.claims.selection import top_toxic
from dpoclaims.errors import DpoclaimsError
from dpoclaims.models.loading import MLPLayout
from dpoclaims.models.mlp import mlp_modules, neuron_rows

Truth = Literal["replicates", "contradicts", "inconclusive"]
TRUTHS: tuple[Truth, ...] = ("replicates", "contradicts", "inconclusive")


class PlantingError(DpoclaimsError):
    """A planted organism cannot be built on this base (its activation or its neurons)."""


@dataclass(frozen=True)
class Determined:
    """A claim's verdict the construction determines, and why."""

    truth: Truth
    reason: str


@dataclass(frozen=True)
class BaseFacts:
    """What a construction reads from the base: ``[L, d_mlp]`` each."""

    cosines: torch.Tensor  # cos(v_i, probe), base weights
    projection: torch.Tensor  # v_i . unit probe, base weights
    mean_base: torch.Tensor  # mean base activation on the replication's prompts (the claims' base capture)


# ------------------------------------------------------------------------- weight edits


def _by_layer(
    model: PreTrainedModel, layout: MLPLayout, ids: np.ndarray
) -> Iterator[tuple[torch.Tensor, torch.Tensor, np.ndarray, np.ndarray]]:
    """For each layer holding some of the flat neuron ``ids``: its key vectors ``[d_mlp, d_model]``
    and bias ``[d_mlp]`` (views into ``model``'s weights), the neurons' indices in the layer, and
    their positions in ``ids``."""
    ids = np.asarray(ids, dtype=np.int64)
    layers, indices = np.divmod(ids, layout.d_mlp)
    for layer, (in_proj, _) in enumerate(mlp_modules(model, layout)):
        where = np.flatnonzero(layers == layer)
        if not len(where):
            continue
        bias = getattr(in_proj, "bias", None)
        if not isinstance(bias, torch.Tensor):
            raise PlantingError(
                f"layer {layer}'s MLP input projection has no bias: a neuron cannot be set to a constant"
            )
        rows = neuron_rows(in_proj, layout.d_mlp, layout.d_model, neurons_are="outputs")
        yield rows, bias, indices[where], where


def gelu_new(x: np.ndarray) -> np.ndarray:
    """GPT-2's activation (the tanh approximation of GELU), float64."""
    return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


GELU_ARGMIN = -0.7517915  # where gelu_new is smallest; it increases to the right of it
GELU_MIN = float(gelu_new(np.array(GELU_ARGMIN)))  # about -0.170
SUPPORTED_ACTIVATIONS = ("gelu_new",)


def inverse_gelu_new(values: np.ndarray) -> np.ndarray:
    """The pre-activation x >= GELU_ARGMIN with gelu_new(x) = value (bisection, float64)."""
    if np.any(values < GELU_MIN):
        raise PlantingError(f"gelu_new takes no value below {GELU_MIN:.4f}; asked for {values.min():.4f}")
    low = np.full_like(values, GELU_ARGMIN)
    high = np.maximum(values, 0.0) + 1.0  # gelu_new(x) <= x for x >= 0, so the root is below value + 1
    for _ in range(200):
        middle = (low + high) / 2
        below = gelu_new(middle) < values
        low, high = np.where(below, middle, low), np.where(below, high, middle)
    return (low + high) / 2


def check_activation(model: PreTrainedModel) -> None:
    activation = getattr(model.config, "activation_function", None)
    if activation not in SUPPORTED_ACTIVATIONS:
        raise PlantingError(
            f"planted organisms set neurons through GPT-2's {SUPPORTED_ACTIVATIONS} activation; this base uses "
            f"{activation!r}"
        )


@torch.no_grad()
def set_constant(model: PreTrainedModel, layout: MLPLayout, ids: np.ndarray, constants: np.ndarray) -> None:
    """Make each neuron of ``ids`` (flat) output its constant at every position: its key vector
    zeroed and its bias set to the pre-activation the activation maps to the constant (0 for 0)."""
    check_activation(model)
    biases = inverse_gelu_new(np.asarray(constants, dtype=np.float64))
    biases[np.asarray(constants) == 0] = 0.0  # gelu_new(0) = 0 exactly: a silenced neuron is exactly 0
    for rows, bias, index, where in _by_layer(model, layout, ids):
        rows[torch.from_numpy(index)] = 0
        bias[torch.from_numpy(index)] = torch.from_numpy(biases[where]).to(bias.dtype)


@torch.no_grad()
def add_relative_noise(model: PreTrainedModel, scale: float, seed: int) -> None:
    """Add to every floating weight Gaussian noise of ``scale`` times the tensor's own standard deviation."""
    generator = torch.Generator().manual_seed(seed)
    for _, tensor in sorted(model.state_dict(keep_vars=True).items()):
        if tensor.is_floating_point() and tensor.numel() > 1:
            noise = torch.randn(tensor.shape, generator=generator, dtype=torch.float64)
            tensor.add_((noise * scale * float(tensor.double().std())).to(tensor.dtype))


# ------------------------------------------------------------------------- the organisms


def _ids(*keys: str) -> tuple[str, ...]:
    """Every test id of the paper-table entries ``keys``."""
    return tuple(str(i) for key in keys for i in paper.entry(key).claim_ids())


#: The claims whose figure is a share of, or a statement about, what DPO changed: on a DPO side
#: that changed nothing, none of them has anything to find.
NEEDS_A_CHANGE = _ids(
    "C1",
    "C1[search]",
    "C2",
    "C2[search]",
    "C3",
    "C4",
    "C5",
    "C5[anti-toxic]",
    "C6[increasing]",
    "C6[net-over-gross]",
    "C7[top-toxic]",
    "C7[to-half-gross]",
    "C8[peak]",
    "C8[late-groups]",
    "C10",
    "C11[toxic-activation]",
)
#: A calibration cell beside the claims: C13's decision on the edit written at every position (the
#: figure the claim reports beside its verdict), where the planted edit organism determines it.
C13_EVERY_POSITION = "C13[alpha=0.05,beta=0.5] every position"
PLANTED_EDIT = EditSpec(alpha=0.05, beta=0.5)


class PlantedOrganism:
    """One kind of planted organism: its construction (:meth:`plant`) and its truth table."""

    name: ClassVar[str]
    construction: ClassVar[str]  # what the weight edit is, in words
    truth: ClassVar[Mapping[str, Determined]]  # claim test id -> the verdict determined
    undetermined: ClassVar[str]  # why the claims not in ``truth`` are left undetermined

    def plant(
        self, base: PreTrainedModel, layout: MLPLayout, facts: BaseFacts, seed: int
    ) -> tuple[PreTrainedModel, dict[str, Any]]:
        """The "DPO" side (a new model; ``base`` is untouched) and the construction's record."""
        raise NotImplementedError


def positive_toxic_ids(facts: BaseFacts, paper_n: int) -> np.ndarray:
    """The top ``paper_n`` (scaled) positively-activated toxic neurons, as C2 selects them."""
    n = paper.scale_n(paper_n, facts.cosines.numel())
    return top_toxic(facts.cosines, n, mean_base_activation=facts.mean_base).numpy()


class PlantedAblation(PlantedOrganism):
    name = "planted-ablation"
    construction = (
        "the base with its top-N positively-activated toxic neurons silenced (key vector and bias zeroed, so "
        "each writes exactly 0 at every position), N the largest ablation the paper considers (2,000, scaled: "
        "C2[N=2000]'s set, chosen from the mean base activations of the replication's prompts as C2 chooses it)"
    )
    _exact = (
        "ablating those neurons in the base gives exactly the DPO side (same weights' function, same "
        "continuations): it recovers 100% of DPO's drop at DPO's perplexity, so it matches DPO"
    )
    truth = {
        "C2[N=2000]": Determined("contradicts", f"{_exact}; 'does not match DPO' is false"),
        "C2[search]": Determined(
            "contradicts", f"the search measures that ablation first (a stated candidate); {_exact}"
        ),
        "C1[search]": Determined(
            "contradicts",
            f"its space holds the positively-activated rule up to 2,000 (scaled), measured first; {_exact}",
        ),
    }
    undetermined = (
        "the other ablations touch other neuron sets (C1's by cosine alone, C2's smaller N), whose effect the "
        "construction does not fix; the decomposition's figures (C4-C9) and the patches (C3, C10) depend on how "
        "the silenced neurons' absence changes every other activation and the continuations; C11-C13 on "
        "whether the top toxic neurons by cosine are among the silenced (positively-activated) ones"
    )

    def plant(
        self, base: PreTrainedModel, layout: MLPLayout, facts: BaseFacts, seed: int
    ) -> tuple[PreTrainedModel, dict[str, Any]]:
        ids = positive_toxic_ids(facts, 2000)
        dpo = copy.deepcopy(base)
        set_constant(dpo, layout, ids, np.zeros(len(ids)))
        return dpo, {"silenced": [int(i) for i in ids]}


class PlantedNull(PlantedOrganism):
    name = "planted-null"
    noise = 1e-6  # relative to each tensor's standard deviation: far below any effect a claim measures
    construction = (
        f"the base plus Gaussian noise of {noise:g} times each weight tensor's standard deviation (a new draw per "
        "planting seed): a DPO side that changed nothing a claim could find"
    )
    truth = {
        **{
            claim_id: Determined(
                "inconclusive",
                "the DPO side changed nothing: there is no drop, no shift and no reduction for the claim to "
                "describe, so no definite verdict is right",
            )
            for claim_id in NEEDS_A_CHANGE
        },
        "C11[cosine]": Determined(
            "replicates",
            f"noise of {noise:g} of a tensor's spread leaves every weight matrix's cosine with the base's above "
            "1 - 1e-9, far above 0.99",
        ),
    }
    undetermined = (
        "C2[perplexity] and C12 measure interventions on one side (an ablation of the base, key scaling in the "
        "DPO side), which can have an effect whatever DPO did; C13 compares an edit of the base with a DPO side "
        "equal to the base, which an edit may beat; C9 correlates activation changes that are pure noise, "
        "whose verdict the construction does not fix"
    )

    def plant(
        self, base: PreTrainedModel, layout: MLPLayout, facts: BaseFacts, seed: int
    ) -> tuple[PreTrainedModel, dict[str, Any]]:
        dpo = copy.deepcopy(base)
        add_relative_noise(dpo, self.noise, seed)
        return dpo, {"noise": self.noise, "seed": seed}


class PlantedEdit(PlantedOrganism):
    name = "planted-edit"
    construction = (
        f"the base with C13's edit alpha={PLANTED_EDIT.alpha:g}, beta={PLANTED_EDIT.beta:g} (probe direction, "
        "the repository's selection, overwrite) built into its weights: each edited neuron's key vector zeroed "
        "and its bias set so that it outputs its edit constant m_i (1 -/+ alpha) at every position, m_i from "
        "the base capture of the replication's prompts, as C13 computes it"
    )
    truth = {
        C13_EVERY_POSITION: Determined(
            "contradicts",
            "the DPO side is that edit at every position: the edit written at every position gives DPO's "
            "continuations and perplexity (to float rounding), so its toxicity is DPO's, not below it: it does "
            "not outperform DPO",
        ),
    }
    undetermined = (
        "C13 decides on the edit at the authors' positions (the last of each forward), which leaves the prompt's "
        "earlier positions unedited: it differs from the planted edit by an amount the construction does not "
        "fix, so its verdict is undetermined (its every-position figure is the cell above); the ablation, patch "
        "and decomposition claims measure what overwriting half of each sign group does to every other "
        "activation, which the construction does not fix"
    )

    def plant(
        self, base: PreTrainedModel, layout: MLPLayout, facts: BaseFacts, seed: int
    ) -> tuple[PreTrainedModel, dict[str, Any]]:
        edit = edit_intervention(facts.cosines, facts.mean_base, PLANTED_EDIT)
        constants = np.asarray(edit.values, dtype=np.float64)
        floor = GELU_MIN * (1 - 1e-6)
        clipped = int((constants < floor).sum())
        if clipped:
            raise PlantingError(
                f"{clipped} edit constants lie below the activation's minimum {GELU_MIN:.4f}: the edit cannot be "
                "built into this base's weights"
            )
        dpo = copy.deepcopy(base)
        set_constant(dpo, layout, np.asarray(edit.neurons), constants)
        return dpo, {"edit": PLANTED_EDIT.to_json(), "n_neurons": len(edit.neurons), "intervention": edit.id}


# The diffuse organism's construction constants (ours). Its history, before any calibration run
# (docs/calibration.md): a first construction set 10% + 10% of the neurons to constants, each group's
# share fixed in every layer; the smallest (group, layer) cell capped the planted reduction at 0.08,
# and it lowered toxicity by 0.0002 on one replication: nothing to decompose. A second scaled every
# planted neuron's pre-activation; scaling a negative pre-activation moves gelu_new the wrong way
# below its minimum (h < -0.75), so the planted sign of TN+ and AN- was not guaranteed. Now: the
# negative-mean neurons are set to constants (exact), the positive-mean ones scaled (their variation
# kept), each group's share fixed over all layers.
DIFFUSE_REDUCING = 0.5  # of each sign group's eligible neurons in every layer: reducing
DIFFUSE_OPPOSING = 0.4  # of each sign group's eligible neurons in the layers before the last third: raising
DIFFUSE_NET_OVER_GROSS = 0.3  # planted net / gross (the paper's is 0.15; its claim C6 is <= 0.5)
DIFFUSE_ALPHA_CAP = 0.8  # no pre-activation is scaled by less than 0.2 or more than 1.8
DIFFUSE_FLOOR = -0.16  # no constant below this (gelu_new's minimum is -0.170)
DIFFUSE_MIN_LATE_TP_AN = 0.55  # the construction refuses a planting whose late TP- + AN- share is lower
# The groups each sign group feeds: (reducing, opposing), each with the sign of alpha in its factor
# f = 1 + sign * alpha on the pre-activation; the reducing ones are the paper's four groups.
DIFFUSE_ROLES: dict[str, tuple[tuple[str, int], tuple[str, int]]] = {
    "TP": (("TP-", -1), ("TP+", +1)),
    "TN": (("TN+", +1), ("TN-", -1)),
    "AP": (("AP+", +1), ("AP-", -1)),
    "AN": (("AN-", -1), ("AN+", +1)),
}


@torch.no_grad()
def scale_preactivation(
    model: PreTrainedModel, layout: MLPLayout, ids: np.ndarray, factors: np.ndarray
) -> None:
    """Multiply each neuron's key vector and bias by its factor: its pre-activation is scaled, so
    its activation follows gelu_new(f h), about f times the activation (it keeps its variation)."""
    check_activation(model)
    factors = np.asarray(factors, dtype=np.float64)
    for rows, bias, index, where in _by_layer(model, layout, ids):
        scale = torch.from_numpy(factors[where]).to(rows.dtype)  # [k]
        rows[torch.from_numpy(index)] *= scale[:, None]
        bias[torch.from_numpy(index)] *= scale


_PLANTED = (
    "the planted D_i = alpha_i |m_i (v_i . w)|: exact for the negative-mean neurons (set to the constant "
    "m_i (1 -/+ alpha_i)), about so for the positive-mean ones (a scaled positive pre-activation scales "
    "gelu_new's output by about the factor); assumed: what the changed continuations add on every neuron is "
    "smaller than the margin to the threshold"
)


class PlantedDiffuse(PlantedOrganism):
    name = "planted-diffuse"
    construction = (
        f"the base with {DIFFUSE_REDUCING:.0%} of each sign group's neurons in every layer moved by a factor "
        f"1 -/+ alpha_i (alpha_i <= {DIFFUSE_ALPHA_CAP}; a positive-mean neuron's key vector and bias scaled, a "
        "negative-mean one set to the constant m_i (1 -/+ alpha_i)) so as to lower the toxic projection, and "
        f"{DIFFUSE_OPPOSING:.0%} of the others in the layers before the last third scaled so as to raise it (a "
        "seeded draw of neurons): the planted reduction is shared by TP-, TN+, AP+ and AN- in the paper's "
        "proportions (31.8, 23.9, 7.0, 37.3%), each group's spread over the layers by capacity; the raising "
        f"groups take back {1 - DIFFUSE_NET_OVER_GROSS:.0%} of it (planted net/gross {DIFFUSE_NET_OVER_GROSS}); "
        "the top toxic neurons (C1's top-1000 and C2's top-2000, scaled) are never touched"
    )
    truth = {
        **{
            claim_id: Determined(
                "replicates",
                f"planted TP- share 31.8% of the four groups (of the gross: less), below 50%; {_PLANTED}",
            )
            for claim_id in _ids("C4")
        },
        **{
            str(paper.entry("C5").claim_id(group)): Determined(
                "replicates",
                f"planted share {share:.1%}, twice the threshold ({paper.RELATIVE_SHARE_FLOOR:.0%} of the paper's); "
                f"{_PLANTED}",
            )
            for group, share in paper.GROUP_SHARES.items()
        },
        "C5[anti-toxic]": Determined(
            "replicates", f"planted AP+ and AN- together 44.3%, twice the threshold; {_PLANTED}"
        ),
        "C6[net-over-gross]": Determined(
            "replicates",
            f"planted net/gross {DIFFUSE_NET_OVER_GROSS} (noise only adds to the gross), below 0.5; {_PLANTED}",
        ),
        "C7[top-toxic]": Determined(
            "replicates",
            f"the top toxic neurons are untouched: they carry none of the planted reduction; {_PLANTED}",
        ),
        "C7[to-half-gross]": Determined(
            "replicates",
            f"the planted reduction is spread over {DIFFUSE_REDUCING:.0%} of each group's neurons by capacity: half "
            f"of it takes hundreds of neurons, far more than the scaled 1,000; {_PLANTED}",
        ),
        "C8[peak]": Determined(
            "replicates",
            "the last third's layers carry planted reduction and no raising, the others both: the last third's net "
            f"is the largest (the construction refuses a planting where it is not); {_PLANTED}",
        ),
        "C8[late-groups]": Determined(
            "replicates",
            f"planted TP- and AN- at least {DIFFUSE_MIN_LATE_TP_AN:.0%} of the four groups in the last third (the "
            f"construction refuses a planting where they are not); {_PLANTED}",
        ),
    }
    undetermined = (
        "C1-C3 and C10 ask how much ablating or patching the base lowers its toxicity against DPO's drop, and "
        "C12-C13 what key scaling or an edit does: properties of the base and of the continuations that the "
        "construction does not fix; C6[increasing] counts the neurons with D_i < 0, whose number beyond the "
        "planted raising ones is the continuations' noise; C9's correlation follows from how the reducing and "
        "raising shifts balance against the cosines, which the construction leaves open; C11's top toxic "
        "neurons are untouched, so their activations move only with the continuations"
    )

    def plant(
        self, base: PreTrainedModel, layout: MLPLayout, facts: BaseFacts, seed: int
    ) -> tuple[PreTrainedModel, dict[str, Any]]:
        rng = np.random.default_rng(seed)
        cos = facts.cosines.double().numpy()  # [L, d_mlp]
        mean = facts.mean_base.double().numpy()
        proj = facts.projection.double().numpy()
        n_layers, d_mlp = cos.shape
        untouched = np.zeros(cos.size, dtype=bool)  # the top toxic neurons: no shortcut
        untouched[top_toxic(facts.cosines, paper.scale_n(1000, cos.size)).numpy()] = True
        untouched[positive_toxic_ids(facts, 2000)] = True
        masks = sign_groups(facts.cosines, facts.mean_base)  # sign group -> [L * d_mlp]
        late = set(range(n_layers)[paper.late_layers(n_layers)])
        roles = {group: sign for roles_ in DIFFUSE_ROLES.values() for group, sign in roles_}
        chosen: dict[tuple[str, int], np.ndarray] = {}  # (planted group, layer) -> neuron indices
        for sign_group, ((reducing, _), (opposing, _)) in DIFFUSE_ROLES.items():
            eligible = (masks[sign_group].numpy() & ~untouched).reshape(cos.shape)
            for layer in range(n_layers):
                members = rng.permutation(np.flatnonzero(eligible[layer]))
                n_reducing = int(round(DIFFUSE_REDUCING * len(members)))
                n_opposing = 0 if layer in late else int(round(DIFFUSE_OPPOSING * len(members)))
                chosen[(reducing, layer)] = members[:n_reducing]
                chosen[(opposing, layer)] = members[n_reducing : n_reducing + n_opposing]
        magnitude = np.abs(mean * proj)  # |m_i (v_i . w)|: the D_i of alpha = 1
        # A negative-mean neuron set to m (1 + alpha) must stay above gelu_new's minimum.
        floor_cap = np.where(mean < 0, DIFFUSE_FLOOR / np.minimum(mean, -1e-12) - 1, np.inf)
        caps = {
            (group, layer): np.clip(
                np.minimum(DIFFUSE_ALPHA_CAP, floor_cap[layer, index])
                if roles[group] > 0
                else np.full(len(index), DIFFUSE_ALPHA_CAP),
                0,
                None,
            )
            for (group, layer), index in chosen.items()
        }
        capacity = {key: float((caps[key] * magnitude[key[1], index]).sum()) for key, index in chosen.items()}
        reducing_groups = [g for (g, _), _ in DIFFUSE_ROLES.values()]
        opposing_groups = [g for _, (g, _) in DIFFUSE_ROLES.values()]

        def group_capacity(group: str) -> float:
            return sum(capacity[(group, layer)] for layer in range(n_layers))

        opposing_capacity = sum(group_capacity(g) for g in opposing_groups)
        # The largest planted reduction every reducing group carries at its share, and the raising
        # neurons can take back (1 - net/gross) of: each group uses the same fraction of its capacity.
        total = min(
            min(group_capacity(g) / paper.GROUP_SHARES[g] for g in reducing_groups),
            opposing_capacity / (1 - DIFFUSE_NET_OVER_GROSS),
        )
        if not total > 0:
            raise PlantingError("the base's sign groups leave no neuron to plant the diffuse reduction on")
        scaled_ids, factors, constant_ids, constants = [], [], [], []
        planted = np.zeros(cos.shape)
        groups_planted = np.zeros((len(reducing_groups), n_layers))
        for (group, layer), index in chosen.items():
            if group in reducing_groups:
                used = total * paper.GROUP_SHARES[group] / group_capacity(group)
            else:
                used = total * (1 - DIFFUSE_NET_OVER_GROSS) / opposing_capacity
            alpha = caps[(group, layer)] * used  # [len(index)]
            factor = 1 + roles[group] * alpha
            negative = mean[layer, index] < 0
            scaled_ids.append(layer * d_mlp + index[~negative])
            factors.append(factor[~negative])
            constant_ids.append(layer * d_mlp + index[negative])
            constants.append(mean[layer, index[negative]] * factor[negative])
            sign = 1 if group in reducing_groups else -1
            planted[layer, index] = sign * alpha * magnitude[layer, index]
            if group in reducing_groups:
                groups_planted[reducing_groups.index(group), layer] = (alpha * magnitude[layer, index]).sum()
        layer_net = planted.sum(1)
        late_layers = sorted(late)
        late_groups = groups_planted[:, late_layers].sum(1)
        tp, an = reducing_groups.index("TP-"), reducing_groups.index("AN-")
        late_tp_an = float((late_groups[tp] + late_groups[an]) / late_groups.sum())
        peak = int(np.argmax(layer_net))
        if peak not in late or late_tp_an < DIFFUSE_MIN_LATE_TP_AN:
            raise PlantingError(
                f"this base's capacities give a planted peak at layer {peak} and a late TP- + AN- share of "
                f"{late_tp_an:.1%}: the diffuse construction cannot plant C8's pattern on it"
            )
        dpo = copy.deepcopy(base)
        scale_preactivation(dpo, layout, np.concatenate(scaled_ids), np.concatenate(factors))
        set_constant(dpo, layout, np.concatenate(constant_ids), np.concatenate(constants))
        gross = float(planted[planted > 0].sum())
        shares = groups_planted.sum(1) / groups_planted.sum()
        record = {
            "n_scaled": int(sum(map(len, scaled_ids))),
            "n_set_constant": int(sum(map(len, constant_ids))),
            "planted_gross": gross,
            "planted_net": float(planted.sum()),
            "planted_net_over_gross": float(planted.sum()) / gross,
            "planted_shares": dict(zip(reducing_groups, shares.round(4).tolist())),
            "planted_layer_net": layer_net.tolist(),
            "planted_late_tp_an": late_tp_an,
        }
        return dpo, record


ORGANISMS: dict[str, PlantedOrganism] = {
    organism.name: organism
    for organism in (PlantedAblation(), PlantedDiffuse(), PlantedNull(), PlantedEdit())
}
ORGANISM_NAMES = tuple(ORGANISMS)


def organism(name: str) -> PlantedOrganism:
    if name not in ORGANISMS:
        raise PlantingError(f"no planted organism {name!r}; known: {', '.join(ORGANISM_NAMES)}")
    return ORGANISMS[name]


def is_wrong(verdict: str, truth: Truth | None) -> bool:
    """Whether ``verdict`` is a definite verdict opposite to ``truth`` (never for no truth)."""
    if truth is None or verdict not in ("replicates", "contradicts"):
        return False
    return verdict != truth
