"""Prompt and text sets of a pair (challenge prompts, held-out neutral text)."""

from __future__ import annotations

import json
from pathlib import Path

from dpoclaims.errors import CheckpointError, UnknownPairError
from dpoclaims.pairs import ModelPair


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


def pair_texts(pair: ModelPair, key: str, limit: int | None = None) -> list[str]:
    """A pair's prompt or text set. ``challenge_prompts`` may be RealToxicityPrompts'
    ``prompts.jsonl`` (filtered to ``challenging``); ``neutral_texts`` may be Wikitext-2's raw
    file (its lines, for windowed perplexity)."""
    if key not in pair.spec.extras:
        raise MissingPromptSet(
            f"pair {pair.name!r} names no {key!r} file; add it under [extras] in the pair spec "
            f"(a JSON list, JSONL or text file)"
        )
    path = pair.extra_path(key)
    if key == "challenge_prompts":
        from dpoclaims.data import load_rtp_challenge

        texts = load_rtp_challenge(path)
    elif key == "neutral_texts" and path.suffix == ".raw":
        from dpoclaims.data import load_wikitext2_test

        texts = load_wikitext2_test(path)
    else:
        texts = read_texts(path)
    return texts[:limit] if limit else texts
