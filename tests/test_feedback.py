"""Operator feedback, "that was not a fault", end to end: a real daemon replays a recording with
a fault through a real Mosquitto and raises one episode; ``asd-edge enroll --episode ID``
enrolls its evidence clip as normal (the bundle changes atomically and still verifies) and a
second replay of the same audio raises no alarm in the fault (or a later one); the running
daemon takes the same action as an MQTT command and answers on cmd/ack."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime
from http.cookiejar import CookieJar
from pathlib import Path

import numpy as np
import pytest
from _broker import Broker, Subscriber, free_port
from _pipeline import MACHINE, StatsSetup, stats_setup
from test_event_schema import frozen_event

from edge.alarms.rule import AlarmRule, AlarmRuleConfig, StreamKey
from edge.audio import SAMPLE_RATE, read_audio, write_audio
from edge.bundle.enroll import cut_clips
from edge.bundle.fit import References, write_bundle
from edge.bundle.load import load_bundle
from edge.bundle.manifest import read_manifest
from edge.cli import main
from edge.errors import BadInput
from edge.evidence import enforce_retention
from edge.feedback import FeedbackAck, NotAFaultCommand, not_a_fault, parse_command
from edge.outputs.events import AlarmEvent
from edge.outputs.journal import append_record, read_journal, read_records
from edge.web.state import WebState

NODE = "test"
ALARM_TOPIC = f"asd-edge/{NODE}/{MACHINE}/00/alarm"
STATE_TOPIC = f"asd-edge/{NODE}/{MACHINE}/00/state"
COMMAND_TOPIC = f"asd-edge/{NODE}/cmd/not_a_fault"
ACK_TOPIC = f"asd-edge/{NODE}/cmd/ack"
REPO = Path(__file__).resolve().parents[1]


class Replayed:
    def __init__(self, setup: StatsSetup, state: Path, events: list[AlarmEvent]) -> None:
        self.setup, self.state, self.events = setup, state, events

    @property
    def episode(self) -> str:
        return self.events[0].id

    @property
    def clip(self) -> Path:
        assert self.events[0].clip is not None
        return Path(self.events[0].clip)

    def copy(self, root: Path) -> tuple[Path, Path]:
        """A copy of the bundles and of the state folder (journal, clips) under ``root``;
        the copied journal names the copied clip."""
        models, state = root / "models", root / "state"
        shutil.copytree(self.setup.models, models)
        shutil.copytree(self.state, state)
        journal = state / "journal.jsonl"
        journal.write_text(journal.read_text().replace(str(self.state), str(state)))
        return models, state


@pytest.fixture(scope="module")
def replayed(tmp_path_factory) -> Replayed:
    """The fault recording replayed by the daemon through Mosquitto: one closed episode."""
    root = tmp_path_factory.mktemp("feedback")
    setup = stats_setup(root)
    broker = Broker(root / "broker")
    broker.start()
    subscriber = Subscriber(broker.port, [ALARM_TOPIC])
    try:
        subscriber.wait_subscribed()
        state = root / "state"
        assert main(["run", "--file", str(setup.stream), "--machine", MACHINE, "--models",
                     str(setup.models), "--speed", "max", "--mqtt", broker.url, "--node", NODE,
                     "--state-dir", str(state), "--no-metrics"]) == 0
        subscriber.wait_for(lambda ms: len(ms) >= 2, what="the raise and the clear")
        events = [AlarmEvent.from_json(m.payload) for m in subscriber.on(ALARM_TOPIC)]
    finally:
        subscriber.close()
        broker.kill()
    assert [e.type for e in events] == ["raise", "clear"]
    assert setup.fault["start_s"] < events[0].window.end_s <= setup.fault["end_s"]
    return Replayed(setup, state, events)


def section_references(models: Path) -> int:
    return sum(1 for r in read_manifest(models / MACHINE, MACHINE).references if r.section == 0)


def replay(models: Path, stream: Path, state: Path) -> list[AlarmEvent]:
    assert main(["run", "--file", str(stream), "--machine", MACHINE, "--models", str(models),
                 "--speed", "max", "--node", NODE, "--state-dir", str(state),
                 "--no-metrics"]) == 0
    return read_journal(state / "journal.jsonl")


def test_not_a_fault_enrolls_the_clip_and_the_same_audio_raises_no_alarm_in_the_fault(
        replayed, tmp_path, capsys) -> None:
    models, state = replayed.copy(tmp_path)
    references = section_references(models)
    threshold = load_bundle(models, MACHINE).system.thresholds[0].threshold
    clip_clips = len(cut_clips(read_audio(replayed.clip), SAMPLE_RATE))
    capsys.readouterr()

    assert main(["enroll", "--episode", replayed.episode, "--state-dir", str(state),
                 "--models", str(models)]) == 0
    said = capsys.readouterr().out
    assert f"episode {replayed.episode} is not a fault: enrolled {clip_clips} clip(s)" in said

    assert main(["bundle", "verify", str(models / MACHINE)]) == 0
    assert section_references(models) == references + clip_clips
    new_threshold = load_bundle(models, MACHINE).system.thresholds[0].threshold
    assert new_threshold != threshold
    # the journal: the same two alarm events for every reader, plus one feedback record
    journal = state / "journal.jsonl"
    assert [e.event_id for e in read_journal(journal)] == \
        [e.event_id for e in replayed.events]
    [record] = read_records(journal, "feedback")
    assert record["episode"] == replayed.episode and record["via"] == "cli"
    assert record["clips_added"] == clip_clips
    assert record["threshold_before"] == pytest.approx(threshold)
    assert record["threshold_after"] == pytest.approx(new_threshold)
    assert record["references"] == references + clip_clips

    # the same recording again: no alarm inside the fault's first stretch, or a later one
    again = replay(models, replayed.setup.stream, tmp_path / "again")
    first = replayed.events[0]
    raises = [e for e in again if e.type == "raise"]
    with capsys.disabled():
        print(f"\nfeedback: threshold {threshold:.4g} -> {new_threshold:.4g}; references "
              f"{references} -> {references + clip_clips}; first replay raised at "
              f"{first.window.end_s:.2f} s (score {first.score:.4g}); second replay: "
              f"{[(e.window.end_s, round(e.score, 4)) for e in raises]}")
    assert all(e.window.end_s > first.window.end_s for e in raises), raises

    # a command delivered twice, or a second click: enrolled once
    capsys.readouterr()
    assert main(["enroll", "--episode", replayed.episode, "--state-dir", str(state),
                 "--models", str(models)]) == 2
    assert "already enrolled" in capsys.readouterr().err
    assert section_references(models) == references + clip_clips


def test_refusals_are_one_line_and_change_nothing(replayed, tmp_path, capsys) -> None:
    models, state = replayed.copy(tmp_path)
    references = section_references(models)

    def refused(*argv: str) -> str:
        capsys.readouterr()
        assert main(["enroll", *argv, "--models", str(models)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "Traceback" not in err, err
        return err

    err = refused("--episode", "no-such-episode", "--state-dir", str(state))
    assert "is not in" in err and str(state / "journal.jsonl") in err
    err = refused("--episode", replayed.episode, "--state-dir", str(tmp_path / "elsewhere"))
    assert str(tmp_path / "elsewhere" / "journal.jsonl") in err
    assert "--machine" in refused("--episode", replayed.episode, "--state-dir", str(state),
                                  "--machine", MACHINE)

    # still open: the journal holds the raise only
    open_state = tmp_path / "open"
    open_state.mkdir()
    journal = (state / "journal.jsonl").read_text().splitlines(keepends=True)
    (open_state / "journal.jsonl").write_text(journal[0])
    assert "still open" in refused("--episode", replayed.episode, "--state-dir",
                                   str(open_state))

    # the clip removed by the evidence retention
    assert enforce_retention(state / "clips", max_clips=0, max_age_days=30,
                             max_megabytes=1000) == [state / "clips" / replayed.clip.name]
    err = refused("--episode", replayed.episode, "--state-dir", str(state))
    assert "removed by evidence retention" in err and replayed.clip.name in err
    assert section_references(models) == references
    assert read_records(state / "journal.jsonl", "feedback") == []


def test_even_if_open_enrolls_an_open_episode(replayed, tmp_path) -> None:
    models, state = replayed.copy(tmp_path)
    journal = state / "journal.jsonl"
    journal.write_text(journal.read_text().splitlines(keepends=True)[0])  # the raise only
    references = section_references(models)
    assert main(["enroll", "--episode", replayed.episode, "--state-dir", str(state),
                 "--models", str(models), "--even-if-open"]) == 0
    assert section_references(models) > references
    [record] = read_records(journal, "feedback")
    assert record["even_if_open"] is True


def test_a_crash_mid_swap_leaves_the_old_bundle(replayed, tmp_path, monkeypatch) -> None:
    """write_bundle killed between its two renames: the next load finds the old bundle."""
    models, _ = replayed.copy(tmp_path)
    bundle = load_bundle(models, MACHINE)
    before = (models / MACHINE / "bundle.json").read_bytes()
    references = References.load(bundle.path, bundle.manifest)
    configs = {m.name: m.scorer_config for m in bundle.manifest.system.members}
    extra = bundle.manifest.model_dump(mode="json", exclude_none=True,
                                       include={"provenance", "system"})
    renames: list[Path] = []
    real_rename = Path.rename

    def rename(self: Path, target):
        if renames:  # the second rename (staging -> bundle) never happens: a crash
            raise KeyboardInterrupt
        renames.append(self)
        return real_rename(self, target)

    monkeypatch.setattr(Path, "rename", rename)
    with pytest.raises(KeyboardInterrupt):
        write_bundle(models / MACHINE, MACHINE, bundle.system, references, configs, extra)
    monkeypatch.undo()
    assert not (models / MACHINE).exists()  # the crash window
    reloaded = load_bundle(models, MACHINE)
    assert (reloaded.path / "bundle.json").read_bytes() == before
    assert main(["bundle", "verify", str(models / MACHINE)]) == 0


def start_daemon(replayed: Replayed, tmp_path: Path, broker: Broker, web_port: int | None = None
                 ) -> tuple[subprocess.Popen[str], Path, Path]:
    """``asd-edge run --config`` in a subprocess, replaying the fault recording in real time
    (so it runs while the test talks to it) with feedback.mqtt on; (process, models, state)."""
    models, state = replayed.copy(tmp_path)
    config = tmp_path / "edge.yaml"
    web = f"web: {{enabled: true, port: {web_port}}}" if web_port else ""
    config.write_text(f"""
