"""Shared fixtures: tiny tokenizers, tiny random GPT-2 / Llama models and pair directories.

Everything is built offline inside the test session (no model hub). Session-scoped fixtures
are built once per pytest-xdist worker.
"""

from __future__ import annotations

import os

# No network, ever: a hub lookup must fail fast instead of retrying.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from collections.abc import Callable  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

from dpoclaims.quiet import quiet_third_party  # noqa: E402

quiet_third_party()
# pytest-xdist runs one worker per core; tiny models gain nothing from intra-op threads.
torch.set_num_threads(1)

D_MODEL = 32
N_LAYER = 2
N_HEAD = 2
N_POSITIONS = 64
TOKENIZER_VOCAB = 300


def write_spec(path: Path, **keys: Any) -> Path:
    """Write a pair spec TOML with the given top-level keys (strings) and an optional
    ``extras`` dict; return its path."""
    lines = []
    extras = keys.pop("extras", None)
    for key, value in keys.items():
        lines.append(f"{key} = {_toml_str(value)}")
    if extras is not None:
        lines.append("")
        lines.append("[extras]")
        for key, value in extras.items():
            lines.append(f"{key} = {_toml_str(value)}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def _toml_str(value: Any) -> str:
    text = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{text}"'


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A byte-level BPE tokenizer trained on the toy corpus, saved as an HF tokenizer dir."""
    from dpoclaims.organism import corpus
    from dpoclaims.organism.lm import train_tokenizer

    out = tmp_path_factory.mktemp("tokenizer")
    texts = [c.text for c in corpus.pretraining_comments(400, 0)]
    train_tokenizer(texts, TOKENIZER_VOCAB, out)
    return out


@pytest.fixture
def tokenizer(tokenizer_dir: Path):
    """A fresh tokenizer per test (generation and probing mutate ``padding_side``)."""
    from dpoclaims.pairs import load_tokenizer

    return load_tokenizer(str(tokenizer_dir))


@pytest.fixture(scope="session")
def vocab_size(tokenizer_dir: Path) -> int:
    from transformers import AutoTokenizer

    return len(AutoTokenizer.from_pretrained(tokenizer_dir))


@pytest.fixture(scope="session")
def make_gpt2(vocab_size: int) -> Callable[..., Any]:
    """``make_gpt2(seed, **config_overrides)``: a random-initialised tiny GPT2LMHeadModel."""
    from transformers import GPT2Config, GPT2LMHeadModel

    def make(seed: int = 0, **overrides: Any) -> GPT2LMHeadModel:
        kwargs: dict[str, Any] = dict(
            vocab_size=vocab_size, n_positions=N_POSITIONS, n_embd=D_MODEL, n_layer=N_LAYER, n_head=N_HEAD,
            bos_token_id=0, eos_token_id=0, pad_token_id=0,
            # larger than GPT-2's 0.02 so that logits are far from uniform (no argmax ties)
            initializer_range=0.2,
        )
        kwargs.update(overrides)
        torch.manual_seed(seed)
        return GPT2LMHeadModel(GPT2Config(**kwargs)).eval()

    return make


@pytest.fixture(scope="session")
def make_llama(vocab_size: int) -> Callable[..., Any]:
    """``make_llama(seed, **config_overrides)``: a random-initialised tiny LlamaForCausalLM."""
    from transformers import LlamaConfig, LlamaForCausalLM

    def make(seed: int = 0, **overrides: Any) -> LlamaForCausalLM:
        kwargs: dict[str, Any] = dict(
            vocab_size=vocab_size, hidden_size=D_MODEL, intermediate_size=64, num_hidden_layers=2,
            num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=N_POSITIONS,
            bos_token_id=0, eos_token_id=0, pad_token_id=0, initializer_range=0.2,
        )
        kwargs.update(overrides)
        torch.manual_seed(seed)
        return LlamaForCausalLM(LlamaConfig(**kwargs)).eval()

    return make


@dataclass(frozen=True)
class PairFiles:
    """A tiny pair on disk. ``spec`` uses the HF directory for the DPO side."""

    root: Path
    base: Path
    dpo: Path  # HF directory
    dpo_pt: Path  # Lee et al. format: {"state": state_dict}
    probe: Path
    tokenizer: Path
    spec: Path


def _save_pair(root: Path, base: Any, dpo: Any, tokenizer_dir: Path, d_model: int, probe_seed: int) -> PairFiles:
    from transformers import AutoTokenizer

    root.mkdir(parents=True, exist_ok=True)
    base.save_pretrained(root / "base")
    AutoTokenizer.from_pretrained(tokenizer_dir).save_pretrained(root / "base")
    dpo.save_pretrained(root / "dpo")
    torch.save({"state": dpo.state_dict()}, root / "dpo.pt")
    generator = torch.Generator().manual_seed(probe_seed)
    torch.save(torch.randn(d_model, generator=generator), root / "probe.pt")
    spec = write_spec(root / "pair.toml", name="tiny", base="base", dpo="dpo", probe="probe.pt", tokenizer="base",
                      extras={"notes": "notes.txt"})
    (root / "notes.txt").write_text("hello")
    return PairFiles(root, root / "base", root / "dpo", root / "dpo.pt", root / "probe.pt", root / "base", spec)


@pytest.fixture(scope="session")
def gpt2_pair_files(tmp_path_factory: pytest.TempPathFactory, make_gpt2, tokenizer_dir: Path) -> PairFiles:
    """A tiny GPT-2 pair: base (seed 0), a distinct "DPO" model (seed 1), a random probe."""
    root = tmp_path_factory.mktemp("gpt2_pair")
    return _save_pair(root, make_gpt2(0), make_gpt2(1), tokenizer_dir, D_MODEL, probe_seed=2)


@pytest.fixture(scope="session")
def llama_pair_files(tmp_path_factory: pytest.TempPathFactory, make_llama, tokenizer_dir: Path) -> PairFiles:
    """A tiny gated (Llama) pair."""
    root = tmp_path_factory.mktemp("llama_pair")
    return _save_pair(root, make_llama(0), make_llama(1), tokenizer_dir, D_MODEL, probe_seed=3)


@pytest.fixture(scope="session")
def session_cache(tmp_path_factory: pytest.TempPathFactory):
    from dpoclaims.cache import Cache

    return Cache(tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="session")
def gpt2_pair(gpt2_pair_files: PairFiles, session_cache):
    """The tiny GPT-2 pair loaded through ``load_pair`` (TransformerBridge models).

    Shared across tests: tests must only use hooks as context managers and restore weights.
    """
    from dpoclaims.pairs import load_pair

    return load_pair(gpt2_pair_files.spec, cache=session_cache)


@pytest.fixture(scope="session")
def llama_pair(llama_pair_files: PairFiles, session_cache):
    from dpoclaims.pairs import load_pair

    return load_pair(llama_pair_files.spec, cache=session_cache)


@pytest.fixture
def sample_batch(vocab_size: int) -> dict[str, torch.Tensor]:
    """Three token sequences of different lengths, right-padded, with their attention mask."""
    generator = torch.Generator().manual_seed(123)
    ids = torch.randint(1, vocab_size, (3, 9), generator=generator)
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0
    mask[2, 4:] = 0
    ids = ids.masked_fill(mask == 0, 0)
    return {"input_ids": ids, "attention_mask": mask}


def run_with_hooks(bridge: Any, batch: dict[str, torch.Tensor], hooks: list) -> torch.Tensor:
    """Logits of ``bridge.original_model`` on ``batch`` with ``hooks`` attached."""
    with torch.no_grad(), bridge.hooks(fwd_hooks=hooks):
        return bridge.original_model(**batch).logits.detach().clone()


@pytest.fixture(scope="session")
def logits_with_hooks() -> Callable[..., torch.Tensor]:
    return run_with_hooks


# --------------------------------------------------------------------------- the tiny toy organism


def tiny_toy_config(seed: int = 0):
    """A toy organism small enough to build in a few seconds."""
    from dpoclaims.dpo import DPOSettings
    from dpoclaims.organism.build import ToyConfig

    return ToyConfig(
        seed=seed, n_pretrain_comments=1500, vocab_size=600, n_layer=2, n_embd=32, n_head=2, pretrain_steps=30,
        n_probe_comments=300, n_dpo_pairs=48, n_dpo_val=16,
        dpo=DPOSettings(learning_rate=3e-5, batch_size=8, max_epochs=1, eval_every=4, patience=2, warmup_steps=1,
                        max_length=64),
        n_challenge=32, n_neutral_eval=32,
    )


@pytest.fixture(scope="session")
def tiny_toy_cache(tmp_path_factory: pytest.TempPathFactory):
    from dpoclaims.cache import Cache

    return Cache(tmp_path_factory.mktemp("toy_cache"))


@pytest.fixture(scope="session")
def tiny_toy_dir(tiny_toy_cache) -> Path:
    """The tiny toy, built through the cache (``ensure_toy``)."""
    from dpoclaims.organism.build import ensure_toy

    return ensure_toy(tiny_toy_config(), cache=tiny_toy_cache, progress=False)


@pytest.fixture(scope="session")
def tiny_toy_rebuild(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """A second, independent build of the same tiny toy config (``build_toy`` directly)."""
    from dpoclaims.organism.build import build_toy

    out = tmp_path_factory.mktemp("toy_again")
    report = build_toy(out, tiny_toy_config(), progress=False)
    return out, report
