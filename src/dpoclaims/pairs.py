"""Model pairs: a base LM, its DPO fine-tune, their tokenizer and a linear toxicity probe.

Every pair, whatever its source, is loaded through one path (:func:`load_pair`) and ends up
as two TransformerBridge models with raw (unprocessed) weights. Sources:

- a local Hugging Face model directory;
- a hub id (resolved by ``from_pretrained`` and its usual cache; fails clearly offline);
- for the DPO side, a state-dict file in Lee et al.'s format (``torch.load(path)["state"]``,
  Hugging Face key names) applied to the base architecture;
- a probe as a ``.pt`` tensor with ``d_model`` entries.

A pair is named (``toy``; see :data:`NAMED_PAIRS`) or described by a TOML/JSON spec file.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from dpoclaims.cache import Cache
from dpoclaims.errors import CheckpointError, PairMismatchError, UnknownPairError

log = logging.getLogger(__name__)

MLPKind = Literal["gpt2", "gated"]
GATED_MODEL_TYPES = frozenset({"llama", "gemma", "gemma2", "gemma3_text", "mistral", "qwen2", "qwen3"})
GPT2_STYLE_MODEL_TYPES = frozenset({"gpt2", "gpt_neo", "gptj"})
# Buffers that old GPT-2 state dicts carry and current transformers no longer registers.
IGNORED_STATE_SUFFIXES = (".attn.bias", ".attn.masked_bias")


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

    def resolve(self, value: str) -> str:
        """Resolve a spec value: relative paths are relative to the spec's directory, never
        to the current directory; a bare name found nowhere there is taken as a hub id."""
        if self.root is None or Path(value).expanduser().is_absolute():
            return value
        candidate = Path(self.root) / value
        if candidate.exists() or _looks_like_path(value):
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
                try:
                    import tomllib
                except ModuleNotFoundError:  # Python < 3.11
                    import tomli as tomllib  # type: ignore[no-redef]
                data = tomllib.loads(path.read_text())
            elif path.suffix == ".json":
                data = json.loads(path.read_text())
            else:
                raise UnknownPairError(f"pair spec {path} must be a .toml or .json file")
        except (OSError, ValueError) as exc:
            raise UnknownPairError(f"cannot read pair spec {path}: {exc}") from exc
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
        return cls(
            name=str(data.get("name", path.stem)),
            base=str(data["base"]),
            dpo=str(data["dpo"]),
            probe=str(data["probe"]),
            tokenizer=data.get("tokenizer"),
            extras={k: str(v) for k, v in data.get("extras", {}).items()},
            root=str(path.parent.resolve()),
        )


@dataclass(frozen=True)
class MLPLayout:
    """Where the MLP neurons are: one hook per layer whose activation is the neuron vector."""

    kind: MLPKind
    n_layers: int
    d_model: int
    d_mlp: int

    def hook_name(self, layer: int) -> str:
        # For GPT-2 the post-GELU activation (input of c_proj); for gated MLPs the input
        # of down_proj. TransformerBridge names both blocks.L.mlp.hook_post.
        return f"blocks.{layer}.mlp.hook_post"

    @property
    def hook_names(self) -> list[str]:
        return [self.hook_name(layer) for layer in range(self.n_layers)]

    @property
    def n_neurons(self) -> int:
        return self.n_layers * self.d_mlp


def mlp_layout(config: PretrainedConfig) -> MLPLayout:
    model_type = config.model_type
    if model_type in GPT2_STYLE_MODEL_TYPES:
        kind: MLPKind = "gpt2"
        d_model = config.n_embd if hasattr(config, "n_embd") else config.hidden_size
        d_mlp = getattr(config, "n_inner", None) or 4 * d_model
        n_layers = config.n_layer if hasattr(config, "n_layer") else config.num_hidden_layers
    elif model_type in GATED_MODEL_TYPES:
        kind, d_model, d_mlp, n_layers = (
            "gated",
            config.hidden_size,
            config.intermediate_size,
            config.num_hidden_layers,
        )
    else:
        raise PairMismatchError(
            f"model type {model_type!r} is not supported; supported: "
            f"{sorted(GPT2_STYLE_MODEL_TYPES | GATED_MODEL_TYPES)}"
        )
    return MLPLayout(kind, int(n_layers), int(d_model), int(d_mlp))


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

    @property
    def unit_probe(self) -> torch.Tensor:
        return self.probe / self.probe.norm()

    def model(self, side: Literal["base", "dpo"]) -> Any:
        if side not in ("base", "dpo"):
            raise ValueError(f"side must be 'base' or 'dpo', not {side!r}")
        return self.base if side == "base" else self.dpo

    def value_vectors(self, side: Literal["base", "dpo"] = "base") -> torch.Tensor:
        """``[n_layers, d_mlp, d_model]``: row i of layer l is what neuron (l, i) writes."""
        return self.model(side).W_out.detach().float()

    def key_vectors(self, side: Literal["base", "dpo"] = "base") -> torch.Tensor:
        """``[n_layers, d_mlp, d_model]``: row i of layer l is what neuron (l, i) reads."""
        return self.model(side).W_in.detach().float().transpose(1, 2)

    def extra_path(self, key: str) -> Path:
        if key not in self.spec.extras:
            raise UnknownPairError(
                f"pair {self.name!r} has no {key!r} (its extras: {sorted(self.spec.extras)})"
            )
        return Path(self.spec.resolve(self.spec.extras[key]))


# --------------------------------------------------------------------------- loading parts


def _looks_local(source: str) -> bool:
    return (
        source.startswith((".", "/", "~"))
        or Path(source).expanduser().exists()
        or source.endswith((".pt", ".bin"))
    )


def load_tokenizer(source: str) -> PreTrainedTokenizerBase:
    if _looks_local(source) and not Path(source).expanduser().exists():
        raise CheckpointError(f"tokenizer source {source!r} does not exist")
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
    except Exception as exc:  # transformers raises OSError, ValueError, EnvironmentError...
        raise CheckpointError(f"cannot load a tokenizer from {source!r}: {exc}") from exc
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_hf_model(
    source: str, *, dtype: torch.dtype = torch.float32, device_map: Any = None
) -> PreTrainedModel:
    """A causal LM from a local directory or a hub id, in eval mode."""
    path = Path(source).expanduser()
    if _looks_local(source):
        if not path.exists():
            raise CheckpointError(f"model checkpoint {source!r} does not exist")
        if path.is_dir() and not (path / "config.json").is_file():
            raise CheckpointError(f"{source!r} is not a Hugging Face model directory (no config.json)")
    try:
        model = AutoModelForCausalLM.from_pretrained(
            str(path) if path.exists() else source, dtype=dtype, device_map=device_map
        )
    except Exception as exc:
        raise CheckpointError(f"cannot load model {source!r}: {type(exc).__name__}: {exc}") from exc
    model.eval()
    return model


def read_state_dict_file(path: Path) -> dict[str, torch.Tensor]:
    """Lee et al.'s format: ``torch.load(path)["state"]`` with Hugging Face key names.
    A bare state dict is accepted too."""
    if not path.is_file():
        raise CheckpointError(f"state-dict file {path} does not exist")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(
            f"cannot read state-dict file {path} (corrupt or not a torch file): {exc}"
        ) from exc
    state = payload.get("state", payload) if isinstance(payload, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(
            f"{path} holds no state dict (expected a dict of tensors, or one under 'state')"
        )
    return state


def model_from_state_dict(
    base: PreTrainedModel, state: dict[str, torch.Tensor], origin: str
) -> PreTrainedModel:
    """A copy of ``base``'s architecture with the weights of ``state``."""
    model = type(base)(base.config)
    state = {k: v for k, v in state.items() if not k.endswith(IGNORED_STATE_SUFFIXES)}
    expected = model.state_dict()
    tied = {k for k in expected if k == "lm_head.weight"} if base.config.tie_word_embeddings else set()
    missing = set(expected) - set(state) - tied
    unexpected = set(state) - set(expected)
    wrong_shape = [k for k in set(state) & set(expected) if state[k].shape != expected[k].shape]
    if missing or unexpected or wrong_shape:
        details = []
        if missing:
            details.append(f"missing {sorted(missing)[:5]}{' ...' if len(missing) > 5 else ''}")
        if unexpected:
            details.append(f"unexpected {sorted(unexpected)[:5]}{' ...' if len(unexpected) > 5 else ''}")
        if wrong_shape:
            k = sorted(wrong_shape)[0]
            details.append(
                f"{len(wrong_shape)} tensors of the wrong shape, e.g. {k}: {tuple(state[k].shape)} vs {tuple(expected[k].shape)}"
            )
        raise PairMismatchError(
            f"state dict {origin} does not fit the base architecture: {'; '.join(details)}"
        )
    model.load_state_dict(state, strict=False)
    if tied:
        model.tie_weights()
    model.to(dtype=base.dtype).eval()
    return model


