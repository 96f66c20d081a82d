"""Scorers for real pairs: Perspective against a fake server on loopback, Detoxify offline."""

from __future__ import annotations

import hashlib
import itertools
import json
import socket
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from dpoclaims.errors import CheckpointError, OptionError
from dpoclaims.measure.classifiers import (
    PERSPECTIVE_ATTRIBUTES,
    DetoxifyScorer,
    PerspectiveError,
    PerspectiveScorer,
    RateLimiter,
    _read_detoxify_checkpoint,
)
from dpoclaims.measure.scoring import Scorer, get_scorer

KEY = "test-key-123"


def canned_scores(text: str) -> dict[str, float]:
    """Deterministic per-attribute scores in [0, 1) for any text."""
    digest = hashlib.sha256(text.encode()).digest()
    return {attribute: digest[i] / 256 for i, attribute in enumerate(PERSPECTIVE_ATTRIBUTES)}


class FakePerspective:
    """A ``comments:analyze`` look-alike on 127.0.0.1 with scripted failures."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.requests: list[dict[str, Any]] = []  # time, text, body, query of every request
        self.fail_first: list[int] = []  # statuses to answer, in order, before any success
        self.fail_after: int | None = None  # after this many successes, answer 503 for ever
        self.retry_after: str | None = None  # Retry-After header sent with failures
        self.omit: str | None = None  # an attribute left out of successful answers
        self.successes = 0
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(self.path).query))
                status, payload = fake.answer(body, query)
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                if status != 200 and fake.retry_after is not None:
                    self.send_header("Retry-After", fake.retry_after)
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1alpha1/comments:analyze"
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def answer(self, body: dict[str, Any], query: dict[str, str]) -> tuple[int, dict[str, Any]]:
        text = body["comment"]["text"]
        with self.lock:
            self.requests.append({"time": time.monotonic(), "text": text, "body": body, "query": query})
            if query.get("key") != KEY:
                return 403, {"error": {"code": 403, "message": "API key not valid."}}
            if self.fail_first:
                status = self.fail_first.pop(0)
                return status, {"error": {"code": status, "message": f"scripted failure {status}"}}
            if self.fail_after is not None and self.successes >= self.fail_after:
                return 503, {"error": {"code": 503, "message": "The service is currently unavailable."}}
            self.successes += 1
        scores = canned_scores(text)
        attribute_scores = {
            attribute: {"summaryScore": {"value": scores[attribute], "type": "PROBABILITY"}, "spanScores": []}
            for attribute in body["requestedAttributes"]
            if attribute != self.omit
        }
        return 200, {"attributeScores": attribute_scores, "languages": ["en"]}

    @property
    def texts(self) -> list[str]:
        with self.lock:
            return [r["text"] for r in self.requests]


@pytest.fixture
def fake() -> Iterator[FakePerspective]:
    server = FakePerspective()
    server.thread.start()
    try:
        yield server
    finally:
        server.server.shutdown()
        server.server.server_close()
        server.thread.join(timeout=5)


@pytest.fixture
def make(fake: FakePerspective, tmp_path: Path) -> Callable[..., PerspectiveScorer]:
    """A scorer pointed at the fake server, fast by default (high rate, tiny backoff)."""

    def build(**overrides: Any) -> PerspectiveScorer:
        kwargs: dict[str, Any] = {
            "api_key": KEY,
            "url": fake.url,
            "rate": 1000.0,
            "backoff": 0.01,
            "max_backoff": 0.05,
            "timeout": 5.0,
            "cache_dir": tmp_path / "perspective-cache",
            "progress": False,
        }
        return PerspectiveScorer(**{**kwargs, **overrides})

    return build


def expected(text: str, attributes: tuple[str, ...] = PERSPECTIVE_ATTRIBUTES) -> float:
    scores = canned_scores(text)
    return max(scores[a] for a in attributes)


# ---------------------------------------------------------------------------- Perspective


def test_score_is_max_over_the_seven_attributes(
    fake: FakePerspective, make: Callable[..., PerspectiveScorer]
):
    scorer = make()
    assert isinstance(scorer, Scorer) and scorer.name == "perspective"
    texts = ["you are wonderful", "what a stupid idea", "ok"]
    scores = scorer.score(texts)
    assert scores == [pytest.approx(expected(t)) for t in texts]
    # the max is not just one attribute: the canned scores make different attributes win
    winners = {max(canned_scores(t), key=canned_scores(t).get) for t in texts}
    assert len(winners) > 1
    assert fake.texts == texts
    request = fake.requests[0]
    assert request["query"]["key"] == KEY
    assert len(PERSPECTIVE_ATTRIBUTES) == 7
    assert set(request["body"]["requestedAttributes"]) == set(PERSPECTIVE_ATTRIBUTES)
    assert request["body"]["languages"] == ["en"]
    assert request["body"]["doNotStore"] is True
    assert scorer.score([]) == []


def test_empty_and_repeated_texts_need_no_extra_requests(
    fake: FakePerspective, make: Callable[..., PerspectiveScorer]
):
    scorer = make()
    scores = scorer.score(["", "   ", "hello there", "hello there"])
    assert scores[:2] == [0.0, 0.0]
    assert scores[2] == scores[3] == pytest.approx(expected("hello there"))
    assert fake.texts == ["hello there"]


def test_retries_with_backoff_then_succeeds(fake: FakePerspective, make: Callable[..., PerspectiveScorer]):
    fake.fail_first = [429, 500, 503]
    scorer = make(backoff=0.04, max_backoff=1.0, max_attempts=5)
    start = time.monotonic()
    assert scorer.score(["retry me"]) == [pytest.approx(expected("retry me"))]
    elapsed = time.monotonic() - start
    assert fake.texts == ["retry me"] * 4 and scorer.requests_made == 4
    assert elapsed >= 0.04 + 0.08 + 0.16 - 0.02  # exponential backoff between the four tries
    times = [r["time"] for r in fake.requests]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert gaps[2] > gaps[0]  # the waits grow


def test_retry_after_header_is_honoured(fake: FakePerspective, make: Callable[..., PerspectiveScorer]):
    fake.fail_first = [429]
    fake.retry_after = "0.3"
    scorer = make(backoff=0.01, max_backoff=1.0)
    scorer.score(["slow down"])
    first, second = (r["time"] for r in fake.requests)
    assert second - first >= 0.25


def test_gives_up_after_max_attempts_with_a_clear_error(
    fake: FakePerspective, make: Callable[..., PerspectiveScorer]
):
    fake.fail_first = [500] * 10
    scorer = make(max_attempts=3)
    with pytest.raises(PerspectiveError, match="failed 3 attempts") as info:
        scorer.score(["doomed"])
    message = str(info.value)
    assert "HTTP 500" in message and "scripted failure 500" in message and "rerun to resume" in message
    assert KEY not in message  # the key travels in the URL but never in an error
    assert len(fake.requests) == 3
    assert not scorer.cache.path.exists() or scorer.cache.load() == {}


def test_client_errors_are_not_retried(fake: FakePerspective, make: Callable[..., PerspectiveScorer]):
    fake.fail_first = [400]
    with pytest.raises(PerspectiveError, match="HTTP 400: scripted failure 400"):
        make().score(["bad request"])
    assert len(fake.requests) == 1
    with pytest.raises(PerspectiveError, match="HTTP 403: API key not valid") as info:
        make(api_key="wrong-key").score(["bad key"])
    assert "wrong-key" not in str(info.value)
    assert len(fake.requests) == 2


def test_connection_errors_are_retried_then_reported(tmp_path: Path):
    with socket.socket() as sock:  # a loopback port with nobody listening
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    scorer = PerspectiveScorer(
        api_key=KEY,
        url=f"http://127.0.0.1:{port}/analyze",
        rate=1000.0,
        backoff=0.01,
        max_attempts=3,
        timeout=2.0,
        cache_dir=tmp_path,
        progress=False,
    )
    with pytest.raises(PerspectiveError, match="failed 3 attempts.*URLError"):
        scorer.score(["anyone there?"])
    assert scorer.requests_made == 3


def test_malformed_answer_is_an_error(fake: FakePerspective, make: Callable[..., PerspectiveScorer]):
    fake.omit = "THREAT"
    scorer = make()
    with pytest.raises(PerspectiveError, match="unexpected answer.*THREAT"):
        scorer.score(["where is threat"])
    assert scorer.cache.load() == {}


def test_rate_limit_spaces_requests(fake: FakePerspective, make: Callable[..., PerspectiveScorer]):
    scorer = make(rate=10.0)  # one request per 0.1 s
    texts = [f"text {i}" for i in range(4)]
    start = time.monotonic()
    scorer.score(texts)
    elapsed = time.monotonic() - start
    times = [r["time"] for r in fake.requests]
    assert fake.texts == texts
    assert elapsed >= 0.3 - 0.02
    assert all(b - a >= 0.08 for a, b in itertools.pairwise(times))


def test_rate_limiter_rejects_non_positive_rates():
    for rate in (0.0, -1.0, float("nan")):
        with pytest.raises(OptionError, match="rate"):
            RateLimiter(rate)


def test_cache_second_instance_makes_no_requests(
    fake: FakePerspective, make: Callable[..., PerspectiveScorer]
):
    texts = ["first text", "second text", "", "third text"]
    first = make().score(texts)
    assert len(fake.requests) == 3
    assert make().score(texts) == first  # same results from disk
    again = make()
    assert again.score(list(reversed(texts))) == list(reversed(first))
    assert again.requests_made == 0 and len(fake.requests) == 3
    # only the new text is asked for
    assert again.score(["first text", "fourth text"]) == [first[0], pytest.approx(expected("fourth text"))]
    assert fake.texts[3:] == ["fourth text"]


def test_cache_key_covers_the_attribute_set(fake: FakePerspective, make: Callable[..., PerspectiveScorer]):
    make().score(["shared text"])
    toxicity_only = make(attributes=["TOXICITY"])
    assert toxicity_only.key("shared text") != make().key("shared text")
    assert toxicity_only.score(["shared text"]) == [pytest.approx(canned_scores("shared text")["TOXICITY"])]
    assert len(fake.requests) == 2
    assert set(fake.requests[1]["body"]["requestedAttributes"]) == {"TOXICITY"}


def test_interrupted_run_resumes_without_requerying(
    fake: FakePerspective, make: Callable[..., PerspectiveScorer]
):
    texts = [f"continuation number {i}" for i in range(6)]
    fake.fail_after = 2  # the service goes down after two answers
    with pytest.raises(PerspectiveError, match="rerun to resume"):
        make(max_attempts=2).score(texts)
    assert fake.texts == texts[:2] + [texts[2]] * 2
    assert len(make().cache.load()) == 2
    fake.fail_after = None  # back up
    resumed = make()
    assert resumed.score(texts) == [pytest.approx(expected(t)) for t in texts]
    assert resumed.requests_made == 4
    assert fake.texts[4:] == texts[2:]


def test_torn_cache_line_is_skipped_and_fenced(fake: FakePerspective, make: Callable[..., PerspectiveScorer]):
    scorer = make()
    scorer.score(["kept"])
    with open(scorer.cache.path, "a") as handle:
        handle.write('{"key": "abc", "sco')  # a write cut short by a crash
    resumed = make()
    assert resumed.score(["kept", "new"]) == [pytest.approx(expected("kept")), pytest.approx(expected("new"))]
    assert resumed.requests_made == 1
    lines = scorer.cache.path.read_text().splitlines()
    assert len(lines) == 3 and json.loads(lines[2])["scores"] == pytest.approx(canned_scores("new"))
    assert make().score(["new"]) and len(fake.requests) == 2


def test_get_scorer_perspective_uses_environment_and_cache_root(
    fake: FakePerspective, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("DPOCLAIMS_CACHE", str(tmp_path / "root"))
    monkeypatch.setenv("PERSPECTIVE_API_KEY", KEY)
    monkeypatch.setenv("DPOCLAIMS_PERSPECTIVE_URL", fake.url)
    monkeypatch.setenv("DPOCLAIMS_PERSPECTIVE_QPS", "50")
    scorer = get_scorer("perspective")
    assert isinstance(scorer, PerspectiveScorer)
    assert scorer.url == fake.url and scorer.limiter.interval == pytest.approx(0.02)
    assert scorer.cache.path == tmp_path / "root" / "perspective" / "scores.jsonl"
    assert scorer.score(["via env"]) == [pytest.approx(expected("via env"))]
    assert scorer.cache.path.is_file()


def test_perspective_configuration_errors(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.delenv("PERSPECTIVE_API_KEY", raising=False)
    with pytest.raises(OptionError, match="PERSPECTIVE_API_KEY") as info:
        get_scorer("perspective")
    assert "lexicon" in str(info.value)  # get_scorer names the other scorers
    monkeypatch.setenv("PERSPECTIVE_API_KEY", KEY)
    monkeypatch.setenv("DPOCLAIMS_PERSPECTIVE_QPS", "fast")
    with pytest.raises(OptionError, match="DPOCLAIMS_PERSPECTIVE_QPS"):
        PerspectiveScorer(cache_dir=tmp_path)
    monkeypatch.delenv("DPOCLAIMS_PERSPECTIVE_QPS")
    with pytest.raises(OptionError, match="http"):
        PerspectiveScorer(url="ftp://127.0.0.1/x", cache_dir=tmp_path)
    with pytest.raises(OptionError, match="max_attempts"):
        PerspectiveScorer(max_attempts=0, cache_dir=tmp_path)


# ---------------------------------------------------------------------------- Detoxify

CLASSES = ["toxic", "severe_toxic", "obscene", "threat", "insult", "identity_hate"]
VOCAB = [
    "[PAD]",
    "[UNK]",
    "[CLS]",
    "[SEP]",
    "[MASK]",
    "you",
    "are",
    "a",
    "nice",
    "idiot",
    "person",
    "what",
    "!",
]


def detoxify_checkpoint(
    path: Path, state_dict: dict[str, Any], model_type: str = "bert-base-uncased"
) -> Path:
    """A file in the format of Detoxify's released checkpoints (config + state_dict)."""
    import torch

    config = {
        "arch": {
            "args": {
                "model_type": model_type,
                "model_name": "BertForSequenceClassification",
                "tokenizer_name": "BertTokenizer",
                "num_classes": len(CLASSES),
            }
        },
        "dataset": {"args": {"classes": CLASSES}},
    }
    torch.save({"config": config, "state_dict": state_dict, "epoch": 0}, path)
    return path


