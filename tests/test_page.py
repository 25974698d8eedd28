"""The web page in a real browser (Debian's Chromium driven by Playwright): upload, listen, correct, download."""

import os
import re
import shutil
from pathlib import Path

import pytest
from conftest import SAMPLE, serve_in_process
from test_writers import parse_srt

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
SCREENSHOTS = Path(__file__).parents[1] / "build" / "screenshots"  # ignored; `make screenshot` copies to docs/
playwright = pytest.importorskip("playwright.sync_api")

# make test installs Debian's chromium; CI must not pass by skipping the browser test
pytestmark = pytest.mark.skipif(
    CHROMIUM is None and not os.environ.get("CI"), reason="needs Debian's chromium (make test installs it)"
)


@pytest.fixture(scope="module")
def page_url():
    from asrflow.lifecycle import log

    logged = log("bundled:tiny.en", register_as="whisper-page", alias="champion", reference_only=True)
    version = logged.registered.rsplit("/", 1)[1]
    with serve_in_process(None, model="models:/whisper-page@champion") as url:  # the browser is the real process
        yield f"{url}/", version


def wait_until(page, expression: str, seconds: float = 30.0) -> None:
    """Polls `expression` from the test (DevTools' evaluation): Playwright's wait_for_function polls with eval in the
    page, which the page's Content-Security-Policy (no 'unsafe-eval') rightly refuses."""
    import time

    deadline = time.monotonic() + seconds
    while not page.evaluate(expression):
        assert time.monotonic() < deadline, f"timed out waiting for {expression}"
        time.sleep(0.1)


@pytest.fixture(scope="module")
def browser():
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--autoplay-policy=no-user-gesture-required",
            ],
        )
        yield browser
        browser.close()


def test_upload_listen_correct_download(browser, page_url, tmp_path):
    url, version = page_url
    page = browser.new_page(accept_downloads=True, viewport={"width": 1100, "height": 800})
    blocked = []  # the page works within its own Content-Security-Policy: nothing it does is refused
    page.on("console", lambda m: "Content Security Policy" in m.text and blocked.append(m.text))
    page.goto(url)
    wait_until(page, "document.getElementById('model').textContent.includes('whisper-page')")
    assert f"whisper-page · version {version} · @champion" in page.text_content("#model")
    # the models the server can answer with (GET /v1/models): choose one by its registered version
    chosen = f"models:/whisper-page/{version}"
    page.wait_for_selector(f"#model-choice option[value='{chosen}']", state="attached")
    page.select_option("#model-choice", chosen)

    page.set_input_files("#file", str(SAMPLE))
    page.wait_for_selector("#segments li", timeout=120_000)
    text = page.text_content("#segments")
    assert "ask not what your country can do for you" in text
    assert page.text_content("#answered-by") == f"Answered by {chosen} (version {version})."
    times = page.locator("#segments .time").all_text_contents()
    assert times[0].startswith("00:00:00.00")
    ends = [t.split("→")[1].strip() for t in times]
    assert ends == sorted(ends)

    page.locator("#segments .time").first.click()  # plays from the segment's start
    wait_until(page, "!document.getElementById('player').paused || document.getElementById('player').currentTime > 0")

    first = page.locator("#segments .text").first
    first.click()
    page.keyboard.press("End")
    page.keyboard.type(" (corrected)")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "page.png"), full_page=True)

    with page.expect_download() as download:
        page.click("#downloads button[data-format=srt]")
    path = tmp_path / "out.srt"
    download.value.save_as(path)
    cues = parse_srt(path.read_text())
    assert cues[0][2].endswith("(corrected)")
    assert download.value.suggested_filename == "jfk.srt"
    assert not blocked, blocked


def test_bad_file_shows_an_error(browser, page_url, tmp_path):
    page = browser.new_page()
    page.goto(page_url[0])
    corrupt = tmp_path / "broken.wav"
    corrupt.write_bytes(b"RIFF\x00\x00\x00\x00WAVE" + b"junk" * 500)
    page.set_input_files("#file", str(corrupt))
    page.wait_for_selector("#status.error", timeout=60_000)
    message = page.text_content("#status")
    assert re.search(r"Error 400: .*not audio", message)
    notes = tmp_path / "notes.txt"
    notes.write_text("hello")
    page.set_input_files("#file", str(notes))
    wait_until(page, "document.getElementById('status').textContent.includes('415')")
    assert "unsupported file type" in page.text_content("#status")


XSS = "<img src=x onerror=alert(1)>"


@pytest.mark.parametrize(
    "name, content",
    [
        (f"x.{XSS}", b"hello"),  # 415: the extension is in the message (issue 35)
        (f"{XSS}.wav", b"RIFF\x00\x00\x00\x00WAVE" + b"junk" * 500),  # 400: not audio
        (f"{XSS}.wav", SAMPLE.read_bytes()),  # transcribed; the name is kept for downloads
    ],
    ids=["415", "400", "audio"],
)
def test_file_names_stay_text(browser, page_url, name, content):
    """A crafted file name is shown as text, never parsed as HTML: no element made of it, no script run."""
    page = browser.new_page()
    dialogs = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.goto(page_url[0])
    with page.expect_response(lambda r: "/v1/audio/" in r.url, timeout=120_000) as answer:
        page.set_input_files("#file", files=[{"name": name, "mimeType": "audio/wav", "buffer": content}])
    response = answer.value
    if response.status == 200:
        page.wait_for_selector("#segments li", timeout=60_000)
    else:
        message = response.json()["error"]["message"]
        page.wait_for_selector("#status.error")
        assert page.text_content("#status") == f"Error {response.status}: {message}"  # literally, markup and all
    page.wait_for_timeout(1000)  # what an injected <img> would have loaded, and its onerror run
    assert dialogs == []
    assert page.locator("img").count() == 0