node: {NODE}
models_dir: {models}
state_dir: {state}
streams:
  - source: {{type: file, path: {replayed.setup.stream}, speed: realtime}}
    machine: {MACHINE}
    section: 0
mqtt: {{url: "{broker.url}", discovery: false}}
metrics: {{enabled: false}}
feedback: {{mqtt: true}}
{web}
""")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    daemon = subprocess.Popen([sys.executable, "-m", "edge.cli", "run", "--config",
                               str(config)], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    return daemon, models, state


def stop_daemon(daemon: subprocess.Popen[str]) -> None:
    daemon.send_signal(signal.SIGTERM)
    output = daemon.communicate(timeout=30)[0]
    assert daemon.returncode == 0, output[-3000:]
    assert "Traceback" not in output, output[-3000:]


def test_the_running_daemon_takes_the_mqtt_command(replayed, tmp_path) -> None:
    broker = Broker(tmp_path / "broker")
    broker.start()
    subscriber = Subscriber(broker.port, [ACK_TOPIC, STATE_TOPIC])
    daemon, models, state = start_daemon(replayed, tmp_path, broker)
    references = section_references(models)
    try:
        subscriber.wait_subscribed()
        # the retained state comes after the daemon subscribed to its command topic
        subscriber.wait_for(lambda ms: any(m.topic == STATE_TOPIC for m in ms), timeout_s=60,
                            what="the daemon's first state")
        publisher = subscriber.client

        def acks() -> list[dict]:
            return [m.json() for m in subscriber.on(ACK_TOPIC)]

        publisher.publish(COMMAND_TOPIC, b"this is not json", qos=1)
        publisher.publish(COMMAND_TOPIC, json.dumps({"episode": 5, "request_id": "bad-1"}),
                          qos=1)
        publisher.publish(COMMAND_TOPIC, json.dumps({"episode": replayed.episode,
                                                     "request_id": "bad-2", "by": "me"}),
                          qos=1)
        subscriber.wait_for(lambda ms: len(acks()) >= 3, what="three error acks")
        errors = acks()
        assert [a["ok"] for a in errors] == [False, False, False]
        assert [a["request_id"] for a in errors] == [None, "bad-1", "bad-2"]
        assert "episode" in errors[1]["error"] and "by" in errors[2]["error"]
        assert section_references(models) == references  # nothing changed

        sent = time.monotonic()
        publisher.publish(COMMAND_TOPIC, json.dumps({"episode": replayed.episode,
                                                     "request_id": "r-1"}), qos=1)
        subscriber.wait_for(lambda ms: len(acks()) >= 4, timeout_s=60, what="the ack")
        print(f"\nnot_a_fault over MQTT: ack after {time.monotonic() - sent:.2f} s")
        ack = acks()[3]
        assert ack["ok"] is True and ack["request_id"] == "r-1", ack
        assert ack["episode"] == replayed.episode and ack["machine"] == MACHINE
        assert ack["threshold"] != pytest.approx(ack["threshold_before"])
        assert ack["references"] == section_references(models) == \
            references + ack["clips_added"]
        # in effect at once: the retained state carries the stream's new threshold
        states = [m.json() for m in subscriber.on(STATE_TOPIC)]
        assert states[-1]["threshold"] == pytest.approx(ack["threshold"])
        [record] = read_records(state / "journal.jsonl", "feedback")
        assert record["via"] == "mqtt" and record["request_id"] == "r-1"
        assert record["id"] == ack["feedback_id"]

        publisher.publish(COMMAND_TOPIC, json.dumps({"episode": replayed.episode,
                                                     "request_id": "r-2"}), qos=1)
        subscriber.wait_for(lambda ms: len(acks()) >= 5, timeout_s=60, what="the second ack")
        again = acks()[4]
        assert again["ok"] is False and "already enrolled" in again["error"]
        assert section_references(models) == references + ack["clips_added"]
    finally:
        stop_daemon(daemon)
        subscriber.close()
        broker.kill()


def test_the_web_pages_not_a_fault_button(replayed, tmp_path) -> None:
    """The episode page's button (a POST with the CSRF token) goes through the daemon."""
    broker = Broker(tmp_path / "broker")
    broker.start()
    port = free_port()
    subscriber = Subscriber(broker.port, [STATE_TOPIC, ACK_TOPIC])
    subscriber.wait_subscribed()
    # a retained command waits at the broker: refused when the daemon connects (it would run
    # again at every connect)
    subscriber.client.publish(COMMAND_TOPIC, json.dumps({"episode": replayed.episode,
                                                         "request_id": "kept"}),
                              qos=1, retain=True).wait_for_publish(5)
    daemon, models, state = start_daemon(replayed, tmp_path, broker, web_port=port)
    references = section_references(models)
    try:
        subscriber.wait_for(lambda ms: any(m.topic == STATE_TOPIC for m in ms), timeout_s=60,
                            what="the first state")
        [kept] = [m.json() for m in subscriber.wait_for(
            lambda ms: any(m.topic == ACK_TOPIC for m in ms), what="the ack of the retained "
            "command") if m.topic == ACK_TOPIC]
        assert kept["ok"] is False and "retained" in kept["error"]
        assert kept["request_id"] == "kept"
        assert section_references(models) == references
        web = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(CookieJar()))
        url = f"http://127.0.0.1:{port}/episodes/{replayed.episode}"
        page = web.open(url).read().decode()  # a first visit: its forms carry the new session's
        assert 'action="/episodes/' + replayed.episode + '/not-a-fault"' in page
        with pytest.raises(urllib.error.HTTPError) as refused:  # no CSRF token: refused
            web.open(url + "/not-a-fault", data=b"")
        assert refused.value.code == 403
        assert section_references(models) == references
        csrf = page.split('name="csrf" value="')[1].split('"')[0]
        page = web.open(url + "/not-a-fault", data=f"csrf={csrf}".encode()).read().decode()
        assert 'id="not-a-fault">Not a fault: 2 clip(s)' in page, page
        assert section_references(models) == references + 2
        [record] = read_records(state / "journal.jsonl", "feedback")
        assert record["via"] == "web"
        actions = [json.loads(line) for line in (state / "actions.jsonl").read_text().splitlines()]
        assert actions[-1]["action"] == "not_a_fault" and actions[-1]["ok"] is True
        # a second click (a stale page) is refused; the page still says what was done
        page = web.open(url + "/not-a-fault", data=f"csrf={csrf}".encode()).read().decode()
        assert 'id="not-a-fault">Not a fault: 2 clip(s)' in page
        assert section_references(models) == references + 2
        last = json.loads((state / "actions.jsonl").read_text().splitlines()[-1])
        assert last["ok"] is False and "already enrolled" in last["error"]
    finally:
        stop_daemon(daemon)
        subscriber.close()
        broker.kill()


