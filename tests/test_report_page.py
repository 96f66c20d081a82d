"""The report page (``reports/index.html``): one self-contained file that fetches nothing, built
from a claims run's ``claims.json`` alone; and the same kind of page for a sweep's matrix.

The page is built here from a small hand-made ``claims.json`` (no model), checked as HTML, and
loaded in a real browser (Chromium from the system packages, driven by Selenium): it loads with
no console error, shows every claim of the run, a claim's details open on a click, and the forest
plot has one row per claim with a figure. Without the browser that test is skipped, with the
reason naming the install line (under ``DPOCLAIMS_EXPECT_BROWSER=1``, as in ``.ci/run``, it
fails instead); it is never silently passed.
"""

from __future__ import annotations

import base64
import json
import math
import os
import shutil
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from dpoclaims.report.page import VERDICT_COLORS, claims_page, criterion_of, forest_rows, matrix_page

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
BROWSER_INSTALL = "apt-get install -y chromium chromium-driver && pip install selenium"
# A 1x1 PNG: the page must carry figures inline.
PIXEL = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
)


def _claim(
    claim_id: str, verdict: str, measured: float, ci: tuple[float, float] | None, **extra: Any
) -> dict:
    claim, _, param = claim_id.partition("[")
    return {
        "claim": claim,
        "param": param.rstrip("]"),
        "statement": f"the statement of {claim_id}",
        "criterion": f"the criterion of {claim_id}",
        "measured": measured,
        "ci": list(ci) if ci else None,
        "exact": extra.pop("exact", False),
        "p_value": extra.pop("p_value", 0.01),
        "verdict": verdict,
        "paper": extra.pop("paper", None),
        "hypothesis": False,
        "details": extra.pop("details", {}),
        "finding": "",
        "id": claim_id,
        **extra,
    }


def _record(claim_id: str, claim: dict | None, outcome: str = "passed", skip_reason: str = "") -> dict:
    return {
        "id": claim_id,
        "order": 0,
        "keyword": "ablation",
        "expected": "replicates",
        "outcome": outcome,
        "node_id": f"claims/test_x.py::test_{claim_id}",
        "claim": claim,
        "skip_reason": skip_reason,
        "pair_fingerprint": "f00d",
    }


def hand_made_report() -> dict:
    """A claims.json of seven claims in every state: six with a figure (one exact, one whose
    criterion is scaled to the pair, one with a null control in its details), one not measurable,
    one skipped."""
    claims = [
        _record(
            "C1[N=100]",
            _claim(
                "C1[N=100]", "replicates", 0.21, (0.15, 0.27), paper=0.204, details={"n_neurons_ablated": 9}
            ),
        ),
        _record("C3", _claim("C3", "replicates", 0.45, (0.3, 0.6), paper=0.482)),
        _record(
            "C6[net-over-gross]",
            _claim("C6[net-over-gross]", "contradicts", 0.9, (0.8, 1.0), paper=0.15, details={"net": 1.0}),
            outcome="xfailed",
        ),
        _record(
            "C7[to-half-gross]",
            _claim("C7[to-half-gross]", "inconclusive", 1200.0, (700.0, 2100.0), details={"threshold": 42}),
        ),
        _record(
            "C9",
            _claim(
                "C9",
                "replicates",
                0.02,
                None,
                exact=True,
                paper=0.0037,
                details={
                    # what the lead's null controls will add: a key this page has never seen
                    "null": {"value": 0.001, "ci": [-0.01, 0.012], "verdict": "inconclusive"},
                    "per_layer": [0.1 * i for i in range(30)],
                },
            ),
        ),
        _record("C10", _claim("C10", "not measurable", math.nan, None, p_value=math.nan)),
        _record("C2[search]", None, outcome="skipped", skip_reason="Skipped: searches switched off"),
    ]
    header = {
        "pair": "toy",
        "fingerprint": "f00d",
        "n_prompts": 40,
        "convention": "v1",
        "scorer": "lexicon",
        "n_layers": 4,
        "n_neurons": 4096,
        "figures": ["group_shares.png"],
        "figures_skipped": ["fig1a_layer_projection.png"],
    }
    manifest = {
        "format": 1,
        "versions": {"dpoclaims": "0.1.0", "commit": "abc", "dirty": False, "libraries": {"torch": "2.13.0"}},
        "machine": {"os": "Linux", "cpu": "a CPU", "cpu_count": 2, "device": "cpu", "dtype": "float32"},
        "settings": {"pair": "toy"},
        "time": {"started": "2026-01-01T00:00:00+00:00", "wall_s": 12.5, "claims_s": {"C3": 1.25}},
    }
    # as claims.json holds it: NaN written as the writer writes it
    return json.loads(json.dumps({"header": header, "manifest": manifest, "claims": claims}))


