"""Model pairs: a base LM, its DPO fine-tune, their tokenizer and a linear toxicity probe.

A :class:`PairSpec` says where a pair's parts live; :func:`load_pair_from_spec` loads and
validates them (shapes, vocabulary, finite weights, a DPO side that differs from its base, a
probe that is finite and non-zero) and fingerprints the result. Both models end up as
TransformerBridge models with raw (unprocessed) weights (:mod:`dpoclaims.models`). Named pairs
(``toy``, ``gpt2-medium``) and spec files are resolved by :mod:`dpoclaims.named_pairs`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from dpoclaims.errors import (
    CheckpointError,
    DegenerateProbeError,
    IdenticalModelsError,
    NonFiniteWeightsError,
    PairMismatchError,
    UnknownPairError,
)
from dpoclaims.files import TOMLDecodeError, load_checkpoint, read_toml
from dpoclaims.models import (
    MLPLayout,
    boot_bridge,
    load_hf_model,
    load_tokenizer,
    mlp_layout,
    model_from_state_dict,
    read_state_dict_file,
)

log = logging.getLogger(__name__)

PATH_SUFFIXES = frozenset({".pt", ".bin", ".safetensors", ".json", ".jsonl", ".toml", ".txt", ".csv", ".raw"})


def _looks_like_path(value: str) -> bool:
    """True for values that can only be paths (a hub id is ``name`` or ``org/name``)."""
    return value.startswith((".", "~")) or Path(value).suffix in PATH_SUFFIXES or value.count("/") > 1


@dataclass(frozen=True)
class PairSpec:
    """Where a pair's parts live. Paths are absolute or relative to ``root``."""

    name: str
    base: str
    dpo: str
    probe: str
    tokenizer: str | None = None
    extras: dict[str, str] = field(default_factory=dict)  # e.g. prompt sets of the pair
    root: str | None = None
    lexicon: frozenset[str] = frozenset()  # words of the pair's own lexicon scorer (the toy's), if any

    def resolve(self, value: str) -> str:
        """Resolve a spec value: relative paths are relative to the spec's directory, never
        to the current directory; a bare name found nowhere there is taken as a hub id."""
        if self.root is None or Path(value).expanduser().is_absolute():
            return value
        candidate = Path(self.root) / value
        # "models/base" is a path when the spec's directory holds "models", not a hub id
        in_a_local_directory = (Path(self.root) / Path(value).parts[0]).is_dir() if "/" in value else False
        if candidate.exists() or _looks_like_path(value) or in_a_local_directory:
            return str(candidate)  # a missing file is then reported with its full path
        if Path(value).exists():
            raise CheckpointError(
                f"{value!r} is not in the spec's directory {self.root}; a {value!r} exists in the current "
                "directory, but spec paths are relative to the spec file: give an absolute path or move it"
            )
        return value

    @classmethod
    def from_file(cls, path: Path) -> PairSpec:
        path = Path(path)
        try:
            if path.suffix == ".toml":
                data = read_toml(path)
            elif path.suffix == ".json":
                data = json.loads(path.read_text())
            else:
                raise UnknownPairError(f"pair spec {path} must be a .toml or .json file")
        except (OSError, ValueError, TOMLDecodeError) as exc:
            raise UnknownPairError(f"cannot read pair spec {path}: {exc}") from exc
        if not isinstance(data, dict):
            raise UnknownPairError(
                f"pair spec {path} must hold a table of keys (name, base, dpo, probe, tokenizer, extras), "
                f"not a {type(data).__name__}"
            )
        missing = [key for key in ("base", "dpo", "probe") if key not in data]
        if missing:
            raise UnknownPairError(
                f"pair spec {path} lacks the required keys {missing} (needs base, dpo, probe)"
            )
        known = {"name", "base", "dpo", "probe", "tokenizer", "extras"}
        unknown = set(data) - known
        if unknown:
            raise UnknownPairError(
                f"pair spec {path} has unknown keys {sorted(unknown)}; known: {sorted(known)}"
            )
        for key in ("name", "base", "dpo", "probe", "tokenizer"):
            if key in data and not (isinstance(data[key], str) and data[key].strip()):
                raise UnknownPairError(
                    f"pair spec {path}: {key!r} must be a non-empty string (a path or hub id), "
                    f"not {data[key]!r}"
                )
        extras = data.get("extras", {})
        if not isinstance(extras, dict):
            raise UnknownPairError(
                f"pair spec {path}: 'extras' must be a table of name = \"path\" entries ([extras] in TOML, "
                f"an object in JSON), not a {type(extras).__name__}: {extras!r}"
            )
        bad_extras = {k: v for k, v in extras.items() if not isinstance(v, (str, int))}
        if bad_extras:
            raise UnknownPairError(
                f"pair spec {path}: extras must be strings (paths) or numbers, not {bad_extras!r}"
            )
        check_extras(extras, f"pair spec {path}")
        return cls(
            name=str(data.get("name", path.stem)),
            base=data["base"],
            dpo=data["dpo"],
            probe=data["probe"],
            tokenizer=data.get("tokenizer"),
            extras={k: str(v) for k, v in extras.items()},
            root=str(path.parent.resolve()),
        )


