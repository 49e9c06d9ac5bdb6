"""The registry page and `registry compare` on a home made by real pipeline runs.

Two local pipeline runs on small synthetic data, with different parameters, register two versions
that disagree on some test reviews; version 1 is approved (deployed). The test split holds a review
with ``<script>`` and ``<b>`` markup, labelled against its words, so that it is among the most
confident mistakes and the page must show it as text. The page is served as ``sentiment-mlops
api`` serves it (the API with the registry mounted ahead of its catch-all route), and driven over
HTTP, by the CLI and in headless Chromium (the browser tests skip, saying why, without Chromium;
with ``CI`` set they fail instead). Screenshots of the pages go to the test's folder and to
``/tmp/registry-screens/``.

The tests run in file order and build on each other: read-only checks first, then the refusals
(which must change nothing), then the browser's approval of version 2 and a rejection.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode, urlsplit

import pytest

from pipeline.cli import main
from pipeline.local.services.api import api_app
from pipeline.local.state.db import open_state
from pipeline.review.evidence import PLOTS
from pipeline.review.web import registry_mount
from pipeline.settings import Settings
from serve.server.run import BackgroundServer
from tests.conftest import delete_endpoints
from tests.synthetic import make_reviews, write_archive
from tests.test_end_to_end import COMMAND, SMALL
from tests.test_local_api import _request

pytestmark = pytest.mark.browser

MARKUP_REVIEW = ("<script>alert(1)</script> <b>Wonderful</b>, superb, brilliant: a masterpiece. Loved it, excellent "
                 "and charming, great and moving <img src=x onerror=alert(2)>.")
SCREENS = Path("/tmp/registry-screens")
WAIT_S = 60


def _run(home: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([COMMAND, "--home", str(home), *args], capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Iterator[Path]:
    """Two versions from two real pipeline runs on the same data (other parameters, so other
    models); version 1 approved and deployed."""
    folder = tmp_path_factory.mktemp("registry-data")
    test = make_reviews(200, seed=6) + [{"text": MARKUP_REVIEW, "label": 0}]
    archive = write_archive(folder / "aclImdb_v1.tar.gz", make_reviews(500, seed=5), test,
                            unlabeled=make_reviews(100, seed=7))
    home = tmp_path_factory.mktemp("registry-home")
    for extra in ([], ["--param", "Epochs=1", "--param", "MaxLen=12", "--param", "VocabSize=100",
                       "--param", "EmbeddingDim=8"]):
        result = _run(home, "run", "--data", str(archive), "--json", *SMALL, *extra, "--param", "AccuracyThreshold=0.5")
        assert result.returncode == 0, result.stderr[-3000:]
    approved = _run(home, "registry", "approve", "1", "--comment", "the first model", "--json")
    assert approved.returncode == 0, approved.stderr[-3000:]
    yield home
    delete_endpoints(home)


@pytest.fixture(scope="module")
def site(home):
    """The website, its API and the registry page, composed as `sentiment-mlops api` composes them."""
    settings = Settings(home=home)
    server = BackgroundServer(lambda url: api_app(settings, url, mounts=[registry_mount(settings, url)])).start()
    yield server
    server.close()


def _state(home: Path) -> tuple[list[tuple], list[str]]:
    """The registry's statuses and history, and every event file: what a refused request must not change."""
    conn = open_state(home)
    try:
        packages = [tuple(r) for r in conn.execute("SELECT version, approval_status, approval_description "
                                                   "FROM model_packages ORDER BY version")]
        history = [tuple(r) for r in conn.execute("SELECT version, to_status, comment FROM approval_history ORDER BY seq")]
    finally:
        conn.close()
    events = sorted(str(p.relative_to(home)) for p in (home / "events").rglob("*.json"))
    return packages + history, events


def _token(site: BackgroundServer, version: int) -> str:
    _, _, body = _request(site, "GET", f"/registry/versions/{version}")
    match = re.search(rb'name="csrf_token" value="([^"]+)"', body)
    assert match, body[:2000]
    return match.group(1).decode()


def _markup_index(home: Path) -> int:
    from pipeline.review.evidence import reading

    with reading(Settings(home=home)) as found:
        reviews = found.test_reviews(found.package(1))
    return next(i for i, r in enumerate(reviews) if r.text == MARKUP_REVIEW)