FIGURED = ["C1[N=100]", "C3", "C6[net-over-gross]", "C7[to-half-gross]", "C9"]  # a finite figure each


class _Attributes(HTMLParser):
    """Every (tag, attribute, value) of a document, and the text of its <style> elements."""

    def __init__(self) -> None:
        super().__init__()
        self.attributes: list[tuple[str, str, str]] = []
        self.styles: list[str] = []
        self._in_style = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.attributes += [(tag, name, value or "") for name, value in attrs]
        self._in_style = tag == "style"

    def handle_endtag(self, tag: str) -> None:
        self._in_style = False

    def handle_data(self, data: str) -> None:
        if self._in_style:
            self.styles.append(data)


def fetched(page: str) -> list[str]:
    """What the page would fetch or link outside itself: src/href/action values other than data:
    URIs and in-page anchors, and url()/@import in its style."""
    parser = _Attributes()
    parser.feed(page)
    found = [
        f"{tag} {name}={value}"
        for tag, name, value in parser.attributes
        if name in ("src", "href", "action", "srcset", "poster", "data")
        and not (value.startswith("data:") or value.startswith("#"))
    ]
    style = "".join(parser.styles)
    return found + [f"style: {token}" for token in ("url(", "@import") if token in style]


def test_the_page_fetches_nothing_and_carries_its_figures_inline():
    page = claims_page(hand_made_report(), {"group_shares.png": PIXEL})
    assert fetched(page) == []
    assert f'src="data:image/png;base64,{base64.b64encode(PIXEL).decode()}"' in page
    assert "default-src 'none'" in page  # a Content-Security-Policy that forbids any fetch


def test_the_fetch_check_finds_an_external_image_and_a_style_import():
    page = claims_page(hand_made_report()).replace("<body>", '<body><img src="https://example.org/x.png">', 1)
    page = page.replace("<style>", "<style>@import 'x.css';", 1)
    assert fetched(page) == ["img src=https://example.org/x.png", "style: @import"]


def test_every_claim_is_on_the_page_with_its_details_rendered_generically():
    report = hand_made_report()
    page = claims_page(report, {})
    for record in report["claims"]:
        assert f'data-claim="{record["id"]}"' in page
        assert record["node_id"] in page
    # a details key the page has never seen is shown, nested values with it
    assert ">null<" in page and ">per_layer<" in page and "all 30 values" in page
    assert "searches switched off" in page  # a skipped claim says why
    assert "1.25 s (the test call)" in page  # its wall time, from the manifest
    for group in ("versions", "machine", "settings", "time"):
        assert f"<h3>{group}</h3>" in page


def test_the_forest_plot_has_one_row_per_claim_with_a_figure_and_each_criterion_as_a_line():
    report = hand_made_report()
    rows = forest_rows(report["claims"], report["header"])
    assert [row.claim_id for row in rows] == FIGURED
    page = claims_page(report, {})
    assert page.count('class="forest-row"') == len(FIGURED)
    by_id = {row.claim_id: row for row in rows}
    assert by_id["C1[N=100]"].criterion is not None and by_id["C1[N=100]"].criterion.values == (0.8,)
    # C3: "recovers part" (share above 0), and the further parts (below 80%, or beyond DPO's perplexity)
    assert by_id["C3"].criterion.side == "above" and by_id["C3"].criterion.values == (0.0,)
    assert by_id["C3"].criterion.parts == 2
    assert by_id["C9"].interval is None  # exact: a point alone
    # C7[to-half-gross]'s 1000 neurons of GPT-2 medium, scaled to the pair's 4,096: 42 neurons,
    # so the threshold is 41.5 in the paper's units (x 98,304 / 4,096 = 996)
    assert by_id["C7[to-half-gross]"].criterion.values == pytest.approx((996.0,))
    # without the pair's size (an older report) a scaled criterion draws no line rather than a wrong one
    assert criterion_of(report["claims"][3]["claim"], {}) is None
    # a verdict that needs a further part too says so (C2's "more than plain ablation", for N <= 1000)
    # (and every match of DPO needs DPO's perplexity too: one more part)
    assert criterion_of({"claim": "C2", "param": "N=100"}, {}).parts == 2
    assert criterion_of({"claim": "C2", "param": "N=2000"}, {}).parts == 1
    # coloured by verdict
    assert (
        f'fill="{VERDICT_COLORS["contradicts"]}"' in page
        and f'fill="{VERDICT_COLORS["inconclusive"]}"' in page
    )


