"""The website in a real browser (headless Chromium driven by Selenium): the page finds its API
in config.json, sends the review, and shows the deployed model's answer or a message a person
understands.

Needs Debian's ``chromium`` and ``chromium-driver``. ``.ci/run`` installs them and sets ``CI``,
so that in CI a missing browser fails; on a machine without them the tests say so and skip.
"""
from __future__ import annotations

import os
import shutil

import pytest

from pipeline.local.services.api import api_app
from pipeline.settings import Settings
from serve.server.run import BackgroundServer
from tests.conftest import delete_endpoints
from tests.test_local_api import api, home  # noqa: F401  (module fixtures: a deployed endpoint behind the API)

pytestmark = pytest.mark.browser

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
if not (CHROMIUM and CHROMEDRIVER):
    if os.environ.get("CI"):
        raise RuntimeError("CI needs chromium and chromedriver for the browser tests: .ci/run installs them")
    pytest.skip("no chromium/chromedriver: install Debian's chromium and chromium-driver to run the browser tests",
                allow_module_level=True)

WAIT_S = 30


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    yield driver
    driver.quit()


def _open(browser, url: str):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ready
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(url)
    wait = WebDriverWait(browser, WAIT_S)
    wait.until(ready.element_to_be_clickable((By.ID, "submit")))  # enabled once config.json is read
    return wait, By


def test_a_review_gets_the_models_verdict(browser, api, tmp_path):  # noqa: F811
    wait, by = _open(browser, api.url)
    browser.find_element(by.ID, "review").send_keys("A wonderful, moving film with superb acting.")
    browser.find_element(by.ID, "submit").click()
    wait.until(lambda driver: driver.find_element(by.ID, "label").text)
    assert browser.find_element(by.ID, "label").text in ("Positive", "Negative")
    assert browser.find_element(by.ID, "confidence").text.endswith("% sure)")
    assert not browser.find_element(by.ID, "error").is_displayed()
    screenshot = tmp_path / "verdict.png"  # what a person would see, kept with the test's files
    assert browser.save_screenshot(str(screenshot)) and screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_an_empty_review_is_caught_on_the_page(browser, api):  # noqa: F811
    wait, by = _open(browser, api.url)
    browser.find_element(by.ID, "submit").click()
    wait.until(lambda driver: driver.find_element(by.ID, "error").is_displayed())
    assert browser.find_element(by.ID, "error").text == "Write or paste a review first."


def test_without_a_deployed_model_the_page_says_so(browser, tmp_path):
    server = BackgroundServer(lambda url: api_app(Settings(home=tmp_path), url)).start()
    try:
        wait, by = _open(browser, server.url)
        browser.find_element(by.ID, "review").send_keys("Dull.")
        browser.find_element(by.ID, "submit").click()
        wait.until(lambda driver: driver.find_element(by.ID, "error").is_displayed())
        assert "not deployed yet" in browser.find_element(by.ID, "error").text
    finally:
        server.close()
        delete_endpoints(tmp_path)