def load_probe(source: str, d_model: int) -> torch.Tensor:
    path = Path(source).expanduser()
    if not path.is_file():
        raise CheckpointError(f"probe file {source!r} does not exist")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"cannot read probe {source!r} (corrupt or not a torch file): {exc}") from exc
    if isinstance(payload, dict) and "weight" in payload:
        payload = payload["weight"]
    if not isinstance(payload, torch.Tensor):
        raise CheckpointError(f"probe {source!r} holds a {type(payload).__name__}, not a tensor")
    if payload.numel() != d_model:
        raise PairMismatchError(
            f"probe {source!r} has {payload.numel()} entries (shape {tuple(payload.shape)}); the models have d_model = {d_model}"
        )
    probe = payload.detach().reshape(-1).float()
    if not torch.isfinite(probe).all() or probe.norm() == 0:
        raise CheckpointError(f"probe {source!r} is zero or not finite")
    return probe


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


def boot_bridge(model: PreTrainedModel, name_or_path: str, tokenizer: PreTrainedTokenizerBase) -> Any:
    from transformer_lens.model_bridge import TransformerBridge

    return TransformerBridge.boot_transformers(
        name_or_path, hf_model=model, tokenizer=tokenizer, dtype=model.dtype
    )


# --------------------------------------------------------------------------- named pairs


