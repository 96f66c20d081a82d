"""Prompt and text files: the challenge prompts and the held-out neutral texts."""

from __future__ import annotations

import codecs
import gzip
import json
import unicodedata
from dataclasses import replace
from pathlib import Path

from tiny import write_spec

from bad_inputs.bench import (
    NEUTRAL,
    PROMPTS,
    SETTINGS,
    Bench,
    Case,
    ExitedNonZero,
    catalogue_test,
    cli,
    registrar,
)
from dpoclaims.errors import CheckpointError, ContextWindowError, TooFewPromptsError
from dpoclaims.measure.measurements import Measurements
from dpoclaims.measure.prompts import UnusablePromptSet

CASES: list[Case] = []
case = registrar(CASES)


@case(
    "prompts-an-empty-json-list--refused-as-holding-none",
    "error",
    CheckpointError,
    r"no challenge prompts in .*prompts\.json: it holds none; fill it with the challenge prompts",
)
def prompts_an_empty_json_list(b: Bench):
    b.measurements(b.prompts_pair([]))


@case(
    "prompts-a-blank-text-file--refused-as-holding-none",
    "error",
    CheckpointError,
    r"no challenge prompts in .*prompts\.txt: it holds none",
)
def prompts_a_blank_text_file(b: Bench):
    b.measurements(b.prompts_pair("\n\n", filename="prompts.txt"))


@case(
    "prompts-only-empty-strings--refused-as-too-few",
    "error",
    TooFewPromptsError,
    r"has 0 usable prompts \(3 prompts; 3 of them empty or whitespace-only \(dropped\)\); the claims need at least 10",
)
def prompts_only_empty_strings(b: Bench):
    b.measurements(b.prompts_pair(["", "  ", "\n"]))


@case(
    "prompts-fewer-than-ten--refused-as-too-few",
    "error",
    TooFewPromptsError,
    r"has 6 usable prompts \(7 prompts; 1 of them empty .*\); the claims need at least 10: their bootstrap intervals resample prompts",
)
def prompts_fewer_than_ten(b: Bench):
    b.measurements(b.prompts_pair(PROMPTS[:6] + [""]))


@case(
    "prompts-limited-below-ten--refused-naming-the-limit",
    "error",
    TooFewPromptsError,
    r"has 5 usable prompts \(12 prompts; a limit of 5 kept 5 of the 12 usable ones\).* or raise the limit \(--max-prompts\)",
)
def prompts_limited_below_ten(b: Bench):
    b.measurements(b.prompts_pair(PROMPTS), replace(SETTINGS, max_prompts=5))


@case("prompts-json-unparsable--refused-as-not-json", "error", CheckpointError, r"prompts\.json is not JSON")
def prompts_json_unparsable(b: Bench):
    b.measurements(b.prompts_pair("[not json"))


@case(
    "prompts-json-numbers--refused-asking-for-strings",
    "error",
    CheckpointError,
    r"prompts\.json must hold a JSON list of prompt strings",
)
def prompts_json_numbers(b: Bench):
    b.measurements(b.prompts_pair("[1, 2, 3]"))


@case(
    "prompts-jsonl-without-a-text-field--refused-naming-the-fields",
    "error",
    CheckpointError,
    r"prompts\.jsonl line 1: no prompt text \(expected 'prompt': \{'text': \.\.\.\}, 'prompt' or 'text'\)",
)
def prompts_jsonl_without_a_text_field(b: Bench):
    b.measurements(b.prompts_pair('{"title": "no text here"}\n', filename="prompts.jsonl"))


@case(
    "prompts-file-missing--refused-saying-where-to-get-it",
    "error",
    CheckpointError,
    r"RealToxicityPrompts is not available \(.*gone\.json does not exist\)",
)
def prompts_file_missing(b: Bench):
    pair = b.prompts_pair(None)
    extras = {**pair.spec.extras, "challenge_prompts": str(b.tmp / "gone.json")}
    b.measurements(replace(pair, spec=replace(pair.spec, extras=extras)))


