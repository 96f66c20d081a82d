"""The claims suite: it skips only what was not provided and fails on what was given and is broken."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from tiny import D_MODEL

from bad_inputs.bench import (
    NOT_DOWNLOADED,
    PROMPTS,
    SUITE_PLUGINS,
    Bench,
    Case,
    ExitedNonZero,
    catalogue_test,
    registrar,
    truncated_dpo_pt,
    with_config,
)
from dpoclaims.plugin.resources import suite_measurements

CASES: list[Case] = []
case = registrar(CASES)


def _suite_fail(id: str, match: str) -> Callable[[Callable[[Bench], Path]], Callable[[Bench], Path]]:
    """A case where the suite's pair fixture must fail (not skip) on a spec ``make(bench)`` writes."""

    def register(make: Callable[[Bench], Path]) -> Callable[[Bench], Path]:
        @case(id, "error", pytest.fail.Exception, match)
        def _(b: Bench):
            b.suite_pair(make(b))

        return make

    return register


_NEEDS_THE_PAIR = """
def test_needs_the_pair(pair):
    pass
"""


_READS_NEUTRAL = """
import pytest
from dpoclaims.claims.results import ClaimResult


@pytest.mark.noise
@pytest.mark.claim("C6", param="prompts")
def test_reads_the_prompts(measurements, check_claim):
    assert len(measurements.prompts) == 12
    check_claim(ClaimResult(claim="C6", param="prompts", statement="s", criterion="c", measured=0.5,
                             ci=(0.4, 0.6), exact=False, p_value=0.01, verdict="replicates", paper=0.5))


@pytest.mark.noise
@pytest.mark.claim("C6", param="neutral")
def test_reads_the_neutral_texts(measurements):
    measurements.neutral_texts
"""


@case(
    "paper-pair-without-its-files--skipped-naming-the-variables",
    "skip",
    match=r"pair 'gpt2-medium' is not available: DPOCLAIMS_GPT2_DPO, DPOCLAIMS_GPT2_PROBE not set\. The paper pair needs",
)
def paper_pair_without_its_files(b: Bench):
    b.suite_pair("gpt2-medium")


@case(
    "paper-pair-env-naming-a-missing-file--skipped-naming-it",
    "skip",
    match=r"DPOCLAIMS_GPT2_DPO names .*nowhere/dpo\.pt, which does not exist\. The paper pair needs",
)
def paper_pair_env_naming_a_missing_file(b: Bench):
    b.monkeypatch.setenv("DPOCLAIMS_GPT2_DPO", str(b.tmp / "nowhere" / "dpo.pt"))
    b.monkeypatch.setenv("DPOCLAIMS_GPT2_PROBE", str(b.files.probe))
    b.suite_pair("gpt2-medium")


@case(
    "paper-pair-prompts-env-naming-a-missing-file--skipped-naming-it",
    "skip",
    match=r"DPOCLAIMS_RTP_PATH names .*prompts\.jsonl, which does not exist",
)
def paper_pair_prompts_env_naming_a_missing_file(b: Bench):
    b.monkeypatch.setenv("DPOCLAIMS_GPT2_BASE", str(b.files.base))
    b.monkeypatch.setenv("DPOCLAIMS_GPT2_DPO", str(b.files.dpo_pt))
    b.monkeypatch.setenv("DPOCLAIMS_GPT2_PROBE", str(b.files.probe))
    b.monkeypatch.setenv("DPOCLAIMS_RTP_PATH", str(b.tmp / "prompts.jsonl"))
    b.suite_pair("gpt2-medium")


@case(
    "paper-pair-base-not-downloaded-offline--skipped-naming-it",
    "skip",
    match=r"pair 'gpt2-medium' is not available: tokenizer 'dpoclaims-tests/never-downloaded' is not in the local Hugging Face cache and the hub is offline",
)
def paper_pair_base_not_downloaded_offline(b: Bench):
    b.monkeypatch.setenv("DPOCLAIMS_GPT2_BASE", NOT_DOWNLOADED)
    b.monkeypatch.setenv("DPOCLAIMS_GPT2_DPO", str(b.files.dpo_pt))
    b.monkeypatch.setenv("DPOCLAIMS_GPT2_PROBE", str(b.files.probe))
    b.suite_pair("gpt2-medium")