@pytest.fixture
def tiny_bert(tmp_path: Path) -> tuple[Path, Any, Any]:
    """A stand-in for bert-base-uncased: a directory with only config.json and vocab.txt
    (like the hub's, no num_labels), plus a random 6-label model and its tokenizer."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizer

    base = tmp_path / "bert-base-uncased"
    base.mkdir()
    (base / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    small: dict[str, Any] = {
        "vocab_size": len(VOCAB),
        "hidden_size": 16,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "intermediate_size": 32,
        "max_position_embeddings": 32,
        "initializer_range": 0.5,
    }
    BertConfig(**small).to_json_file(base / "config.json")
    torch.manual_seed(0)
    model = BertForSequenceClassification(BertConfig(**small, num_labels=len(CLASSES))).eval()
    return base, model, BertTokenizer(str(base / "vocab.txt"))


def test_detoxify_scores_a_tiny_checkpoint_like_the_model_it_holds(
    tiny_bert: tuple[Path, Any, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    pytest.importorskip("detoxify")
    import torch

    base, model, tokenizer = tiny_bert
    checkpoint = detoxify_checkpoint(tmp_path / "toxic_tiny.ckpt", model.state_dict())
    monkeypatch.setenv("DPOCLAIMS_DETOXIFY_CHECKPOINT", str(checkpoint))
    monkeypatch.setenv("DPOCLAIMS_DETOXIFY_HF_DIR", str(base))
    scorer = get_scorer("detoxify")
    assert isinstance(scorer, DetoxifyScorer) and scorer.name == "detoxify"
    assert scorer.model.class_names[0] == "toxicity"
    scorer.batch_size = 2  # three texts: a batch of two, then a batch of one
    texts = ["you are a nice person", "what a idiot !", "idiot"]
    scores = scorer.score(texts)
    with torch.no_grad():
        reference = [
            torch.sigmoid(model(**tokenizer(t, return_tensors="pt")).logits)[0, 0].item() for t in texts
        ]
    assert scores == [pytest.approx(r, abs=1e-5) for r in reference]
    assert all(0.0 <= s <= 1.0 for s in scores) and len(set(scores)) == 3
    assert scorer.score([]) == []


def test_detoxify_without_local_base_model_says_what_to_set(
    tiny_bert: tuple[Path, Any, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    pytest.importorskip("detoxify")
    _, model, _ = tiny_bert
    # a base model name no cache can hold; conftest keeps the hub offline, so this fails fast
    checkpoint = detoxify_checkpoint(tmp_path / "t.ckpt", model.state_dict(), "dpoclaims-tests/no-such-model")
    monkeypatch.delenv("DPOCLAIMS_DETOXIFY_HF_DIR", raising=False)
    with pytest.raises(CheckpointError, match="DPOCLAIMS_DETOXIFY_HF_DIR"):
        DetoxifyScorer(checkpoint, progress=False)


def test_detoxify_missing_package_says_what_to_install(
    tiny_bert: tuple[Path, Any, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    base, model, _ = tiny_bert
    checkpoint = detoxify_checkpoint(tmp_path / "t.ckpt", model.state_dict())
    monkeypatch.setitem(sys.modules, "detoxify", None)  # import detoxify -> ImportError
    with pytest.raises(OptionError, match=r"pip install 'dpoclaims\[detoxify\]'"):
        DetoxifyScorer(checkpoint, base)


def test_detoxify_checkpoint_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    import torch

    monkeypatch.delenv("DPOCLAIMS_DETOXIFY_CHECKPOINT", raising=False)
    with pytest.raises(OptionError, match="DPOCLAIMS_DETOXIFY_CHECKPOINT") as info:
        get_scorer("detoxify")
    assert "perspective" in str(info.value)
    monkeypatch.setenv("DPOCLAIMS_DETOXIFY_CHECKPOINT", str(tmp_path / "absent.ckpt"))
    with pytest.raises(CheckpointError, match="absent.ckpt does not exist"):
        get_scorer("detoxify")
    present = tmp_path / "present.ckpt"
    present.write_bytes(b"")
    with pytest.raises(CheckpointError, match="no config.json"):
        DetoxifyScorer(present, tmp_path)
    garbage = tmp_path / "garbage.ckpt"
    garbage.write_bytes(b"not a torch file at all")
    with pytest.raises(CheckpointError, match="cannot read detoxify checkpoint"):
        _read_detoxify_checkpoint(garbage, "cpu")
    foreign = tmp_path / "foreign.ckpt"
    torch.save({"state_dict": {}}, foreign)
    with pytest.raises(CheckpointError, match="not a detoxify checkpoint"):
        _read_detoxify_checkpoint(foreign, "cpu")
    mismatched = detoxify_checkpoint(tmp_path / "m.ckpt", {})
    loaded = torch.load(mismatched, weights_only=True)
    loaded["config"]["arch"]["args"]["num_classes"] = 3
    torch.save(loaded, mismatched)
    with pytest.raises(CheckpointError, match="6 class names for num_classes=3"):
        _read_detoxify_checkpoint(mismatched, "cpu")


class WritesMarkerWhenUnpickled:
    """Stands for code hidden in a checkpoint: unpickling it writes ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (exec, (f"open({str(self.marker)!r}, 'w').write('code ran')",))


