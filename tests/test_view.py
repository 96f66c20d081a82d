"""``dpoclaims view``: the latest report page of a reports directory, opened in a browser, printed
(``--no-browser``) or served on this machine (``--serve``). Nothing here waits on a browser."""

from __future__ import annotations

import os
import threading
import time
import urllib.request
import webbrowser
from pathlib import Path

import pytest

from dpoclaims.cli import main, page_server


def _pages(directory: Path) -> tuple[Path, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    claims, sweep = directory / "index.html", directory / "replication.html"
    claims.write_text("<!DOCTYPE html><title>claims</title>")
    sweep.write_text("<!DOCTYPE html><title>sweep</title>")
    now = time.time()
    os.utime(claims, (now - 60, now - 60))  # the sweep's page is the newer
    os.utime(sweep, (now, now))
    return claims, sweep


@pytest.fixture
def no_browser(monkeypatch):
    def refuse(url: str, *args: object, **kwargs: object) -> bool:
        raise AssertionError(f"a browser was asked to open {url}")

    monkeypatch.setattr(webbrowser, "open", refuse)


def test_no_browser_prints_the_latest_page(tmp_path, capsys, no_browser):
    claims, sweep = _pages(tmp_path / "reports")
    assert main(["view", "--reports-dir", str(tmp_path / "reports"), "--no-browser"]) == 0
    assert capsys.readouterr().out.strip() == str(sweep.resolve())
    later = time.time() + 60
    os.utime(claims, (later, later))  # now the claims page is the newer
    assert main(["view", "--reports-dir", str(tmp_path / "reports"), "--no-browser"]) == 0
    assert capsys.readouterr().out.strip() == str(claims.resolve())


def test_the_reports_directory_defaults_to_the_variable(tmp_path, capsys, monkeypatch, no_browser):
    _, sweep = _pages(tmp_path / "elsewhere")
    monkeypatch.setenv("DPOCLAIMS_REPORTS", str(tmp_path / "elsewhere"))
    assert main(["view", "--no-browser"]) == 0
    assert capsys.readouterr().out.strip() == str(sweep.resolve())


def test_without_a_page_it_says_what_to_run(tmp_path, capsys, no_browser):
    assert main(["view", "--reports-dir", str(tmp_path), "--no-browser"]) == 2
    error = capsys.readouterr().err
    assert f"no report page in {tmp_path}" in error and "run `pytest claims/`" in error


def test_it_opens_the_page_in_a_browser(tmp_path, capsys, monkeypatch):
    _, sweep = _pages(tmp_path / "reports")
    opened: list[str] = []
    monkeypatch.setattr(webbrowser, "open", lambda url, *a, **k: opened.append(url) or True)
    assert main(["view", "--reports-dir", str(tmp_path / "reports")]) == 0
    assert opened == [sweep.resolve().as_uri()]


def test_where_no_browser_starts_it_says_so(tmp_path, capsys, monkeypatch):
    _pages(tmp_path / "reports")
    monkeypatch.setattr(webbrowser, "open", lambda url, *a, **k: False)
    assert main(["view", "--reports-dir", str(tmp_path / "reports")]) == 0
    assert "no browser could be started here" in capsys.readouterr().err


def test_the_server_serves_the_reports_directory_on_this_machine_only(tmp_path):
    claims, _ = _pages(tmp_path / "reports")
    server = page_server(tmp_path / "reports", 0)
    host, port = server.server_address[:2]
    assert host == "127.0.0.1"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/index.html", timeout=10) as response:
            assert response.read() == claims.read_bytes()
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
