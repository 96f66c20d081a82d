"""Safe checkpoint loading: pickle globals are refused by name unless explicitly allowed."""

from __future__ import annotations

import datetime
import fractions
from pathlib import Path

import pytest
import torch

from dpoclaims.errors import CheckpointError, OptionError
from dpoclaims.files import (
    PICKLE_GLOBALS_ENV,
    allowed_global_names,
    load_checkpoint,
    pickle_globals_allowed,
    resolve_allowed_globals,
)


@pytest.fixture(autouse=True)
def _no_allow_list_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(PICKLE_GLOBALS_ENV, raising=False)


def _two_globals(path: Path, legacy: bool = False) -> Path:
    payload = {
        "weight": torch.ones(3),
        "fraction": fractions.Fraction(1, 3),
        "interval": datetime.timedelta(days=1),
    }
    torch.save(payload, path, _use_new_zipfile_serialization=not legacy)
    return path


def test_needed_globals_are_named_with_the_opt_in(tmp_path: Path):
    path = _two_globals(tmp_path / "two.pt")
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path, "probe")
    assert str(info.value) == (
        f"probe {path} needs pickle globals that safe loading refuses: datetime.timedelta, fractions.Fraction. "
        "Unpickling them can run code from the file. If you trust this file, allow exactly these with "
        "--allow-pickle-globals datetime.timedelta,fractions.Fraction or "
        "DPOCLAIMS_ALLOW_PICKLE_GLOBALS=datetime.timedelta,fractions.Fraction"
    )


def test_opt_in_allows_exactly_the_named_globals(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    path = _two_globals(tmp_path / "two.pt")
    before = set(torch.serialization.get_safe_globals())
    with pytest.raises(CheckpointError, match=r"refuses: datetime\.timedelta\. "):
        load_checkpoint(path, "probe", allow_globals="fractions.Fraction")
    loaded = load_checkpoint(path, "probe", allow_globals=["fractions.Fraction", "datetime.timedelta"])
    assert loaded["fraction"] == fractions.Fraction(1, 3) and loaded["interval"] == datetime.timedelta(days=1)
    monkeypatch.setenv(PICKLE_GLOBALS_ENV, "datetime.timedelta")
    loaded = load_checkpoint(path, "probe", allow_globals="fractions.Fraction")  # option + environment
    assert loaded["fraction"] == fractions.Fraction(1, 3)
    assert set(torch.serialization.get_safe_globals()) == before  # nothing stays allowed afterwards


def test_legacy_format_names_the_first_refused_global(tmp_path: Path):
    path = _two_globals(tmp_path / "legacy.pt", legacy=True)
    with pytest.raises(CheckpointError, match=r"refuses: (fractions\.Fraction|datetime\.timedelta)\. "):
        load_checkpoint(path, "probe")


def test_allow_list_parsing_and_resolution(monkeypatch: pytest.MonkeyPatch):
    assert allowed_global_names() == ()
    monkeypatch.setenv(PICKLE_GLOBALS_ENV, " fractions.Fraction ,,collections.deque")
    assert allowed_global_names("collections.deque, os.path.join") == (
        "collections.deque",
        "os.path.join",
        "fractions.Fraction",
    )
    resolved = resolve_allowed_globals(["os.path.join"])
    assert resolved["os.path.join"] is __import__("os").path.join
    assert resolved["fractions.Fraction"] is fractions.Fraction


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("Fraction", "not a fully qualified name"),
        ("fractions.Nope", "it does not import"),
        ("a..b", "not a fully"),
    ],
)
def test_bad_allow_list_names_are_option_errors(name: str, reason: str):
    with pytest.raises(OptionError, match=f"cannot allow pickle global {name!r}: {reason}"):
        resolve_allowed_globals(name)


def test_context_allows_for_every_load_inside_and_nests(tmp_path: Path):
    path = _two_globals(tmp_path / "two.pt")
    with pickle_globals_allowed("fractions.Fraction,datetime.timedelta") as names:
        assert names == ("fractions.Fraction", "datetime.timedelta")
        load_checkpoint(path, "probe", allow_globals="fractions.Fraction")  # an inner allow of the same
        assert torch.load(path, weights_only=True)["fraction"] == fractions.Fraction(1, 3)
    with pytest.raises(CheckpointError, match="refuses"):
        load_checkpoint(path, "probe")


def test_corrupt_file_is_not_mistaken_for_a_pickle_problem(tmp_path: Path):
    path = tmp_path / "bad.pt"
    path.write_bytes(b"not a torch file")
    with pytest.raises(
        CheckpointError, match=r"cannot read probe .*bad\.pt \(corrupt, or not a plain torch file\)"
    ):
        load_checkpoint(path, "probe")


def test_cli_option_allows_globals_for_the_checkpoints_a_command_loads(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], gpt2_pair_files
):
    from tiny import write_spec

    from dpoclaims.cli import main

    probe = tmp_path / "probe_with_metadata.pt"
    torch.save({"weight": torch.load(gpt2_pair_files.probe), "trained": datetime.timedelta(days=1)}, probe)
    spec = write_spec(
        tmp_path / "pair.toml",
        base=gpt2_pair_files.base,
        dpo=gpt2_pair_files.dpo,
        probe=probe,
        tokenizer=gpt2_pair_files.tokenizer,
    )
    command = ["--cache-dir", str(tmp_path / "cache"), "info", "--pair", str(spec)]
    assert main(command) == 2
    assert "datetime.timedelta" in capsys.readouterr().err
    assert main([*command, "--allow-pickle-globals", "datetime.timedelta"]) == 0
    assert '"d_model": 32' in capsys.readouterr().out
    assert main([*command, "--allow-pickle-globals", "timedelta"]) == 2
    assert "cannot allow pickle global 'timedelta': not a fully qualified name" in capsys.readouterr().err
