"""A person's path through the app in Chromium, driven by Playwright, on real processes."""

import os
import re
import shutil
from pathlib import Path

import pytest
from playwright.sync_api import expect, sync_playwright

from .support import FIXTURES

pytestmark = pytest.mark.e2e

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SCREENSHOTS = Path(__file__).parent / "screenshots"

#: Flags for headless Chromium on a machine without network access or a sandbox.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture
def browser_page():
    """A Chromium page that records console errors; skipped where Chromium is missing."""
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI"):
            pytest.fail(f"Chromium not found at {CHROMIUM}; `make install` installs it")
        pytest.skip(f"Chromium not found at {CHROMIUM}; run `make install` as root")

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1100, "height": 900}, accept_downloads=True)
        page.console_errors = []
        page.on("console", lambda message: _record_error(page, message))
        page.on("pageerror", lambda error: page.console_errors.append(str(error)))
        yield page
        browser.close()


def _record_error(page, message):
    if message.type == "error":
        page.console_errors.append(f"{message.text} at {message.location}")


def test_person_generates_and_manages_variations(live_stack, browser_page, tmp_path):
    base_url, processes = live_stack(simulator_delay=4)
    page = browser_page
    SCREENSHOTS.mkdir(exist_ok=True)

    page.goto(base_url + "/signup")
    page.fill("input[name=email]", "browser@example.com")
    page.fill("input[name=password]", "a long enough password")
    page.click("button[type=submit]")
    page.wait_for_url(base_url + "/prompts")

    page.click("text=New prompt")
    page.fill("input[name=title]", "an astronaut in bold watercolor")
    page.set_input_files("input[name=image]", str(FIXTURES / "astronaut.jpg"))
    page.click("summary:has-text('Generation settings')")
    page.fill("input[name=num_outputs]", "2")
    page.click("main button[type=submit]")
    page.wait_for_url(re.compile(r"/prompts/\d+$"))
    prompt_url = page.url
    record_elapsed_texts(page)

    # The placeholder shows the step counter from the model's logs as they arrive.
    expect(page.locator("article.prediction.pending")).to_have_count(1)
    expect(page.locator("article.prediction.pending progress[value]")).to_have_count(1, timeout=15_000)
    page.screenshot(path=str(SCREENSHOTS / "progress.png"), full_page=True)

    expect(page.locator("article.prediction figure img")).to_have_count(2, timeout=30_000)
    assert page.url == prompt_url
    elapsed_texts = page.evaluate("window.elapsedTexts")
    assert elapsed_texts, "no card with a running time was swapped in"
    assert [text for text in elapsed_texts if not re.fullmatch(r"\d+ s", text)] == []
    assert page.locator("article.prediction.pending").count() == 0
    page.screenshot(path=str(SCREENSHOTS / "prompt.png"), full_page=True)

    page.click("button:has-text('Generate again')")
    page.wait_for_url(prompt_url)
    page.locator("article.prediction.pending button:has-text('Cancel')").click()
    page.wait_for_url(prompt_url)
    expect(page.locator("article.prediction.canceled")).to_have_count(1)
    expect(page.locator("article.prediction.pending")).to_have_count(0)

    with page.expect_download() as download_info:
        page.locator("article.prediction a", has_text="Download").first.click()
    download = download_info.value
    saved = tmp_path / download.suggested_filename
    download.save_as(saved)
    assert saved.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert re.fullmatch(r"an_astronaut_in_bold_watercolor-\d+-1\.png", download.suggested_filename)

    page.goto(base_url + "/prompts")
    assert page.locator("li.card").count() == 1
    assert "2 variations" in page.locator("li.card").inner_text()
    page.screenshot(path=str(SCREENSHOTS / "index.png"), full_page=True)

    page.goto(prompt_url)
    canceled_card = page.locator("article.prediction.canceled")
    canceled_id = canceled_card.get_attribute("id").removeprefix("prediction-")
    dialogs = []
    page.once("dialog", lambda dialog: _answer(dialog, dialogs, accept=False))
    canceled_card.locator("button:has-text('Delete')").click()
    expect(canceled_card).to_have_count(1)
    assert dialogs == [f"Delete variation {canceled_id}? This cannot be undone."]

    page.once("dialog", lambda dialog: _answer(dialog, dialogs, accept=True))
    canceled_card.locator("button:has-text('Delete')").click()
    page.wait_for_url(prompt_url)
    expect(page.locator("p.flash")).to_have_text("Variation deleted.")
    expect(canceled_card).to_have_count(0)
    expect(page.locator("article.prediction")).to_have_count(1)
    assert len(dialogs) == 2

    page.click("text=Delete…")
    page.click("button:has-text('Delete prompt')")
    page.wait_for_url(base_url + "/prompts")
    assert "Prompt deleted." in page.inner_text("main")
    assert page.locator("li.card").count() == 0

    assert page.console_errors == []


def record_elapsed_texts(page):
    """Record in window.elapsedTexts the text of each running time that htmx swaps in.

    Mutation observers run once the script that inserted the card yields, before the
    browser paints, so each entry is the text that the browser would paint first.
    """
    page.evaluate(
        """() => {
          window.elapsedTexts = [];
          new MutationObserver((mutations) => {
            for (const mutation of mutations) {
              for (const node of mutation.addedNodes) {
                if (node.nodeType !== Node.ELEMENT_NODE) continue;
                for (const time of node.querySelectorAll("time.elapsed")) {
                  window.elapsedTexts.push(time.textContent);
                }
              }
            }
          }).observe(document.querySelector("main"), {childList: true, subtree: true});
        }"""
    )


def _answer(dialog, messages, accept):
    messages.append(dialog.message)
    if accept:
        dialog.accept()
    else:
        dialog.dismiss()