# --- over HTTP ---------------------------------------------------------------------------------------

def test_the_list_shows_every_version_and_what_serves(site):
    status, headers, body = _request(site, "GET", "/registry")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    page = body.decode()
    assert 'id="version-1"' in page and 'id="version-2"' in page
    assert "Endpoint sentiment-mlops serves version 1 (InService)." in page
    assert "the first model" in page and page.count("Approved") >= 1
    assert headers["X-Frame-Options"] == "DENY" and "frame-ancestors 'none'" in headers["Content-Security-Policy"]
    assert "script-src" not in headers["Content-Security-Policy"] and "default-src 'none'" in headers["Content-Security-Policy"]
    assert headers["Referrer-Policy"] == "same-origin" and headers["Cache-Control"] == "no-store"


def test_the_site_links_the_registry_only_where_it_is_served(site, home):
    status, _, body = _request(site, "GET", "/config.json")
    assert status == 200 and json.loads(body) == {"apiUrl": site.url, "registryUrl": "/registry"}
    plain = BackgroundServer(lambda url: api_app(Settings(home=home), url)).start()
    try:
        assert json.loads(_request(plain, "GET", "/config.json")[2]) == {"apiUrl": plain.url}
        assert _request(plain, "GET", "/registry")[0] != 200  # without the mount, the API's catch-all answers
    finally:
        plain.close()


def test_the_api_still_answers_beside_the_registry(site):
    status, _, body = _request(site, "POST", "/predict", b'{"review": "a wonderful film"}',
                               {"Content-Type": "application/json"})
    assert status == 200, body
    assert _request(site, "GET", "/registryx")[0] != 200  # a prefix is a path segment, not a string prefix


def test_a_versions_page_shows_its_plots_mistakes_and_lineage(site, home):
    status, _, body = _request(site, "GET", "/registry/versions/1")
    page = body.decode()
    assert status == 200
    for name in ("roc_pr_curves.png", "confusion_matrix.png", "training_curves.png", "accuracy_by_length.png",
                 "calibration.png"):
        assert f'src="/registry/versions/1/plots/{name}"' in page
        plot_status, plot_headers, png = _request(site, "GET", f"/registry/versions/1/plots/{name}")
        assert plot_status == 200 and plot_headers["Content-Type"] == "image/png" and png[:8] == b"\x89PNG\r\n\x1a\n"
    shown = json.loads(_run(home, "registry", "show", "1", "--json").stdout)
    execution = shown["execution_id"]
    # Each test set's figures: one dataset here, named by its layout, with the accuracy the gate read.
    row = re.search(r'<tr id="dataset-imdb">(.*?)</tr>', page, re.S)
    assert row and "reviews" in row.group(1) and "201" in row.group(1)
    assert f"{shown['accuracy_by_dataset']['imdb']:.4f}" in row.group(1)
    assert execution in page and "InputDataVersion" in page and "sourcedir.tar.gz" in page and "reviews.jsonl" in page
    index = _markup_index(home)
    assert f'id="mistake-{index}"' in page  # the most confident mistake of all: every word says positive
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &lt;b&gt;Wonderful&lt;/b&gt;" in page
    assert "<script>" not in page and "<b>Wonderful" not in page and "<img src=x" not in page


@pytest.mark.parametrize("path", ["/registry/versions/1/plots/evaluation.json", "/registry/versions/1/plots/..%2Fevaluation.json",
                                  "/registry/versions/1/plots/%2e%2e%2f%2e%2e%2fstate.db", "/registry/static/..%2Fweb.py",
                                  "/registry/versions/1/plots/predictions.jsonl", "/registry/versions/99/plots/roc_pr_curves.png"])
def test_nothing_but_the_known_plots_is_served(site, path):
    status, headers, body = _request(site, "GET", path)
    assert status == 404 and headers["Content-Type"].startswith("text/html") and b"positive_probability" not in body


def test_a_version_that_does_not_exist_is_a_clear_404(site):
    status, _, body = _request(site, "GET", "/registry/versions/9")
    assert status == 404 and b"no version 9 in model package group" in body and b"versions 1 to 2" in body


