"""Loading Hugging Face models and tokenizers, booting TransformerBridge, and where a
model's MLP neurons are (:class:`MLPLayout`).

Sources: a local Hugging Face model directory; a hub id (resolved by ``from_pretrained`` and
its usual cache; fails clearly offline); a state-dict file in Lee et al.'s format
(``torch.load(path)["state"]``, Hugging Face key names) applied to a base architecture.
A leaf of the model side: it imports only :mod:`dpoclaims.errors` and :mod:`dpoclaims.files`.
"""

from __future__ import annotations

from dataclasses import dataclass
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

from dpoclaims.errors import CheckpointError, PairMismatchError
from dpoclaims.files import load_checkpoint

MLPKind = Literal["gpt2", "gated"]
GATED_MODEL_TYPES = frozenset({"llama", "gemma", "gemma2", "gemma3_text", "mistral", "qwen2", "qwen3"})
GPT2_STYLE_MODEL_TYPES = frozenset({"gpt2", "gpt_neo", "gptj"})
# Buffers that old GPT-2 state dicts carry and current transformers no longer registers.
IGNORED_STATE_SUFFIXES = (".attn.bias", ".attn.masked_bias")


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
    payload = load_checkpoint(path, "state-dict file")
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


def boot_bridge(model: PreTrainedModel, name_or_path: str, tokenizer: PreTrainedTokenizerBase) -> Any:
    """A TransformerBridge around ``model`` (wrapped in place, not moved). Its ``cfg.device`` is
    the model's device (TransformerLens would otherwise record CUDA whenever it is available);
    under a device map TransformerLens derives it from the map."""
    from transformer_lens.model_bridge import TransformerBridge

    device = None if getattr(model, "hf_device_map", None) else next(model.parameters()).device
    return TransformerBridge.boot_transformers(
        name_or_path, hf_model=model, tokenizer=tokenizer, dtype=model.dtype, device=device
    )
