"""``asd-edge run --config`` with flags: a flag that maps to one setting of the file wins over
it (and the log says so); a flag that names a stream, which the file does itself, is a one-line
error (exit 2) naming the flag and the fix. No flag is silently ignored."""

from __future__ import annotations

import argparse
import logging
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from edge.cli import main
from edge.cli.run import add_arguments, options_from
from edge.config import EdgeConfig
from edge.errors import BadInput

EXAMPLE = Path(__file__).resolve().parents[1] / "deploy" / "edge.yaml"

MIC_ONLY = """\
node: box-1
streams:
  - source: {type: mic, device: 0}
    machine: fan
"""


def config_of(*argv: str) -> EdgeConfig:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return options_from(parser.parse_args(list(argv)))


def mic_only(tmp_path: Path) -> Path:
    path = tmp_path / "edge.yaml"
    path.write_text(textwrap.dedent(MIC_ONLY))
    return path


def password_source(config: EdgeConfig) -> tuple:
    assert config.mqtt is not None
    return config.mqtt.password_env, config.mqtt.password_file


# flag, value, what the example's config says, what the config says with the flag
OVERRIDES: list[tuple[str, str, Callable[[EdgeConfig], object], object, object]] = [
    ("--models", "here/models", lambda c: c.models_dir,
     Path("/var/lib/asd-edge/models"), Path("here/models")),
    ("--node", "box-2", lambda c: c.node, "press-hall-1", "box-2"),
    ("--state-dir", "here/state", lambda c: (c.state_dir, c.outbox_path),
     (Path("/var/lib/asd-edge"), Path("/var/lib/asd-edge/outbox.sqlite")),
     (Path("here/state"), Path("here/state/outbox.sqlite"))),
    ("--device", "cpu", lambda c: c.device, "auto", "cpu"),
    ("--threads", "1", lambda c: c.threads, 2, 1),
    ("--mqtt", "mqtt://localhost:1884",
     lambda c: (c.mqtt.url, c.mqtt.port, c.mqtt.prefix, c.mqtt.username),
     ("mqtts://broker.plant.local:8883", 8883, "asd-edge", "press-hall-1"),
     ("mqtt://localhost:1884", 1884, "asd-edge", "press-hall-1")),  # the rest of mqtt: stays
    ("--mqtt-username", "edge-2", lambda c: c.mqtt.username, "press-hall-1", "edge-2"),
    ("--mqtt-ca", "here/ca.pem", lambda c: c.mqtt.tls.ca, Path("/etc/asd-edge/ca.pem"),
     Path("here/ca.pem")),
    ("--mqtt-password-env", "ASD_PW", password_source,
     (None, Path("/etc/asd-edge/mqtt-password")), ("ASD_PW", None)),
    ("--mqtt-password-file", "here/pw", password_source,
     (None, Path("/etc/asd-edge/mqtt-password")), (None, Path("here/pw"))),
    ("--speed", "max", lambda c: [s.source.speed for s in c.streams if s.source.type == "file"],
     ["realtime"], ["max"]),
    ("--metrics-port", "0", lambda c: c.metrics.port, 9108, 0),
]


@pytest.mark.parametrize("flag, value, setting, in_file, with_flag", OVERRIDES,
                         ids=[o[0] for o in OVERRIDES])
def test_each_flag_wins_over_the_config(flag, value, setting, in_file, with_flag,
                                        caplog) -> None:
    assert setting(config_of("--config", str(EXAMPLE))) == in_file
    with caplog.at_level(logging.INFO, logger="edge.config"):
        config = config_of("--config", str(EXAMPLE), flag, value)
    assert setting(config) == with_flag
    assert any(r.getMessage().startswith(f"flag over config: {flag} ") for r in caplog.records)
    # everything else is the file's
    rest = config_of("--config", str(EXAMPLE))
    assert [s.name for s in config.streams] == [s.name for s in rest.streams]


def test_no_metrics_wins_over_the_config() -> None:
    assert config_of("--config", str(EXAMPLE)).metrics.enabled
    assert not config_of("--config", str(EXAMPLE), "--no-metrics").metrics.enabled


