"""Loading Hugging Face models and tokenizers, and where a model's MLP neurons are
(:class:`MLPLayout`). TransformerBridge is booted in :mod:`dpoclaims.hooks.bridge`.

Sources: a local Hugging Face model directory; a hub id (``org/name``, or one of the few legacy
ids without an organisation), read from the local Hugging Face cache first; offline or without
network a missing hub model is a :class:`~dpoclaims.errors.MissingDownload` at once, never a
series of retries; a state-dict file in Lee et al.'s format (``torch.load(path)["state"]``,
Hugging Face key names) applied to a base architecture. A name that is neither an existing
path nor plausibly a hub id is refused before any network access.
A leaf of the model side: it imports only :mod:`dpoclaims.errors` and :mod:`dpoclaims.files`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar, cast

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from dpoclaims.errors import (
    CheckpointError,
    ConfigWeightsMismatchError,
    DpoclaimsError,
    MissingDownload,
    PairMismatchError,
    UnknownSourceError,
)
from dpoclaims.files import load_checkpoint

MLPKind = Literal["gpt2", "gated"]
GATED_MODEL_TYPES = frozenset({"llama", "gemma", "gemma2", "gemma3_text", "mistral", "qwen2", "qwen3"})
GPT2_STYLE_MODEL_TYPES = frozenset({"gpt2", "gpt_neo", "gptj"})
# Buffers that old GPT-2 (and Llama) state dicts carry and current transformers no longer registers.
IGNORED_STATE_SUFFIXES = (".attn.bias", ".attn.masked_bias", ".rotary_emb.inv_freq")
# Hub ids from before organisations: the only bare names taken as hub ids without being in the
# local Hugging Face cache. Any other bare name must be an existing path.
LEGACY_HUB_IDS = frozenset({"gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl", "distilgpt2"})
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?")
_TRUE_VALUES = frozenset({"1", "ON", "YES", "TRUE"})
HUB_REACHABLE_TIMEOUT_S = 3.0
Loaded = TypeVar("Loaded")


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


def model_positions(config: PretrainedConfig) -> int | None:
    """The positions a model has (GPT-2's ``n_positions``, ``max_position_embeddings``
    elsewhere): the longest sequence it can be fed; None when its config names none."""
    for name in ("n_positions", "max_position_embeddings"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def _looks_local(source: str) -> bool:
    return (
        source.startswith((".", "/", "~"))
        or Path(source).expanduser().exists()
        or source.endswith((".pt", ".bin"))
    )


def hub_offline() -> bool:
    """True when the Hugging Face hub must not be contacted (``HF_HUB_OFFLINE`` or
    ``TRANSFORMERS_OFFLINE`` set, as huggingface_hub reads them at import or later)."""
    import huggingface_hub.constants

    if huggingface_hub.constants.HF_HUB_OFFLINE:
        return True
    return any(
        os.environ.get(name, "").strip().upper() in _TRUE_VALUES
        for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )


def hub_reachable(timeout_s: float = HUB_REACHABLE_TIMEOUT_S) -> bool:
    """Whether a TCP connection to the hub's endpoint opens within ``timeout_s``: one quick
    look instead of the download client's minute of retries."""
    import socket
    from urllib.parse import urlsplit

    import huggingface_hub.constants

    endpoint = urlsplit(huggingface_hub.constants.ENDPOINT)
    port = endpoint.port or (443 if endpoint.scheme == "https" else 80)
    try:
        with socket.create_connection((endpoint.hostname, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def hub_cached(repo_id: str) -> bool:
    """Whether the local Hugging Face cache holds ``repo_id``'s config.json."""
    from huggingface_hub import try_to_load_from_cache

    try:
        return isinstance(try_to_load_from_cache(repo_id, "config.json"), str)
    except Exception:  # an invalid repo id
        return False


def classify_source(source: str, what: str) -> Literal["local", "hub"]:
    """``"local"`` for an existing path, ``"hub"`` for a plausible hub id; otherwise a
    :class:`CheckpointError` (a missing path) or :class:`UnknownSourceError` (a bare name that
    is no path and no hub id), before any network access. ``what`` names the source in messages."""
    if Path(source).expanduser().exists():
        return "local"
    if _looks_local(source):
        raise CheckpointError(f"{what} {source!r} does not exist")
    plausible = _HUB_ID.fullmatch(source) is not None and (
        "/" in source or source in LEGACY_HUB_IDS or hub_cached(source)
    )
    if not plausible:
        raise UnknownSourceError(
            f"{what} {source!r} is neither an existing path nor a hub id. Hub ids are 'org/name' (bare "
            f"names only for {', '.join(sorted(LEGACY_HUB_IDS))} or models already in your Hugging Face "
            "cache); a local model must exist at the path given (in a pair spec, relative paths are "
            "relative to the spec file's directory)"
        )
    return "hub"


def _from_hub(load: Callable[..., Loaded], source: str, what: str, **kwargs: Any) -> Loaded:
    """``load(source, **kwargs)`` for a hub id, from the local Hugging Face cache if it is there.
    Otherwise, offline or without network, a :class:`MissingDownload` at once."""
    try:
        return load(source, local_files_only=True, **kwargs)
    except OSError:  # not (completely) in the local cache
        pass
    remedy = (
        "download it where there is network access (huggingface_hub.snapshot_download) into the "
        "Hugging Face cache, or give a local directory instead (if you meant one, it does not exist)"
    )
    if hub_offline():
        raise MissingDownload(
            f"{what} {source!r} is not in the local Hugging Face cache and the hub is offline "
            f"(HF_HUB_OFFLINE is set): {remedy}, or unset HF_HUB_OFFLINE"
        ) from None
    if not hub_reachable():
        import huggingface_hub.constants

        raise MissingDownload(
            f"{what} {source!r} is not in the local Hugging Face cache and there is no network (cannot "
            f"reach {huggingface_hub.constants.ENDPOINT}): {remedy}"
        ) from None
    return load(source, **kwargs)


#: Files one of which a local tokenizer directory holds (fast or slow tokenizers).
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "vocab.txt")


def load_tokenizer(source: str) -> PreTrainedTokenizerBase:
    kind = classify_source(source, "tokenizer source")
    local = Path(source).expanduser()
    if kind == "local" and local.is_dir():
        has_files = any((local / name).is_file() for name in TOKENIZER_FILES) or any(local.glob("*.model"))
        if not has_files:  # said plainly, not as transformers' advice to install sentencepiece
            raise CheckpointError(
                f"tokenizer source {source!r} ({local.resolve()}) is a directory without tokenizer files "
                f"(none of {', '.join(TOKENIZER_FILES)}, *.model): point the spec's base (or tokenizer) at a "
                "Hugging Face model directory"
            )
    try:
        if kind == "hub":
            tokenizer = _from_hub(AutoTokenizer.from_pretrained, source, "tokenizer")
        else:
            tokenizer = AutoTokenizer.from_pretrained(str(Path(source).expanduser()))
    except DpoclaimsError:
        raise
    except Exception as exc:  # transformers raises OSError, ValueError, EnvironmentError...
        raise CheckpointError(f"cannot load a tokenizer from {source!r}: {exc}") from exc
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _shape(shape: Any) -> tuple[int, ...]:
    return tuple(int(n) for n in shape)


def loading_problems(info: dict[str, Any]) -> list[str]:
    """What ``from_pretrained(..., output_loading_info=True)`` reports as not fitting: tensors of
    another shape than the config gives, tensors the config expects but the weights lack, and
    weights the config's architecture has no place for. Empty when weights and config agree."""
    problems = []
    mismatched = sorted(info.get("mismatched_keys") or [])
    if mismatched:
        key, stored, expected = mismatched[0]
        problems.append(
            f"{len(mismatched)} tensors have another shape in the weights than in the config, e.g. "
            f"{key}: weights {_shape(stored)}, config {_shape(expected)}"
        )
    missing = sorted(info.get("missing_keys") or [])
    if missing:
        problems.append(f"{len(missing)} tensors are missing from the weights, e.g. {missing[:3]}")
    unexpected = sorted(
        k for k in info.get("unexpected_keys") or [] if not k.endswith(IGNORED_STATE_SUFFIXES)
    )
    if unexpected:
        problems.append(
            f"{len(unexpected)} tensors in the weights have no place in the config's architecture, "
            f"e.g. {unexpected[:3]}"
        )
    return problems


def _load_causal_lm(name_or_path: str, shown_as: str, **kwargs: Any) -> PreTrainedModel:
    """``AutoModelForCausalLM.from_pretrained`` that refuses weights its config does not describe
    (transformers would only point at a load report that is not shown)."""
    # cast: with output_loading_info=True from_pretrained returns (model, loading info), which its
    # annotation (the model alone) does not say.
    try:
        model, info = cast(
            tuple[PreTrainedModel, dict[str, Any]],
            AutoModelForCausalLM.from_pretrained(name_or_path, output_loading_info=True, **kwargs),
        )
    except RuntimeError as exc:
        if "ignore_mismatched_sizes" not in str(exc):
            raise
        # Load once more, tolerating the mismatch, only to learn which tensors it concerns.
        _, info = cast(
            tuple[PreTrainedModel, dict[str, Any]],
            AutoModelForCausalLM.from_pretrained(
                name_or_path, output_loading_info=True, ignore_mismatched_sizes=True, **kwargs
            ),
        )
    problems = loading_problems(info)
    if problems:
        raise ConfigWeightsMismatchError(
            f"model {shown_as!r}: its config.json does not describe its weights: {'; '.join(problems)}. "
            "The config and the weights come from different models: save both from the same model "
            "(save_pretrained), or fix config.json"
        )
    return model


def load_hf_model(
    source: str, *, dtype: torch.dtype = torch.float32, device_map: Any = None
) -> PreTrainedModel:
    """A causal LM from a local directory or a hub id, in eval mode."""
    path = Path(source).expanduser()
    kind = classify_source(source, "model checkpoint")
    if kind == "local" and path.is_dir() and not (path / "config.json").is_file():
        raise CheckpointError(f"{source!r} is not a Hugging Face model directory (no config.json)")
    try:
        if kind == "hub":
            model = _from_hub(
                _load_causal_lm, source, "model", shown_as=source, dtype=dtype, device_map=device_map
            )
        else:
            model = _load_causal_lm(str(path), source, dtype=dtype, device_map=device_map)
    except DpoclaimsError:
        raise
    except Exception as exc:
        raise CheckpointError(f"cannot load model {source!r}: {type(exc).__name__}: {exc}") from exc
    model.eval()
    return model


def read_state_dict_file(path: Path) -> dict[str, torch.Tensor]:
    """Lee et al.'s format: ``torch.load(path)["state"]`` with Hugging Face key names.
    A bare state dict is accepted too."""
    payload = load_checkpoint(
        path,
        "state-dict file",
        expected="A state-dict file is Lee et al.'s dpo.pt: torch.save({'state': model.state_dict()}, path), with "
        "Hugging Face key names (or the state dict itself)",
    )
    state = payload.get("state", payload) if isinstance(payload, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(
            f"{path} holds no state dict (expected a dict of tensors, or one under 'state')"
        )
    return state


def tied_to(state: dict[str, torch.Tensor], name: str) -> set[str]:
    """The names in a model's ``state`` whose tensor shares its memory with ``name``'s (the
    names of one tied matrix)."""
    pointer = state[name].data_ptr()
    return {key for key, tensor in state.items() if tensor.data_ptr() == pointer}


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
    if tied and "lm_head.weight" in state:
        # Loading both names of one tied matrix keeps whichever comes last: the embedding would
        # silently become the output layer, or the reverse.
        embedding = next(
            (k for k in expected if k in tied_to(expected, "lm_head.weight") and k != "lm_head.weight"), None
        )
        if embedding in state and not torch.equal(state["lm_head.weight"], state[embedding]):
            raise PairMismatchError(
                f"state dict {origin} has an lm_head.weight of its own (it differs from {embedding}), but the base "
                "ties its output layer to its input embedding (tie_word_embeddings): loading it would silently "
                "replace one with the other. Use a base whose config unties them (tie_word_embeddings = false), "
                f"or save the DPO model with lm_head.weight equal to {embedding}"
            )
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
    # cast: transformers wraps PreTrainedModel.to in functools.wraps(Module.to), which type
    # checkers read as an unbound Module.to; the call is the model's own .to (returning the model)
    cast(torch.nn.Module, model).to(dtype=base.dtype).eval()
    return model