@case(
    "neutral-texts-all-empty--refused-as-holding-no-text",
    "error",
    UnusablePromptSet,
    r"the neutral text set .*neutral\.json of pair 'tiny' holds no text \(2 empty entries\)",
)
def neutral_texts_all_empty(b: Bench):
    pair = b.prompts_pair(PROMPTS)
    (b.tmp / "neutral.json").write_text(json.dumps(["", " "]))
    extras = {**pair.spec.extras, "neutral_texts": str(b.tmp / "neutral.json")}
    # read when a measurement first needs them (issue #18: only the claims that read them are affected)
    _ = b.measurements(replace(pair, spec=replace(pair.spec, extras=extras))).neutral_texts


@case("prompts-with-empty-strings--dropped-same-prompts", "recovery")
def prompts_with_empty_strings(b: Bench):
    with_empty = b.measurements(b.prompts_pair(["", *PROMPTS[:6], "   ", *PROMPTS[6:], ""])).prompts
    return {"prompts": PROMPTS}, {"prompts": with_empty}


@case(
    "prompts-one-prompt-twenty-times--refused-as-too-few",
    "error",
    TooFewPromptsError,
    r"has 1 usable prompts \(20 prompts; 19 repeats of an earlier prompt \(dropped\)\); the claims need at "
    r"least 10: their bootstrap intervals resample prompts, and over fewer distinct usable prompts",
)
def prompts_one_prompt_twenty_times(b: Bench):
    b.measurements(b.prompts_pair([PROMPTS[0]] * 20))


@case(
    "prompts-only-invisible-characters--refused-as-unusable",
    "error",
    TooFewPromptsError,
    r"has 0 usable prompts \(12 prompts; 12 of them only invisible characters such as zero-width spaces or "
    r"byte-order marks \(dropped\)\)",
)
def prompts_only_invisible_characters(b: Bench):
    b.measurements(b.prompts_pair(["\u200b", "\ufeff", "\u200b\u200d", "\u2060\ufeff"] * 3))


@case("prompts-with-repeats-and-invisible-ones--dropped-and-counted", "recovery")
def prompts_with_repeats_and_invisible_ones(b: Bench):
    messy = [*PROMPTS[:4], PROMPTS[0], "\u200b\ufeff", *PROMPTS[4:], PROMPTS[5] + "\u200b", " ", PROMPTS[1]]
    measurements = b.measurements(b.prompts_pair(messy))
    expected = {"prompts": PROMPTS, "dropped": {"empty": 2, "repeated": 3}}
    return expected, {"prompts": measurements.prompts, "dropped": measurements.prompts_dropped}


@case("spec-without-neutral-texts--prompts-load-neutral-texts-missing", "recovery")
def spec_without_neutral_texts(b: Bench):
    from dpoclaims.measure.prompts import MissingPromptSet

    pair = b.prompts_pair(PROMPTS)
    pair = replace(
        pair, spec=replace(pair.spec, extras={"challenge_prompts": pair.spec.extras["challenge_prompts"]})
    )
    measurements = b.measurements(pair)  # the prompts load: the claims that need no neutral text run
    try:
        _ = measurements.neutral_texts
        neutral = "read"
    except MissingPromptSet as exc:
        neutral = str(exc)
    return {
        "prompts": PROMPTS,
        "neutral": "pair 'tiny' names no 'neutral_texts' file; add it under [extras] in the pair spec "
        "(a JSON list, JSONL or text file)",
    }, {"prompts": measurements.prompts, "neutral": neutral}


@case(
    "neutral-texts-latin-1--refused-asking-for-utf-8",
    "error",
    UnusablePromptSet,
    r"the neutral texts of pair 'tiny' cannot be used: prompt file .*neutral\.txt is not UTF-8 text "
    r"\(invalid start byte at byte 5\); save it as UTF-8",
)
def neutral_texts_latin_1(b: Bench):
    pair = b.prompts_pair(PROMPTS)
    (b.tmp / "neutral.txt").write_bytes(b"hello\xff world\n")
    extras = {**pair.spec.extras, "neutral_texts": str(b.tmp / "neutral.txt")}
    _ = b.measurements(replace(pair, spec=replace(pair.spec, extras=extras))).neutral_texts


# ---- prompts that are not what they seem: encodings, control characters, formats, Unicode repeats