#: The ``[extras]`` keys something reads: a misspelled key would otherwise be ignored, and the
#: claims that need it skipped.
EXTRAS_KEYS = {
    "challenge_prompts": "the challenge prompt file",
    "neutral_texts": "the held-out neutral text file",
    "perplexity_window": "tokens per perplexity window (a whole number)",
    "dpo_pairs": "the DPO training pairs (for reference; the toy names its own)",
    "report": "a report of how the pair was made (for reference; the toy names its build report)",
}


def check_extras(extras: dict[str, Any], where: str) -> None:
    """An :class:`UnknownPairError` for an unknown ``[extras]`` key (with the closest known key)
    or a ``perplexity_window`` that is not a positive whole number."""
    import difflib

    for key in extras:
        if key not in EXTRAS_KEYS:
            close = difflib.get_close_matches(key, list(EXTRAS_KEYS), n=1, cutoff=0.5)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise UnknownPairError(
                f"{where}: unknown [extras] key {key!r}; {hint}known keys: {', '.join(sorted(EXTRAS_KEYS))}"
            )
    window = extras.get("perplexity_window")
    if window is not None:
        text = str(window).strip()
        if isinstance(window, bool) or not (text.isascii() and text.isdigit() and int(text) > 0):
            raise UnknownPairError(
                f"{where}: perplexity_window must be a positive whole number of tokens (e.g. 1024), not {window!r}"
            )


@dataclass
class ModelPair:
    name: str
    base: Any  # TransformerBridge
    dpo: Any  # TransformerBridge
    tokenizer: PreTrainedTokenizerBase
    probe: torch.Tensor  # [d_model], float32
    layout: MLPLayout
    fingerprint: str
    spec: PairSpec
    _raw_models: dict[str, PreTrainedModel] = field(default_factory=dict, repr=False, compare=False)

    @property
    def unit_probe(self) -> torch.Tensor:
        return self.probe / self.probe.norm()

    def model(self, side: Literal["base", "dpo"]) -> Any:
        if side not in ("base", "dpo"):
            raise ValueError(f"side must be 'base' or 'dpo', not {side!r}")
        return self.base if side == "base" else self.dpo

    def raw(self, side: Literal["base", "dpo"]) -> PreTrainedModel:
        """The Hugging Face model inside ``side``'s bridge, unwrapped (built once per side; see
        :func:`dpoclaims.neuron_hooks.raw_model`): the same weights, no bridge wrapping, so
        generation runs at the raw model's speed. Weight edits and ``.to()`` on the bridge are
        seen by it."""
        from dpoclaims.neuron_hooks import raw_model

        self.model(side)  # checks the side
        if side not in self._raw_models:
            self._raw_models[side] = raw_model(self.model(side))
        return self._raw_models[side]

    def value_vectors(self, side: Literal["base", "dpo"] = "base") -> torch.Tensor:
        """``[n_layers, d_mlp, d_model]`` float32 on the CPU: row i of layer l is what neuron (l, i)
        writes (the analyses' copy, whatever device each layer is on)."""
        return torch.stack([block.mlp.W_out.detach().float().cpu() for block in self.model(side).blocks])

    def key_vectors(self, side: Literal["base", "dpo"] = "base") -> torch.Tensor:
        """``[n_layers, d_mlp, d_model]`` float32 on the CPU: row i of layer l is what neuron (l, i) reads."""
        return torch.stack([block.mlp.W_in.detach().float().cpu().T for block in self.model(side).blocks])

    def extra_path(self, key: str) -> Path:
        if key not in self.spec.extras:
            raise UnknownPairError(
                f"pair {self.name!r} has no {key!r} (its extras: {sorted(self.spec.extras)})"
            )
        return Path(self.spec.resolve(self.spec.extras[key]))


