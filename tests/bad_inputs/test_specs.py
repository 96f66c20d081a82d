"""Pair specs: the spec file's keys and values, the paths and hub ids it names."""

from __future__ import annotations

import shutil
import sys
import time
from typing import Any

import pytest
from tiny import write_spec

from bad_inputs.bench import NOT_DOWNLOADED, ROOT, Bench, Case, ExitedNonZero, catalogue_test, registrar
from dpoclaims.errors import CheckpointError, MissingDownload, UnknownPairError, UnknownSourceError

CASES: list[Case] = []
case = registrar(CASES)


def _online_without_network(b: Bench) -> list[str]:
    """The hub flags say online, but every connection fails at once; returns the log of
    connection attempts."""
    import socket

    import huggingface_hub.constants

    b.monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        b.monkeypatch.setenv(name, "0")
    attempts: list[str] = []

    def refuse(*args: Any, **kwargs: Any) -> Any:
        attempts.append(repr(args[:1]))
        raise OSError("network unreachable")

    b.monkeypatch.setattr(socket, "create_connection", refuse)
    b.monkeypatch.setattr(socket.socket, "connect", refuse)
    b.monkeypatch.setattr(socket, "getaddrinfo", refuse)
    return attempts


def _hub_cache_with_the_base(b: Bench, *repo_ids: str) -> None:
    """A Hugging Face cache (the layout ``from_pretrained`` reads) holding the tiny base under
    ``repo_ids``, made the cache of this test."""
    import huggingface_hub.constants

    commit = "0" * 40
    for repo_id in repo_ids:
        repo = b.tmp / "hub" / ("models--" + repo_id.replace("/", "--"))
        shutil.copytree(b.files.base, repo / "snapshots" / commit)
        (repo / "refs").mkdir()
        (repo / "refs" / "main").write_text(commit)
    b.monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(b.tmp / "hub"))


@case(
    "spec-without-dpo--refused-naming-the-missing-key",
    "error",
    UnknownPairError,
    r"lacks the required keys \['dpo'\] \(needs base, dpo, probe\)",
)
def spec_without_dpo(b: Bench):
    b.load(b.spec(dpo=None))


@case(
    "spec-with-unknown-keys--refused-listing-them",
    "error",
    UnknownPairError,
    r"has unknown keys \['checkpoint', 'colour'\]; known:",
)
def spec_with_unknown_keys(b: Bench):
    b.load(b.spec(checkpoint="x", colour="blue"))


@case(
    "spec-extras-a-list--refused-asking-for-a-table",
    "error",
    UnknownPairError,
    r"'extras' must be a table of name = \"path\" entries",
)
def spec_extras_a_list(b: Bench):
    b.load(b.raw_spec('base = "b"\ndpo = "d"\nprobe = "p.pt"\nextras = ["prompts.json"]\n'))


@case(
    "spec-extras-a-list-in-dpoclaims-info--exit-2-asking-for-a-table",
    "error",
    ExitedNonZero,
    r"exit 2: .*'extras' must be a table",
)
def spec_extras_a_list_in_dpoclaims_info(b: Bench):
    spec = b.raw_spec('base = "b"\ndpo = "d"\nprobe = "p.pt"\nextras = ["prompts.json"]\n')
    b.run(
        [
            sys.executable,
            "-m",
            "dpoclaims.cli",
            "--cache-dir",
            str(b.tmp / "cache"),
            "info",
            "--pair",
            str(spec),
        ]
    )


@case(
    "spec-base-a-number--refused-asking-for-a-string",
    "error",
    UnknownPairError,
    r"'base' must be a non-empty string \(a path or hub id\), not 3",
)
def spec_base_a_number(b: Bench):
    b.load(b.raw_spec('base = 3\ndpo = "d"\nprobe = "p.pt"\n'))


@case(
    "spec-toml-unparsable--refused-with-the-parser-message",
    "error",
    UnknownPairError,
    r"cannot read pair spec .*pair\.toml: ",
)
def spec_toml_unparsable(b: Bench):
    b.load(b.raw_spec('base = ["unclosed\n'))


@case(
    "spec-json-unparsable--refused-with-the-parser-message",
    "error",
    UnknownPairError,
    r"cannot read pair spec .*pair\.json: Expecting",
)
def spec_json_unparsable(b: Bench):
    b.load(b.raw_spec("{not json", name="pair.json"))


@case(
    "spec-yaml-suffix--refused-naming-toml-and-json",
    "error",
    UnknownPairError,
    r"pair spec .*pair\.yaml must be a \.toml or \.json file",
)
def spec_yaml_suffix(b: Bench):
    b.load(b.raw_spec("base: x\n", name="pair.yaml"))


