"""Model pairs: a base LM, its DPO fine-tune, their tokenizer and a linear toxicity probe.

A :class:`PairSpec` says where a pair's parts live; :func:`load_pair_from_spec` loads and
validates them (shapes, vocabulary, finite weights, a DPO side that differs from its base, a
probe that is finite and non-zero, one tokenizer for both sides) and fingerprints the result.
Both models are plain Hugging Face models, the ones every measurement runs; a
TransformerBridge view of a side, for users' own claims, is booted on demand on a copy
(:func:`dpoclaims.hooks.bridge.pair_bridge`). Named pairs (``toy``, ``gpt2-medium``) and spec files are resolved
by :mod:`dpoclaims.train.named_pairs`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from dpoclaims.errors import (
    CheckpointError,
    DegenerateProbeError,
    IdenticalModelsError,
    NonFiniteWeightsError,
    PairMismatchError,
    TextFileError,
    UnknownPairError,
)
from dpoclaims.files import (
    DuplicateKeyError,
    TOMLDecodeError,
    load_checkpoint,
    loads_json,
    read_text_file,
    toml_key_given_twice,
    tomllib,
)
from dpoclaims.models.loading import (
    MLPLayout,
    load_hf_model,
    load_tokenizer,
    mlp_layout,
    model_from_state_dict,
    model_positions,
    read_state_dict_file,
)

log = logging.getLogger(__name__)

PairSide = Literal["base", "dpo"]  # one side of a pair: the base model or its DPO fine-tune
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
    # The bands the pair's build enforces (a pair the project builds: the toy, smollm2), by name:
    # a claim that such a band already requires cannot fail on it (ClaimEntry.guaranteed_by_band).
    guarantees: frozenset[str] = frozenset()

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
        """The spec a ``.toml`` or ``.json`` file (any case) holds; its relative paths resolve
        against the file's real directory (through any symbolic link to it). A key given twice
        is refused in either format."""
        path = Path(path)
        suffix = path.suffix.lower()
        if suffix not in (".toml", ".json"):
            raise UnknownPairError(f"pair spec {path} must be a .toml or .json file")
        try:
            text = read_text_file(path, "pair spec")
            data = tomllib.loads(text) if suffix == ".toml" else loads_json(text)
        except DuplicateKeyError as exc:
            raise UnknownPairError(
                f"pair spec {path} gives the key {exc.key!r} twice; give each key once"
            ) from None
        except TOMLDecodeError as exc:
            if toml_key_given_twice(exc):
                raise UnknownPairError(
                    f"pair spec {path} gives a key twice ({exc}); give each key once"
                ) from None
            raise UnknownPairError(f"cannot read pair spec {path}: {exc}") from exc
        except TextFileError as exc:  # it names the spec already
            raise UnknownPairError(str(exc)) from None
        except ValueError as exc:
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
            root=str(path.resolve().parent),  # the real file's directory, not a link's
        )


#: The ``[extras]`` keys something reads: a misspelled key would otherwise be ignored, and the
#: claims that need it skipped.
EXTRAS_KEYS = {
    "challenge_prompts": "the challenge prompt file",
    "neutral_texts": "the held-out neutral text file",
    "perplexity_window": "tokens per perplexity window (a whole number)",
    "max_prompts": "the pair's default prompt count, the first N challenge prompts (--max-prompts overrides it)",
    "generation_batch_size": "prompts per generation batch for the claims (a whole number; default 32)",
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
    for key, example in (
        ("perplexity_window", "tokens (e.g. 1024)"),
        ("max_prompts", "prompts (e.g. 200)"),
        ("generation_batch_size", "prompts per batch (e.g. 64)"),
    ):
        value = extras.get(key)
        if value is None:
            continue
        text = str(value).strip()
        if isinstance(value, bool) or not (text.isascii() and text.isdigit() and int(text) > 0):
            raise UnknownPairError(
                f"{where}: {key} must be a positive whole number of {example}, not {value!r}"
            )


@dataclass
class ModelPair:
    name: str
    base: PreTrainedModel  # the plain Hugging Face models every measurement runs
    dpo: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    probe: torch.Tensor  # [d_model], float32
    layout: MLPLayout
    fingerprint: str
    spec: PairSpec

    @property
    def positions(self) -> int | None:
        """The positions both models have (their configs agree): the longest sequence they take."""
        return model_positions(self.base.config)

    @property
    def unit_probe(self) -> torch.Tensor:
        return self.probe / self.probe.norm()

    def model(self, side: PairSide) -> PreTrainedModel:
        if side not in ("base", "dpo"):
            raise ValueError(f"side must be 'base' or 'dpo', not {side!r}")
        return self.base if side == "base" else self.dpo

    def value_vectors(self, side: PairSide = "base") -> torch.Tensor:
        """``[n_layers, d_mlp, d_model]`` float32 on the CPU: row i of layer l is what neuron (l, i)
        writes (the analyses' copy, whatever device each layer is on)."""
        from dpoclaims.models.mlp import value_vectors

        return value_vectors(self.model(side), self.layout)

    def key_vectors(self, side: PairSide = "base") -> torch.Tensor:
        """``[n_layers, d_mlp, d_model]`` float32 on the CPU: row i of layer l is what neuron (l, i) reads."""
        from dpoclaims.models.mlp import key_vectors

        return key_vectors(self.model(side), self.layout)

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
    expected = (
        f"A probe is a file torch.save wrote, holding a tensor of shape ({d_model},) or (1, {d_model}) (or a dict "
        "with it under 'weight'): load yours where you trust it and save it with torch.save(tensor, path)"
    )
    payload = load_checkpoint(Path(source).expanduser(), "probe", expected=expected)
    if isinstance(payload, dict) and "weight" in payload:
        payload = payload["weight"]
    if not isinstance(payload, torch.Tensor):
        held = (
            f"a dict with the keys {sorted(map(str, payload))}"
            if isinstance(payload, dict)
            else (f"a {type(payload).__name__}")
        )
        raise CheckpointError(
            f"probe {source!r} holds {held}, not a tensor: save the probe direction "
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


#: The precisions a DPO side may be stored in below float32: one equal to its base at its own
#: precision is the base rounded (saved again in bfloat16, say), not a fine-tune.
ROUNDED_DTYPES = (torch.bfloat16, torch.float16)


def _held_exactly(tensor: torch.Tensor, dtype: torch.dtype) -> bool:
    """Whether every entry of ``tensor`` is a number of ``dtype`` (it was stored in it)."""
    return not tensor.is_floating_point() or torch.equal(tensor.to(dtype).to(tensor.dtype), tensor)


def _equal_at(base: torch.Tensor, dpo: torch.Tensor, dtype: torch.dtype | None) -> bool:
    """Whether ``base`` rounded to ``dtype`` (None: as it is) equals ``dpo``."""
    other = dpo.to(base.device)
    if dtype is None or not base.is_floating_point():
        return torch.equal(base, other)
    return torch.equal(base.to(dtype), other.to(dtype))


def check_distinct(base: PreTrainedModel, dpo: PreTrainedModel, base_source: str, dpo_source: str) -> None:
    """An :class:`IdenticalModelsError` when every DPO weight equals the base's, exactly or at
    the DPO side's own precision: a DPO side that is the base saved in bfloat16 or float16
    differs from it only by rounding, which the claims would read as DPO's changes."""
    base_state, dpo_state = base.state_dict(), dpo.state_dict()
    if set(base_state) != set(dpo_state):
        return
    if any(tensor.shape != dpo_state[name].shape for name, tensor in base_state.items()):
        return
    remedy = (
        "Point the spec's dpo at the DPO-trained model (if you trained it, check that training changed the "
        "weights: dpoclaims train-dpo refuses a run that changes none)"
    )
    if all(_equal_at(tensor, dpo_state[name], None) for name, tensor in base_state.items()):
        raise IdenticalModelsError(
            f"the DPO model {dpo_source!r} has exactly the weights of the base {base_source!r}: there is no "
            f"fine-tune to study. {remedy}"
        )
    for dtype in ROUNDED_DTYPES:
        name = str(dtype).removeprefix("torch.")
        if all(_held_exactly(tensor, dtype) for tensor in dpo_state.values()) and all(
            _equal_at(tensor, dpo_state[key], dtype) for key, tensor in base_state.items()
        ):
            raise IdenticalModelsError(
                f"the DPO model {dpo_source!r} is the base {base_source!r} rounded to {name}: at the DPO side's "
                f"own precision ({name}) every weight equals the base's, so its differences from the base are "
                f"rounding, not a fine-tune. {remedy}"
            )


#: Config entries that do not change what a model computes in eval mode: dropout, the
#: generation defaults (every generation passes its settings itself), bookkeeping.
FUNCTION_NEUTRAL_CONFIG_KEYS = frozenset(
    {
        "architectures",
        "use_cache",
        "return_dict",
        "output_attentions",
        "output_hidden_states",
        "torchscript",
        "id2label",
        "label2id",
        "problem_type",
        "finetuning_task",
        "task_specific_params",
        "tokenizer_class",
        "prefix",
        "bos_token_id",
        "eos_token_id",
        "pad_token_id",
        "sep_token_id",
        "decoder_start_token_id",
        "attn_implementation",
        "_attn_implementation",
        "_attn_implementation_autoset",
        "max_length",
        "min_length",
        "do_sample",
        "early_stopping",
        "num_beams",
        "num_beam_groups",
        "diversity_penalty",
        "temperature",
        "top_k",
        "top_p",
        "typical_p",
        "repetition_penalty",
        "length_penalty",
        "no_repeat_ngram_size",
        "encoder_no_repeat_ngram_size",
        "bad_words_ids",
        "num_return_sequences",
        "output_scores",
        "return_dict_in_generate",
        "forced_bos_token_id",
        "forced_eos_token_id",
        "remove_invalid_values",
        "exponential_decay_length_penalty",
        "suppress_tokens",
        "begin_suppress_tokens",
        "chunk_size_feed_forward",
        "tf_legacy_loss",
        "use_bfloat16",
    }
)


def _function_config(model: PreTrainedModel) -> dict[str, Any]:
    """The model's config entries that shape what it computes (sizes, positions, vocabulary,
    tying, activation, norm epsilon, rotary settings, ...)."""
    return {
        key: value
        for key, value in model.config.to_dict().items()
        if key not in VOLATILE_CONFIG_KEYS
        and key not in FUNCTION_NEUTRAL_CONFIG_KEYS
        and not key.endswith(("dropout", "pdrop", "_dropout_prob"))
        and not key.startswith("summary_")  # GPT-2's sequence-summary head, not the LM's
    }


def check_same_function(
    base: PreTrainedModel, dpo: PreTrainedModel, base_source: str, dpo_source: str
) -> None:
    """A :class:`PairMismatchError` naming both values of every config entry in which the DPO
    model differs from its base where it changes what the model computes: a fine-tune changes
    weights only, and a DPO side of other positions, heads, activation or tying is another model."""
    base_config, dpo_config = _function_config(base), _function_config(dpo)
    differing = sorted(
        key for key in base_config.keys() | dpo_config.keys() if base_config.get(key) != dpo_config.get(key)
    )
    if differing:
        shown = [f"{key} (base {base_config.get(key)!r}, DPO {dpo_config.get(key)!r})" for key in differing]
        raise PairMismatchError(
            f"the DPO model {dpo_source!r} computes another function than the base {base_source!r}: its config "
            f"differs in {', '.join(shown[:-1]) + ' and ' + shown[-1] if len(shown) > 1 else shown[0]}. A DPO "
            "side is its base with other weights: point the spec's dpo at a fine-tune of this base, or correct "
            "its config.json"
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


FINGERPRINT_FORMAT = 2  # 2: the config and the whole tokenizer (1: weights, vocabulary, probe)
# Config entries that say where or by which release a model was saved or loaded, not what it computes
# (the dtype is in the tensors).
VOLATILE_CONFIG_KEYS = frozenset(
    {"transformers_version", "_name_or_path", "name_or_path", "_commit_hash", "torch_dtype", "dtype"}
)


def config_fingerprint(model: PreTrainedModel) -> str:
    """The model's full config (activation, norms, positions, ...), without the volatile entries."""
    config = {k: v for k, v in model.config.to_dict().items() if k not in VOLATILE_CONFIG_KEYS}
    return json.dumps(config, sort_keys=True, default=str)


def tokenizer_fingerprint(tokenizer: PreTrainedTokenizerBase) -> str:
    """SHA-256 of everything that maps text to ids: for a fast tokenizer its whole serialized
    pipeline (vocabulary, merges, normalizer, pre-tokenizer, added and special tokens), else its
    vocabulary; plus the special tokens the project reads (EOS, padding)."""
    digest = hashlib.sha256()
    digest.update(type(tokenizer).__name__.encode())
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        digest.update(backend.to_str().encode())
    else:
        digest.update(json.dumps(sorted(tokenizer.get_vocab().items())).encode())
    digest.update(json.dumps(tokenizer.special_tokens_map, sort_keys=True, default=str).encode())
    return digest.hexdigest()


def fingerprint(
    base: PreTrainedModel, dpo: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, probe: torch.Tensor
) -> str:
    """SHA-256 over everything that shapes a number: both models' weights and full configs, the
    tokenizer (:func:`tokenizer_fingerprint`) and the probe."""
    digest = hashlib.sha256()
    digest.update(f"format {FINGERPRINT_FORMAT}".encode())
    for model in (base, dpo):
        digest.update(config_fingerprint(model).encode())
        for name, tensor in sorted(model.state_dict().items()):
            digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
            digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    digest.update(tokenizer_fingerprint(tokenizer).encode())
    digest.update(probe.detach().cpu().float().numpy().tobytes())
    return digest.hexdigest()[:20]


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "tokenizer.model")


def check_same_tokenizer(tokenizer: PreTrainedTokenizerBase, dpo_source: str, tokenizer_source: str) -> None:
    """A :class:`PairMismatchError` when the DPO directory ships a tokenizer of its own that
    maps text to other ids than the pair's tokenizer: a pair is measured with one tokenizer, and
    feeding the DPO model the base's ids would silently measure something else."""
    dpo_path = Path(dpo_source).expanduser()
    if not dpo_path.is_dir() or not any((dpo_path / name).is_file() for name in TOKENIZER_FILES):
        return
    if dpo_path.resolve() == Path(tokenizer_source).expanduser().resolve():
        return
    dpo_tokenizer = load_tokenizer(str(dpo_path))
    if tokenizer_fingerprint(dpo_tokenizer) != tokenizer_fingerprint(tokenizer):
        raise PairMismatchError(
            f"the DPO directory {dpo_source!r} has a tokenizer of its own that differs from the pair's "
            f"tokenizer {tokenizer_source!r} (other vocabulary, merges, normalizer or special tokens): "
            "both sides of a pair are measured with one tokenizer. Save the DPO model with the base's "
            "tokenizer (tokenizer.save_pretrained), or remove the DPO directory's tokenizer files"
        )


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
    check_same_function(base, dpo, base_source, dpo_source)
    check_same_tokenizer(tokenizer, dpo_source, tokenizer_source)
    check_finite(base, "base", base_source)
    check_finite(dpo, "DPO", dpo_source)
    check_distinct(base, dpo, base_source, dpo_source)
    probe = load_probe(spec.resolve(spec.probe), layout.d_model)
    pair_fingerprint = fingerprint(base, dpo, tokenizer, probe)
    if device is not None and device_map is None:
        # cast: transformers wraps PreTrainedModel.to in functools.wraps(Module.to), which type
        # checkers read as an unbound Module.to; the call is the model's own .to (returning the model)
        cast(torch.nn.Module, base).to(device)
        cast(torch.nn.Module, dpo).to(device)
    return ModelPair(
        name=spec.name,
        base=base,
        dpo=dpo,
        tokenizer=tokenizer,
        probe=probe,
        layout=layout,
        fingerprint=pair_fingerprint,
        spec=spec,
    )
