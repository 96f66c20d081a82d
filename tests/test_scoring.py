"""Toxicity scorers."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dpoclaims.errors import OptionError
from dpoclaims.measure.scoring import LexiconScorer, ProfanityCheckScorer, Scorer, get_scorer
from dpoclaims.train.organism import corpus


def test_lexicon_counts_and_scores():
    scorer = LexiconScorer(corpus.TOXIC_WORDS)
    cases = {
        "the plan seems reasonable": 0,
        "you idiot": 1,
        "What a JOKE!": 1,
        "damn, you stupid moron.": 3,
        "hello hellish shell": 0,  # whole words only
        "": 0,
    }
    for text, count in cases.items():
        assert scorer.count(text) == count, text
    assert scorer.score(list(cases)) == [pytest.approx(1 - 0.5**c) for c in cases.values()]
    assert scorer.score(["fine words"]) == [0.0]
    assert scorer.score(["you idiot"]) == [0.5]
    assert scorer.score(["idiot idiot"]) == [0.75]
    assert scorer.score([]) == []


def test_lexicon_custom_words_are_case_insensitive():
    scorer = LexiconScorer(["Banana", "kiwi"])
    assert scorer.words == frozenset({"banana", "kiwi"})
    assert scorer.count("BANANA and kiwi, not idiot") == 2


@settings(max_examples=100, deadline=None)
@given(
    words=st.lists(st.sampled_from(sorted(corpus.TOXIC_WORDS)), max_size=6),
    filler=st.lists(st.sampled_from(["the", "plan", "is", "fine", "and", "clear"]), max_size=6),
)
def test_lexicon_score_is_one_minus_half_to_the_count(words, filler):
    text = " ".join(words + filler)
    scorer = LexiconScorer(corpus.TOXIC_WORDS)
    assert scorer.count(text) == len(words)
    assert scorer.score([text])[0] == pytest.approx(1 - 0.5 ** len(words))
    assert 0.0 <= scorer.score([text])[0] < 1.0


def test_lexicon_agrees_with_corpus_labels():
    texts, labels = corpus.labelled_comments(300, 4)
    scores = LexiconScorer(corpus.TOXIC_WORDS).score(texts)
    assert [int(s > 0) for s in scores] == labels


def test_profanity_check_ranks_toxic_above_neutral():
    scorer = ProfanityCheckScorer()
    toxic = scorer.score(corpus.toxic_continuations(60, 0))
    neutral = scorer.score(corpus.neutral_texts(60, 0))
    assert len(toxic) == len(neutral) == 60
    assert all(0.0 <= s <= 1.0 for s in toxic + neutral)
    assert sum(toxic) / len(toxic) > sum(neutral) / len(neutral) + 0.3
    assert sorted(toxic)[len(toxic) // 2] > sorted(neutral)[len(neutral) // 2]
    assert scorer.score([]) == []


def test_lexicon_scorer_needs_the_pairs_word_list():
    with pytest.raises(OptionError, match="profanity-check"):
        LexiconScorer([])
    with pytest.raises(OptionError, match="word list"):
        get_scorer("lexicon")


def test_get_scorer():
    lexicon = get_scorer("lexicon", lexicon=corpus.TOXIC_WORDS)
    assert isinstance(lexicon, LexiconScorer) and isinstance(lexicon, Scorer)
    assert isinstance(get_scorer("profanity-check"), ProfanityCheckScorer)
    with pytest.raises(OptionError, match="no-such-scorer") as info:
        get_scorer("no-such-scorer")
    assert all(name in str(info.value) for name in ("lexicon", "profanity-check", "detoxify", "perspective"))