@case(
    "pair-name-unknown--refused-listing-the-named-pairs",
    "error",
    UnknownPairError,
    r"unknown pair 'no_such_pair': not a named pair \(gpt2-medium, smollm2, smollm2-grammar-probe, toy, toy-seedN, smollm2-seedN\)",
)
def pair_name_unknown(b: Bench):
    b.monkeypatch.chdir(b.tmp)
    b.load("no_such_pair")


@case(
    "spec-relative-path-found-only-in-cwd--refused-saying-paths-are-spec-relative",
    "error",
    CheckpointError,
    r"'base' is not in the spec's directory .*a 'base' exists in the current directory",
)
def spec_relative_path_found_only_in_cwd(b: Bench):
    cwd = b.tmp / "elsewhere"
    shutil.copytree(b.files.base, cwd / "base")
    b.monkeypatch.chdir(cwd)
    (b.tmp / "spec").mkdir()
    b.load(b.spec(name="spec/pair.toml", base="base"))


@case(
    "spec-relative-path-in-a-missing-subdirectory--refused-as-a-missing-path",
    "error",
    CheckpointError,
    r"model checkpoint '.*/models/base' does not exist",
)
def spec_relative_path_in_a_missing_subdirectory(b: Bench):
    """Taken as a path, not as the hub id 'models/base': the spec's directory holds 'models'."""
    (b.tmp / "models").mkdir()
    b.load(b.spec(base="models/base"))


@case(
    "spec-bare-name-found-nowhere--refused-before-any-network",
    "error",
    UnknownSourceError,
    r"model checkpoint 'mybase' is neither an existing path nor a hub id",
)
def spec_bare_name_found_nowhere(b: Bench):
    """Refused before any network access, with the hub flags saying online."""
    attempts = _online_without_network(b)
    b.monkeypatch.chdir(b.tmp)
    try:
        b.load(b.spec(base="mybase"))
    finally:
        assert attempts == []


@case(
    "spec-hub-id-not-downloaded-without-network--missing-download-at-once",
    "error",
    MissingDownload,
    r"model 'dpoclaims-tests/never-downloaded' is not in the local Hugging Face cache and there is no "
    r"network \(cannot reach https?://",
)
def spec_hub_id_not_downloaded_without_network(b: Bench):
    """Said at once instead of the download client's retries (1 + 2 + 4 + 8 + 8 s of back-off):
    a quick look at the hub (huggingface_hub may make one request of its own while building
    headers for the local-cache lookup)."""
    attempts = _online_without_network(b)
    started = time.monotonic()
    try:
        b.load(b.spec(base=NOT_DOWNLOADED))
    finally:
        assert 1 <= len(attempts) <= 2 and time.monotonic() - started < 15, attempts


@case(
    "spec-hub-id-not-downloaded-offline--missing-download-naming-the-offline-flag",
    "error",
    MissingDownload,
    r"model 'dpoclaims-tests/never-downloaded' is not in the local Hugging Face cache and the hub is offline",
)
def spec_hub_id_not_downloaded_offline(b: Bench):
    b.load(b.spec(base=NOT_DOWNLOADED))


@case("spec-hub-id-in-the-local-cache-offline--loads-the-same-pair", "recovery")
def spec_hub_id_in_the_local_cache_offline(b: Bench):
    _hub_cache_with_the_base(b, "dpoclaims-tests/tiny-base")
    pair = b.load(b.spec(base="dpoclaims-tests/tiny-base", tokenizer="dpoclaims-tests/tiny-base"))
    return {"fingerprint": b.measured.pair.fingerprint}, {"fingerprint": pair.fingerprint}


@case("spec-bare-name-in-the-local-cache--loads-the-same-pair", "recovery")
def spec_bare_name_in_the_local_cache(b: Bench):
    """A bare name is a hub id when the local cache holds it (the cache decides, offline)."""
    _hub_cache_with_the_base(b, "tinybase")
    b.monkeypatch.chdir(b.tmp)
    pair = b.load(b.spec(base="tinybase", tokenizer="tinybase"))
    return {"fingerprint": b.measured.pair.fingerprint}, {"fingerprint": pair.fingerprint}


@case(
    "spec-misspelled-extras-key--refused-suggesting-the-right-one",
    "error",
    UnknownPairError,
    r"unknown \[extras\] key 'challenge_prompt'; did you mean 'challenge_prompts'\? known keys: "
    r"challenge_prompts, dpo_pairs, generation_batch_size, max_prompts, neutral_texts, "
    r"perplexity_window, report",
)
def spec_misspelled_extras_key(b: Bench):
    b.load(b.spec(extras={"challenge_prompt": "prompts.json"}))


@case(
    "spec-perplexity-window-1k--refused-asking-for-a-whole-number",
    "error",
    UnknownPairError,
    r"perplexity_window must be a positive whole number of tokens \(e\.g\. 1024\), not '1k'",
)
def spec_perplexity_window_1k(b: Bench):
    b.load(b.spec(extras={"perplexity_window": "1k"}))