def _toy_spec(cache: Cache) -> PairSpec:
    from dpoclaims.organism.build import ensure_toy

    return PairSpec.from_file(ensure_toy(cache=cache) / "pair.toml")


GPT2_MEDIUM_HELP = (
    "The paper pair needs three files you obtain yourself: the base model (hub id 'gpt2-medium', "
    "resolved from your Hugging Face cache, or a local directory: DPOCLAIMS_GPT2_BASE), Lee et al.'s DPO "
    "checkpoint dpo.pt (DPOCLAIMS_GPT2_DPO) and their probe probe.pt (DPOCLAIMS_GPT2_PROBE), both "
    "distributed by the authors of github.com/ajyl/dpo_toxic; plus the RealToxicityPrompts prompts.jsonl "
    "(DPOCLAIMS_RTP_PATH) and Wikitext-2 raw test text (DPOCLAIMS_WIKITEXT_PATH) for the behavioural claims."
)


def _gpt2_medium_spec(cache: Cache) -> PairSpec:
    """The paper's pair, assembled from environment variables (see ``GPT2_MEDIUM_HELP``)."""
    import os

    dpo, probe = os.environ.get("DPOCLAIMS_GPT2_DPO"), os.environ.get("DPOCLAIMS_GPT2_PROBE")
    missing = [
        name for name, value in (("DPOCLAIMS_GPT2_DPO", dpo), ("DPOCLAIMS_GPT2_PROBE", probe)) if not value
    ]
    if missing:
        raise CheckpointError(f"{', '.join(missing)} not set. {GPT2_MEDIUM_HELP}")
    extras = {
        key: os.environ[env]
        for key, env in (
            ("challenge_prompts", "DPOCLAIMS_RTP_PATH"),
            ("neutral_texts", "DPOCLAIMS_WIKITEXT_PATH"),
        )
        if os.environ.get(env)
    }
    extras["perplexity_window"] = "1024"  # Wikitext-2 test in 1024-token windows, as the paper
    return PairSpec(
        name="gpt2-medium",
        base=os.environ.get("DPOCLAIMS_GPT2_BASE", "gpt2-medium"),
        dpo=str(dpo),
        probe=str(probe),
        extras=extras,
    )


NAMED_PAIRS: dict[str, Callable[[Cache], PairSpec]] = {"toy": _toy_spec, "gpt2-medium": _gpt2_medium_spec}
DEFAULT_PAIR = "toy"


def resolve_spec(pair: str | Path | PairSpec, cache: Cache | None = None) -> PairSpec:
    if isinstance(pair, PairSpec):
        return pair
    cache = cache or Cache()
    if isinstance(pair, str) and pair in NAMED_PAIRS:
        return NAMED_PAIRS[pair](cache)
    path = Path(pair).expanduser()
    if path.is_file():
        return PairSpec.from_file(path)
    if path.is_dir() and (path / "pair.toml").is_file():
        return PairSpec.from_file(path / "pair.toml")
    raise UnknownPairError(
        f"unknown pair {str(pair)!r}: not a named pair ({', '.join(sorted(NAMED_PAIRS))}) "
        "nor a .toml/.json pair spec file or a directory holding pair.toml"
    )


def load_pair(
    pair: str | Path | PairSpec = DEFAULT_PAIR,
    *,
    cache: Cache | None = None,
    dtype: torch.dtype = torch.float32,
    device_map: Any = None,
) -> ModelPair:
    """Load and validate a pair; see the module docstring for accepted sources.

    ``dtype`` (e.g. ``torch.bfloat16``) and ``device_map`` (e.g. ``"auto"`` for a model larger
    than one device) are passed to ``from_pretrained``; the analyses cast to float32.
    """
    spec = resolve_spec(pair, cache)
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
    probe = load_probe(spec.resolve(spec.probe), layout.d_model)
    print_id = fingerprint(base, dpo, tokenizer, probe)
    return ModelPair(
        name=spec.name,
        base=boot_bridge(base, base_source, tokenizer),
        dpo=boot_bridge(dpo, base_source, tokenizer),
        tokenizer=tokenizer,
        probe=probe,
        layout=layout,
        fingerprint=print_id,
        spec=spec,
    )