# --------------------------------------------------------------------------- loading


def load_probe(source: str, d_model: int) -> torch.Tensor:
    """The probe direction, ``[d_model]`` float32. Accepted: a tensor of shape ``(d_model,)`` or
    ``(1, d_model)``, or a linear layer's state dict whose ``weight`` has one of these shapes;
    any other shape is refused (never reshaped). A probe whose norm overflows (or underflows)
    float32 is rescaled by a power of two, which keeps its direction exactly."""
    payload = load_checkpoint(Path(source).expanduser(), "probe")
    if isinstance(payload, dict) and "weight" in payload:
        payload = payload["weight"]
    if not isinstance(payload, torch.Tensor):
        raise CheckpointError(
            f"probe {source!r} holds a {type(payload).__name__}, not a tensor: save the probe direction "
            "itself (torch.save(tensor)) or a dict with it under 'weight'"
        )
    if tuple(payload.shape) not in ((d_model,), (1, d_model)):
        raise PairMismatchError(
            f"probe {source!r} has {payload.numel()} entries (shape {tuple(payload.shape)}); the models have "
            f"d_model = {d_model}, so a probe must have shape ({d_model},) or (1, {d_model})"
        )
    probe = payload.detach().reshape(-1).float()
    remedy = "it defines no direction; retrain the probe (dpoclaims train-probe) or point to the right file"
    non_finite = int((~torch.isfinite(probe)).sum())
    if non_finite:
        raise DegenerateProbeError(
            f"probe {source!r} has {non_finite} of {probe.numel()} entries NaN or infinite: {remedy}"
        )
    largest = float(probe.abs().max())
    if largest == 0:
        raise DegenerateProbeError(f"probe {source!r} is all zeros: {remedy}")
    norm = float(probe.norm())
    if not math.isfinite(norm) or norm == 0:
        # Divide by the power of two at the largest entry: exact, so the direction is unchanged.
        exponent = math.frexp(largest)[1]
        probe = torch.ldexp(probe, torch.tensor(-exponent, dtype=torch.int32))
        log.warning(
            "probe %r: its norm %s in float32; rescaled by 2**%d (its direction is unchanged)",
            source,
            "overflows" if not math.isfinite(norm) else "underflows to 0",
            -exponent,
        )
    return probe


def check_finite(model: PreTrainedModel, side: str, source: str) -> None:
    """A :class:`NonFiniteWeightsError` naming the tensors of ``model`` that hold NaN or inf."""
    bad: list[str] = []
    for name, tensor in model.state_dict().items():
        if not tensor.is_floating_point() or tensor.device.type == "meta":
            continue
        count = int((~torch.isfinite(tensor)).sum())
        if count:
            bad.append(f"{name} ({count} of {tensor.numel()} entries)")
    if bad:
        raise NonFiniteWeightsError(
            f"the {side} model {source!r} has NaN or infinite weights in {len(bad)} tensors: "
            f"{', '.join(bad[:3])}{' ...' if len(bad) > 3 else ''}. The checkpoint is corrupt or its training "
            "diverged: re-download or retrain it"
        )


def check_distinct(base: PreTrainedModel, dpo: PreTrainedModel, base_source: str, dpo_source: str) -> None:
    """An :class:`IdenticalModelsError` when every DPO weight equals the base's."""
    base_state, dpo_state = base.state_dict(), dpo.state_dict()
    if set(base_state) != set(dpo_state):
        return
    for name, tensor in base_state.items():
        other = dpo_state[name]
        if tensor.shape != other.shape or not torch.equal(tensor, other.to(tensor.device)):
            return
    raise IdenticalModelsError(
        f"the DPO model {dpo_source!r} has exactly the weights of the base {base_source!r}: there is no "
        "fine-tune to study. Point the spec's dpo at the DPO-trained model (if you trained it, check that "
        "training changed the weights: dpoclaims train-dpo refuses a run that changes none)"
    )


