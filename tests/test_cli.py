"""The command line."""

from __future__ import annotations

import json
import re

import pytest
from tiny import tiny_toy_config, write_spec

from dpoclaims.cli import main
from dpoclaims.train.organism import DEFAULT_SEED
from dpoclaims.train.organism import build as build_module


def test_info_unknown_pair(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["--cache-dir", str(tmp_path / "cache"), "info", "--pair", "nonexistent"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("dpoclaims: error: ")
    assert "unknown pair 'nonexistent'" in captured.err
    assert "Traceback" not in captured.err
    assert len(captured.err.strip().splitlines()) == 1


def test_info_bad_pair_spec(tmp_path, capsys, gpt2_pair_files):
    spec = write_spec(
        tmp_path / "pair.toml",
        base=str(gpt2_pair_files.base),
        dpo=str(tmp_path / "missing.pt"),
        probe=str(gpt2_pair_files.probe),
    )
    assert main(["--cache-dir", str(tmp_path / "cache"), "info", "--pair", str(spec)]) == 2
    assert "missing.pt" in capsys.readouterr().err


def test_info_prints_pair_summary(tmp_path, capsys, gpt2_pair_files, gpt2_pair):
    assert main(["--cache-dir", str(tmp_path / "cache"), "info", "--pair", str(gpt2_pair_files.spec)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["fingerprint"] == gpt2_pair.fingerprint
    assert (info["mlp"], info["n_layers"], info["d_model"], info["d_mlp"]) == ("gpt2", 2, 32, 128)
    assert info["n_neurons"] == 256
    assert info["extras"] == {"report": "notes.txt"}


def test_missing_command_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as info:
        main([])
    assert info.value.code == 2


def test_help_describes_every_command_on_a_line_of_its_own():
    from dpoclaims.cli import build_parser

    parser = build_parser()
    commands = re.search(r"\{([^}]*)\}", parser.format_usage())[1].split(",")  # usage: {build-toy,info,...}
    described = [line.split()[0] for line in (parser.description or "").splitlines() if line.startswith("  ")]
    assert len(commands) >= 6
    assert sorted(described) == sorted(commands)


@pytest.mark.slow
def test_build_toy_command(tmp_path, capsys, monkeypatch, tiny_toy_cache):
    """``build-toy`` with the tiny config (patched in) at the default seed: writes the report, exits 0
    iff every band is met."""
    tiny = tiny_toy_config(DEFAULT_SEED)
    monkeypatch.setattr(build_module, "ToyConfig", lambda: tiny)
    report_path = tmp_path / "reports" / "toy.json"
    code = main(
        ["--cache-dir", str(tiny_toy_cache.root), "build-toy", "--report", str(report_path), "--no-progress"]
    )
    report = json.loads(report_path.read_text())
    assert report["toy_dir"] == str(tiny_toy_cache.entry_dir("toy", build_module.toy_key(tiny)))
    assert code == (0 if all(b["ok"] for b in report["bands"].values()) else 1)
    out = capsys.readouterr().out
    for band in report["bands"]:
        assert band in out
    assert "toxicity [" in out
    rule = report["dpo_checkpoints"]
    assert (
        f"DPO model: the checkpoint at step {rule['kept_step']} under the DPO recipe {rule['recipe']}, "
        in out
    )
    assert ("the first in every band" in out) == rule["in_band"] == ("the closest to the bands" not in out)
    # the bands are introduced by where they are documented, never by a tracker's issue number
    assert "bands of the toy's setting (docs/toy.md, 'Bands'):" in out and "issue" not in out