def test_page_has_a_strict_content_security_policy(page_url, monkeypatch):
    """Scripts only from the page's own files: no inline script or handler for injected markup to hide in. The page
    links to the docs: where `make docs` serves them, or ASRFLOW_DOCS_URL (an http(s) URL, escaped)."""
    import httpx

    url = page_url[0]
    page = httpx.get(url)
    assert '<a id="docs" href="http://127.0.0.1:8001/"' in page.text
    monkeypatch.setenv("ASRFLOW_DOCS_URL", 'https://docs.example.com/asrflow/?a=1&b="2"')
    assert '<a id="docs" href="https://docs.example.com/asrflow/?a=1&amp;b=&quot;2&quot;"' in httpx.get(url).text
    monkeypatch.setenv("ASRFLOW_DOCS_URL", "javascript:alert(1)")
    assert 'href="http://127.0.0.1:8001/"' in httpx.get(url).text
    policy = {d.split()[0]: d.split()[1:] for d in page.headers["content-security-policy"].split(";") if d.strip()}
    assert policy["script-src"] == ["'self'"] and policy["object-src"] == ["'none'"]
    assert policy["connect-src"] == ["'self'"]  # the live captions' WebSocket too (CSP 3: 'self' takes ws:)
    assert page.headers["x-content-type-options"] == "nosniff" and page.headers["referrer-policy"] == "no-referrer"
    scripts = re.findall(r"<script\b([^>]*)>(.*?)</script>", page.text, re.DOTALL)
    assert scripts and all("src=" in attributes and not body.strip() for attributes, body in scripts)
    assert not re.search(r"<[^>]*\s(on\w+|style)\s*=", page.text)  # no inline handlers or styles
    for attributes, _ in scripts:
        script = httpx.get(url + re.search(r'src="([^"]+)"', attributes)[1])
        assert script.status_code == 200 and script.headers["content-type"].startswith("text/javascript")
        assert "innerHTML" not in script.text
    for path in ("static/index.html", "static/..%2Fserver%2Fapp.py"):
        assert httpx.get(url + path).status_code == 404, path


def test_speakers_coloured_and_filtered(browser, page_url, tmp_path, short_call):
    url, _ = page_url
    page = browser.new_page(accept_downloads=True, viewport={"width": 1100, "height": 800})
    page.goto(url)
    page.wait_for_selector("body[data-ready]", state="attached")  # the model list filled: the controls stop moving
    page.check("#speakers")
    page.set_input_files("#file", str(short_call))
    page.wait_for_selector("#segments li .speaker", timeout=120_000)
    badges = page.locator("#segments .speaker")
    assert badges.all_text_contents()[:2] == ["A", "B"]
    colours = {badges.nth(i).evaluate("e => getComputedStyle(e).backgroundColor") for i in range(2)}
    assert len(colours) == 2  # a colour a speaker
    page.screenshot(path=str(SCREENSHOTS / "speakers.png"), full_page=True)

    page.select_option("#speaker-filter", "B")
    shown = page.locator("#segments li:not([hidden]) .speaker").all_text_contents()
    assert shown and set(shown) == {"B"}
    assert "Good morning" not in " ".join(page.locator("#segments li:not([hidden]) .text").all_text_contents())

    with page.expect_download() as download:
        page.click("#downloads button[data-format=srt]")
    path = tmp_path / "call.srt"
    download.value.save_as(path)
    assert "[A] Good morning" in path.read_text() and "[B] Hi, my laptop" in path.read_text()


def test_live_captions_from_the_microphone(browser, page_url, tmp_path):
    """Chromium's fake microphone plays a WAV file (a dev clip between silences) into the page's live captions."""
    import json
    import wave

    import numpy as np
    from conftest import DATA

    from asrflow.audio import decode_audio
    from asrflow.metrics import word_error_rate

    reference = json.loads((DATA / "manifest.jsonl").read_text().splitlines()[4])
    speech = decode_audio(DATA / reference["audio"])
    samples = np.concatenate([np.zeros(16000, np.float32), speech, np.zeros(4 * 16000, np.float32)])
    microphone = tmp_path / "microphone.wav"
    with wave.open(str(microphone), "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(16000)
        w.writeframes((samples * 32767).astype("<i2").tobytes())
    url, _ = page_url
    # a browser of its own (the fake microphone is a launch flag), from the same Playwright as the other tests
    listening = browser.browser_type.launch(
        executable_path=CHROMIUM,
        args=[
            "--no-sandbox",
            "--disable-gpu",
            "--use-fake-ui-for-media-stream",
            "--use-fake-device-for-media-stream",
            f"--use-file-for-fake-audio-capture={microphone}%noloop",
            "--autoplay-policy=no-user-gesture-required",
        ],
    )
    try:
        page = listening.new_page()
        page.goto(url)
        page.click("#captions")
        page.wait_for_selector("#live p.final", timeout=60_000)
        text = page.text_content("#live p.final")
        colours = page.eval_on_selector("#live", "e => [getComputedStyle(e.querySelector('.final')).color]")
        page.click("#captions")  # stops
    finally:
        listening.close()
    assert word_error_rate([reference["text"]], [text]) < 0.3, text
    assert colours == ["rgb(17, 24, 39)"]  # final text in black (partial text is grey: #9ca3af)
