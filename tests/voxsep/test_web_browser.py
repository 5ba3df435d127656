"""`voxsep serve` driven in a real headless browser: Debian's chromium through Playwright.

The page is used as a person would: choose files, wait, read the count, play the talkers, force a
count, record from the (fake) microphone. The first test writes the README's screenshot,
docs/serve_screenshot.png.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # a real browser: seconds per test (`-m "not slow"` leaves them out)

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
sync_api = pytest.importorskip("playwright.sync_api")

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    # a fake microphone (a beep) that needs no permission prompt, for the recording test
    "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
    "--autoplay-policy=no-user-gesture-required",
]
SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "serve_screenshot.png"
JOB_TIMEOUT_MS = 120_000

if not CHROMIUM.exists():
    if os.environ.get("CI"):
        raise RuntimeError(f"{CHROMIUM} is missing: apt-get install chromium (.ci/run installs it)")
    pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium)", allow_module_level=True)


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser, web_url):
    context = browser.new_context(viewport={"width": 1100, "height": 900})
    page = context.new_page()
    errors = []
    page.on("pageerror", lambda err: errors.append(str(err)))
    page.goto(web_url + "/")
    page.wait_for_selector("body[data-ready='1']")
    yield page
    context.close()
    assert errors == [], f"JavaScript errors on the page: {errors}"


def card_of(page, n: int):
    """The card of the page's ``n``-th upload (1, 2, ...)."""
    card = page.locator(f".job[data-upload='{n}']")
    card.wait_for(state="attached")
    return card


def wait_finished(page, card):
    """Wait until the card's job is done or failed; returns its state."""
    page.wait_for_function("card => ['done', 'error'].includes(card.dataset.state)", arg=card.element_handle(),
                           timeout=JOB_TIMEOUT_MS)
    return card.get_attribute("data-state")


def check_talkers(page, card) -> int:
    """The count is shown with its probabilities and each talker's player has a duration > 0."""
    count = int(card.locator(".count-value").inner_text())
    assert 1 <= count <= 5
    assert card.locator(".chart .track").count() == 6  # 0..5 talkers
    assert card.locator(".talker").count() == count
    audio = card.locator(".talker audio")
    page.wait_for_function(
        "els => els.length > 0 && els.every(a => a.readyState >= 1 && a.duration > 0)",
        arg=audio.element_handles(), timeout=30_000)
    durations = audio.evaluate_all("els => els.map(a => a.duration)")
    assert len(durations) == count and all(d > 0 for d in durations)
    for img in card.locator("img").element_handles():
        page.wait_for_function("img => img.complete && img.naturalWidth > 100", arg=img)
    return count


def test_upload_a_two_talker_recording_and_listen(page, web_recordings, web_url):
    page.set_input_files("#files", str(web_recordings["two"]))
    card = card_of(page, 1)
    assert wait_finished(page, card) == "done", card.locator(".error").inner_text()
    assert card.locator(".name").inner_text() == "two talkers.wav"
    count = check_talkers(page, card)
    assert re.fullmatch(r"\(probability 0\.\d\d\)|\(probability 1\.00\)", card.locator(".confidence").inner_text())
    # the download link saves a WAV under the upload's name
    link = card.locator(".talker .download").first
    assert link.get_attribute("download") == "two_talkers_s1.wav"
    response = page.request.get(web_url + link.get_attribute("href"))
    assert response.ok and response.body()[:4] == b"RIFF"
    assert response.headers["content-disposition"] == 'attachment; filename="two_talkers_s1.wav"'
    # the README's picture
    page.evaluate("document.activeElement && document.activeElement.blur()")
    SCREENSHOT.parent.mkdir(exist_ok=True)
    tmp = SCREENSHOT.with_name(".serve_screenshot.part.png")
    page.screenshot(path=str(tmp), full_page=True)
    os.replace(tmp, SCREENSHOT)

    # force another count: the same card shows the new separation
    forced = 3 if count != 3 else 2
    card.locator(".force-count").select_option(str(forced))
    card.locator(".force button").click()
    page.wait_for_function("c => c.dataset.state !== 'done'", arg=card.element_handle())
    assert wait_finished(page, card) == "done"
    assert card.locator(".count-label").inner_text() == "Number of talkers (chosen)"
    assert check_talkers(page, card) == forced


def test_a_corrupt_file_shows_an_error_and_the_next_file_separates(page, web_recordings):
    page.set_input_files("#files", str(web_recordings["corrupt"]))  # refused when uploaded
    card = card_of(page, 1)
    assert wait_finished(page, card) == "error"
    assert card.locator(".error").inner_text().startswith("corrupt.wav: not a readable audio file")
    assert card.locator(".result").is_hidden()

    page.set_input_files("#files", str(web_recordings["truncated"]))  # its header reads; its data does not
    card = card_of(page, 2)
    assert wait_finished(page, card) == "error"
    assert card.locator(".error").inner_text().startswith("truncated.flac: cannot decode audio")

    page.set_input_files("#files", str(web_recordings["empty"]))  # refused by the page itself
    card = card_of(page, 3)
    assert wait_finished(page, card) == "error"
    assert card.locator(".error").inner_text() == "empty.wav: empty file (0 bytes)"

    page.set_input_files("#files", str(web_recordings["two_b"]))  # same page, same server
    card = card_of(page, 4)
    assert wait_finished(page, card) == "done"
    check_talkers(page, card)
    assert page.locator(".job").count() == 4


def test_two_uploads_at_once_both_finish(page, web_recordings):
    # every status line the cards show, to see the queue and the progress of the long file
    page.evaluate("""() => {
        window.statuses = [];
        new MutationObserver(() => document.querySelectorAll('.status-text').forEach(
            s => window.statuses.push(s.textContent))).observe(document.body,
            {subtree: true, childList: true, characterData: true});
    }""")
    page.set_input_files("#files", [str(web_recordings["long"]), str(web_recordings["two"])])
    cards = [card_of(page, 1), card_of(page, 2)]
    for card in cards:
        assert wait_finished(page, card) == "done", card.locator(".error").inner_text()
    assert sorted(card.locator(".name").inner_text() for card in cards) == ["long meeting.wav", "two talkers.wav"]
    for card in cards:
        check_talkers(page, card)
    statuses = page.evaluate("window.statuses")
    assert any(re.fullmatch(r"Separating… \d+ %", s) for s in statuses), statuses
    long_card = page.locator(".job", has_text="long meeting.wav")
    assert long_card.locator(".meta").inner_text() == "24.0 s"


def test_record_from_the_microphone(page):
    page.click("#record")
    page.wait_for_function("() => document.querySelector('#record-time').textContent.startsWith('recording 0:01')",
                           timeout=20_000)
    page.click("#record")
    card = card_of(page, 1)
    assert re.fullmatch(r"recording-\d{8}-\d{6}\.wav", card.locator(".name").inner_text())
    state = wait_finished(page, card)
    assert state == "done", card.locator(".error").inner_text()
    assert float(card.locator(".meta").inner_text().split()[0]) >= 1.0  # seconds recorded
    assert card.locator(".count-value").inner_text().isdigit()