def _prompt_file(b: Bench, data: bytes, filename: str, key: str = "challenge_prompts") -> Measurements:
    """The measured pair with ``data`` as the bytes of its challenge prompt (or neutral text) file."""
    pair = b.prompts_pair(PROMPTS)
    (b.tmp / filename).write_bytes(data)
    extras = {**pair.spec.extras, key: str(b.tmp / filename)}
    return b.measurements(replace(pair, spec=replace(pair.spec, extras=extras)))


_LINES = "".join(f"{prompt}\n" for prompt in PROMPTS)


def _encoded_prompts(id: str, encoding: str, bom: bytes = b"") -> None:
    @case(id, "recovery")
    def encoded(b: Bench):
        measurements = _prompt_file(b, bom + _LINES.encode(encoding), "prompts.txt")
        return {"prompts": PROMPTS}, {"prompts": measurements.prompts}


_encoded_prompts("prompts-utf-16-le-without-a-bom--read-as-the-same-prompts", "utf-16-le")
_encoded_prompts("prompts-utf-16-be-without-a-bom--read-as-the-same-prompts", "utf-16-be")
_encoded_prompts("prompts-utf-16-be-with-a-bom--read-as-the-same-prompts", "utf-16-be", codecs.BOM_UTF16_BE)
_encoded_prompts("prompts-utf-32-le-without-a-bom--read-as-the-same-prompts", "utf-32-le")
_encoded_prompts("prompts-utf-32-be-with-a-bom--read-as-the-same-prompts", "utf-32-be", codecs.BOM_UTF32_BE)


@case("neutral-texts-utf-16-with-a-bom--read-as-the-same-texts", "recovery")
def neutral_texts_utf_16_with_a_bom(b: Bench):
    texts = ["the plan seems fair and clear", "we met at noon and talked"]
    data = codecs.BOM_UTF16_LE + json.dumps(texts).encode("utf-16-le")
    return {"texts": texts}, {"texts": _prompt_file(b, data, "neutral.json", "neutral_texts").neutral_texts}


@case(
    "prompts-with-a-nul-byte--refused-naming-the-line",
    "error",
    CheckpointError,
    r"prompt file .*prompts\.txt holds a NUL character \(U\+0000\) on line 3: the model would be fed it; remove it",
)
def prompts_with_a_nul_byte(b: Bench):
    lines = list(PROMPTS)
    lines[2] = "the plan\x00 2 seems"
    _prompt_file(b, "\n".join(lines).encode(), "prompts.txt")


@case(
    "prompts-json-with-an-escaped-nul--refused-naming-the-prompt",
    "error",
    CheckpointError,
    r"prompt 4 of .*prompts\.json holds a NUL character \(U\+0000\): the model would be fed it; remove it",
)
def prompts_json_with_an_escaped_nul(b: Bench):
    prompts = list(PROMPTS)
    prompts[3] = "the plan \u0000 3 seems"
    _prompt_file(b, json.dumps(prompts).encode(), "prompts.json")


@case(
    "prompts-with-an-escape-character--refused-naming-it",
    "error",
    CheckpointError,
    r"prompt file .*prompts\.txt holds a control character '\\x1b' \(U\+001B\) on line 1",
)
def prompts_with_an_escape_character(b: Bench):
    _prompt_file(b, ("\x1b[31m" + _LINES).encode(), "prompts.txt")


@case(
    "neutral-texts-with-a-nul-byte--refused-naming-the-line",
    "error",
    UnusablePromptSet,
    r"the neutral texts of pair 'tiny' cannot be used: prompt file .*neutral\.txt holds a NUL character "
    r"\(U\+0000\) on line 2",
)
def neutral_texts_with_a_nul_byte(b: Bench):
    _ = _prompt_file(b, b"fine text\nbad\x00text\n", "neutral.txt", "neutral_texts").neutral_texts


@case(
    "prompts-latin-1-with-a-nul--refused-as-not-utf-8",
    "error",
    CheckpointError,
    r"prompt file .*prompts\.txt is not UTF-8 text \(invalid continuation byte at byte 3\); save it as UTF-8",
)
def prompts_latin_1_with_a_nul(b: Bench):
    _prompt_file(b, "caf\xe9 \x00 au lait\n".encode("latin-1") + _LINES.encode(), "prompts.txt")