@case(
    "suite-pair-without-challenge-prompts--skipped-asking-for-them",
    "skip",
    match=r"pair 'tiny' names no 'challenge_prompts' file; add it under \[extras\]",
)
def suite_pair_without_challenge_prompts(b: Bench):
    suite_measurements(b.prompts_pair(None), b.cache, b.options("unused"))


@_suite_fail(
    "suite-dpo-pt-truncated--fails-as-corrupt",
    r"pair '.*pair\.toml' cannot be used: cannot read state-dict file .*dpo\.pt \(corrupt",
)
def suite_dpo_pt_truncated(b: Bench) -> Path:
    return b.spec(dpo=str(truncated_dpo_pt(b)))


@_suite_fail(
    "suite-probe-all-nan--fails-as-no-direction",
    r"cannot be used: probe .*probe\.pt' has 32 of 32 entries NaN or infinite",
)
def suite_probe_all_nan(b: Bench) -> Path:
    return b.spec(probe=str(b.probe(torch.full((D_MODEL,), float("nan")))))


@_suite_fail(
    "suite-probe-all-zeros--fails-as-no-direction", r"cannot be used: probe .*probe\.pt' is all zeros"
)
def suite_probe_all_zeros(b: Bench) -> Path:
    return b.spec(probe=str(b.probe(torch.zeros(D_MODEL))))


@_suite_fail(
    "suite-probe-of-another-size--fails-naming-the-size", r"cannot be used: probe .*probe\.pt' has 35 entries"
)
def suite_probe_of_another_size(b: Bench) -> Path:
    return b.spec(probe=str(b.probe(torch.randn(D_MODEL + 3))))


@_suite_fail(
    "suite-dpo-config-unlike-its-weights--fails-naming-it",
    r"cannot be used: model .*dpo_n_inner': its config\.json does not describe its weights",
)
def suite_dpo_config_unlike_its_weights(b: Bench) -> Path:
    return b.spec(dpo=str(with_config(b, "dpo_n_inner", n_inner=64)))


@_suite_fail(
    "suite-dpo-identical-to-base--fails-as-no-fine-tune",
    r"cannot be used: the DPO model .* has exactly the weights of the base",
)
def suite_dpo_identical_to_base(b: Bench) -> Path:
    return b.spec(dpo=str(b.files.base))


@_suite_fail(
    "suite-bare-name-found-nowhere--fails-naming-it",
    r"cannot be used: model checkpoint 'mybase' is neither an existing path nor a hub id",
)
def suite_bare_name_found_nowhere(b: Bench) -> Path:
    b.monkeypatch.chdir(b.tmp)
    return b.spec(base="mybase")


@_suite_fail(
    "suite-dpo-pt-needing-a-pickle-global--fails-naming-the-opt-in",
    r"dpo\.pt needs pickle globals that safe loading refuses: fractions\.Fraction\. .*allow exactly these with --allow-pickle-globals fractions\.Fraction",
)
def suite_dpo_pt_needing_a_pickle_global(b: Bench) -> Path:
    import fractions

    return b.spec(dpo=str(b.dpo_pt(step=fractions.Fraction(1, 3))))


@case("suite-dpo-pt-needing-an-allowed-global--loads-the-same-pair", "recovery")
def suite_dpo_pt_needing_an_allowed_global(b: Bench):
    import fractions

    clean = b.suite_pair(b.spec(name="clean.toml", dpo=str(b.dpo_pt(name="clean.pt"))))
    needs_global = b.spec(
        name="fraction.toml", dpo=str(b.dpo_pt(name="fraction.pt", step=fractions.Fraction(1, 3)))
    )
    allowed = b.suite_pair(needs_global, allow_pickle_globals="fractions.Fraction")
    return {"fingerprint": clean.fingerprint}, {"fingerprint": allowed.fingerprint}


@case(
    "paper-pair-dpo-pt-truncated--fails-as-corrupt",
    "error",
    pytest.fail.Exception,
    r"pair 'gpt2-medium' cannot be used: cannot read state-dict file .*dpo\.pt \(corrupt",
)
def paper_pair_dpo_pt_truncated(b: Bench):
    """Given through the environment, but broken: an error, unlike a file not given."""
    b.monkeypatch.setenv("DPOCLAIMS_GPT2_BASE", str(b.files.base))
    b.monkeypatch.setenv("DPOCLAIMS_GPT2_DPO", str(truncated_dpo_pt(b)))
    b.monkeypatch.setenv("DPOCLAIMS_GPT2_PROBE", str(b.files.probe))
    b.suite_pair("gpt2-medium")


