"""Data loaders (RealToxicityPrompts, Wikitext-2, Jigsaw CSV, shipped prompt sets) and ``train-probe``."""

from __future__ import annotations

import csv
import gzip
import json
import logging
import math
import socket

import pytest
import torch
from tiny import D_MODEL, N_POSITIONS

from dpoclaims.cli import main
from dpoclaims.errors import CheckpointError, OptionError
from dpoclaims.measure import data
from dpoclaims.train.organism import corpus


@pytest.fixture
def no_network(monkeypatch, tmp_path):
    """Offline flags set, empty library caches, and any socket connection refused."""
    import datasets.config
    import huggingface_hub.constants

    for name in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.setenv(name, "1")
    monkeypatch.setattr(datasets.config, "HF_DATASETS_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True, raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "datasets_cache")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub_cache"))
    monkeypatch.delenv(data.RTP_ENV, raising=False)
    monkeypatch.delenv(data.WIKITEXT_ENV, raising=False)

    def refuse(*args, **kwargs):
        raise OSError("network access is disabled in the tests")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


def _rtp_row(text: str, challenging: bool | None) -> str:
    row: dict = {
        "filename": "x.txt",
        "begin": 0,
        "end": 10,
        "prompt": {"text": text, "toxicity": 0.5},
        "continuation": {"text": " more", "toxicity": 0.1},
    }
    if challenging is not None:
        row["challenging"] = challenging
    return json.dumps(row)


# --------------------------------------------------------------------------- RealToxicityPrompts


@pytest.mark.parametrize("gzipped", [False, True])
def test_rtp_jsonl_keeps_only_challenging(tmp_path, caplog, gzipped):
    lines = [
        _rtp_row("first, kept", True),
        _rtp_row("dropped", False),
        "",
        _rtp_row("no flag, dropped in a flagged file", None),
        _rtp_row('second "kept"\nwith a newline', True),
    ]
    raw = "\n".join(lines) + "\n"
    path = tmp_path / ("prompts.jsonl.gz" if gzipped else "prompts.jsonl")
    if gzipped:
        with gzip.open(path, "wt", encoding="utf-8") as handle:
            handle.write(raw)
    else:
        path.write_text(raw)
    with caplog.at_level(logging.INFO, logger="dpoclaims.measure.data"):
        prompts = data.load_rtp_challenge(path)
    assert prompts == ["first, kept", 'second "kept"\nwith a newline']
    assert "2 prompts" in caplog.text
    assert "not the paper's 1199" in caplog.text  # a flagged file with another count warns
    assert data.load_rtp_challenge(path, limit=1) == ["first, kept"]
    assert data.load_rtp_challenge(tmp_path) == prompts  # a directory holding the file


def test_rtp_json_list_and_text_are_taken_as_filtered(tmp_path, caplog, monkeypatch):
    listed = tmp_path / "challenge.json"
    listed.write_text(json.dumps(["a prompt", "another, with a comma"]))
    text = tmp_path / "challenge.txt"
    text.write_text("a prompt\n\nanother, with a comma\n")
    with caplog.at_level(logging.WARNING, logger="dpoclaims.measure.data"):
        assert data.load_rtp_challenge(listed) == ["a prompt", "another, with a comma"]
        assert data.load_rtp_challenge(str(text)) == ["a prompt", "another, with a comma"]
    assert caplog.text == ""  # no count warning for pre-filtered files
    monkeypatch.setenv(data.RTP_ENV, str(listed))
    assert data.load_rtp_challenge() == ["a prompt", "another, with a comma"]


def test_rtp_unflagged_jsonl_is_taken_as_filtered(tmp_path):
    path = tmp_path / "challenge.jsonl"
    path.write_text(_rtp_row("one", None) + "\n" + json.dumps({"prompt": "two"}) + "\n")
    assert data.load_rtp_challenge(path) == ["one", "two"]