def _formatted_prompts(id: str, filename: str, content: str) -> None:
    @case(id, "recovery")
    def formatted(b: Bench):
        return {"prompts": PROMPTS}, {"prompts": _prompt_file(b, content.encode(), filename).prompts}


_JSONL = "".join(json.dumps({"text": prompt}) + "\n" for prompt in PROMPTS)
_formatted_prompts(
    "prompts-json-list-in-a-file-named-upper-case-json--read-as-json", "prompts.JSON", json.dumps(PROMPTS)
)
_formatted_prompts("prompts-jsonl-in-an-ndjson-file--read-as-jsonl", "prompts.ndjson", _JSONL)
_formatted_prompts("prompts-jsonl-in-a-file-named-upper-case-jsonl--read-as-jsonl", "prompts.JSONL", _JSONL)
_formatted_prompts(
    "prompts-json-list-in-a-txt-file--read-as-json-by-content", "prompts.txt", json.dumps(PROMPTS)
)
_formatted_prompts("prompts-jsonl-in-a-file-without-a-suffix--read-as-jsonl-by-content", "prompts", _JSONL)
_formatted_prompts(
    "prompts-json-list-in-a-file-named-mixed-case-json--read-as-json",
    "prompts.Json",
    json.dumps(PROMPTS, indent=1),
)


@case("prompts-gzipped-jsonl-in-upper-case--read-as-jsonl", "recovery")
def prompts_gzipped_jsonl_in_upper_case(b: Bench):
    measurements = _prompt_file(b, gzip.compress(_JSONL.encode()), "prompts.JSONL.GZ")
    return {"prompts": PROMPTS}, {"prompts": measurements.prompts}


@case(
    "prompts-jsonl-row-with-a-duplicate-key--refused-naming-it",
    "error",
    CheckpointError,
    r"prompts\.jsonl line 2 gives the key 'text' twice; give each key once",
)
def prompts_jsonl_row_with_a_duplicate_key(b: Bench):
    rows = _JSONL.splitlines()
    rows[1] = '{"text": "the plan 1 seems", "text": "another prompt"}'
    _prompt_file(b, "\n".join(rows).encode(), "prompts.jsonl")


@case("prompts-with-a-line-separator-inside--kept-as-one-prompt", "recovery")
def prompts_with_a_line_separator_inside(b: Bench):
    """Only line feeds (and carriage returns) end a line of a text file: U+2028 is part of a prompt."""
    prompts = [*PROMPTS[:-1], PROMPTS[-1] + "\u2028and more"]
    got = _prompt_file(b, "\n".join(prompts).encode(), "prompts.txt").prompts
    return {"prompts": prompts}, {"prompts": got}


_CAFES = [f"caf\u00e9 number {i} opened" for i in range(len(PROMPTS))]  # NFC: é is one code point


@case("prompts-in-nfc-and-nfd--repeats-dropped-after-normalisation", "recovery")
def prompts_in_nfc_and_nfd(b: Bench):
    nfd = [unicodedata.normalize("NFD", prompt) for prompt in _CAFES]
    assert nfd != _CAFES
    measurements = _prompt_file(b, json.dumps(_CAFES + nfd).encode(), "prompts.json")
    return {"prompts": _CAFES, "dropped": {"empty": 0, "repeated": 12}}, {
        "prompts": measurements.prompts,
        "dropped": measurements.prompts_dropped,
    }


@case("prompts-dropped--the-report-header-says-what-and-why", "recovery")
def prompts_dropped_the_report_header_says_what_and_why(b: Bench):
    from dpoclaims.plugin.resources import pair_header
    from dpoclaims.report.render import report_markdown

    nfd = unicodedata.normalize("NFD", _CAFES[0])
    measurements = _prompt_file(b, json.dumps([*_CAFES, nfd, " ", "\u200b"]).encode(), "prompts.json")
    header = pair_header(measurements)
    why = (
        "15 entries in prompts.json; dropped: 1 repeat of an earlier prompt (entry 13 repeats entry 1; prompts "
        "are compared after Unicode NFC normalisation, without invisible characters or surrounding whitespace), "
        "2 empty or only invisible characters (entries 14, 15); 12 distinct usable prompts"
    )
    markdown = report_markdown([], {**header, "convention": "v1"})
    return {"header": why, "in claims.md": True}, {
        "header": header["prompt_selection"],
        "in claims.md": why in markdown,
    }