def test_a_sweep_page_shows_every_cell_and_links_to_the_cells_own_pages():
    result = {
        "columns": ["toy-seed1.v1.default", "toy-seed2.v1.default"],
        "claims": ["C3", "C9"],
        "matrix": {
            "C3": {
                "toy-seed1.v1.default": {"verdict": "replicates", "measured": 0.4},
                "toy-seed2.v1.default": {"verdict": "missing", "measured": None},
            },
            "C9": {
                "toy-seed1.v1.default": {"verdict": "contradicts", "measured": 0.3},
                "toy-seed2.v1.default": {"verdict": "missing", "measured": None},
            },
        },
        "stable": [],
        "missing": {"toy-seed2.v1.default": "failed: boom"},
        "runs": [{"cell": "toy-seed1.v1.default", "build_s": 1.0, "claims_s": 2.0}],
        "manifest": None,
    }
    page = matrix_page(result, {c: c for c in result["columns"]}, {"replication.png": PIXEL})
    assert page.count('class="cell"') == 4
    assert 'href="replication/toy-seed1.v1.default/index.html"' in page
    assert "failed: boom" in page
    # links to the cells' own pages (files beside it) and nothing fetched from elsewhere
    assert [f for f in fetched(page) if not f.startswith("a href=replication/")] == []


# ------------------------------------------------------------------------- in a real browser


def _browser() -> Any:
    """A headless Chromium driven by Selenium, or a skip naming the install line."""
    missing = [path for path in (CHROMIUM, CHROMEDRIVER) if not (os.path.exists(path) or shutil.which(path))]
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        missing.append("the selenium package")
    if missing:
        reason = f"no browser to load the page in ({', '.join(missing)} missing): {BROWSER_INSTALL}"
        if os.environ.get("DPOCLAIMS_EXPECT_BROWSER") == "1":  # .ci/run installs it: missing is a failure
            pytest.fail(f"DPOCLAIMS_EXPECT_BROWSER=1 but {reason}")
        pytest.skip(reason)
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--window-size=1280,1600",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver, Service, options


@pytest.fixture
def browser(tmp_path):
    webdriver, service, options = _browser()
    options.add_argument(f"--user-data-dir={tmp_path / 'chromium-profile'}")
    # The system's driver, named: Selenium then never looks for (or downloads) one.
    driver = webdriver.Chrome(service=service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def console_errors(driver: Any) -> list[str]:
    return [
        f"{entry['level']}: {entry['message']}"
        for entry in driver.get_log("browser")
        if entry["level"] == "SEVERE"
    ]


def test_the_page_in_a_browser(browser, tmp_path):
    """No console error (a blocked fetch, a script error), every claim shown, the forest plot's
    rows, and a claim's details opened by clicking its row."""
    from selenium.webdriver.common.by import By

    report = hand_made_report()
    path = tmp_path / "index.html"
    path.write_text(claims_page(report, {"group_shares.png": PIXEL}))
    browser.get(path.as_uri())
    assert console_errors(browser) == []
    assert browser.title == "dpoclaims: toy"
    shown = [d.get_attribute("data-claim") for d in browser.find_elements(By.CSS_SELECTOR, "details.claim")]
    assert shown == [record["id"] for record in report["claims"]]
    for summary in browser.find_elements(By.CSS_SELECTOR, "details.claim > summary"):
        assert summary.is_displayed()
    rows = browser.find_elements(By.CSS_SELECTOR, "#forest .forest-row")
    assert [row.get_attribute("data-claim") for row in rows] == FIGURED
    claim = browser.find_element(By.ID, "claim-C3")
    node = claim.find_element(By.CSS_SELECTOR, "table.facts code")
    assert claim.get_attribute("open") is None and not node.is_displayed()
    rows[1].click()  # the row of C3
    assert claim.get_attribute("open") is not None
    assert node.is_displayed() and node.text == "claims/test_x.py::test_C3"
    # and a claim opens by a click on its own summary too
    skipped = browser.find_element(By.ID, "claim-C2-search")
    skipped.find_element(By.TAG_NAME, "summary").click()
    assert skipped.get_attribute("open") is not None
    image = browser.find_element(By.CSS_SELECTOR, "#figures img")
    assert browser.execute_script("return arguments[0].naturalWidth", image) == 1  # the inline PNG decoded
    assert console_errors(browser) == []


def test_the_browser_check_sees_a_console_error(browser, tmp_path):
    """The console check can fail: a page whose script throws, and one that tries to fetch an
    image (blocked by the page's policy), each log an error."""
    page = claims_page(hand_made_report(), {})
    broken = page.replace("(function(){", "(function(){ null.open = 1;", 1)
    (tmp_path / "broken.html").write_text(broken)
    browser.get((tmp_path / "broken.html").as_uri())
    assert any("null" in error or "TypeError" in error for error in console_errors(browser))
    fetching = page.replace("<body>", '<body><img src="http://127.0.0.1:9/x.png">', 1)
    (tmp_path / "fetching.html").write_text(fetching)
    browser.get((tmp_path / "fetching.html").as_uri())
    assert any("Content Security Policy" in error for error in console_errors(browser))
