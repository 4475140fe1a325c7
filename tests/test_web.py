"""The web page: a real aiohttp server on loopback, fed a real alarm event and WAV clip."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta
from http.cookiejar import CookieJar
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from edge.alarms.rule import StreamKey, Transition
from edge.errors import BadInput
from edge.health import Health
from edge.outputs.events import EventWindow, ScoreMessage, StreamState, make_event
from edge.web.server import WebServer
from edge.web.state import WebState


def opener() -> urllib.request.OpenerDirector:
    return urllib.request.build_opener(urllib.request.HTTPCookieProcessor(CookieJar()))


@pytest.fixture
def served(tmp_path):
    clip = tmp_path / "clip.wav"
    sf.write(clip, (0.1 * np.sin(np.arange(32000) * 0.3)).astype(np.float32), 16000)
    health = Health("box")
    health.add_stream("gear")
    state = WebState([("gear", "gearbox", "00", 0.5, 0.45)], tmp_path / "actions.jsonl")
    now = datetime.now(UTC)
    key = StreamKey(node="box", machine="gearbox", section="00")
    window = EventWindow(start_utc=now - timedelta(seconds=10), end_utc=now, start_s=None,
                         end_s=None)
    state.add_score(ScoreMessage(node="box", machine="gearbox", section="00", time=now,
                                 stream_s=10.0, score=0.9, threshold=0.5))
    raised = Transition("raise", "ep-1", 10.0, now, 9.0, now, 0.9, 0.5, 0.45)
    event = make_event(key, raised, window, "CPU", {"driver": "stats"}, str(clip))
    state.publish_event(event)
    state.publish_state(StreamState(node="box", machine="gearbox", section="00", state="alarm",
                                    id="ep-1", time=now, score=0.9, threshold=0.5))
    server = WebServer(state, health, "127.0.0.1", 0).start()
    yield server, state, tmp_path
    server.stop()


def test_pages_clip_spectrogram_and_acknowledge(served) -> None:
    server, state, tmp = served
    web = opener()
    overview = web.open(server.url + "/").read().decode()
    assert "gear" in overview and "alarm" in overview
    live = json.loads(web.open(server.url + "/api/overview").read())
    assert live["streams"][0]["state"] == "alarm" and live["streams"][0]["score"] == 0.9
    page = web.open(server.url + "/episodes/ep-1").read().decode()
    assert "/clips/ep-1.png" in page and "<audio" in page
    png = web.open(server.url + "/clips/ep-1.png")
    assert png.headers["Content-Type"] == "image/png" and png.read(8) == b"\x89PNG\r\n\x1a\n"
    wav = web.open(server.url + "/clips/ep-1.wav")
    assert wav.headers["Content-Type"] == "audio/wav" and len(wav.read()) > 64000
    csrf = page.split('name="csrf" value="')[1].split('"')[0]
    with pytest.raises(urllib.error.HTTPError) as refused:  # no CSRF token: refused
        web.open(server.url + "/episodes/ep-1/acknowledge", data=b"note=x")
    assert refused.value.code == 403
    web.open(server.url + "/episodes/ep-1/acknowledge", data=f"csrf={csrf}".encode())
    assert "Acknowledged" in web.open(server.url + "/episodes/ep-1").read().decode()
    action = json.loads((tmp / "actions.jsonl").read_text())
    assert action["action"] == "acknowledge" and action["episode"] == "ep-1"


def test_beyond_loopback_needs_a_password(tmp_path) -> None:
    state = WebState([], tmp_path / "actions.jsonl")
    with pytest.raises(BadInput, match="password"):
        WebServer(state, Health("box"), "0.0.0.0", 0)
    server = WebServer(state, Health("box"), "0.0.0.0", 0, password="s3cret").start()
    try:
        base = f"http://127.0.0.1:{server.port}"
        with pytest.raises(urllib.error.HTTPError) as refused:
            opener().open(base + "/episodes/x/acknowledge", data=b"csrf=x")
        assert refused.value.code == 401
        web = opener()
        web.open(base + "/login", data=b"password=s3cret")
        assert web.open(base + "/api/overview").status == 200
    finally:
        server.stop()


@pytest.mark.parametrize("flag, message", [("--web=nope", "give \\[HOST:\\]PORT"),
                                           ("--web=0.0.0.0:8090", "password")])
def test_run_refuses_a_bad_web_flag(tmp_path, capsys, flag, message) -> None:
    from edge.cli import main

    wav = tmp_path / "a.wav"
    sf.write(wav, np.zeros(16000, dtype=np.float32), 16000)
    assert main(["run", "--file", str(wav), "--machine", "gearbox", "--models",
                 str(tmp_path), "--no-metrics", flag]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert __import__("re").search(message, err), err


def test_keep_web_serves_the_replays_alarm_after_it_ended(tmp_path, capsys) -> None:
    """``run --file ... --web PORT --keep-web S``: the page (and the episode on it) stays up
    after a replay at full speed ends, which took too little time to look at it."""
    from _broker import free_port
    from _pipeline import MACHINE, stats_setup
    from _webpoll import polled_overview

    from edge.cli import main

    setup = stats_setup(tmp_path)
    port = free_port()
    with polled_overview(port) as seen:
        assert main(["run", "--file", str(setup.stream), "--machine", MACHINE, "--models",
                     str(setup.models), "--speed", "max", "--state-dir", str(tmp_path / "st"),
                     "--no-metrics", "--web", f"127.0.0.1:{port}", "--keep-web", "2"]) == 0
    printed = capsys.readouterr().out
    assert f"web page: http://127.0.0.1:{port}/" in printed
    assert f"the web page stays at http://127.0.0.1:{port}/ for 2 s" in printed
    after = [view for view in seen if view["episodes"] >= 1]
    assert len(after) >= 10, seen[-3:]  # two seconds of answers, 0.1 s apart
    assert after[-1]["streams"][0]["name"] == f"{MACHINE}-section_00"
    assert main(["run", "--file", str(setup.stream), "--machine", MACHINE, "--models",
                 str(setup.models), "--no-metrics", "--keep-web", "5"]) == 2
    assert "--web PORT" in capsys.readouterr().err


@pytest.mark.parametrize("age_s, says", [(2.0, "still being recorded"),
                                         (600.0, "removed by the clip limits")])
def test_an_episode_without_its_clip_says_why_instead_of_a_broken_image(tmp_path, age_s,
                                                                        says) -> None:
    state = WebState([("gear", "gearbox", "00", 0.5, 0.45)], tmp_path / "actions.jsonl")
    raised_at = datetime.now(UTC) - timedelta(seconds=age_s)
    key = StreamKey(node="box", machine="gearbox", section="00")
    window = EventWindow(start_utc=raised_at - timedelta(seconds=10), end_utc=raised_at,
                         start_s=None, end_s=None)
    raised = Transition("raise", "ep-2", 10.0, raised_at, 9.0, raised_at, 0.9, 0.5, 0.45)
    state.publish_event(make_event(key, raised, window, "CPU", {}, str(tmp_path / "no.wav")))
    server = WebServer(state, Health("box"), "127.0.0.1", 0).start()
    try:
        page = opener().open(server.url + "/episodes/ep-2").read().decode()
    finally:
        server.stop()
    assert says in page and "<img" not in page and "<audio" not in page


def test_the_mqtt_event_links_its_clip_which_a_subscriber_fetches(tmp_path) -> None:
    """The web page on, bound beyond loopback with a password and a ``public_url``: the raise a
    real Mosquitto delivers carries ``clip_url`` and ``spectrogram_url`` beside the local path;
    a subscriber that logged in fetches the same WAV the path names, and one without the
    password is refused."""
    import os
    import subprocess
    import sys
    import time

    import yaml
    from _broker import Broker, Subscriber, free_port
    from _pipeline import MACHINE, stats_setup

    setup = stats_setup(tmp_path, stream_seconds=40.0, fault_start=15.0, fault_seconds=15.0)
    broker = Broker(tmp_path / "broker")
    broker.start()
    topic = f"asd-edge/box/{MACHINE}/00/alarm"
    subscriber = Subscriber(broker.port, [topic])
    subscriber.wait_subscribed()
    port = free_port()
    public = f"http://127.0.0.1:{port}"
    config = tmp_path / "edge.yaml"
    config.write_text(yaml.safe_dump({
        "node": "box", "models_dir": str(setup.models), "state_dir": str(tmp_path / "state"),
        "streams": [{"machine": MACHINE, "source": {"type": "file", "path": str(setup.stream),
                                                    "speed": "max"}}],
        "mqtt": {"url": broker.url}, "metrics": {"enabled": False},
        "web": {"enabled": True, "host": "0.0.0.0", "port": port, "public_url": public,
                "password_env": "ASD_TEST_WEB_PASSWORD"}}))
    log = tmp_path / "daemon.log"
    with log.open("wb") as out:
        daemon = subprocess.Popen(
            [sys.executable, "-m", "edge.cli", "run", "--config", str(config), "--keep-web",
             "120"], stdout=out, stderr=subprocess.STDOUT,
            env={**os.environ, "ASD_TEST_WEB_PASSWORD": "s3cret"})
    try:
        raised = subscriber.wait_for(lambda ms: any(m.json()["type"] == "raise" for m in ms),
                                     timeout_s=120, what="the raise")
        event = next(m.json() for m in raised if m.json()["type"] == "raise")
        assert event["clip_url"] == f"{public}/clips/{event['id']}.wav"
        assert event["spectrogram_url"] == f"{public}/clips/{event['id']}.png"
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(event["clip_url"], timeout=10)
        assert refused.value.code == 401
        web = opener()
        web.open(public + "/login", data=b"password=s3cret", timeout=10)
        deadline = time.monotonic() + 60  # the clip is written after its post-roll
        while True:
            try:
                clip = web.open(event["clip_url"], timeout=10)
                break
            except urllib.error.HTTPError as err:
                assert err.code == 404 and time.monotonic() < deadline, err
                time.sleep(0.2)
        assert clip.status == 200 and clip.headers["Content-Type"] == "audio/wav"
        assert clip.read() == Path(event["clip"]).read_bytes()
        picture = web.open(event["spectrogram_url"], timeout=30)
        assert picture.headers["Content-Type"] == "image/png"
        assert picture.read(8) == b"\x89PNG\r\n\x1a\n"
        assert "web.public_url" not in log.read_text()  # set: no warning
    finally:
        daemon.terminate()
        daemon.wait(30)
        subscriber.close()
        broker.kill()


def _episode_beside(tmp_path, drop_thumbnails: bool = False):
    """A page serving a real enrolled bundle, and an episode whose "evidence clip" is the
    audio of the reference its explanation names as nearest."""
    from _pipeline import MACHINE, stats_setup

    from edge.bundle.fit import THUMBNAILS_FILE
    from edge.bundle.load import load_bundle
    from edge.bundle.manifest import MANIFEST, write_manifest

    setup = stats_setup(tmp_path)
    folder = setup.models / MACHINE
    if drop_thumbnails:  # a bundle written before the thumbnails were kept
        (folder / THUMBNAILS_FILE).unlink()
        manifest = json.loads((folder / MANIFEST).read_text())
        del manifest["files"]
        write_manifest(folder, manifest)
    bundle = load_bundle(setup.models, MACHINE)
    files = sorted((setup.data / MACHINE / "train").glob("*.wav"))
    assert len(files) == len(bundle.manifest.references)  # one reference a file
    reference = bundle.manifest.references[5]
    state = WebState([("gear", MACHINE, "00", 0.5, 0.45)], tmp_path / "actions.jsonl")
    now = datetime.now(UTC)
    window = EventWindow(start_utc=now - timedelta(seconds=10), end_utc=now, start_s=None,
                         end_s=None)
    raised = Transition("raise", "ep-3", 10.0, now, 9.0, now, 0.9, 0.5, 0.45)
    state.publish_event(make_event(
        StreamKey(node="box", machine=MACHINE, section="00"), raised, window, "CPU",
        {"nearest": {"file": reference.file, "domain": "source", "attributes": {}}},
        str(files[5])))
    server = WebServer(state, Health("box"), "127.0.0.1", 0,
                       bundles={MACHINE: bundle}).start()
    return server, len(files), bundle.system.front_end


def test_the_episode_shows_its_clip_beside_the_nearest_references_spectrogram(tmp_path
                                                                               ) -> None:
    """The reference's picture is stored in the bundle at enrollment; drawn beside a clip of
    the very same audio, the two pictures are identical (same front end, one colour scale),
    and the overview's enrollment status counts the references and states the promise."""
    from edge.features import THUMBNAIL_ROWS, thumbnail_frames
    from edge.web.spectrogram import THUMBNAIL_SCALE

    server, references, front_end = _episode_beside(tmp_path)
    try:
        web = opener()
        page = web.open(server.url + "/episodes/ep-3").read().decode()
        assert 'id="reference-spectrogram"' in page and "reference-missing" not in page
        clip = web.open(server.url + "/clips/ep-3/front-end.png")
        reference = web.open(server.url + "/clips/ep-3/reference.png")
        assert clip.headers["Content-Type"] == reference.headers["Content-Type"] == "image/png"
        clip_png, reference_png = clip.read(), reference.read()
        assert clip_png == reference_png
        width, height = (int.from_bytes(reference_png[16 + 4 * i:20 + 4 * i], "big")
                         for i in range(2))
        # 10 s of audio in columns of 0.256 s, at most 64 rows; low frequencies at the bottom
        rows = -(-front_end.n_bins // -(-front_end.n_bins // THUMBNAIL_ROWS))
        columns = front_end.n_frames(10 * 16000) // thumbnail_frames(front_end)
        assert (width, height) == (columns * THUMBNAIL_SCALE[1], rows * THUMBNAIL_SCALE[0])
        assert 30 <= columns <= 40 and 32 <= rows <= THUMBNAIL_ROWS
        overview = web.open(server.url + "/").read().decode()
        row = overview.split('<tr data-unit="')[1].split("</tr>")[0]
        assert f'class="refs-source">{references}<' in row
        assert 'class="refs-target">0<' in row and 'class="refs-enrolled">' \
            f'{references}<' in row
        assert "alarm promise: none (clip-quantile threshold" in row  # bundle verify's words
    finally:
        server.stop()


def test_a_bundle_without_reference_spectrograms_says_so_instead_of_a_picture(tmp_path
                                                                              ) -> None:
    server, _, _ = _episode_beside(tmp_path, drop_thumbnails=True)
    try:
        web = opener()
        page = web.open(server.url + "/episodes/ep-3").read().decode()
        assert "keeps no spectrogram of its references" in page
        assert "reference-spectrogram" not in page and "front-end.png" not in page
        with pytest.raises(urllib.error.HTTPError) as missing:
            web.open(server.url + "/clips/ep-3/reference.png")
        assert missing.value.code == 404
    finally:
        server.stop()


def test_links_use_public_url_and_a_wildcard_bind_without_it_is_warned_of(tmp_path,
                                                                          caplog) -> None:
    """The events' links: under ``public_url`` when set; a page on 0.0.0.0 without it links
    an address no other machine can open, and the daemon says so at start."""
    import logging

    state = WebState([], tmp_path / "actions.jsonl")
    loopback = WebServer(state, Health("box"), "127.0.0.1", 0).start()
    named = WebServer(state, Health("box"), "0.0.0.0", 0, password="s3cret",
                      public_url="http://box-1.plant:8090/")
    with caplog.at_level(logging.WARNING, logger="edge.web.server"):
        wildcard = WebServer(state, Health("box"), "0.0.0.0", 0, password="s3cret").start()
    try:
        assert loopback.links("ep") == (f"http://127.0.0.1:{loopback.port}/clips/ep.wav",
                                        f"http://127.0.0.1:{loopback.port}/clips/ep.png")
        assert named.links("ep")[0] == "http://box-1.plant:8090/clips/ep.wav"
        assert wildcard.links("ep")[0] == f"http://0.0.0.0:{wildcard.port}/clips/ep.wav"
        assert "set web.public_url" in caplog.text
    finally:
        loopback.stop()
        wildcard.stop()


def test_enrolling_into_a_bundle_without_pictures_adds_them_for_the_new_references(
        tmp_path) -> None:
    """An older bundle (no reference_spectrograms.npz) enrolled into: its old references still
    have no picture (none is invented), the newly enrolled ones have theirs."""
    from _pipeline import MACHINE, stats_setup

    from edge.bundle.fit import THUMBNAILS_FILE, load_thumbnails
    from edge.bundle.manifest import MANIFEST, write_manifest
    from edge.cli import main

    setup = stats_setup(tmp_path)
    folder = setup.models / MACHINE
    (folder / THUMBNAILS_FILE).unlink()
    manifest = json.loads((folder / MANIFEST).read_text())
    del manifest["files"]
    write_manifest(folder, manifest)
    old = len(manifest["references"])
    assert main(["enroll", "--file", str(setup.stream), "--machine", MACHINE, "--section", "0",
                 "--models", str(setup.models), "--clip-quantile-thresholds"]) == 0
    count = len(json.loads((folder / MANIFEST).read_text())["references"])
    pictures = load_thumbnails(folder, count)
    assert count > old and all(p is None for p in pictures[:old])
    assert all(p is not None and p.shape[1] > 30 for p in pictures[old:])