def test_mqtt_flags_give_a_config_without_a_broker_one(tmp_path) -> None:
    path = mic_only(tmp_path)
    assert config_of("--config", str(path)).mqtt is None
    config = config_of("--config", str(path), "--mqtt", "mqtt://localhost",
                       "--mqtt-username", "u", "--mqtt-password-env", "ASD_PW")
    assert config.mqtt is not None
    assert (config.mqtt.url, config.mqtt.username, config.mqtt.password_env) == \
        ("mqtt://localhost", "u", "ASD_PW")


@pytest.mark.parametrize("argv, flag, key", [
    (["--machine", "fan"], "--machine", "machine:"),
    (["--section", "1"], "--section", "section:"),
    (["--mic", "0"], "--mic", "source: {type: mic"),
    (["--file", "x.wav"], "--file", "source: {type: file"),
])
def test_a_flag_naming_a_stream_with_config_is_a_one_line_error(argv, flag, key,
                                                                capsys) -> None:
    assert main(["run", "--config", str(EXAMPLE), *argv]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"asd-edge run: error: {flag} does not go "
                                                   "with --config"), lines
    assert key in lines[0] and "or run without --config" in lines[0]


@pytest.mark.parametrize("argv, message", [
    (["--speed", "max"], "--speed paces file sources, and the config has none"),
    (["--mqtt-username", "u"], "--mqtt-username needs a broker"),
    (["--mqtt-password-file", "pw"], "--mqtt-password-file needs a broker"),
    (["--mqtt-ca", "ca.pem"], "--mqtt-ca needs a broker"),
    (["--mqtt", "mqtt://b:1883", "--mqtt-ca", "ca.pem"], "--mqtt-ca is the CA of a TLS broker"),
    (["--node", "a/b"], "--node: use letters"),
    (["--threads", "0"], "--threads: "),
    (["--metrics-port", "70000"], "--metrics-port: "),
])
def test_a_flag_with_nothing_to_apply_to_or_a_bad_value_is_an_error(argv, message,
                                                                    tmp_path) -> None:
    with pytest.raises(BadInput, match=message.replace("(", r"\(")):
        config_of("--config", str(mic_only(tmp_path)), *argv)


def test_without_config_no_flag_is_ignored_either(capsys) -> None:
    with pytest.raises(BadInput, match="give one of --mic DEVICE, --file WAV and --config"):
        config_of("--machine", "fan")
    with pytest.raises(BadInput, match="--speed paces a --file replay"):
        config_of("--mic", "0", "--machine", "fan", "--speed", "max")
    with pytest.raises(BadInput, match="--mqtt-password-env needs a broker"):
        config_of("--mic", "0", "--machine", "fan", "--mqtt-password-env", "ASD_PW")
    with pytest.raises(BadInput, match="--mqtt-ca needs a broker"):
        config_of("--mic", "0", "--machine", "fan", "--mqtt-ca", "ca.pem")
    with pytest.raises(BadInput, match="give it as mqtts://HOST:PORT"):
        config_of("--mic", "0", "--machine", "fan", "--mqtt", "mqtt://b", "--mqtt-ca", "ca.pem")
    tls = config_of("--mic", "0", "--machine", "fan", "--mqtt", "mqtts://b", "--mqtt-ca",
                    "ca.pem").mqtt
    assert tls is not None and tls.use_tls and tls.tls is not None
    assert tls.tls.ca == Path("ca.pem")
    config = config_of("--file", "x.wav", "--machine", "fan", "--section", "section_02",
                       "--speed", "max", "--metrics-port", "0", "--device", "cpu")
    stream = config.streams[0]
    assert (stream.section, stream.source.type, stream.source.speed) == (2, "file", "max")
    assert (config.metrics.port, config.device) == (0, "cpu")
    defaults = config_of("--mic", "0", "--machine", "fan")
    assert (defaults.streams[0].section, defaults.device, defaults.metrics.port) == \
        (0, "auto", 9108)
    assert main(["run"]) == 2
    assert capsys.readouterr().err.strip() == \
        "asd-edge run: error: give one of --mic DEVICE, --file WAV and --config YAML"
