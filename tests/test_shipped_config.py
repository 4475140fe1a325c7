"""The shipped example config (deploy/edge.yaml) means what its comments and docs/EDGE.md say:
each setting as loaded, and the alarm levels of its streams on a small enrolled bundle. A level
left out of a stream's ``alarm:`` and one written as null are the same (not set): the bundle's
calibrated levels apply, and no default value written down replaces them."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from edge.alarms.rule import AlarmRule, StreamKey
from edge.bundle.load import Bundle, load_bundle
from edge.cli import main
from edge.config import AlarmConfig, MicSourceConfig, load_config
from edge.daemon import alarm_rule_for
from edge.synth import synthesize_dataset

EXAMPLE = Path(__file__).resolve().parents[1] / "deploy" / "edge.yaml"
MACHINE = "gearbox"


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Bundle:
    """A statistics-only gearbox bundle of sections 00 and 01 (the sections the example's
    streams name), each enrolled from 6 synthetic source-domain clips of 4 s."""
    root = tmp_path_factory.mktemp("shipped")
    data = synthesize_dataset(root / "data", [MACHINE], sections=2, n_train=6,
                              n_target_train=0, n_test=0, seconds=4.0, seed=5)
    models = root / "models"
    for section in (0, 1):
        folder = root / f"section_{section:02d}"
        folder.mkdir()
        for clip in (data / MACHINE / "train").glob(f"section_{section:02d}_*.wav"):
            shutil.copy(clip, folder / clip.name)
        assert main(["enroll", "--dir", str(folder), "--machine", MACHINE, "--section",
                     str(section), "--models", str(models), "--domain", "source"]) == 0
    return load_bundle(models, MACHINE, device="cpu")


def rule_of(config_path: Path, bundle: Bundle, stream: int = 0) -> AlarmRule:
    """The alarm rule the daemon builds for the config's ``stream`` on ``bundle``."""
    config = load_config(config_path).streams[stream]
    return alarm_rule_for(config, StreamKey("press-hall-1", MACHINE, f"{config.section:02d}"),
                          bundle)


def test_the_example_loads_as_its_comments_say() -> None:
    config = load_config(EXAMPLE)
    assert (config.node, config.models_dir, config.device, config.threads) == \
        ("press-hall-1", Path("/var/lib/asd-edge/models"), "auto", 2)
    state = Path("/var/lib/asd-edge")  # "outbox and alarm clips live here"
    assert (config.state_dir, config.outbox_path, config.evidence_dir) == \
        (state, state / "outbox.sqlite", state / "clips")
    gearbox, fan, replay = config.streams
    assert [s.name for s in config.streams] == ["gearbox-line-a", "fan-roof", "replay-check"]
    # sample_rate commented out: not set (16000 if the device takes it, else its own rate)
    assert gearbox.source == MicSourceConfig(type="mic", device="USB Audio", channel=0)
    assert gearbox.source.sample_rate is None
    assert (gearbox.machine, gearbox.section, gearbox.hop_seconds, gearbox.window_seconds,
            gearbox.score_messages, gearbox.domain) == ("gearbox", 0, 0.5, 10.0, False, "auto")
    assert (fan.machine, fan.section, fan.source.type, fan.source.device, fan.source.channel) \
        == ("fan", 1, "mic", 2, 1)
    assert replay.source.type == "file" and replay.source.speed == "realtime"
    assert replay.source.path == EXAMPLE.parent / "recordings" / "valve-fault.wav"
    # The alarm section writes the rule's defaults and no level: the same as no section.
    for stream in config.streams:
        assert stream.alarm == AlarmConfig()
        assert (stream.alarm.trip_hops, stream.alarm.window_hops, stream.alarm.hold_seconds) \
            == (3, 5, 5.0)
        assert (stream.alarm.threshold, stream.alarm.clear_fraction,
                stream.alarm.clear_threshold) == (None, None, None)
    mqtt = config.mqtt
    assert mqtt is not None
    assert (mqtt.host, mqtt.port, mqtt.use_tls, mqtt.prefix, mqtt.protocol, mqtt.username,
            mqtt.discovery) == ("broker.plant.local", 8883, True, "asd-edge", "3.1.1",
                                "press-hall-1", True)  # user = node (deploy/mosquitto.acl)
    # absolute paths stay as written (the password from the file, the CA of the broker)
    assert (mqtt.password_file, mqtt.password_env) == (Path("/etc/asd-edge/mqtt-password"), None)
    assert mqtt.tls is not None and mqtt.tls.ca == Path("/etc/asd-edge/ca.pem")
    assert config.outbox.max_events == 10000
    evidence = config.evidence
    assert (evidence.enabled, evidence.pre_roll_seconds, evidence.post_roll_seconds,
            evidence.max_clips, evidence.max_age_days, evidence.max_megabytes) == \
        (True, 10, 5, 500, 30, 1000)
    metrics = config.metrics
    assert (metrics.enabled, metrics.host, metrics.port, metrics.heartbeat_seconds) == \
        (True, "127.0.0.1", 9108, 60)