def test_a_budget_bundle_stays_calibrated_to_its_budget(replayed, tmp_path) -> None:
    """A bundle whose thresholds keep a false-alarm promise keeps one after the feedback (the
    same budget, recalibrated with the clip); clip quantiles stay clip quantiles (above)."""
    _, state = replayed.copy(tmp_path)
    models = tmp_path / "budget-models"
    assert main(["enroll", "--dir", str(replayed.setup.data / MACHINE / "train"), "--machine",
                 MACHINE, "--section", "0", "--models", str(models), "--domain", "source",
                 "--false-alarms-per-day", "1"]) == 0
    budget = read_manifest(models / MACHINE, MACHINE).alarm_calibration
    assert budget is not None
    budget_refs = read_manifest(models / MACHINE, MACHINE).references
    before = load_bundle(models, MACHINE).traces
    assert before is not None
    hops = before.hops
    record = not_a_fault(replayed.episode, state, models)
    after = read_manifest(models / MACHINE, MACHINE)
    assert after.alarm_calibration is not None
    assert after.alarm_calibration.false_alarms_per_day == budget.false_alarms_per_day == 1
    assert record.domain == "source" and record.references == len(budget_refs) + 2
    traces = load_bundle(models, MACHINE).traces
    assert traces is not None and traces.hops > hops  # the clip's hops joined the calibration
    print(f"\nbudget bundle: threshold {record.threshold_before:.4g} -> "
          f"{record.threshold_after:.4g}; calibration hops {hops} -> {traces.hops}")