def test_the_comparison_lists_the_reviews_the_two_disagree_on(site):
    status, _, body = _request(site, "GET", "/registry/compare?challenger=2")
    page = body.decode()
    assert status == 200 and "Version 2 against version 1" in page
    match = re.search(r"They disagree on ([\d,]+)", page)
    assert match and int(match.group(1).replace(",", "")) > 0 and 'class="review disagreement"' in page
    assert _request(site, "GET", "/registry/compare?challenger=two")[0] == 400
    assert _request(site, "GET", "/registry/compare?challenger=1")[0] == 400  # against itself


def test_registry_compare_prints_the_same_comparison(home, capsys):
    assert main(["--home", str(home), "registry", "compare", "1", "2", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["per_review"] and result["disagreements_total"] > 0
    assert (result["champion"]["version"], result["challenger"]["version"]) == (1, 2)
    assert result["champion"]["serving"] and not result["challenger"]["serving"]
    assert [d["name"] for d in result["deltas"]] == ["accuracy", "precision", "recall", "f1", "auc", "accuracy:imdb"]
    by_dataset = result["deltas"][-1]
    assert by_dataset["label"] == "Accuracy on imdb" and by_dataset["champion"] == result["deltas"][0]["champion"]
    first = result["disagreements"][0]
    assert {"index", "text", "label", "champion_probability", "challenger_probability", "challenger_right"} <= set(first)
    assert main(["--home", str(home), "registry", "compare", "1", "2"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("version 2 (PendingManualApproval) against version 1 (Approved, serving)")
    assert "Accuracy" in out and "Accuracy on imdb" in out and f"#{first['index']}" in out and "the two disagree on" in out


def test_registry_compare_is_local_only_and_names_missing_versions(home, capsys):
    assert main(["--home", str(home), "registry", "--backend", "sagemaker", "compare", "1", "2"]) == 2
    err = capsys.readouterr().err
    assert "local registry only" in err and len(err.strip().splitlines()) == 1
    assert main(["--home", str(home), "registry", "compare", "1", "7"]) == 2
    assert "no version 7" in capsys.readouterr().err


# --- refusals: each changes nothing ---------------------------------------------------------------------

def _form(**fields: str) -> bytes:
    return urlencode(fields).encode()


FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def test_a_post_without_the_token_is_refused_and_changes_nothing(site, home):
    before = _state(home)
    for fields in ({"action": "approve", "comment": "no token"}, {"action": "approve", "csrf_token": "guessed"}):
        status, _, body = _request(site, "POST", "/registry/versions/2/decision", _form(**fields),
                                   {**FORM, "Origin": site.url})
        assert status == 403 and b"token" in body
    assert _state(home) == before


def test_a_foreign_host_is_refused_even_with_the_token(site, home):
    token, before = _token(site, 2), _state(home)
    port = urlsplit(site.url).port
    status, _, body = _request(site, "GET", "/registry", headers={"Host": f"rebound.example:{port}"})
    assert status == 403 and b"own address" in body and b"csrf_token" not in body
    status, _, _ = _request(site, "POST", "/registry/versions/2/decision", _form(csrf_token=token, action="approve"),
                            {**FORM, "Host": f"rebound.example:{port}", "Origin": f"http://rebound.example:{port}"})
    assert status == 403 and _state(home) == before


@pytest.mark.parametrize("origin", ["http://evil.example", "null", "http://127.0.0.1:1"])
def test_a_foreign_origin_is_refused_even_with_the_token(site, home, origin):
    token, before = _token(site, 2), _state(home)
    status, _, body = _request(site, "POST", "/registry/versions/2/decision", _form(csrf_token=token, action="approve"),
                               {**FORM, "Origin": origin})
    assert status == 403 and b"another site" in body and _state(home) == before


def test_an_oversize_form_or_comment_is_refused_and_changes_nothing(site, home):
    token, before = _token(site, 2), _state(home)
    status, _, _ = _request(site, "POST", "/registry/versions/2/decision",
                            _form(csrf_token=token, action="approve", comment="x" * 20000), {**FORM, "Origin": site.url})
    assert status == 413
    status, _, body = _request(site, "POST", "/registry/versions/2/decision",
                               _form(csrf_token=token, action="approve", comment="y" * 2000), {**FORM, "Origin": site.url})
    assert status == 400 and b"at most 1,024" in body
    status, _, body = _request(site, "POST", "/registry/versions/9/decision", _form(csrf_token=token, action="approve"),
                               {**FORM, "Origin": site.url})
    assert status == 404 and b"no version 9" in body
    assert _state(home) == before


def test_a_second_approval_is_a_clear_answer_with_no_event(site, home):
    token, before = _token(site, 1), _state(home)
    status, _, body = _request(site, "POST", "/registry/versions/1/decision",
                               _form(csrf_token=token, action="approve", comment="again"), {**FORM, "Origin": site.url})
    assert status == 200 and b"Version 1 was Approved already" in body and b"no event was sent" in body
    assert _state(home) == before


def test_rejecting_the_only_approved_version_asks_to_confirm_that_serving_stops(site, home):
    """Version 1 is the only Approved one: without the "stop serving" box the page refuses (409)
    and nothing changes (the box itself: the CLI's --stop-serving test, tests/test_local_hosting.py)."""
    token, before = _token(site, 1), _state(home)
    status, _, body = _request(site, "POST", "/registry/versions/1/decision",
                               _form(csrf_token=token, action="reject", comment="no"), {**FORM, "Origin": site.url})
    assert status == 409 and b"the only Approved version" in body and b"stop serving" in body
    assert _state(home) == before
    page = _request(site, "GET", "/registry/versions/1")[2]
    assert b'name="stop_serving" value="yes"' in page


# --- in a browser -----------------------------------------------------------------------------------

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    if not (CHROMIUM and CHROMEDRIVER):
        if os.environ.get("CI"):
            raise RuntimeError("CI needs chromium and chromedriver for the browser tests: .ci/run installs them")
        pytest.skip("no chromium/chromedriver: install Debian's chromium and chromium-driver to run the browser tests")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=1400,1600", f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    driver.set_page_load_timeout(WAIT_S * 2)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def screens(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("registry-screens")


def _screenshot(browser, screens: Path, name: str) -> None:
    """What a person would see, kept with the test's files and copied to /tmp/registry-screens/."""
    from selenium.webdriver.common.by import By

    height = browser.execute_script("return document.body.scrollHeight") if browser.find_elements(By.TAG_NAME, "body") else 0
    browser.set_window_size(1400, max(900, min(int(height or 0) + 40, 6000)))
    path = screens / f"{name}.png"
    assert browser.save_screenshot(str(path)) and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    SCREENS.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(path, SCREENS / path.name)


def _wait(browser):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(browser, WAIT_S)


def test_the_website_links_the_registry(browser, site):
    from selenium.webdriver.common.by import By

    browser.get(site.url)
    _wait(browser).until(lambda driver: driver.find_element(By.ID, "registry-link").is_displayed())
    browser.find_element(By.ID, "registry").click()
    _wait(browser).until(lambda driver: driver.find_elements(By.ID, "versions"))
    assert browser.current_url == site.url + "/registry"


def test_a_markup_review_is_shown_as_text(browser, site, home):
    from selenium.webdriver.common.by import By

    browser.get(f"{site.url}/registry/versions/1")
    article = browser.find_element(By.ID, f"mistake-{_markup_index(home)}")
    text = article.find_element(By.CLASS_NAME, "review-text")
    assert "<script>alert(1)</script> <b>Wonderful</b>" in text.text and "<img src=x onerror=alert(2)>" in text.text
    assert article.find_elements(By.CSS_SELECTOR, "script, b, img") == []
    assert browser.find_elements(By.CSS_SELECTOR, "main script") == []


def test_list_version_compare_approve_then_the_new_version_serves(browser, site, home, screens):
    from selenium.webdriver.common.by import By

    browser.get(f"{site.url}/registry")
    assert "serves version 1" in browser.find_element(By.ID, "serving").text
    _screenshot(browser, screens, "1-list")
    browser.find_element(By.CSS_SELECTOR, "#version-2 a.version-link").click()
    _wait(browser).until(lambda driver: driver.find_elements(By.ID, "decision-form"))
    assert browser.find_element(By.TAG_NAME, "h1").text.startswith("Version 2")
    images = browser.find_elements(By.CSS_SELECTOR, "#plots img")
    assert len(images) == len(PLOTS) and all(browser.execute_script("return arguments[0].naturalWidth", i) > 0 for i in images)
    _screenshot(browser, screens, "2-version")
    browser.find_element(By.ID, "compare").click()
    _wait(browser).until(lambda driver: driver.find_elements(By.ID, "deltas"))
    assert "They disagree on" in browser.find_element(By.ID, "disagreement-summary").text
    assert browser.find_elements(By.CSS_SELECTOR, "article.disagreement")
    _screenshot(browser, screens, "3-compare")
    browser.find_element(By.ID, "comment").send_keys("fewer mistakes on the reviews that matter")
    before = _state(home)[1]
    browser.find_element(By.ID, "approve").click()
    _wait(browser).until(lambda driver: driver.find_elements(By.ID, "now-serving"))
    assert browser.find_element(By.ID, "outcome-title").text == "Version 2 is Approved"
    assert "it now runs version 2" in browser.find_element(By.ID, "deployment-outcome").text
    assert "serves version 2 (InService)" in browser.find_element(By.ID, "now-serving").text
    _screenshot(browser, screens, "4-approved")
    after = _state(home)
    assert len(after[1]) == len(before) + 1  # one event
    assert (2, "Approved", "fewer mistakes on the reviews that matter") in after[0]


def test_rejecting_the_version_that_serves_puts_the_previous_one_back(browser, site, home, screens):
    from selenium.webdriver.common.by import By

    browser.get(f"{site.url}/registry/versions/2")
    browser.find_element(By.ID, "comment").send_keys("on second thoughts")
    browser.find_element(By.ID, "reject").click()
    _wait(browser).until(lambda driver: driver.find_elements(By.ID, "now-serving"))
    assert browser.find_element(By.ID, "outcome-title").text == "Version 2 is Rejected"
    assert "Version 2 was taken off endpoint" in browser.find_element(By.ID, "deployment-outcome").text
    assert "it now runs version 1, the newest other approved version" in browser.find_element(
        By.ID, "deployment-outcome").text
    assert "serves version 1 (InService)" in browser.find_element(By.ID, "now-serving").text
    _screenshot(browser, screens, "5-rejected")
    browser.get(f"{site.url}/registry")
    history = [[cell.text for cell in row.find_elements(By.TAG_NAME, "td")]
               for row in browser.find_elements(By.CSS_SELECTOR, "#serving-history tbody tr")]
    assert [(row[1], row[2]) for row in history][:3] == [("Updated", "Version 1"), ("Updated", "Version 2"),
                                                         ("Created", "Version 1")]  # newest first


def test_the_pages_own_form_without_its_token_is_refused(browser, site, home):
    """The token input removed (WebDriver's script is not the page's: the page runs none), then the
    form sent from the page itself: same origin, no token, refused, nothing changed."""
    from selenium.webdriver.common.by import By

    browser.get(f"{site.url}/registry/versions/2")
    browser.execute_script("document.querySelector('#decision-form input[name=csrf_token]').remove()")
    before = _state(home)
    browser.find_element(By.ID, "approve").click()
    _wait(browser).until(lambda driver: driver.find_elements(By.ID, "error-title"))
    assert browser.find_element(By.ID, "error-title").text == "Refused"
    assert "token" in browser.find_element(By.ID, "error-message").text
    assert _state(home) == before


ATTACK_PAGE = """<!doctype html><html><body>
<form id="f" method="post" action="{target}"><input name="action" value="approve"><input name="comment" value="csrf">
<input name="csrf_token" value="guessed"></form><script>document.getElementById("f").submit();</script></body></html>"""


def test_a_page_on_another_site_cannot_approve_through_the_browser(browser, site, home):
    from aiohttp import web
    from selenium.webdriver.common.by import By

    async def attack(request: web.Request) -> web.Response:
        return web.Response(text=ATTACK_PAGE.format(target=f"{site.url}/registry/versions/2/decision"),
                            content_type="text/html")

    other = web.Application()
    other.router.add_get("/", attack)
    before = _state(home)
    with BackgroundServer(other) as evil:
        assert urlsplit(evil.url).port != urlsplit(site.url).port
        browser.get(evil.url)
        _wait(browser).until(lambda driver: driver.current_url.startswith(site.url))
        _wait(browser).until(lambda driver: driver.find_elements(By.ID, "error-title"))
        assert browser.find_element(By.ID, "error-title").text == "Refused"
        assert "came from another site" in browser.find_element(By.ID, "error-message").text  # the Origin check
    assert _state(home) == before
