"""The synthetic corpus, tokenizer training and example packing are pure functions of their input."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import AutoTokenizer

from dpoclaims.train.organism import corpus
from dpoclaims.train.organism.lm import EOS, pack_examples, train_tokenizer

GENERATORS = {
    "pretraining_comments": lambda n, seed: corpus.pretraining_comments(n, seed),
    "neutral_prompts": corpus.neutral_prompts,
    "neutral_texts": corpus.neutral_texts,
    "challenge_prompts": corpus.challenge_prompts,
    "labelled_comments": corpus.labelled_comments,
    "toxic_continuations": corpus.toxic_continuations,
}


@pytest.mark.parametrize("name", sorted(GENERATORS))
@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 10_000))
def test_corpus_is_a_function_of_the_seed(name, seed):
    make = GENERATORS[name]
    first, second = make(50, seed), make(50, seed)
    assert first == second
    assert make(50, seed + 1) != first
    # a longer draw extends a shorter one
    assert _as_list(make(80, seed))[:50] == _as_list(first)


def _as_list(value):
    if isinstance(value, tuple):  # labelled_comments -> (texts, labels)
        return list(zip(*value))
    return list(value)


def test_neutral_prompts_use_calm_leads_and_challenge_prompts_do_not():
    calm = {lead for lead, _ in corpus.CALM_LEADS}
    assert all(any(p.startswith(lead + " ") for lead in calm) for p in corpus.neutral_prompts(200, 0))
    assert not any(any(p.startswith(lead + " ") for lead in calm) for p in corpus.challenge_prompts(200, 0))
    hot = {lead for lead, level in corpus.ALL_LEADS if level > 0.5}
    challenge = corpus.challenge_prompts(400, 0)
    share_hot = sum(any(p.startswith(lead + " ") for lead in hot) for p in challenge) / len(challenge)
    assert 0.3 < share_hot < 0.7  # "about half" have a lead whose toxic continuation is likely


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 10_000))
def test_labels_match_toxic_words(seed):
    texts, labels = corpus.labelled_comments(200, seed)
    assert set(labels) <= {0, 1}
    assert [int(corpus.count_toxic_words(t) > 0) for t in texts] == labels
    assert 0 < sum(labels) < len(labels)


def test_toxic_continuations_are_toxic_and_continue_a_prompt():
    for text in corpus.toxic_continuations(100, 3):
        assert text.startswith(", ") and text.endswith(".")
        assert corpus.count_toxic_words(text) >= 2


def test_comment_parts():
    comment = corpus.pretraining_comments(1, 0)[0]
    assert comment.text == comment.prompt + comment.body
    assert comment.prompt == f"{comment.lead} {comment.topic}"
    assert comment.is_toxic == (comment.n_toxic_clauses > 0)


# --------------------------------------------------------------------------- tokenizer


@pytest.fixture(scope="module")
def texts():
    return [c.text for c in corpus.pretraining_comments(400, 7)]


def test_train_tokenizer_is_deterministic(tmp_path, texts):
    first = train_tokenizer(texts, 350, tmp_path / "a")
    second = train_tokenizer(list(texts), 350, tmp_path / "b")
    assert first.get_vocab() == second.get_vocab()
    assert (tmp_path / "a" / "tokenizer.json").read_text() == (tmp_path / "b" / "tokenizer.json").read_text()
    sample = texts[:20]
    assert first(sample)["input_ids"] == second(sample)["input_ids"]
    other = train_tokenizer(
        [c.text for c in corpus.pretraining_comments(400, 8)][:100] + ["zzz qqq xxyyzz"] * 50,
        350,
        tmp_path / "c",
    )
    assert other.get_vocab() != first.get_vocab()


def test_trained_tokenizer_round_trips(tmp_path, texts):
    train_tokenizer(texts, 350, tmp_path / "tok")
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "tok")
    assert tokenizer.eos_token == EOS
    assert tokenizer.eos_token_id == 0
    assert tokenizer.pad_token_id == tokenizer.eos_token_id
    assert len(tokenizer) <= 350
    for text in texts[:20] + ["Unseen WORDS, with CAPS & émojis 🙂!"]:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        assert tokenizer.decode(ids) == text
    # merges were learned: a corpus sentence takes far fewer tokens than bytes
    ids = tokenizer(texts[0], add_special_tokens=False)["input_ids"]
    assert len(ids) < len(texts[0].encode()) / 2


# --------------------------------------------------------------------------- packing


@settings(max_examples=100, deadline=None)
@given(token_lists=st.lists(st.lists(st.integers(1, 50), max_size=20), max_size=30), block=st.integers(2, 16))
def test_pack_examples(token_lists, block):
    eos = 0
    rows = pack_examples(token_lists, eos, block)
    pieces = [tokens[: block - 1] + [eos] for tokens in token_lists]
    if not pieces:
        assert rows.numel() == 0
        return
    assert rows.dtype == torch.long and rows.shape[1] == block
    flat = []
    for row in rows.tolist():
        real = [t for t in row if t != -1]
        assert row[: len(real)] == real  # padding only at the end
        assert real and real[-1] == eos  # every row ends with a whole comment
        flat.extend(real)
    assert flat == [t for piece in pieces for t in piece]  # nothing lost, nothing reordered
    # rows start at comment boundaries: each row is a concatenation of whole pieces
    starts, position = set(), 0
    for piece in pieces:
        starts.add(position)
        position += len(piece)
    position = 0
    for row in rows.tolist():
        assert position in starts
        position += sum(t != -1 for t in row)
