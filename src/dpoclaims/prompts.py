"""Prompt and text sets of a pair (challenge prompts, held-out neutral text).

Empty and whitespace-only prompts are dropped (a model cannot continue nothing); a challenge
set with fewer than :data:`MIN_PROMPTS` usable prompts is refused with a
:class:`~dpoclaims.errors.TooFewPromptsError`.
"""

from __future__ import annotations

import json
from pathlib import Path

from dpoclaims.errors import CheckpointError, TooFewPromptsError, UnknownPairError
from dpoclaims.pairs import ModelPair

#: The fewest usable challenge prompts a pair's claims are measured on. Every claim's interval
#: is a bootstrap over prompts: with fewer than about ten distinct prompts the resamples take
#: only a handful of distinct values, so the percentile intervals (and the verdicts read from
#: them) are meaningless; with one prompt they are not even defined (NaN).
MIN_PROMPTS = 10


class MissingPromptSet(UnknownPairError):
    """The pair names no file for a prompt set the claims need."""


def read_texts(path: Path) -> list[str]:
    """A JSON list of strings, JSONL with a ``text`` or ``prompt`` field, or plain text (a line each)."""
    if not path.is_file():
        raise CheckpointError(f"prompt file {path} does not exist")
    raw = path.read_text()
    try:
        if path.suffix == ".json":
            data = json.loads(raw)
            if not isinstance(data, list) or not all(isinstance(x, str) for x in data):
                raise CheckpointError(f"{path} must hold a JSON list of strings")
            return data
        if path.suffix == ".jsonl":
            from dpoclaims.data import row_text

            return [
                row_text(json.loads(line), f"{path} line {number}")
                for number, line in enumerate(raw.splitlines(), start=1)
                if line.strip()
            ]
    except (ValueError, AttributeError) as exc:
        raise CheckpointError(f"cannot read prompts from {path}: {exc}") from exc
    return [line for line in raw.splitlines() if line.strip()]


def usable_prompts(texts: list[str], origin: str, limit: int | None = None) -> list[str]:
    """``texts`` without empty or whitespace-only entries, the first ``limit`` of them; a
    :class:`TooFewPromptsError` saying what was dropped when fewer than :data:`MIN_PROMPTS` remain."""
    usable = [text for text in texts if text.strip()]
    empty = len(texts) - len(usable)
    kept = usable[:limit] if limit else usable
    if len(kept) < MIN_PROMPTS:
        details = [f"{len(texts)} prompts"]
        if empty:
            details.append(f"{empty} of them empty or whitespace-only (dropped)")
        if len(kept) < len(usable):
            details.append(f"a limit of {limit} kept {len(kept)} of the {len(usable)} usable ones")
        raise TooFewPromptsError(
            f"{origin} has {len(kept)} usable prompts ({'; '.join(details)}); the claims need at least "
            f"{MIN_PROMPTS}: their bootstrap intervals resample prompts, and over fewer they are meaningless. "
            f"Add prompts to the file{' or raise the limit (--max-prompts)' if limit else ''}"
        )
    return kept


def pair_texts(pair: ModelPair, key: str, limit: int | None = None) -> list[str]:
    """A pair's prompt or text set. ``challenge_prompts`` may be RealToxicityPrompts'
    ``prompts.jsonl`` (filtered to ``challenging``): its usable prompts (see
    :func:`usable_prompts`), at least :data:`MIN_PROMPTS`. ``neutral_texts`` may be
    Wikitext-2's raw file (its lines, blank ones included, for windowed perplexity); it must
    hold some text."""
    if key not in pair.spec.extras:
        raise MissingPromptSet(
            f"pair {pair.name!r} names no {key!r} file; add it under [extras] in the pair spec "
            f"(a JSON list, JSONL or text file)"
        )
    path = pair.extra_path(key)
    if key == "challenge_prompts":
        from dpoclaims.data import load_rtp_challenge

        texts = load_rtp_challenge(path)
        return usable_prompts(texts, f"the challenge prompt set {path} of pair {pair.name!r}", limit)
    if key == "neutral_texts" and path.suffix == ".raw":
        from dpoclaims.data import load_wikitext2_test

        texts = load_wikitext2_test(path)
    else:
        texts = read_texts(path)
    if key == "neutral_texts" and not any(text.strip() for text in texts):
        raise TooFewPromptsError(
            f"the neutral text set {path} of pair {pair.name!r} holds no text ({len(texts)} empty entries): "
            "perplexity needs some; point neutral_texts at held-out text"
        )
    return texts[:limit] if limit else texts
