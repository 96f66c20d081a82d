"""Behavioural evaluation of a pair side under an intervention: toxicity, and perplexity
(measured separately, since only some claims need it and it dominates a large pair's run).

An :class:`Intervention` is a value (kind, neurons, factor, values) with a stable id, so
its results can be cached; it is applied only inside a ``with`` block around each
measurement, never left on.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from dpoclaims.cache import Cache, stable_hash
from dpoclaims.errors import OptionError
from dpoclaims.generation import GenerationSettings, greedy_generate
from dpoclaims.interventions import ablation_hooks, neuron_set_from_flat, patch_hooks, scaled_key_vectors
from dpoclaims.metrics import perplexity
from dpoclaims.pairs import ModelPair
from dpoclaims.scoring import get_scorer

InterventionKind = Literal["none", "ablate", "patch", "scale_keys"]
EVALUATION_FORMAT = 2  # part of every cache key: bump when what an evaluation stores changes


@dataclass(frozen=True)
class Intervention:
    kind: InterventionKind = "none"
    neurons: tuple[int, ...] = ()  # flat ids: layer * d_mlp + index
    factor: float = 1.0  # scale_keys
    values: tuple[float, ...] = ()  # patch: one value per neuron, in the order of ``neurons``
    label: str = field(default="", compare=False)

    @property
    def id(self) -> str:
        if self.kind == "none":
            return "none"
        return f"{self.kind}-{len(self.neurons)}-{stable_hash([self.neurons, self.factor, self.values], 12)}"

    @contextmanager
    def applied(self, pair: ModelPair, side: Literal["base", "dpo"]) -> Iterator[None]:
        bridge = pair.model(side)
        flat = torch.tensor(self.neurons, dtype=torch.long)
        neurons = neuron_set_from_flat(flat, pair.layout.d_mlp)
        with ExitStack() as stack:
            if self.kind == "ablate":
                stack.enter_context(bridge.hooks(fwd_hooks=ablation_hooks(pair.layout, neurons)))
            elif self.kind == "patch":
                if len(self.values) != len(self.neurons):
                    raise OptionError("a patch needs one value per neuron")
                full = torch.zeros(pair.layout.n_layers * pair.layout.d_mlp)
                full[flat] = torch.tensor(self.values, dtype=torch.float32)
                values = {layer: full.view(pair.layout.n_layers, -1)[layer] for layer in neurons}
                stack.enter_context(bridge.hooks(fwd_hooks=patch_hooks(pair.layout, neurons, values)))
            elif self.kind == "scale_keys":
                stack.enter_context(scaled_key_vectors(bridge, neurons, self.factor))
            elif self.kind != "none":
                raise OptionError(f"unknown intervention kind {self.kind!r}")
            yield


@dataclass
class Evaluation:
    side: str
    intervention: str
    scores: dict[str, list[float]]  # scorer name -> per-prompt toxicity
    continuations: list[str]

    def mean_toxicity(self, scorer: str) -> float:
        values = self.scores[scorer]
        return sum(values) / len(values)


def evaluate(
    pair: ModelPair,
    side: Literal["base", "dpo"],
    prompts: Sequence[str],
    settings: GenerationSettings,
    intervention: Intervention = Intervention(),
    *,
    scorers: Sequence[str] = ("lexicon",),
    progress: bool = True,
) -> Evaluation:
    """Greedy continuations of ``prompts`` under ``intervention``, scored for toxicity."""
    model = pair.model(side).original_model
    with intervention.applied(pair, side):
        generations = greedy_generate(
            model,
            pair.tokenizer,
            prompts,
            settings,
            progress=progress,
            desc=f"generate {side} [{intervention.label or intervention.id}]",
        )
    scores = {name: get_scorer(name).score(generations.continuations) for name in scorers}
    return Evaluation(side, intervention.id, scores, generations.continuations)


def cached_evaluate(
    cache: Cache,
    pair: ModelPair,
    side: Literal["base", "dpo"],
    prompts: Sequence[str],
    settings: GenerationSettings,
    intervention: Intervention = Intervention(),
    *,
    scorers: Sequence[str] = ("lexicon",),
    progress: bool = True,
) -> Evaluation:
    key = stable_hash(
        {
            "format": EVALUATION_FORMAT,
            "pair": pair.fingerprint,
            "side": side,
            "prompts": stable_hash(list(prompts)),
            "settings": asdict(settings),
            "intervention": intervention.id,
            "scorers": sorted(scorers),
        }
    )

    def build(tmp: Path) -> dict[str, Any]:
        result = evaluate(pair, side, prompts, settings, intervention, scorers=scorers, progress=progress)
        (tmp / "evaluation.json").write_text(json.dumps(asdict(result)))
        return {"pair": pair.fingerprint, "side": side, "intervention": intervention.id}

    directory = cache.get_or_build("evaluation", key, build)
    return Evaluation(**json.loads((directory / "evaluation.json").read_text()))


def cached_perplexity(
    cache: Cache,
    pair: ModelPair,
    side: Literal["base", "dpo"],
    texts: Sequence[str],
    intervention: Intervention = Intervention(),
    *,
    window: int | None = None,
) -> float:
    """Perplexity of one side on ``texts`` under ``intervention`` (at every position), cached.

    ``window``: score the joined texts in consecutive windows of that many tokens (the
    paper's Wikitext-2 set-up); otherwise each text on its own.
    """
    key = stable_hash(
        {
            "format": EVALUATION_FORMAT,
            "pair": pair.fingerprint,
            "side": side,
            "texts": stable_hash(list(texts)),
            "window": window,
            "intervention": intervention.id,
        }
    )

    def build(tmp: Path) -> dict[str, Any]:
        with intervention.applied(pair, side):
            value = perplexity(
                pair.model(side).original_model,
                pair.tokenizer,
                texts,
                window=window,
                batch_size=4 if window else 32,
            )
        (tmp / "perplexity.json").write_text(json.dumps({"perplexity": value}))
        return {"pair": pair.fingerprint, "side": side, "intervention": intervention.id}

    directory = cache.get_or_build("perplexity", key, build)
    return float(json.loads((directory / "perplexity.json").read_text())["perplexity"])