def test_the_example_streams_use_the_bundles_calibrated_levels(bundle) -> None:
    """No level set in the example: threshold and clear threshold from the bundle, pooled and
    for each calibrated domain (``domain: auto``), never 0.9 x the threshold."""
    for index in range(3):
        rule = rule_of(EXAMPLE, bundle, index)
        calibrated = bundle.system.thresholds[int(rule.stream.section)]
        # the calibrated clear level is not the rule's fallback, so the two can be told apart
        assert calibrated.clear_threshold != pytest.approx(0.9 * calibrated.threshold)
        assert (rule.threshold, rule.clear_threshold) == \
            pytest.approx((calibrated.threshold, calibrated.clear_threshold))
        assert "source" in calibrated.domains  # 6 references: their own thresholds
        for domain, levels in calibrated.domains.items():
            assert rule.levels(domain) == \
                pytest.approx((levels.threshold, levels.clear_threshold))
        assert (rule.config.trip_hops, rule.config.window_hops, rule.config.hold_seconds) == \
            (3, 5, 5.0)


def with_alarm_lines(tmp_path: Path, name: str, *lines: str) -> Path:
    """The example with ``lines`` added to the first stream's alarm section."""
    text = EXAMPLE.read_text()
    anchor = "      hold_seconds: 5"
    assert text.count(anchor) == 1
    path = tmp_path / f"{name}.yaml"
    path.write_text(text.replace(anchor, "".join(f"      {line}\n" for line in lines) + anchor))
    return path


def test_clear_fraction_null_and_left_out_are_the_same(bundle, tmp_path) -> None:
    left_out = rule_of(EXAMPLE, bundle)
    written = with_alarm_lines(tmp_path, "null", "clear_fraction: null", "clear_threshold: null",
                               "threshold: null")
    assert load_config(written).streams[0].alarm == load_config(EXAMPLE).streams[0].alarm
    null = rule_of(written, bundle)
    assert (null.threshold, null.clear_threshold, null.domain_levels) == \
        (left_out.threshold, left_out.clear_threshold, left_out.domain_levels)


def test_levels_that_are_set_replace_the_calibrated_ones(bundle, tmp_path) -> None:
    calibrated = bundle.system.thresholds[0]
    # clear_fraction set (even to 0.9): f x each threshold, pooled and per domain
    rule = rule_of(with_alarm_lines(tmp_path, "fraction", "clear_fraction: 0.9"), bundle)
    assert rule.clear_threshold == pytest.approx(0.9 * calibrated.threshold)
    for domain, levels in calibrated.domains.items():
        assert rule.levels(domain) == pytest.approx((levels.threshold, 0.9 * levels.threshold))
    # clear_threshold wins over clear_fraction, for every hop
    rule = rule_of(with_alarm_lines(tmp_path, "absolute", "clear_fraction: 0.5",
                                    f"clear_threshold: {0.5 * calibrated.threshold}"), bundle)
    assert rule.clear_threshold == pytest.approx(0.5 * calibrated.threshold)
    assert all(clear == pytest.approx(0.5 * calibrated.threshold)
               for _, clear in rule.domain_levels.values())
    # a threshold override without clear levels: the rule's fallback, 0.9 x the override
    rule = rule_of(with_alarm_lines(tmp_path, "override", "threshold: 0.42"), bundle)
    assert (rule.threshold, rule.clear_threshold, rule.domain_levels) == \
        (0.42, pytest.approx(0.378), {})
