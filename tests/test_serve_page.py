"""The playground page of `gpt2 serve` in headless Chromium (Debian's `chromium` and `chromium-driver`, driven by
Selenium): type a prompt, press Generate, see the tokens stream in with their probabilities on hover, take a
screenshot; Stop ends a long generation."""

from __future__ import annotations

import shutil
import time

import pytest
import torch

from test_serve import Server, greedy_text, slowed

webdriver = pytest.importorskip("selenium.webdriver")
pytestmark = pytest.mark.usefixtures("one_thread")

CHROMIUM, DRIVER = shutil.which("chromium") or "/usr/bin/chromium", shutil.which("chromedriver") or "/usr/bin/chromedriver"


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    if not (shutil.os.path.exists(CHROMIUM) and shutil.os.path.exists(DRIVER)):
        pytest.skip("needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver; .ci/run does)")
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=1200,900", f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(DRIVER))
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def served(model_dir):
    s = Server(model_dir)
    yield s
    s.stop()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    from conftest import GPT2_BPE

    from gpt2.model import GPT, GPTConfig
    from gpt2.tokenizer import Tokenizer
    from gpt2.weights import save_model

    directory = tmp_path_factory.mktemp("page-model")
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=2, n_head=2, n_embd=32, block_size=128))
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0.0, 0.3)
    save_model(model, directory, Tokenizer.load(GPT2_BPE))
    return directory


def wait_for(condition, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("timed out waiting for the page")


def test_the_page_streams_tokens_with_probabilities(browser, served, tmp_path):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    from gpt2.weights import load_model_and_tokenizer

    browser.get(served.url + "/")
    assert "gpt2 playground" in browser.title
    wait_for(lambda: served.state.model_name in browser.find_element(By.ID, "model").text)
    prompt = browser.find_element(By.ID, "prompt")
    prompt.clear()
    prompt.send_keys("In a quiet village")
    for field, value in (("temperature", "0"), ("max_tokens", "24")):
        box = browser.find_element(By.ID, field)
        box.clear()
        box.send_keys(value)
    seen = []
    with slowed(served.engine, 0.03):  # slow enough to watch the text grow
        browser.find_element(By.ID, "go").click()
        for _ in range(200):
            seen.append(len(browser.find_elements(By.CSS_SELECTOR, "#output .tok")))
            if "tokens in" in browser.find_element(By.ID, "status").text:
                break
            time.sleep(0.02)
    status = wait_for(lambda: "tokens in" in (t := browser.find_element(By.ID, "status").text) and t)
    assert status.startswith("24 tokens in") and "finished: length" in status
    assert len({n for n in seen if 0 < n < 24}) >= 2  # the tokens arrived while generating, not all at once
    expected = greedy_text(load_model_and_tokenizer(served.cfg.model), "In a quiet village", 24)[1]
    assert browser.find_element(By.ID, "output").text == "In a quiet village" + expected
    first = browser.find_elements(By.CSS_SELECTOR, "#output .tok")[0]
    ActionChains(browser).move_to_element(first).perform()
    tip = wait_for(lambda: browser.find_element(By.ID, "tip").text)
    assert "p = " in tip and len(tip.splitlines()) == 2 + 5  # the token, then the 5 most likely
    shot = tmp_path / "page.png"
    assert browser.save_screenshot(str(shot)) and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 5000


def test_stop_ends_a_generation_and_frees_its_slot(browser, served):
    from selenium.webdriver.common.by import By

    browser.get(served.url + "/")
    box = browser.find_element(By.ID, "max_tokens")
    box.clear()
    box.send_keys("120")
    with slowed(served.engine, 0.05):
        browser.find_element(By.ID, "go").click()
        wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, "#output .tok"))
        browser.find_element(By.ID, "stop").click()
        wait_for(lambda: browser.find_element(By.ID, "status").text == "stopped")
        wait_for(lambda: served.engine.stats.running == 0, timeout=5)
    assert len(browser.find_elements(By.CSS_SELECTOR, "#output .tok")) < 120
    assert not browser.find_element(By.ID, "again").get_attribute("disabled")