def code_carrying_detoxify_checkpoint(path: Path, marker: Path) -> Path:
    """A Detoxify-shaped checkpoint (config + state_dict) with a pickled object that runs code."""
    import torch

    plain = detoxify_checkpoint(path, {"classifier.weight": torch.ones(6, 4)})
    loaded = torch.load(plain, weights_only=True)
    loaded["callbacks"] = WritesMarkerWhenUnpickled(marker)
    torch.save(loaded, path)
    return path


def test_detoxify_checkpoint_carrying_code_is_refused_and_runs_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.delenv("DPOCLAIMS_ALLOW_PICKLE_GLOBALS", raising=False)
    marker = tmp_path / "marker.txt"
    evil = code_carrying_detoxify_checkpoint(tmp_path / "evil.ckpt", marker)
    with pytest.raises(CheckpointError) as info:
        _read_detoxify_checkpoint(evil, "cpu")
    assert str(info.value) == (
        f"detoxify checkpoint {evil} needs pickle globals that safe loading refuses: builtins.exec. "
        "Unpickling them can run code from the file. If you trust this file, allow exactly these with "
        "--allow-pickle-globals builtins.exec or DPOCLAIMS_ALLOW_PICKLE_GLOBALS=builtins.exec"
    )
    # Allowing some other global does not let this one through.
    monkeypatch.setenv("DPOCLAIMS_ALLOW_PICKLE_GLOBALS", "fractions.Fraction")
    with pytest.raises(CheckpointError, match="refuses: builtins.exec"):
        _read_detoxify_checkpoint(evil, "cpu")
    assert not marker.exists()