@pytest.mark.parametrize(
    "content, message",
    [
        ("[1, 2]", "JSON list of prompt strings"),
        ("{not json", "is not JSON"),
    ],
)
def test_rtp_bad_json(tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(CheckpointError, match=message):
        data.load_rtp_challenge(path)


def test_rtp_bad_jsonl_row_names_the_line(tmp_path):
    path = tmp_path / "prompts.jsonl"
    path.write_text(
        _rtp_row("ok", True) + "\n" + json.dumps({"challenging": True, "prompt": {"toxicity": 1}}) + "\n"
    )
    with pytest.raises(CheckpointError, match="line 2"):
        data.load_rtp_challenge(path)


def test_rtp_missing_file_says_how_to_get_it(tmp_path):
    with pytest.raises(CheckpointError) as info:
        data.load_rtp_challenge(tmp_path / "prompts.jsonl")
    message = str(info.value)
    assert "does not exist" in message and data.RTP_ENV in message and "prompts.jsonl" in message


def test_rtp_without_file_or_datasets_access_is_a_clear_error(no_network):
    """The real ``datasets`` call, offline with empty caches: a CheckpointError, never a hang."""
    with pytest.raises(CheckpointError) as info:
        data.load_rtp_challenge()
    message = str(info.value)
    assert data.RTP_ENV in message and "path=" in message and "challenging" in message
    assert "datasets could not load it" in message


def test_rtp_from_datasets_filters_and_warns(monkeypatch, caplog):
    rows = [{"challenging": i % 3 == 0, "prompt": {"text": f"prompt {i}"}} for i in range(9)]
    calls = []

    def fake_hub(name, config=None, split="train"):
        calls.append((name, config, split))
        return rows

    monkeypatch.delenv(data.RTP_ENV, raising=False)
    monkeypatch.setattr(data, "_hub_dataset", fake_hub)
    with caplog.at_level(logging.WARNING, logger="dpoclaims.measure.data"):
        assert data.load_rtp_challenge() == ["prompt 0", "prompt 3", "prompt 6"]
    assert calls == [(data.RTP_HUB_NAME, None, "train")]
    assert "not the paper's 1199" in caplog.text


# --------------------------------------------------------------------------- Wikitext-2

WIKI_RAW = (
    " \n = Valley Station = \n \n"
    " The station opened in 1901 , serving the town of Northfield and the villages along the river . \n"
    " It closed in 1964 after the line was cut back . \n \n = = History = = \n \n"
    " Plans for a railway through the valley date from 1887 . @-@ The first trains ran in June 1901 . \n"
)


def test_wikitext_rows_match_the_dataset_layout(tmp_path, monkeypatch, no_network):
    path = tmp_path / "wiki.test.raw"
    path.write_text(WIKI_RAW)
    rows = data.load_wikitext2_test(path)
    assert len(rows) == WIKI_RAW.count("\n")
    assert rows[0] == "" and rows[1] == " = Valley Station = \n"
    assert "".join(rows) == "".join(line for line in WIKI_RAW.splitlines(keepends=True) if line.strip())
    assert data.load_wikitext2_test(tmp_path) == rows  # a directory holding wiki.test.raw
    monkeypatch.setenv(data.WIKITEXT_ENV, str(path))
    assert data.load_wikitext2_test() == rows


def test_wikitext_missing(tmp_path, no_network):
    with pytest.raises(CheckpointError, match=data.WIKITEXT_ENV):
        data.load_wikitext2_test(tmp_path / "nope.raw")
    with pytest.raises(CheckpointError, match="datasets could not load it"):
        data.load_wikitext2_test()


@pytest.mark.parametrize("window", [1, 7, 16, 10_000])
def test_perplexity_windows_cover_every_token(tokenizer, window):
    rows = [line if line.strip() else "" for line in WIKI_RAW.splitlines(keepends=True)] * 3
    windows = data.perplexity_windows(tokenizer, rows, window=window)
    ids = tokenizer("\n\n".join(rows), add_special_tokens=False)["input_ids"]
    assert [token for w in windows for token in w] == ids
    assert len(windows) == math.ceil(len(ids) / window)
    assert all(len(w) == window for w in windows[:-1])
    assert 0 < len(windows[-1]) <= window


def test_perplexity_windows_reject_bad_window(tokenizer):
    with pytest.raises(OptionError):
        data.perplexity_windows(tokenizer, ["text"], window=0)


# --------------------------------------------------------------------------- Jigsaw

JIGSAW_CSV = (
    "id,comment_text,toxic,severe_toxic,obscene,threat,insult,identity_hate\n"
    'a1,"Plain, with a comma",0,0,0,0,0,0\n'
    'a2,"Line one\nline two, ""quoted""",1,0,0,0,0,0\n'
    "a3,only an insult,0,0,0,0,1,0\n"
    'a4,"unscored row",-1,-1,-1,-1,-1,-1\n'
    'a5,"",1,0,0,0,0,0\n'
    'a6,"threat only\r\nwith CRLF",0,0,0,1,0,0\n'
)


def test_jigsaw_csv_quoting_and_labels(tmp_path):
    path = tmp_path / "train.csv"
    path.write_bytes(JIGSAW_CSV.encode())
    texts, labels = data.read_jigsaw_csv(path)
    assert texts == [
        "Plain, with a comma",
        'Line one\nline two, "quoted"',
        "only an insult",
        "threat only\r\nwith CRLF",
    ]
    assert labels == [0, 1, 1, 1]


def test_jigsaw_float_columns_use_a_majority(tmp_path):
    path = tmp_path / "fractions.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["comment_text", "toxic", "obscene"])
        writer.writerows([["low", 0.3, 0.1], ["high", 0.6, 0.0], ["edge", 0.0, 0.5], ["zero", 0.0, 0.0]])
    assert data.read_jigsaw_csv(path) == (["low", "high", "edge", "zero"], [0, 1, 1, 0])


@pytest.mark.parametrize(
    "header, missing",
    [
        ("id,text,toxic", "comment_text"),
        ("id,comment_text,insult", "toxic"),
    ],
)
def test_jigsaw_missing_column(tmp_path, header, missing):
    path = tmp_path / "bad.csv"
    path.write_text(header + "\n1,hello,0\n")
    with pytest.raises(CheckpointError, match=f"lacks the column.*{missing}"):
        data.read_jigsaw_csv(path)


@pytest.mark.parametrize(
    "body, message",
    [
        ("1,hello,yes\n", "not a number"),
        ("1,hello\n", "2 fields"),
        ("", "no labelled comments"),
    ],
)
def test_jigsaw_bad_rows(tmp_path, body, message):
    path = tmp_path / "bad.csv"
    path.write_text("id,comment_text,toxic\n" + body)
    with pytest.raises(CheckpointError, match=message):
        data.read_jigsaw_csv(path)


def test_train_val_split():
    train, val = data.train_val_split(50, 0.2, seed=3)
    assert len(val) == 10 and len(train) == 40 and sorted(train + val) == list(range(50))
    assert data.train_val_split(50, 0.2, seed=3) == (train, val)
    train, val = data.train_val_split(50, 0.25, seed=3, max_examples=20)
    assert (len(train), len(val)) == (15, 5) and len(set(train + val)) == 20
    with pytest.raises(OptionError):
        data.train_val_split(50, 1.0, seed=0)


# --------------------------------------------------------------------------- shipped prompt sets


def test_shipped_prompt_sets_load_and_match_the_generator():
    generated = data.generate_prompt_sets()
    assert set(generated) == set(data.SHIPPED_PROMPT_SETS)
    for name, texts in generated.items():
        shipped = data.shipped_prompt_set(name)
        assert shipped == texts, (
            f"{name} differs from generate_prompt_sets(); run python -m dpoclaims.measure.data"
        )
        assert 24 <= len(shipped) <= 100 and len(set(shipped)) == len(shipped)
        assert data.shipped_prompt_set_path(name).is_file()
        words = {w.strip(",.:").lower() for text in shipped for w in text.split()}
        assert not words & set(corpus.PROFANITY), "shipped prompts must stay mild"
    assert data.shipped_prompt_set("challenge_small.json") == generated["challenge_small"]
    with pytest.raises(OptionError, match="challenge_small"):
        data.shipped_prompt_set("full_rtp")


def test_shipped_prompt_sets_work_as_pair_extras():
    from dpoclaims.measure.prompts import read_texts

    for name in data.SHIPPED_PROMPT_SETS:
        assert read_texts(data.shipped_prompt_set_path(name)) == data.shipped_prompt_set(name)


# --------------------------------------------------------------------------- train-probe


def _write_jigsaw(path, texts, labels) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(
            ["id", "comment_text", "toxic", "severe_toxic", "obscene", "threat", "insult", "identity_hate"]
        )
        for i, (text, label) in enumerate(zip(texts, labels)):
            writer.writerow([f"c{i}", text, label, 0, 0, 0, 0, 0])


def test_train_probe_end_to_end(tmp_path, capsys, gpt2_pair_files):
    from dpoclaims.models.pairs import load_probe

    texts, labels = corpus.labelled_comments(160, seed=5)
    assert 0 < sum(labels) < len(labels)
    csv_path = tmp_path / "jigsaw.csv"
    _write_jigsaw(csv_path, texts, labels)
    out = tmp_path / "probes" / "probe.pt"
    code = main(
        [
            "--cache-dir",
            str(tmp_path / "cache"),
            "train-probe",
            "--base",
            str(gpt2_pair_files.base),
            "--csv",
            str(csv_path),
            "--out",
            str(out),
            "--max-examples",
            "120",
            "--val-fraction",
            "0.25",
            "--seed",
            "1",
            "--batch-size",
            "16",
            "--no-progress",
        ]
    )
    assert code == 0
    probe = load_probe(str(out), D_MODEL)
    assert probe.shape == (D_MODEL,)
    assert torch.load(out, weights_only=True).numel() == D_MODEL
    sidecar = json.loads((tmp_path / "probes" / "probe.pt.json").read_text())
    assert (sidecar["n_examples"], sidecar["n_train"], sidecar["n_val"]) == (120, 90, 30)
    assert (
        sidecar["seed"] == 1
        and sidecar["base"] == str(gpt2_pair_files.base)
        and sidecar["d_model"] == D_MODEL
    )
    assert sidecar["max_tokens"] == N_POSITIONS  # capped at the context length of the tiny model
    assert 0.0 <= sidecar["val_accuracy"] <= 1.0 and 0.0 <= sidecar["train_accuracy"] <= 1.0
    assert 0.0 < sidecar["toxic_share"]["all"] < 1.0
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")], "temporary files left behind"
    printed = capsys.readouterr().out
    assert "accuracy train" in printed and "toxic share" in printed


def test_train_probe_bad_csv_is_a_one_line_error(tmp_path, capsys, gpt2_pair_files):
    csv_path = tmp_path / "bad.csv"
    csv_path.write_text("id,text,label\n1,hello,0\n")
    code = main(
        [
            "--cache-dir",
            str(tmp_path / "cache"),
            "train-probe",
            "--base",
            str(gpt2_pair_files.base),
            "--csv",
            str(csv_path),
            "--out",
            str(tmp_path / "probe.pt"),
        ]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("dpoclaims: error: ") and "comment_text" in err and "Traceback" not in err
    assert not (tmp_path / "probe.pt").exists()
