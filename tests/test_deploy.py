"""The shipped deploy/ configuration, end to end (issue 13, "done when"): deploy/edge.yaml with
only what a site changes, run as ``asd-edge run --config`` against Mosquitto running the
shipped deploy/mosquitto.conf + mosquitto.acl with TLS from a CA the test makes. It connects
over TLS with the password from its file, its alarm reaches the plant's subscriber, and its
log says nothing fell back or was dropped."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from _broker import Subscriber, free_port, make_tls_files, shipped_broker

from edge.cli import main
from edge.outputs.events import AlarmEvent
from edge.synth import synthesize_dataset, synthesize_stream

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "deploy" / "edge.yaml"
NODE = "press-hall-1"  # the shipped node, user name and ACL prefix: not changed
PASSWORD = "box password 1"


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> dict[str, Path]:
    """What a site has before it edits edge.yaml: a bundle per machine the shipped streams
    name (gearbox section 0, fan section 1, valve section 0; statistics-only, enrolled from
    synthetic clips) and a recording per stream, the gearbox's with a fault at 25-40 s."""
    root = tmp_path_factory.mktemp("site")
    models = root / "models"
    data = synthesize_dataset(root / "data", ["gearbox", "fan", "valve"], sections=2,
                              n_train=16, n_target_train=0, n_test=0, seed=3)
    for machine, section in (("gearbox", 0), ("fan", 1), ("valve", 0)):
        folder = root / f"{machine}_{section:02d}"
        folder.mkdir()
        for clip in (data / machine / "train").glob(f"section_{section:02d}_*.wav"):
            shutil.copy(clip, folder / clip.name)
        assert main(["enroll", "--dir", str(folder), "--machine", machine, "--section",
                     str(section), "--models", str(models), "--domain", "source",
                     "--clip-quantile-thresholds"]) == 0
    recordings = {"models": models}
    for machine, section, fault in (("gearbox", 0, 25.0), ("fan", 1, None), ("valve", 0, None)):
        path = root / f"{machine}.wav"
        synthesize_stream(path, machine, section, seconds=60.0, seed=3, severity=1.5,
                          fault_start=fault or 0.0, fault_seconds=15.0,
                          faults=None if fault else [])
        recordings[machine] = path
    return recordings


def site_config(site: dict[str, Path], root: Path, broker_port: int, ca: Path,
                metrics_port: int) -> Path:
    """deploy/edge.yaml with what a site changes and nothing else: the broker's host:port,
    the absolute paths of the password file, CA, models and state folders, the metrics port
    (9108 may be taken on a shared test box), and each stream's source (this box has no
    microphones: each plays a recording at full speed). Every other key is as shipped."""
    config = yaml.safe_load(SHIPPED.read_text())
    password_file = root / "etc" / "mqtt-password"
    password_file.parent.mkdir(parents=True)
    password_file.write_text(PASSWORD + "\n")
    password_file.chmod(0o600)

    def change(mapping: dict, key: str, shipped: object, new: object) -> None:
        assert mapping[key] == shipped, f"deploy/edge.yaml changed {key}: update this test"
        mapping[key] = new

    change(config, "models_dir", "/var/lib/asd-edge/models", str(site["models"]))
    change(config, "state_dir", "/var/lib/asd-edge", str(root / "state"))
    mqtt = config["mqtt"]
    change(mqtt, "url", "mqtts://broker.plant.local:8883", f"mqtts://127.0.0.1:{broker_port}")
    change(mqtt, "password_file", "/etc/asd-edge/mqtt-password", str(password_file))
    change(mqtt["tls"], "ca", "/etc/asd-edge/ca.pem", str(ca))
    change(config["metrics"], "port", 9108, metrics_port)
    assert [s["machine"] for s in config["streams"]] == ["gearbox", "fan", "valve"]
    for stream in config["streams"]:
        stream["source"] = {"type": "file", "path": str(site[stream["machine"]]),
                            "speed": "max"}
    path = root / "etc" / "edge.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


@pytest.mark.slow  # the daemon as a subprocess, three streams of 60 s
def test_the_shipped_config_connects_over_tls_and_delivers_its_alarm(site, tmp_path) -> None:
    pki = make_tls_files(tmp_path / "pki")
    broker = shipped_broker(tmp_path / "broker", {NODE: PASSWORD, "scada": "scada pw"}, pki)
    assert broker.tls_port is not None
    broker.start()
    plant = Subscriber(broker.port, ["asd-edge/#"], client_id="scada", username="scada",
                       password="scada pw")
    try:
        plant.wait_subscribed()
        config = site_config(site, tmp_path, broker.tls_port, pki.ca, free_port())
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        check = subprocess.run([sys.executable, "-m", "edge.cli", "check-config", str(config)],
                               cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
        assert check.returncode == 0, check.stdout + check.stderr
        run = subprocess.run([sys.executable, "-m", "edge.cli", "run", "--config", str(config)],
                             cwd=REPO, env=env, capture_output=True, text=True, timeout=180)
        log = run.stdout + run.stderr
        assert run.returncode == 0, log[-3000:]
        alarm = f"asd-edge/{NODE}/gearbox/00/alarm"
        messages = plant.wait_for(
            lambda ms: {"raise", "clear"} <= {m.json()["type"] for m in ms if m.topic == alarm}
            and any(m.topic == f"asd-edge/{NODE}/status" and m.payload == b"offline"
                    for m in ms),
            timeout_s=20, what="the gearbox's raise and clear, then the node going offline")
    finally:
        plant.close()
        broker.kill()
    # It connected (only the TLS listener was given, anonymous clients are refused) and said so.
    status = [m.payload for m in messages if m.topic == f"asd-edge/{NODE}/status"]
    assert status[0] == b"online" and status[-1] == b"offline", status
    assert f"u'{NODE}'" in broker.log_path.read_text()  # logged in as its node (password)
    assert f"connecting to 127.0.0.1:{broker.tls_port} (MQTT 3.1.1, TLS)" in log
    assert f"MQTT: connected to 127.0.0.1:{broker.tls_port}" in log
    assert "listening: gearbox-line-a, fan-roof, replay-check;" in log  # every stream runs
    # The alarm of the recording's fault, and none from the healthy fan and valve.
    events = [AlarmEvent.from_json(m.payload) for m in messages if m.topic.endswith("/alarm")]
    assert [(e.machine, e.section, e.type) for e in events] == \
        [("gearbox", "00", "raise"), ("gearbox", "00", "clear")]
    assert 25.0 < events[0].window.end_s < 40.0
    assert events[0].clip is not None and Path(events[0].clip).is_file()  # under state_dir
    assert Path(events[0].clip).is_relative_to(tmp_path / "state")
    # Nothing fell back, was dropped or failed, and the password is in no log line.
    for sign in ("fall back", "falls back", "fell back", "dropped", "ignored", "cannot",
                 "failed", "refused", "Traceback", "ERROR"):
        assert sign not in log, [line for line in log.splitlines() if sign in line]
    assert PASSWORD not in log
    assert (tmp_path / "state" / "outbox.sqlite").is_file()  # the durable outbox, on disk
