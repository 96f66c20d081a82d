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
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

# huggingface_hub reads HF_HUB_OFFLINE once, at import; a plugin loaded before this file
# (the root conftest) may already have imported it, so set the flag it consults directly.
import huggingface_hub.constants  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from tiny import (  # noqa: E402  (tests/tiny.py: plain helpers and constants)
    D_MODEL,
    N_HEAD,
    N_LAYER,
    N_POSITIONS,
    TOKENIZER_VOCAB,
    PairFiles,
    save_pair,
    tiny_toy_config,
)

from dpoclaims.quiet import quiet_third_party  # noqa: E402

huggingface_hub.constants.HF_HUB_OFFLINE = True

quiet_third_party()
# pytest-xdist runs one worker per core; tiny models gain nothing from intra-op threads.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A byte-level BPE tokenizer trained on the toy corpus, saved as an HF tokenizer dir."""
    from dpoclaims.train.organism import corpus
    from dpoclaims.train.organism.lm import train_tokenizer

    out = tmp_path_factory.mktemp("tokenizer")
    texts = [c.text for c in corpus.pretraining_comments(400, 0)]
    train_tokenizer(texts, TOKENIZER_VOCAB, out)
    return out


@pytest.fixture
def tokenizer(tokenizer_dir: Path):
    """A fresh tokenizer per test (generation and probing mutate ``padding_side``)."""
    from dpoclaims.models.loading import load_tokenizer

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
            vocab_size=vocab_size,
            n_positions=N_POSITIONS,
            n_embd=D_MODEL,
            n_layer=N_LAYER,
            n_head=N_HEAD,
            bos_token_id=0,
            eos_token_id=0,
            pad_token_id=0,
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
            vocab_size=vocab_size,
            hidden_size=D_MODEL,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            num_key_value_heads=2,
            max_position_embeddings=N_POSITIONS,
            bos_token_id=0,
            eos_token_id=0,
            pad_token_id=0,
            initializer_range=0.2,
        )
        kwargs.update(overrides)
        torch.manual_seed(seed)
        return LlamaForCausalLM(LlamaConfig(**kwargs)).eval()

    return make


@pytest.fixture(scope="session")
def gpt2_pair_files(tmp_path_factory: pytest.TempPathFactory, make_gpt2, tokenizer_dir: Path) -> PairFiles:
    """A tiny GPT-2 pair: base (seed 0), a distinct "DPO" model (seed 1), a random probe."""
    root = tmp_path_factory.mktemp("gpt2_pair")
    return save_pair(root, make_gpt2(0), make_gpt2(1), tokenizer_dir, D_MODEL, probe_seed=2)


@pytest.fixture(scope="session")
def llama_pair_files(tmp_path_factory: pytest.TempPathFactory, make_llama, tokenizer_dir: Path) -> PairFiles:
    """A tiny gated (Llama) pair."""
    root = tmp_path_factory.mktemp("llama_pair")
    return save_pair(root, make_llama(0), make_llama(1), tokenizer_dir, D_MODEL, probe_seed=3)


@pytest.fixture(scope="session")
def session_cache(tmp_path_factory: pytest.TempPathFactory):
    from dpoclaims.cache import Cache

    return Cache(tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="session")
def gpt2_pair(gpt2_pair_files: PairFiles, session_cache):
    """The tiny GPT-2 pair loaded through ``load_pair`` (plain Hugging Face models).

    Shared across tests: tests must only use hooks as context managers and restore weights.
    """
    from dpoclaims.train.named_pairs import load_pair

    return load_pair(gpt2_pair_files.spec, cache=session_cache)


@pytest.fixture(scope="session")
def llama_pair(llama_pair_files: PairFiles, session_cache):
    from dpoclaims.train.named_pairs import load_pair

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


# --------------------------------------------------------------------------- the tiny toy organism


@pytest.fixture(scope="session")
def tiny_toy_cache(tmp_path_factory: pytest.TempPathFactory):
    from dpoclaims.cache import Cache

    return Cache(tmp_path_factory.mktemp("toy_cache"))


@pytest.fixture(scope="session")
def tiny_toy_dir(tiny_toy_cache) -> Path:
    """The tiny toy, built through the cache (``ensure_toy``)."""
    from dpoclaims.train.organism.build import ensure_toy

    return ensure_toy(tiny_toy_config(), cache=tiny_toy_cache, progress=False)


@pytest.fixture(scope="session")
def tiny_toy_rebuild(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """A second, independent build of the same tiny toy config (``build_toy`` directly)."""
    from dpoclaims.train.organism.build import build_toy

    out = tmp_path_factory.mktemp("toy_again")
    report = build_toy(out, tiny_toy_config(), progress=False)
    return out, report
