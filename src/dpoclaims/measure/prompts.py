"""Prompt and text sets of a pair (challenge prompts, held-out neutral text).

Empty prompts, and prompts made only of whitespace or invisible characters (zero-width
spaces, byte-order marks, other format and control characters), are dropped: a model cannot
continue nothing. Repeated prompts are dropped (the first is kept): a repeat adds no
information but narrows every bootstrap interval. Two prompts are the same when they show the
same text in Unicode NFC (composed and decomposed accents alike). A challenge set with fewer than
:data:`MIN_USABLE_PROMPTS` distinct usable prompts is refused with a
:class:`~dpoclaims.errors.TooFewPromptsError`.
"""

from __future__ import annotations

import logging
import unicodedata
from dataclasses import dataclass
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
    """The texts of a prompt or text file: a JSON list of strings, JSONL with a ``text`` or
    ``prompt`` field, or plain text (a line each), in whatever encoding and format it is
    (:func:`dpoclaims.measure.data.read_prompt_file`, the one reader of prompt files)."""
    from dpoclaims.measure.data import read_prompt_file

    if path.is_dir():
        raise CheckpointError(f"prompt file {path} is a directory; name the file itself")
    if not path.is_file():
        raise CheckpointError(f"prompt file {path} does not exist")
    return read_prompt_file(path)[0]


def visible(text: str) -> str:
    """``text`` without whitespace at its ends and without invisible characters (format and
    control characters: zero-width spaces and joiners, byte-order marks): what a prompt shows."""
    kept = "".join(ch for ch in text if unicodedata.category(ch) not in _INVISIBLE_CATEGORIES)
    return kept.strip()


def shown_as(text: str) -> str:
    """What two prompts are compared by: what they show (:func:`visible`) in Unicode NFC, so
    that the same words in composed and decomposed form (NFC, NFD) are one prompt."""
    return unicodedata.normalize("NFC", visible(text))


#: How repeats are found, as the report says it.
REPEATS_COMPARED = "prompts are compared after Unicode NFC normalisation, without invisible characters or surrounding whitespace"


@dataclass(frozen=True)
class PromptSelection:
    """What :func:`select_prompts` kept of a prompt file and what it dropped, and why."""

    n_read: int
    usable: list[str]  # distinct usable prompts, in file order
    kept: list[str]  # the first ``limit`` of them
    limit: int | None
    empty: list[int]  # entries (1-based) empty or whitespace-only
    invisible: list[int]  # entries of invisible characters only
    repeats: list[tuple[int, int]]  # (entry, the earlier entry it repeats)

    @property
    def dropped(self) -> dict[str, int]:
        """``{"empty": n, "repeated": m}``: empty or only invisible characters; repeats."""
        return {"empty": len(self.empty) + len(self.invisible), "repeated": len(self.repeats)}

    def details(self) -> list[str]:
        details = [f"{self.n_read} prompts"]
        if self.empty:
            details.append(f"{len(self.empty)} of them empty or whitespace-only (dropped)")
        if self.invisible:
            details.append(
                f"{len(self.invisible)} of them only invisible characters such as zero-width spaces or "
                "byte-order marks (dropped)"
            )
        if self.repeats:
            details.append(f"{len(self.repeats)} repeats of an earlier prompt (dropped)")
        return details

    def note(self, file_name: str) -> str:
        """One sentence for the report: what was read, what was dropped and why, what remains."""
        dropped = []
        if self.repeats:
            shown = "; ".join(f"entry {entry} repeats entry {first}" for entry, first in self.repeats[:5])
            more = f"; and {len(self.repeats) - 5} more" if len(self.repeats) > 5 else ""
            noun = "repeat" if len(self.repeats) == 1 else "repeats"
            dropped.append(
                f"{len(self.repeats)} {noun} of an earlier prompt ({shown}{more}; {REPEATS_COMPARED})"
            )
        blank = sorted(self.empty + self.invisible)
        if blank:
            entries = ", ".join(map(str, blank[:10])) + (", ..." if len(blank) > 10 else "")
            dropped.append(f"{len(blank)} empty or only invisible characters (entries {entries})")
        sentence = f"{self.n_read} entries in {file_name}; dropped: {', '.join(dropped) or 'none'}; "
        sentence += f"{len(self.usable)} distinct usable prompts"
        if len(self.kept) < len(self.usable):
            sentence += f", of which the first {len(self.kept)} are measured (a limit of {self.limit})"
        return sentence


def select_prompts(texts: list[str], limit: int | None = None) -> PromptSelection:
    """``texts`` without empty, whitespace-only or invisible-only entries and without repeats
    (two prompts are the same when :func:`shown_as` is the same; the first is kept), and the
    first ``limit`` of them."""
    usable: list[str] = []
    first_of: dict[str, int] = {}
    empty: list[int] = []
    invisible: list[int] = []
    repeats: list[tuple[int, int]] = []
    for entry, text in enumerate(texts, start=1):
        shown = shown_as(text)
        if not text.strip():
            empty.append(entry)
        elif not shown:
            invisible.append(entry)
        elif shown in first_of:
            repeats.append((entry, first_of[shown]))
        else:
            first_of[shown] = entry
            usable.append(text)
    kept = usable[:limit] if limit else usable
    return PromptSelection(len(texts), usable, kept, limit, empty, invisible, repeats)


def usable_prompts(texts: list[str], origin: str, limit: int | None = None) -> list[str]:
    """The prompts :func:`select_prompts` keeps; a :class:`TooFewPromptsError` saying what was
    dropped when fewer than :data:`MIN_USABLE_PROMPTS` remain. What was dropped is logged."""
    selection = select_prompts(texts, limit)
    kept, details = selection.kept, selection.details()
    if len(kept) < MIN_USABLE_PROMPTS:
        if len(kept) < len(selection.usable):
            details.append(f"a limit of {limit} kept {len(kept)} of the {len(selection.usable)} usable ones")
        raise TooFewPromptsError(
            f"{origin} has {len(kept)} usable prompts ({'; '.join(details)}); the claims need at "
            f"least {MIN_USABLE_PROMPTS}: their bootstrap intervals resample prompts, and over fewer "
            f"distinct usable prompts they are meaningless. Add prompts to the file{' or raise the limit (--max-prompts)' if limit else ''}"
        )
    if any(selection.dropped.values()):
        log.warning(
            "%s: %s; %d distinct usable prompts remain", origin, "; ".join(details), len(selection.usable)
        )
    return kept


def dropped_prompts(texts: list[str]) -> dict[str, int]:
    """How many of ``texts`` :func:`usable_prompts` drops: ``{"empty": n, "repeated": m}``."""
    return select_prompts(texts).dropped


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