# -- the payloads (contracts; no daemon) -----------------------------------------------------

FROZEN_ACK_V1 = (
    '{"schema_version":1,"command":"not_a_fault","request_id":"r-1",'
    '"episode":"0b7c56c1-3f1c-5e9b-9d7e-6a0f2b8c4d11","ok":true,"error":null,'
    '"time":"2026-11-28T12:05:00.250Z","node":"box-1","machine":"gearbox","section":"00",'
    '"threshold":35.87,"threshold_before":23.81,"domain_thresholds":{"source":35.87},'
    '"clips_added":2,"references":20,"feedback_id":"a3e1f0d2-5b4c-4e6f-8a9b-0c1d2e3f4a5b"}')


def test_the_ack_payload_is_frozen() -> None:
    ack = FeedbackAck(request_id="r-1", episode="0b7c56c1-3f1c-5e9b-9d7e-6a0f2b8c4d11",
                      ok=True, time=datetime(2026, 11, 28, 12, 5, 0, 250000, tzinfo=UTC),
                      node="box-1", machine="gearbox", section="00", threshold=35.87,
                      threshold_before=23.81, domain_thresholds={"source": 35.87},
                      clips_added=2, references=20,
                      feedback_id="a3e1f0d2-5b4c-4e6f-8a9b-0c1d2e3f4a5b")
    assert ack.to_json().decode() == FROZEN_ACK_V1


