"""The operator's page in a real browser: Debian's chromium, headless, driven by Selenium
through the system chromedriver, against the real daemon (a subprocess replaying a recording
with a fault in real time, alarms over a real Mosquitto, the page bound beyond loopback with a
password).

What the operator does and should see: the page refuses actions without the password; they
log in, watch the overview (with the unit's enrollment status: references, promise), and the
stream turns to "alarm" within a few seconds of the MQTT raise, whose ``clip_url`` fetches the
clip; they open the episode, see the spectrogram and the clip beside its nearest normal
reference, can play the clip (all also fetched by URL: 200, the right content type, a
length), acknowledge it, find the raise marked on the stream's timeline, and once the episode
cleared mark it "not a fault": the page says what was enrolled and the enrollment status
counts the new references; and the JavaScript console stays free of errors throughout.

``pytest tests/test_browser.py --screenshots docs/img`` also writes the README's
screenshots (overview.png, episode.png, reference.png, stream.png) from this run. Missing
chromium or chromedriver fails the test (apt-get install chromium chromium-driver, as .ci/run
does), never skips it.
"""

from __future__ import annotations

import io
import json
import os
import re
import signal
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import soundfile as sf
import yaml
from _broker import Broker, Subscriber, free_port
from _pipeline import MACHINE, stats_setup

# slow as well: a real-time replay of 32 s (the default `pytest` and CI run it; `-m "not slow"`
# leaves it out)
pytestmark = [pytest.mark.browser, pytest.mark.slow]

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
NODE = "test"
ALARM_TOPIC = f"asd-edge/{NODE}/{MACHINE}/00/alarm"
STREAM = f"{MACHINE}-section_00"
PASSWORD = "correct horse battery staple"
WINDOW = (1200, 800)  # the screenshots' size, CSS pixels
ALARM_SHOWN_WITHIN_S = 3.0  # the page polls the daemon every LIVE_INTERVAL_S (1 s)


def chromium(log_dir: Path):
    """Headless chromium through the system chromedriver (nothing downloaded), logging the
    browser's console (``goog:loggingPrefs``)."""
    for binary, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not Path(binary).is_file():
            pytest.fail(f"{binary} is missing: apt-get install -y chromium chromium-driver "
                        f"(the {package} package; the browser test runs in CI)")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError as err:
        pytest.fail(f"selenium is not installed ({err}): pip install -e '.[dev]'")

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                     "--disable-gpu", "--mute-audio", f"--window-size={WINDOW[0]},{WINDOW[1]}"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(CHROMEDRIVER, log_output=str(log_dir / "chromedriver.log"))
    browser = webdriver.Chrome(options=options, service=service)
    browser.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
        "width": WINDOW[0], "height": WINDOW[1], "deviceScaleFactor": 1, "mobile": False})
    return browser


class DaemonProcess:
    """``asd-edge run --config`` in a subprocess, its log in a file."""

    def __init__(self, config: Path, log: Path, env: dict[str, str]) -> None:
        self.log = log
        with log.open("wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "edge.cli", "run", "--config", str(config)],
                stdout=out, stderr=subprocess.STDOUT, env=env)

    def web_port(self, timeout_s: float = 60.0) -> int:
        """The port the page is served on, from the daemon's log line "web page at URL"."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            found = re.search(r"web page at http://\S+:(\d+)", self.log.read_text())
            if found:
                return int(found.group(1))
            if self.process.poll() is not None:
                pytest.fail(f"the daemon exited with {self.process.returncode}:\n"
                            f"{self.log.read_text()[-3000:]}")
            time.sleep(0.05)
        pytest.fail(f"no web page within {timeout_s} s:\n{self.log.read_text()[-3000:]}")

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        return self.process.returncode


def post(url: str, cookie: str | None = None, data: bytes = b"note=x") -> int:
    """The HTTP status of a form POST (no redirects followed)."""
    request = urllib.request.Request(url, data=data, method="POST",
                                     headers={"Cookie": cookie} if cookie else {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as err:
        return err.code


def fetch(url: str, cookie: str) -> tuple[int, str, int, bytes]:
    """(status, content type, Content-Length, body) of a GET with the browser's session."""
    request = urllib.request.Request(url, headers={"Cookie": cookie})
    with urllib.request.urlopen(request, timeout=30) as response:
        return (int(response.status), response.headers.get("Content-Type", ""),
                int(response.headers.get("Content-Length") or -1), response.read())


