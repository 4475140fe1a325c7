"""Health: Prometheus metrics served on 127.0.0.1 and the heartbeat line in the log."""

from __future__ import annotations

import logging
import time
import urllib.error
import urllib.request

import pytest

from edge.capture import CaptureStats
from edge.health import Health, Heartbeat, MetricsServer


def scrape(url: str) -> dict[str, float]:
    text = urllib.request.urlopen(url, timeout=5).read().decode()
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            values[name] = float(value)
    return values


def test_metrics_are_served_on_loopback_and_scrapeable():
    health = Health(node="box-1")
    health.add_stream("fan-a")
    health.add_stream("valve-b")
    for score in (0.2, 0.3, 0.7):
        health.hop_scored("fan-a", score)
    health.inference(0.004)
    health.inference(0.030)
    health.update_capture("fan-a", CaptureStats(overflows=2, dropped_blocks=1))
    health.update_capture("fan-a", CaptureStats(overflows=5, dropped_blocks=1))
    health.set_mqtt_connected(True)
    health.set_outbox_depth(4)
    health.set_alarm("fan-a", True)
    health.set_provider("CPUExecutionProvider", "cpu", "CUDA requested by auto, not available")
    server = MetricsServer(health, port=0).start()
    try:
        assert server.url.startswith("http://127.0.0.1:")
        values = scrape(server.url)
    finally:
        server.stop()
    assert values['asd_edge_hops_scored_total{stream="fan-a"}'] == 3
    assert values['asd_edge_hops_scored_total{stream="valve-b"}'] == 0
    assert values['asd_edge_score{stream="fan-a"}'] == pytest.approx(0.7)
    assert values["asd_edge_inference_seconds_count"] == 2
    assert values['asd_edge_inference_seconds_bucket{le="0.005"}'] == 1
    assert values['asd_edge_capture_overflows_total{stream="fan-a"}'] == 5
    assert values['asd_edge_capture_dropped_blocks_total{stream="fan-a"}'] == 1
    assert values['asd_edge_alarm_active{stream="fan-a"}'] == 1
    assert values["asd_edge_mqtt_connected"] == 1 and values["asd_edge_outbox_depth"] == 4
    assert any(k.startswith("asd_edge_provider_info{") and 'provider="CPUExecutionProvider"' in k
               for k in values)
    # Stopped means stopped: the port no longer answers.
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(server.url, timeout=2)


def test_two_daemons_in_one_process_keep_separate_metrics():
    first, second = Health(), Health()
    first.hop_scored("s", 1.0)
    assert second.registry.get_sample_value("asd_edge_hops_scored_total",
                                            {"stream": "s"}) is None
    assert first.registry.get_sample_value("asd_edge_hops_scored_total", {"stream": "s"}) == 1


def test_heartbeat_logs_the_main_numbers(caplog):
    health = Health(node="box-1")
    health.hop_scored("fan-a", 0.25)
    health.set_outbox_depth(2)
    health.update_capture("fan-a", CaptureStats(device_errors=3))
    heartbeat = Heartbeat(health, interval_s=0.05)
    with caplog.at_level(logging.INFO, logger="edge.health"):
        heartbeat.start()
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline and not caplog.records:
            time.sleep(0.02)
        heartbeat.stop()
    assert caplog.records, "no heartbeat logged"
    line = caplog.records[0].getMessage()
    assert "node box-1" in line and "fan-a: 1 hops, score 0.250" in line
    assert "device_errors 3" in line and "outbox 2" in line and "mqtt DISCONNECTED" in line
    assert not heartbeat._thread.is_alive()