# ---- context windows: checked against the prompts and continuations, perplexity texts cut to them


def _short_context_spec(b: Bench, positions: int, **extras: str) -> Path:
    """A pair of tiny models with ``positions`` positions, the 12 prompts and two neutral texts."""
    make_gpt2 = b.request.getfixturevalue("make_gpt2")
    root = b.tmp / f"positions_{positions}"
    for seed, side in enumerate(("base", "dpo")):
        make_gpt2(seed, n_positions=positions).save_pretrained(root / side)
    (root / "prompts.json").write_text(json.dumps(PROMPTS))
    (root / "neutral.json").write_text(json.dumps(NEUTRAL))
    return write_spec(
        root / "pair.toml",
        name="short",
        base="base",
        dpo="dpo",
        probe=str(b.files.probe),
        tokenizer=str(b.files.tokenizer),
        extras={"challenge_prompts": "prompts.json", "neutral_texts": "neutral.json", **extras},
    )


_TOO_SHORT = (
    r"the models of pair 'short' have 16 positions, but the longest challenge prompt is \d+ tokens and each "
    r"continuation adds 20: generation would run past the last position\. Use a model with at least \d+ "
    r"positions, or shorter prompts"
)


@case(
    "pair-of-16-positions-with-prompts-and-continuations-longer--refused-naming-both",
    "error",
    ContextWindowError,
    _TOO_SHORT,
)
def pair_of_16_positions_with_prompts_and_continuations_longer(b: Bench):
    b.measurements(b.load(_short_context_spec(b, 16)))


@case(
    "info-on-a-pair-of-16-positions--exit-2-naming-the-positions",
    "error",
    ExitedNonZero,
    r"^exit 2: dpoclaims: error: " + _TOO_SHORT,
)
def info_on_a_pair_of_16_positions(b: Bench):
    cli(b, "info", "--pair", str(_short_context_spec(b, 16)), "--device", "cpu")


@case(
    "perplexity-window-beyond-the-positions--refused-naming-both",
    "error",
    ContextWindowError,
    r"the spec's perplexity_window 128 exceeds the 64 positions of the models of pair 'short'; set it to 64 or "
    r"less",
)
def perplexity_window_beyond_the_positions(b: Bench):
    b.measurements(b.load(_short_context_spec(b, 64, perplexity_window="128")))


@case("neutral-text-longer-than-the-positions--perplexity-scored-within-them", "recovery")
def neutral_text_longer_than_the_positions(b: Bench):
    """Each text is scored on its first 64 tokens, the models' positions (not 1,024)."""
    from dpoclaims.measure.metrics import perplexity_rows

    long_text = " ".join(f"the plan {i} seems fair" for i in range(40))
    pair = b.load(_short_context_spec(b, 64))
    assert len(pair.tokenizer(long_text)["input_ids"]) > 64
    (b.tmp / "long.json").write_text(json.dumps([long_text, NEUTRAL[0]]))
    extras = {**pair.spec.extras, "neutral_texts": str(b.tmp / "long.json")}
    measurements = b.measurements(replace(pair, spec=replace(pair.spec, extras=extras)))
    nll, tokens = measurements.perplexity_rows("base")
    expected_nll, expected_tokens = perplexity_rows(
        pair.base, pair.tokenizer, [long_text, NEUTRAL[0]], max_tokens=64
    )
    return {"tokens": expected_tokens.tolist(), "nll": expected_nll.tolist()}, {
        "tokens": tokens.tolist(),
        "nll": nll.tolist(),
    }


@case(
    "generation-past-the-positions--refused-naming-them",
    "error",
    ContextWindowError,
    r"generation of 20 tokens after a prompt of \d+ tokens needs \d+ positions; the model has 16",
)
def generation_past_the_positions(b: Bench):
    """Any generation (the continuation F1 on held-out texts too), not an IndexError from the embedding."""
    from dpoclaims.measure.generation import greedy_generate

    pair = b.load(_short_context_spec(b, 16))
    greedy_generate(pair.base, pair.tokenizer, [PROMPTS[0]], progress=False)


test_case = catalogue_test(CASES)
