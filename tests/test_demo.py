"""The README's main job: `asd-edge demo` runs the whole pipeline and the alarm lands on the
fault, over a real Mosquitto (the demo starts one when the binary is installed), and on the web
page whose URL it prints."""

from __future__ import annotations

import json
import shutil

import pytest
from _broker import free_port
from _webpoll import polled_overview

from edge.cli import main
from edge.outputs.journal import read_journal

pytestmark = pytest.mark.slow  # the whole demo: trains a model


def test_demo_raises_inside_the_fault_and_clears_after(tmp_path, capsys) -> None:
    if shutil.which("mosquitto") is None and shutil.which("/usr/sbin/mosquitto") is None:
        pytest.fail("mosquitto is not installed: apt-get install -y mosquitto")
    out = tmp_path / "demo"
    port = free_port()
    with polled_overview(port) as pages:  # the page's overview, as a browser would see it
        assert main(["demo", "--out", str(out), "--web", str(port), "--keep-web", "2"]) == 0
    printed = capsys.readouterr().out
    assert "Mosquitto on 127.0.0.1" in printed and "MQTT asd-edge/demo/" in printed
    # the event-level result of its own recording, and what the bundle promises
    assert "faults detected 1/1" in printed and "0 false alarm(s)" in printed
    # the unit's enrolled sound sets its promise; the other section keeps the data set's
    assert "section_00: at most 0.0333 false alarms per day" in printed
    assert "of normal audio (enrolled audio)" in printed
    assert "section_01: at most 0.0333 false alarms per day" in printed
    assert "of normal audio (all references)" in printed
    assert (out / "streams-report" / "results.json").is_file()
    fault = json.loads(next((out / "stream").glob("*.json")).read_text())["fault"]
    events = read_journal(out / "state" / "journal.jsonl")
    assert [e.type for e in events] == ["raise", "clear"]
    # the page of its own stream and alarm: its URL printed, and it was there to see
    assert f"web page of the episode: http://127.0.0.1:{port}/episodes/{events[0].id}" in printed
    assert pages and pages[-1]["episodes"] == 1, pages[-1:]
    assert [s["name"] for s in pages[-1]["streams"]] == ["gearbox-section_00"]
    assert fault["start_s"] < events[0].window.end_s <= fault["end_s"]
    assert events[1].window.start_s >= fault["end_s"] - 1.0
    manifest = json.loads((out / "models" / "gearbox" / "bundle.json").read_text())
    assert {m["kind"] for m in manifest["system"]["members"]} == {"embedding", "spectral"}
    assert main(["bundle", "verify", str(out / "models" / "gearbox")]) == 0