@case(
    "spec-base-a-directory-without-a-model--refused-naming-the-tokenizer-files",
    "error",
    CheckpointError,
    r"tokenizer source '.*specs/\.\./etc' \(.*/etc\) is a directory without tokenizer files \(none of tokenizer\.json",
)
def spec_base_a_directory_without_a_model(b: Bench):
    (b.tmp / "etc").mkdir()
    (b.tmp / "etc" / "hosts").write_text("127.0.0.1 localhost\n")
    (b.tmp / "specs").mkdir()
    b.load(b.spec(name="specs/pair.toml", base="../etc", tokenizer=None))


# ---- specs that are not what they claim


@case("spec-reached-through-a-symlink--paths-resolved-against-the-real-file", "recovery")
def spec_reached_through_a_symlink(b: Bench):
    real = b.tmp / "real"
    for part in ("base", "dpo"):
        shutil.copytree(getattr(b.files, part), real / part)
    shutil.copy(b.files.probe, real / "probe.pt")
    spec = write_spec(real / "pair.toml", name="linked", base="base", dpo="dpo", probe="probe.pt")
    (b.tmp / "elsewhere").mkdir()
    (b.tmp / "elsewhere" / "pair.toml").symlink_to(spec)
    direct = b.load(spec)
    linked = b.load(b.tmp / "elsewhere" / "pair.toml")
    return {"fingerprint": direct.fingerprint}, {"fingerprint": linked.fingerprint}


@case(
    "spec-json-with-a-duplicate-key--refused-naming-it",
    "error",
    UnknownPairError,
    r"pair spec .*pair\.json gives the key 'dpo' twice; give each key once",
)
def spec_json_with_a_duplicate_key(b: Bench):
    b.load(b.raw_spec('{"base": "b", "dpo": "d1", "probe": "p.pt", "dpo": "d2"}', name="pair.json"))


@case(
    "spec-json-with-a-duplicate-extras-key--refused-naming-it",
    "error",
    UnknownPairError,
    r"pair spec .*pair\.json gives the key 'challenge_prompts' twice; give each key once",
)
def spec_json_with_a_duplicate_extras_key(b: Bench):
    b.load(
        b.raw_spec(
            '{"base": "b", "dpo": "d", "probe": "p.pt", "extras": '
            '{"challenge_prompts": "a.json", "challenge_prompts": "b.json"}}',
            name="pair.json",
        )
    )


@case(
    "spec-toml-with-a-duplicate-key--refused-naming-it",
    "error",
    UnknownPairError,
    r"pair spec .*pair\.toml gives a key twice \(Cannot overwrite a value \(at line 4, column \d+\)\); give "
    r"each key once",
)
def spec_toml_with_a_duplicate_key(b: Bench):
    b.load(b.raw_spec('base = "b"\ndpo = "d1"\nprobe = "p.pt"\ndpo = "d2"\n'))


@case("spec-with-an-upper-case-suffix--loads-the-same-pair", "recovery")
def spec_with_an_upper_case_suffix(b: Bench):
    lower = b.load(b.spec())
    upper = b.load(b.spec(name="PAIR.TOML"))
    return {"fingerprint": lower.fingerprint}, {"fingerprint": upper.fingerprint}


def _spec_named(b: Bench, name: str):
    """A spec of the tiny pair whose name key is ``name``."""
    files = b.files
    return write_spec(b.tmp / "pair.toml", name=name, base=files.base, dpo=files.dpo, probe=files.probe)


@case(
    "spec-named-toy--refused-as-a-built-in-pairs-name",
    "error",
    UnknownPairError,
    r"pair spec .*pair\.toml is named 'toy', the name of a built-in pair: its claims would be checked "
    r"against the toy's declared expectations and its report titled as the toy's\. Give it a name of its own",
)
def spec_named_toy(b: Bench):
    b.load(_spec_named(b, "toy"))


@case(
    "expectations-for-a-spec-named-toy--usage-error-not-the-toys-table",
    "error",
    pytest.UsageError,
    r"pair spec .*pair\.toml is named 'toy', the name of a built-in pair",
)
def expectations_for_a_spec_named_toy(b: Bench):
    from dpoclaims.plugin.reporting import load_expectations

    b.monkeypatch.delenv("DPOCLAIMS_EXPECTATIONS", raising=False)
    load_expectations(str(_spec_named(b, "toy")), ROOT)


@case(
    "spec-named-toy-seed5--refused-as-a-built-in-pairs-name",
    "error",
    UnknownPairError,
    r"is named 'toy-seed5', the name of a built-in pair",
)
def spec_named_toy_seed5(b: Bench):
    b.load(_spec_named(b, "toy-seed5"))


test_case = catalogue_test(CASES)
