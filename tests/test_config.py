"""The daemon's YAML config: the shipped example passes, mistakes name their line."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from edge.cli import main
from edge.config import ConfigError, EdgeConfig, config_from_flags, load_config
from edge.errors import BadInput

EXAMPLE = Path(__file__).resolve().parents[1] / "deploy" / "edge.yaml"

MINIMAL = """\
node: box-1
streams:
  - source:
      type: mic
      device: 0
    machine: fan
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "edge.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def problem_lines(err: ConfigError) -> dict[int | None, str]:
    return {line: f"{where}: {message}" for line, where, message in err.problems}


def test_the_shipped_example_passes_check_config(capsys):
    assert main(["check-config", str(EXAMPLE), "--syntax-only"]) == 0
    out = capsys.readouterr().out
    assert "OK (form only)" in out and "3 stream(s)" in out and "gearbox-line-a" in out


def test_check_config_checks_what_the_config_names_on_this_box(tmp_path, capsys):
    """Issue 13 item 11: a missing recording, bundle, section or password file passed
    check-config and failed at run time; now each is named, and a config whose parts are all
    here passes (the microphone case runs in test_daemon against the virtual ALSA device)."""
    import numpy as np

    from edge.audio import write_audio
    from edge.bundle.enroll import enroll
    from edge.synth import render_clip

    clips = [render_clip("fan", 0, [("m-n", "W")], 32_000, [0, i]) for i in range(3)]
    enroll(tmp_path / "models", "fan", 0, clips, "test", clip_quantile=True)
    write_audio(tmp_path / "rec.wav", np.concatenate(clips))
    (tmp_path / "pw").write_text("secret\n")
    good = write(tmp_path, """\
        models_dir: models
        state_dir: state
        streams:
          - source: {type: file, path: rec.wav}
            machine: fan
        mqtt: {url: "mqtt://127.0.0.1:1883", username: a, password_file: pw}
        """)
    assert main(["check-config", str(good)]) == 0
    assert "OK (files, devices, bundles and folders checked)" in capsys.readouterr().out
    bad = write(tmp_path, """\
        models_dir: models
        state_dir: state
        streams:
          - source: {type: file, path: missing.wav}
            machine: fan
            section: 3
          - source: {type: file, path: rec.wav}
            machine: pump
        mqtt: {url: "mqtt://127.0.0.1:1883", username: a, password_file: nothere}
        """)
    assert main(["check-config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "4 thing(s) it names are not right on this machine" in err
    assert "streams[0].source.path: " in err and "missing.wav" in err
    assert "streams[0].section: the fan bundle has no section_03 (it has section_00)" in err
    assert "streams[1].machine: " in err and "pump/bundle.json: no bundle here" in err
    assert "mqtt.password_file: " in err and "nothere is not a readable file" in err
    assert main(["check-config", str(bad), "--syntax-only"]) == 0


def test_defaults_of_a_minimal_config(tmp_path):
    config = load_config(write(tmp_path, MINIMAL))
    stream = config.streams[0]
    assert (stream.name, stream.section, stream.hop_seconds, stream.window_seconds) == \
        ("fan-section_00", 0, 0.5, 10.0)
    assert (stream.alarm.trip_hops, stream.alarm.window_hops, stream.alarm.threshold) == \
        (3, 5, None)
    assert config.metrics.host == "127.0.0.1" and config.mqtt is None
    # Relative paths are relative to the config file, not to where the daemon was started.
    assert config.state_dir == tmp_path / "state"
    assert config.outbox_path == tmp_path / "state" / "outbox.sqlite"


def test_absolute_paths_stay_as_written_and_relative_ones_follow_the_file(tmp_path):
    config = load_config(write(tmp_path, MINIMAL + textwrap.dedent("""\
        outbox: {path: /var/spool/outbox.sqlite}
        evidence: {dir: clips}
        mqtt:
          url: mqtts://broker
          password_file: /etc/asd-edge/mqtt-password
          tls: {ca: /etc/asd-edge/ca.pem, cert: client.pem, key: /etc/asd-edge/client.key}
        """)))
    assert config.outbox_path == Path("/var/spool/outbox.sqlite")
    assert config.evidence_dir == tmp_path / "clips"
    assert config.mqtt is not None and config.mqtt.tls is not None
    assert config.mqtt.password_file == Path("/etc/asd-edge/mqtt-password")
    tls = config.mqtt.tls
    assert (tls.ca, tls.cert, tls.key) == (Path("/etc/asd-edge/ca.pem"), tmp_path / "client.pem",
                                           Path("/etc/asd-edge/client.key"))


def test_unknown_key_fails_naming_its_line(tmp_path, capsys):
    path = write(tmp_path, MINIMAL + "    hop_secnods: 1.0\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert problem_lines(caught.value) == {
        7: "streams[0].hop_secnods: unknown key; remove it or check its spelling "
           "(deploy/edge.yaml shows every key)"}
    assert main(["check-config", str(path)]) == 2
    assert f"{path}:7: streams[0].hop_secnods: unknown key" in capsys.readouterr().err


def test_bad_values_fail_each_naming_its_line(tmp_path):
    path = write(tmp_path, """\
        streams:
          - source: {type: mic, device: 0}
            machine: fan
            hop_seconds: 20
          - source:
              type: file
              speed: fast
            machine: gear/box
            alarm:
              trip_hops: 6
        mqtt:
          url: http://broker:1883
        metrics:
          port: 70000
        """)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    lines = problem_lines(caught.value)
    assert set(lines) == {2, 5, 7, 8, 9, 12, 14}
    assert "hop_seconds (20.0) must not exceed window_seconds" in lines[2]
    assert lines[5] == "streams[1].source.path: required, but missing"
    assert "streams[1].source.speed" in lines[7] and "'fast'" in lines[7]
    assert "streams[1].machine" in lines[8]
    assert "trip_hops=6 is more than window_hops=5" in lines[9]
    assert "mqtt.url" in lines[12] and "mqtt://HOST" in lines[12]
    assert "metrics.port" in lines[14]


def test_yaml_mistakes_name_their_line(tmp_path):
    with pytest.raises(ConfigError, match=r"edge\.yaml:7: streams\[0\]\.machine: key given twice"):
        load_config(write(tmp_path, MINIMAL + "    machine: valve\n"))
    with pytest.raises(ConfigError, match=r"edge\.yaml:3: YAML"):
        load_config(write(tmp_path, "streams:\n  - source: {type: mic\n    machine: fan\n"))
    with pytest.raises(ConfigError, match="must be a YAML mapping"):
        load_config(write(tmp_path, "- just a list\n"))
    with pytest.raises(BadInput, match="cannot read the config"):
        load_config(tmp_path / "missing.yaml")


def test_absurd_configs_get_one_line_errors_quickly(tmp_path, capsys):
    """Issue 13 items 4 and 8: a binary file, a NaN threshold, a window of 1e308 s, a
    5,000-digit number, 100,000-deep nesting and a YAML alias bomb: each a one-line error and
    exit status 2 within seconds, never a traceback, a hang, or alarms silently off."""
    import time

    bomb = "a0: &a0 [" + ", ".join(["x"] * 10) + "]\n" + "".join(
        f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]\n" for i in range(1, 12))
    cases = {
        "binary": (bytes(range(256)) * 8, "not UTF-8 text"),
        "nan": ((MINIMAL + "    alarm: {threshold: .nan}\n").encode(), "finite number"),
        "infinite": ((MINIMAL + "    alarm: {threshold: -.inf}\n").encode(), "finite number"),
        "window": ((MINIMAL + "    window_seconds: 1e308\n").encode(), "less than or equal"),
        "digits": ((MINIMAL + "    section: " + "9" * 5000 + "\n").encode(), "digits"),
        "deep": (("a: " + "[" * 100_000 + "]" * 100_000 + "\n").encode(), "nested too deeply"),
        "bomb": (bomb.encode(), "expands to over 100,000 values"),
    }
    for name, (content, message) in cases.items():
        path = tmp_path / f"{name}.yaml"
        path.write_bytes(content)
        started = time.monotonic()
        assert main(["check-config", str(path)]) == 2, name
        assert time.monotonic() - started < 10, name
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, (name, err)


def test_a_literal_password_is_refused_without_echoing_it(tmp_path):
    path = write(tmp_path, MINIMAL + "mqtt:\n  url: mqtt://localhost\n  password: hunter2\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert "mqtt.password: a literal password is refused" in problem_lines(caught.value)[9]
    assert "hunter2" not in str(caught.value)


def test_password_comes_from_the_environment_or_a_file(tmp_path, monkeypatch):
    secret = tmp_path / "secret"
    secret.write_text("s3cret\n")
    secret.chmod(0o600)
    config = load_config(write(tmp_path, MINIMAL + "mqtt:\n  url: mqtts://broker.example\n"
                                                   "  password_file: secret\n"))
    assert config.mqtt is not None
    assert config.mqtt.resolve_password() == "s3cret"
    assert (config.mqtt.host, config.mqtt.port, config.mqtt.use_tls) == \
        ("broker.example", 8883, True)
    config = load_config(write(tmp_path, MINIMAL + "mqtt:\n  url: mqtt://broker:1884\n"
                                                   "  password_env: ASD_TEST_PASSWORD\n"))
    assert config.mqtt is not None
    monkeypatch.delenv("ASD_TEST_PASSWORD", raising=False)
    with pytest.raises(BadInput, match="ASD_TEST_PASSWORD"):
        config.mqtt.resolve_password()
    monkeypatch.setenv("ASD_TEST_PASSWORD", "from-env")
    assert config.mqtt.resolve_password() == "from-env"
    assert config.mqtt.port == 1884


def test_flags_build_the_single_stream_config():
    config = config_from_flags(machine="gearbox", file="replay.wav", section="section_02",
                               speed="max", mqtt="mqtt://127.0.0.1:1883", device="cpu")
    assert isinstance(config, EdgeConfig)
    stream = config.streams[0]
    assert stream.source.type == "file" and stream.source.speed == "max"
    assert (stream.machine, stream.section, stream.name) == ("gearbox", 2,
                                                             "gearbox-section_02")
    assert config.mqtt is not None and config.mqtt.port == 1883 and config.device == "cpu"
    assert config_from_flags(machine="fan", mic="USB").streams[0].source.device == "USB"


def test_bad_flags_name_the_flag():
    with pytest.raises(BadInput, match=r"--mqtt: 'tcp://x' is not mqtt://"):
        config_from_flags(machine="fan", mic=0, mqtt="tcp://x")
    with pytest.raises(BadInput, match=r"--section: .*99"):
        config_from_flags(machine="fan", mic=0, section=120)
    with pytest.raises(BadInput, match="exactly one of --mic"):
        config_from_flags(machine="fan", mic=0, file="x.wav")


def test_the_systemd_unit_runs_unprivileged_and_hardened():
    unit = (EXAMPLE.parent / "asd-edge.service").read_text()
    settings = {}
    for line in unit.splitlines():
        if "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            settings.setdefault(key, value)
    assert settings["User"] == "asd-edge" and settings["User"] != "root"
    assert settings["NoNewPrivileges"] == "yes" and settings["ProtectSystem"] == "strict"
    assert settings["CapabilityBoundingSet"] == ""
    assert "check-config /etc/asd-edge/edge.yaml" in settings["ExecStartPre"]
    assert "password" not in settings["ExecStart"]