def check_compatible(
    base: PreTrainedModel, dpo: PreTrainedModel, tokenizer: PreTrainedTokenizerBase
) -> MLPLayout:
    layout = mlp_layout(base.config)
    if base.config.model_type != dpo.config.model_type:
        raise PairMismatchError(
            f"base is a {base.config.model_type!r} model but DPO is a {dpo.config.model_type!r} model"
        )
    dpo_layout = mlp_layout(dpo.config)
    for attr in ("n_layers", "d_model", "d_mlp"):
        if getattr(layout, attr) != getattr(dpo_layout, attr):
            raise PairMismatchError(
                f"{attr} differs: base {getattr(layout, attr)}, DPO {getattr(dpo_layout, attr)}"
            )
    if base.config.vocab_size != dpo.config.vocab_size:
        raise PairMismatchError(
            f"vocabulary size differs: base {base.config.vocab_size}, DPO {dpo.config.vocab_size}"
        )
    if len(tokenizer) > base.config.vocab_size:
        raise PairMismatchError(
            f"tokenizer has {len(tokenizer)} tokens but the models' vocabulary is {base.config.vocab_size}"
        )
    return layout


def fingerprint(
    base: PreTrainedModel, dpo: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, probe: torch.Tensor
) -> str:
    """SHA-256 over both models' weights, the tokenizer's vocabulary and the probe."""
    digest = hashlib.sha256()
    for model in (base, dpo):
        for name, tensor in sorted(model.state_dict().items()):
            digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
            digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    digest.update(json.dumps(sorted(tokenizer.get_vocab().items())).encode())
    digest.update(probe.detach().cpu().float().numpy().tobytes())
    return digest.hexdigest()[:20]


def load_pair_from_spec(
    spec: PairSpec,
    *,
    dtype: torch.dtype = torch.float32,
    device_map: Any = None,
    device: torch.device | str | None = None,
) -> ModelPair:
    """Load and validate the pair ``spec`` describes.

    ``dtype`` (e.g. ``torch.bfloat16``) and ``device_map`` (e.g. ``"auto"`` for a model larger
    than one device) are passed to ``from_pretrained``; the analyses cast to float32.
    ``device`` (e.g. ``"cuda:1"``; default: where they load, the CPU) moves both models there;
    with a ``device_map``, accelerate places them and ``device`` is not used.
    """
    base_source = spec.resolve(spec.base)
    dpo_source = spec.resolve(spec.dpo)
    tokenizer_source = spec.resolve(spec.tokenizer) if spec.tokenizer else base_source
    tokenizer = load_tokenizer(tokenizer_source)
    base = load_hf_model(base_source, dtype=dtype, device_map=device_map)
    dpo_path = Path(dpo_source).expanduser()
    if dpo_path.suffix in (".pt", ".bin") or dpo_path.is_file():
        dpo = model_from_state_dict(base, read_state_dict_file(dpo_path), str(dpo_path))
    else:
        dpo = load_hf_model(dpo_source, dtype=dtype, device_map=device_map)
    layout = check_compatible(base, dpo, tokenizer)
    check_finite(base, "base", base_source)
    check_finite(dpo, "DPO", dpo_source)
    check_distinct(base, dpo, base_source, dpo_source)
    probe = load_probe(spec.resolve(spec.probe), layout.d_model)
    pair_fingerprint = fingerprint(base, dpo, tokenizer, probe)
    if device is not None and device_map is None:
        base.to(device)
        dpo.to(device)
    return ModelPair(
        name=spec.name,
        base=boot_bridge(base, base_source, tokenizer),
        dpo=boot_bridge(dpo, base_source, tokenizer),
        tokenizer=tokenizer,
        probe=probe,
        layout=layout,
        fingerprint=pair_fingerprint,
        spec=spec,
    )
