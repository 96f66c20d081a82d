"""Prompt and text files: the challenge prompts and the held-out neutral texts."""

from __future__ import annotations

import json
from dataclasses import replace

from bad_inputs.bench import PROMPTS, SETTINGS, Bench, Case, catalogue_test, registrar
from dpoclaims.errors import CheckpointError, TooFewPromptsError
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


test_case = catalogue_test(CASES)