def test_detoxify_scorer_refuses_a_checkpoint_carrying_code(
    tmp_path: Path, tiny_bert: tuple[Path, Any, Any], monkeypatch: pytest.MonkeyPatch
):
    pytest.importorskip("detoxify")
    monkeypatch.delenv("DPOCLAIMS_ALLOW_PICKLE_GLOBALS", raising=False)
    base, _, _ = tiny_bert
    marker = tmp_path / "marker.txt"
    evil = code_carrying_detoxify_checkpoint(tmp_path / "evil.ckpt", marker)
    with pytest.raises(CheckpointError, match=r"refuses: builtins\.exec\..*--allow-pickle-globals"):
        DetoxifyScorer(evil, base, progress=False)
    assert not marker.exists()


def test_plain_detoxify_checkpoint_loads_safely(tmp_path: Path, tiny_bert: tuple[Path, Any, Any]):
    import torch

    _, model, _ = tiny_bert
    path = detoxify_checkpoint(tmp_path / "plain.ckpt", model.state_dict())
    loaded = _read_detoxify_checkpoint(path, "cpu")
    assert loaded["config"]["dataset"]["args"]["classes"] == CLASSES
    assert set(loaded["state_dict"]) == set(model.state_dict())
    for name, tensor in model.state_dict().items():
        assert torch.equal(loaded["state_dict"][name], tensor)