def save_screenshot(browser, folder: Path, name: str) -> Path:
    """The page as a PNG of WINDOW's size; palette-quantised (Pillow, when installed) so the
    README's images stay small."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    png = browser.get_screenshot_as_png()
    try:
        from PIL import Image
    except ImportError:  # the edge-only install: the full-colour PNG
        path.write_bytes(png)
        return path
    image = Image.open(io.BytesIO(png)).convert("RGB")
    image.quantize(colors=64, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)
    return path


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n", data[:16]
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def test_the_operator_sees_the_alarm_on_the_page_hears_it_and_must_log_in(
        tmp_path, request) -> None:
    started = time.monotonic()
    # A short recording: the fault at 12-26 s, the raise about 13 s into the replay, the clear
    # a few seconds after the fault; the daemon runs on to 50 s for the "not a fault".
    setup = stats_setup(tmp_path, stream_seconds=50.0, fault_start=12.0, fault_seconds=14.0)
    broker = Broker(tmp_path / "broker")
    broker.start()
    subscriber = Subscriber(broker.port, [ALARM_TOPIC])
    subscriber.wait_subscribed()
    browser = chromium(tmp_path)
    state = tmp_path / "state"
    port = free_port()
    public = f"http://127.0.0.1:{port}"  # the clip links of the alarm events
    config = tmp_path / "edge.yaml"
    config.write_text(yaml.safe_dump({
        "node": NODE, "models_dir": str(setup.models), "state_dir": str(state),
        "streams": [{"machine": MACHINE, "source": {"type": "file", "path": str(setup.stream),
                                                    "speed": "realtime"}}],
        "mqtt": {"url": broker.url}, "metrics": {"enabled": False},
        "web": {"enabled": True, "host": "0.0.0.0", "port": port, "public_url": public,
                "password_env": "ASD_TEST_WEB_PASSWORD"}}))
    daemon = DaemonProcess(config, tmp_path / "daemon.log",
                           {**os.environ, "ASD_TEST_WEB_PASSWORD": PASSWORD})
    console: list[dict] = []
    shots = Path(request.config.getoption("--screenshots") or tmp_path / "screenshots")
    try:
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support.ui import WebDriverWait

        base = f"http://127.0.0.1:{daemon.web_port()}"
        browser.get(base + "/")  # bound beyond loopback: the password first
        assert browser.current_url == base + "/login"
        browser.find_element(By.NAME, "password").send_keys(PASSWORD)
        browser.find_element(By.CSS_SELECTOR, "#login button").click()
        WebDriverWait(browser, 10).until(lambda b: b.current_url == base + "/")
        row = f'tr[data-stream="{STREAM}"]'
        state_cell = browser.find_element(By.CSS_SELECTOR, f"{row} .state")
        assert state_cell.text == "ok"
        assert not subscriber.on(ALARM_TOPIC), "the alarm came before the page was open"
        # the unit's enrollment status: its normal references and the promise (none here)
        unit = browser.find_element(By.CSS_SELECTOR, f'#enrollment tr[data-unit="{MACHINE}/00"]')
        assert unit.is_displayed()
        references_before = int(unit.find_element(By.CSS_SELECTOR, ".refs-source").text)
        assert references_before == len(list((setup.data / MACHINE / "train").glob("*.wav")))
        assert "alarm promise: none" in unit.find_element(By.CSS_SELECTOR, ".promise").text

        # the live overview turns to alarm, within a few seconds of the MQTT raise
        WebDriverWait(browser, 40, poll_frequency=0.05).until(
            lambda _: state_cell.text == "alarm")
        shown_at = time.time()
        raised = subscriber.wait_for(lambda ms: len(ms) >= 1, what="the raise")[0]
        raise_event = raised.json()
        assert raise_event["type"] == "raise"
        delay = shown_at - raised.received_at
        print(f"\nalarm on the page {delay:+.2f} s after the MQTT raise arrived")
        assert delay < ALARM_SHOWN_WITHIN_S, f"the page showed the alarm {delay:.1f} s late"
        assert browser.find_element(By.ID, "episodes").text == "1"
        WebDriverWait(browser, 5).until(  # the sparkline has drawn the scores so far
            lambda b: b.execute_script(
                "const c = document.querySelector(arguments[0]);"
                "return c.getContext('2d').getImageData(0, 0, c.width, c.height).data"
                ".some((v, i) => i % 4 === 3 && v > 0)", f"{row} canvas.spark"))
        save_screenshot(browser, shots, "overview.png")
        console += browser.get_log("browser")

        assert raise_event["clip_url"] == f"{public}/clips/{raise_event['id']}.wav"

        # the episode, from the overview's link: its spectrogram and its clip
        browser.find_element(By.CSS_SELECTOR, 'a[href="/episodes"] #episodes').click()
        browser.find_element(By.CSS_SELECTOR, "#episode-list a").click()
        episode_url = f"{base}/episodes/{raise_event['id']}"
        assert browser.current_url == episode_url
        # the clip ends post_roll_seconds after the raise: the page says so (no broken
        # image), reloads itself, and shows it once written
        assert "still being recorded" in browser.find_element(By.ID, "clip-pending").text
        WebDriverWait(browser, 30, poll_frequency=0.2).until(lambda b: b.execute_script(
            "const i = document.getElementById('spectrogram');"
            "return i !== null && i.complete && i.naturalWidth > 0"))
        images = browser.execute_script(
            "return [...document.images].map((i) => [i.src, i.naturalWidth, i.naturalHeight])")
        assert images and all(width > 0 for _, width, _ in images), images
        assert {src.rsplit("/clips/", 1)[1] for src, _, _ in images} == {
            f"{raise_event['id']}.png", f"{raise_event['id']}/front-end.png",
            f"{raise_event['id']}/reference.png"}  # the clip, and the pair beside it
        nearest = raise_event["explanation"]["nearest"]["file"]
        assert nearest in browser.find_element(By.ID, "reference-name").text
        WebDriverWait(browser, 10).until(lambda b: b.execute_script(
            "return document.getElementById('clip').readyState >= 1"))  # HAVE_METADATA
        audio_seconds = browser.execute_script("return document.getElementById('clip').duration")
        assert audio_seconds >= 10.0  # the pre-roll at least

        cookie = f"asd_edge_session={browser.get_cookie('asd_edge_session')['value']}"
        for src, width, height in images:
            status, kind, length, body = fetch(src, cookie)
            assert (status, kind) == (200, "image/png") and length == len(body) > 0
            assert png_size(body) == (width, height)
        status, kind, length, body = fetch(raise_event["clip_url"], cookie)  # the MQTT link
        assert (status, kind) == (200, "audio/wav") and length == len(body) > 0
        assert body == Path(raise_event["clip"]).read_bytes()
        assert sf.info(io.BytesIO(body)).duration == pytest.approx(audio_seconds, abs=0.01)

        # the episode's actions: refused without the password, and without the page's CSRF
        # token when logged in; nothing written
        assert post(f"{episode_url}/acknowledge") == 401
        assert post(f"{episode_url}/not-a-fault") == 401
        assert post(f"{episode_url}/acknowledge", cookie) == 403
        assert post(f"{episode_url}/not-a-fault", cookie) == 403
        assert not (state / "actions.jsonl").exists()
        browser.find_element(By.CSS_SELECTOR, "#ack input[name=note]").send_keys("bearing")
        browser.find_element(By.CSS_SELECTOR, "#ack button").click()
        acknowledged = WebDriverWait(browser, 10).until(
            lambda b: b.find_elements(By.ID, "acknowledged"))
        assert "by operator" in acknowledged[0].text
        [action] = [json.loads(line) for line in
                    (state / "actions.jsonl").read_text().splitlines()]
        assert (action["action"], action["episode"], action["note"]) == \
            ("acknowledge", raise_event["id"], "bearing")
        save_screenshot(browser, shots, "episode.png")
        browser.execute_script("document.querySelector('.beside')"
                               ".scrollIntoView({block: 'center'})")
        save_screenshot(browser, shots, "reference.png")
        console += browser.get_log("browser")

        # the stream's timeline, from the overview: the scores and the red raise mark
        browser.find_element(By.LINK_TEXT, "Overview").click()
        browser.find_element(By.LINK_TEXT, STREAM).click()
        WebDriverWait(browser, 10).until(lambda b: b.execute_script(
            "const c = document.getElementById('timeline'), ctx = c.getContext('2d');"
            "const d = ctx.getImageData(0, 0, c.width, c.height).data;"
            "for (let i = 0; i < d.length; i += 4) {"
            "  if (d[i + 3] > 0 && d[i] > 2 * d[i + 1] && d[i] > 2 * d[i + 2]) return true; }"
            "return false"), "no raise mark on the timeline")
        save_screenshot(browser, shots, "stream.png")
        console += browser.get_log("browser")

        # once the episode cleared: "not a fault", and the page says what it did
        subscriber.wait_for(lambda ms: any(m.json()["type"] == "clear" for m in ms),
                            timeout_s=30, what="the clear")
        browser.get(episode_url)
        browser.find_element(By.CSS_SELECTOR, "form#not-a-fault button").click()
        done = WebDriverWait(browser, 60).until(
            lambda b: b.find_elements(By.CSS_SELECTOR, "p#not-a-fault"))
        added = int(re.search(r"Not a fault: (\d+) clip", done[0].text).group(1))
        assert added >= 1 and "via web" in done[0].text, done[0].text
        browser.find_element(By.LINK_TEXT, "Overview").click()
        unit = browser.find_element(By.CSS_SELECTOR, f'#enrollment tr[data-unit="{MACHINE}/00"]')
        assert int(unit.find_element(By.CSS_SELECTOR, ".refs-enrolled").text) == \
            references_before + added  # the new bundle's references
        console += browser.get_log("browser")
        errors = [entry for entry in console if entry["level"] == "SEVERE"]
        assert not errors, f"the JavaScript console has errors: {errors}"
    finally:
        code = daemon.stop()
        browser.quit()
        subscriber.close()
        broker.kill()
    assert code == 0, daemon.log.read_text()[-3000:]
    print(f"browser test: {time.monotonic() - started:.1f} s")

