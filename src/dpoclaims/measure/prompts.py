"""Prompt and text sets of a pair (challenge prompts, held-out neutral text).

Empty prompts, and prompts made only of whitespace or invisible characters (zero-width
spaces, byte-order marks, other format and control characters), are dropped: a model cannot
continue nothing. Repeated prompts are dropped (the first is kept): a repeat adds no
information but narrows every bootstrap interval. A challenge set with fewer than
:data:`MIN_USABLE_PROMPTS` distinct usable prompts is refused with a
:class:`~dpoclaims.errors.TooFewPromptsError`.
"""

from __future__ import annotations

import json
import logging
import unicodedata
from pathlib import Path

from dpoclaims.errors import CheckpointError, DpoclaimsError, TooFewPromptsError, UnknownPairError
from dpoclaims.models.pairs import ModelPair

#: The fewest usable challenge prompts a pair's claims are measured on. Every claim's interval
#: is a bootstrap over prompts: with fewer than about ten distinct prompts the resamples take
#: only a handful of distinct values, so the percentile intervals (and the verdicts read from
#: them) are meaningless; with one prompt they are not even defined (NaN).
MIN_USABLE_PROMPTS = 10
#: The former name, still imported by dpoclaims.plugin.options: remove once that module imports

log = logging.getLogger(__name__)
# Unicode categories that print nothing: format (zero-width space, joiners, BOM), control.
_INVISIBLE_CATEGORIES = frozenset({"Cf", "Cc"})


class MissingPromptSet(UnknownPairError):
    """The pair names no file for a prompt set the claims need."""


class UnusablePromptSet(DpoclaimsError):
    """A prompt or text set the pair names that cannot be used (unreadable, too few usable
    entries), found when a measurement first reads it."""


def read_texts(path: Path) -> list[str]:
    """A JSON list of strings, JSONL with a ``text`` or ``prompt`` field, or plain text (a line each)."""
    if path.is_dir():
        raise CheckpointError(f"prompt file {path} is a directory; name the file itself")
    if not path.is_file():
        raise CheckpointError(f"prompt file {path} does not exist")
    try:
        raw = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise CheckpointError(
            f"prompt file {path} is not UTF-8 text ({exc.reason} at byte {exc.start}); save it as UTF-8"
        ) from None
    except OSError as exc:
        raise CheckpointError(f"cannot read prompt file {path}: {exc.strerror or exc}") from None
    try:
        if path.suffix == ".json":
            data = json.loads(raw)
            if not isinstance(data, list) or not all(isinstance(x, str) for x in data):
                raise CheckpointError(f"{path} must hold a JSON list of strings")
            return data
        if path.suffix == ".jsonl":
            from dpoclaims.measure.data import row_text

            return [
                row_text(json.loads(line), f"{path} line {number}")
                for number, line in enumerate(raw.splitlines(), start=1)
                if line.strip()
            ]
    except (ValueError, AttributeError) as exc:
        raise CheckpointError(f"cannot read prompts from {path}: {exc}") from exc
    return [line for line in raw.splitlines() if line.strip()]


def visible(text: str) -> str:
    """``text`` without whitespace at its ends and without invisible characters (format and
    control characters: zero-width spaces and joiners, byte-order marks): what a prompt shows."""
    kept = "".join(ch for ch in text if unicodedata.category(ch) not in _INVISIBLE_CATEGORIES)
    return kept.strip()


def usable_prompts(texts: list[str], origin: str, limit: int | None = None) -> list[str]:
    """``texts`` without empty, whitespace-only or invisible-only entries and without repeats
    (two prompts are the same when what they show, :func:`visible`, is the same; the first is
    kept), the first ``limit`` of them; a :class:`TooFewPromptsError` saying what was dropped
    when fewer than :data:`MIN_USABLE_PROMPTS` remain. What was dropped is logged."""
    usable: list[str] = []
    seen: set[str] = set()
    empty = invisible = repeated = 0
    for text in texts:
        shown = visible(text)
        if not text.strip():
            empty += 1
        elif not shown:
            invisible += 1
        elif shown in seen:
            repeated += 1
        else:
            seen.add(shown)
            usable.append(text)
    kept = usable[:limit] if limit else usable
    details = [f"{len(texts)} prompts"]
    if empty:
        details.append(f"{empty} of them empty or whitespace-only (dropped)")
    if invisible:
        details.append(
            f"{invisible} of them only invisible characters such as zero-width spaces or byte-order marks (dropped)"
        )
    if repeated:
        details.append(f"{repeated} repeats of an earlier prompt (dropped)")
    if len(kept) < MIN_USABLE_PROMPTS:
        if len(kept) < len(usable):
            details.append(f"a limit of {limit} kept {len(kept)} of the {len(usable)} usable ones")
        raise TooFewPromptsError(
            f"{origin} has {len(kept)} usable prompts ({'; '.join(details)}); the claims need at "
            f"least {MIN_USABLE_PROMPTS}: their bootstrap intervals resample prompts, and over fewer "
            f"distinct usable prompts they are meaningless. Add prompts to the file{' or raise the limit (--max-prompts)' if limit else ''}"
        )
    if empty or invisible or repeated:
        log.warning("%s: %s; %d distinct usable prompts remain", origin, "; ".join(details), len(usable))
    return kept


def dropped_prompts(texts: list[str]) -> dict[str, int]:
    """How many of ``texts`` :func:`usable_prompts` drops: ``{"empty": n, "repeated": m}``."""
    shown = [visible(text) for text in texts]
    nonempty = [s for s in shown if s]
    return {"empty": len(shown) - len(nonempty), "repeated": len(nonempty) - len(set(nonempty))}


def pair_texts(pair: ModelPair, key: str, limit: int | None = None) -> list[str]:
    """A pair's prompt or text set. ``challenge_prompts`` may be RealToxicityPrompts'
    ``prompts.jsonl`` (filtered to ``challenging``): its usable prompts (see
    :func:`usable_prompts`), at least :data:`MIN_USABLE_PROMPTS`. ``neutral_texts`` may be
    Wikitext-2's raw file (its lines, blank ones included, for windowed perplexity); it must
    hold some text."""
    if key not in pair.spec.extras:
        raise MissingPromptSet(
            f"pair {pair.name!r} names no {key!r} file; add it under [extras] in the pair spec "
            f"(a JSON list, JSONL or text file)"
        )
    path = pair.extra_path(key)
    if key == "challenge_prompts":
        return usable_prompts(
            challenge_texts(pair), f"the challenge prompt set {path} of pair {pair.name!r}", limit
        )
    if key == "neutral_texts" and path.suffix == ".raw":
        from dpoclaims.measure.data import load_wikitext2_test

        texts = load_wikitext2_test(path)
    else:
        texts = read_texts(path)
    if key == "neutral_texts" and not any(visible(text) for text in texts):
        raise TooFewPromptsError(
            f"the neutral text set {path} of pair {pair.name!r} holds no text ({len(texts)} empty entries): "
            "perplexity needs some; point neutral_texts at held-out text"
        )
    return texts[:limit] if limit else texts


def challenge_texts(pair: ModelPair) -> list[str]:
    """The pair's challenge prompt file as written (before :func:`usable_prompts`)."""
    from dpoclaims.measure.data import load_rtp_challenge

    return load_rtp_challenge(pair.extra_path("challenge_prompts"))