@pytest.mark.parametrize(("payload", "reason"), [
    (b"not json", "Invalid JSON"),
    (b'["a list"]', "payload"),
    (b'{"episode": 5}', "episode"),
    (b'{"episode": "a/b"}', "episode"),
    (b'{"episode": "abc", "by": "me"}', "by"),
    (b'{"episode": "abc", "request_id": 7}', "request_id"),
    (b'{"episode": "abc", "even_if_open": "yes"}', "even_if_open"),
    (b'{"request_id": "r"}', "episode"),
])
def test_a_bad_command_is_a_one_line_reason(payload: bytes, reason: str) -> None:
    parsed = parse_command(payload)
    assert isinstance(parsed, str) and reason in parsed and "\n" not in parsed, parsed


def test_a_good_command_parses() -> None:
    assert parse_command(b'{"episode": "ab-12", "request_id": "r"}') == \
        NotAFaultCommand(episode="ab-12", request_id="r")


def test_readers_of_alarm_events_skip_feedback_records_quietly(tmp_path, caplog) -> None:
    journal = tmp_path / "journal.jsonl"
    journal.write_bytes(frozen_event().to_json() + b"\n")
    append_record(journal, b'{"record":"feedback","episode":"x"}')
    with journal.open("ab") as out:
        out.write(b'{"torn": ')
    with caplog.at_level("WARNING"):
        assert read_journal(journal) == [frozen_event()]
    assert len(caplog.records) == 1 and "line 3" in caplog.records[0].getMessage()
    assert read_records(journal, "feedback") == [{"record": "feedback", "episode": "x"}]
    with pytest.raises(ValueError):
        append_record(journal, b'{"episode": "x"}')