@case(
    "suite-prompts-all-empty--fails-as-too-few",
    "error",
    pytest.fail.Exception,
    r"the prompt sets of pair 'tiny' cannot be used: .* has 0 usable prompts \(3 prompts; 3 of them empty",
)
def suite_prompts_all_empty(b: Bench):
    suite_measurements(b.prompts_pair(["", "", ""]), b.cache, b.options("unused"))


@case(
    "suite-run-on-a-truncated-dpo-pt--exit-1-an-error-not-a-skip",
    "error",
    ExitedNonZero,
    r"exit 1: .*cannot be used: cannot read state-dict file .*dpo\.pt \(corrupt.*1 error",
)
def suite_run_on_a_truncated_dpo_pt(b: Bench):
    """A whole pytest run: exit 1 and an error, never 'skipped'."""
    spec = b.spec(dpo=str(truncated_dpo_pt(b)))
    (b.tmp / "test_needs_the_pair.py").write_text(_NEEDS_THE_PAIR)
    plugins = ["-p", "dpoclaims.plugin.options", "-p", "dpoclaims.plugin.resources", "--rootdir", str(b.tmp)]
    try:
        b.run(b.pytest_command(str(b.tmp / "test_needs_the_pair.py"), *plugins, "--pair", str(spec)))
    except ExitedNonZero as exc:
        assert "skipped" not in str(exc)
        raise ExitedNonZero(" ".join(str(exc).split())) from None  # one line, for the match


@case(
    "suite-run-every-claim-skipped-for-want-of-files--exit-1",
    "error",
    ExitedNonZero,
    r"exit 1: .*every selected claim skipped for want of the pair's files: pair 'gpt2-medium' is not "
    r"available: DPOCLAIMS_GPT2_DPO, DPOCLAIMS_GPT2_PROBE not set",
)
def suite_run_every_claim_skipped_for_want_of_files(b: Bench):
    (b.tmp / "test_needs_the_pair.py").write_text(
        "import pytest\n\n\n@pytest.mark.noise\n@pytest.mark.claim('C6', param='x')\n"
        "def test_needs_the_pair(pair):\n    pass\n"
    )
    (b.tmp / "table.toml").write_text("[pairs]\n")
    b.monkeypatch.setenv("DPOCLAIMS_EXPECTATIONS", str(b.tmp / "table.toml"))
    command = b.pytest_command(
        str(b.tmp / "test_needs_the_pair.py"),
        *SUITE_PLUGINS,
        "--rootdir",
        str(b.tmp),
        "--pair",
        "gpt2-medium",
        "--reports-dir",
        str(b.tmp / "reports"),
        "--cache-dir",
        str(b.tmp / "cache"),
    )
    try:
        b.run(command, timeout=120)
    except ExitedNonZero as exc:
        raise ExitedNonZero(" ".join(str(exc).split())) from None


@case("suite-run-without-neutral-texts--skips-only-the-claim-reading-them", "recovery")
def suite_run_without_neutral_texts(b: Bench):
    (b.tmp / "prompts.json").write_text(json.dumps(PROMPTS))
    spec = b.spec(extras={"challenge_prompts": str(b.tmp / "prompts.json")})
    (b.tmp / "test_reads.py").write_text(_READS_NEUTRAL)
    (b.tmp / "table.toml").write_text("[pairs]\n")
    b.monkeypatch.setenv("DPOCLAIMS_EXPECTATIONS", str(b.tmp / "table.toml"))
    reports = b.tmp / "reports"
    command = b.pytest_command(
        str(b.tmp / "test_reads.py"), *SUITE_PLUGINS, "--rootdir", str(b.tmp), "--pair", str(spec),
        "--reports-dir", str(reports), "--cache-dir", str(b.tmp / "cache"), "--device", "cpu",
    )  # fmt: skip
    output = b.run(command, timeout=300)
    records = {r["id"]: r for r in json.loads((reports / "claims.json").read_text())["claims"]}
    return {
        "exit": "0",
        "outcomes": {"C6[prompts]": "passed", "C6[neutral]": "skipped"},
        "reason": True,
    }, {
        "exit": "0" if "1 passed, 1 skipped" in output else output[-500:],
        "outcomes": {k: r["outcome"] for k, r in records.items()},
        "reason": "names no 'neutral_texts' file" in records["C6[neutral]"]["skip_reason"],
    }


test_case = catalogue_test(CASES)