def test_new_levels_keep_an_open_episode() -> None:
    """The daemon swaps a stream's rule for one with the new thresholds mid-episode: the
    episode stays open (no second raise) and clears by the new clear level."""
    key = StreamKey(node=NODE, machine=MACHINE, section="00")
    config = AlarmRuleConfig(trip_hops=3, window_hops=5, hold_seconds=1.0)
    old = AlarmRule(key, 1.0, config.model_copy(update={"clear_threshold": 0.9}))
    now = datetime.now(UTC)
    transitions = [old.update(t * 0.5, 2.0, now) for t in range(3)]
    assert [t.type for t in transitions if t] == ["raise"]
    new = AlarmRule(key, 3.0, config.model_copy(update={"clear_threshold": 2.5}))
    new.carry_on_from(old)
    assert new.active and new.episode_id == old.episode_id
    # 2.0 was over the old clear level; under the new one it clears after the hold time
    after = [new.update(1.5 + t * 0.5, 2.0, now) for t in range(4)]
    assert [(t.type, t.episode_id) for t in after if t] == [("clear", old.episode_id)]


def test_the_web_page_knows_enrolled_episodes_after_a_restart(replayed, tmp_path) -> None:
    """The page lists the journal's episodes at start, with what feedback did to them."""
    models, state = replayed.copy(tmp_path)
    not_a_fault(replayed.episode, state, models)
    page = WebState([("gear", MACHINE, "00", 1.0, 0.9)], state / "actions.jsonl",
                    state / "journal.jsonl")
    [summary] = page.episode_list()
    assert summary["id"] == replayed.episode and summary["not_a_fault"] is True
    assert summary["open"] is False


def test_a_clip_already_in_the_references_is_not_enrolled_twice(replayed, tmp_path) -> None:
    """Killed after the bundle was written and before the journal record: a retry finds the
    clip among the references by name and changes nothing."""
    models, state = replayed.copy(tmp_path)
    journal = state / "journal.jsonl"
    events_only = journal.read_text()
    not_a_fault(replayed.episode, state, models)
    references = section_references(models)
    journal.write_text(events_only)  # the record never made it
    with pytest.raises(BadInput, match="already among the references"):
        not_a_fault(replayed.episode, state, models)
    assert section_references(models) == references


@pytest.mark.parametrize(("argv", "message"), [
    (["--machine", MACHINE, "--section", "0"], "give one of --mic DEVICE, --file WAV, --dir DIR "
                                               "and --episode ID"),
    (["--dir", "x", "--machine", MACHINE, "--section", "0", "--state-dir", "s"],
     "--state-dir goes with --episode only"),
    (["--dir", "x", "--section", "0"], "--machine and --section are required"),
    (["--episode", "x", "--clip-quantile-thresholds"], "--clip-quantile-thresholds do(es) not "
                                                       "go with --episode"),
])
def test_enroll_flags_are_checked(argv, message, capsys) -> None:
    assert main(["enroll", *argv]) == 2
    assert message in capsys.readouterr().err


def test_a_simulated_operator_teaches_the_replay_and_leaves_the_bundle(replayed, tmp_path,
                                                                        capsys) -> None:
    """``evaluate --streams --operator``: the fault recording played three times over,
    labelled healthy (a plant sound the references lack). Without an operator each repeat is
    a false alarm; with one, the first is answered "not a fault" and the repeats stay quiet,
    and the bundles under --models are not touched."""
    audio = read_audio(replayed.setup.stream)
    streams = tmp_path / "streams"
    streams.mkdir()
    write_audio(streams / "plant.wav", np.concatenate([audio] * 3))
    (streams / "plant.json").write_text(json.dumps({"machine": MACHINE, "section": 0,
                                                    "faults": []}))
    models = replayed.setup.models
    def files() -> dict[str, bytes]:
        return {str(p): p.read_bytes() for p in sorted((models / MACHINE).rglob("*"))
                if p.is_file()}

    before = files()
    seconds = audio.shape[0] / SAMPLE_RATE
    results = {}
    for flags in ((), ("--operator",)):
        out = tmp_path / f"report{len(flags)}"
        capsys.readouterr()
        assert main(["evaluate", "--streams", str(streams), "--models", str(models), "--out",
                     str(out), "--no-plots", *flags]) == 0
        said = capsys.readouterr().out
        results[bool(flags)] = json.loads((out / "results.json").read_text())["recordings"][0]
    plain, taught = results[False], results[True]
    first = plain["false_alarm_times_s"][0]
    # every repeat of the sound raises without an operator, at the same place in it
    assert len(plain["false_alarm_times_s"]) == 3
    assert [t - first for t in plain["false_alarm_times_s"]] == pytest.approx(
        [0.0, seconds, 2 * seconds], abs=1.0)
    assert plain["operator_answers"] == []
    # with one: the same first alarm, answered; the repeats stay quiet
    assert taught["false_alarm_times_s"] == [first]
    [answer] = taught["operator_answers"]
    assert answer["ok"] and answer["raised_s"] == pytest.approx(first)
    assert answer["threshold"] != answer["threshold_before"]
    assert answer["references"] == section_references(models) + len(
        cut_clips(read_audio(replayed.clip), SAMPLE_RATE))
    assert "the operator answered 'not a fault' 1 time(s)" in said
    assert files() == before
