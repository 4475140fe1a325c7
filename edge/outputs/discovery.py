"""Home Assistant MQTT discovery, as its current documentation describes it.

Devices: the node (this box) is one device with a connectivity sensor on its status topic;
every monitored unit (machine + section) is a device of its own, linked to the node device by
``via_device``. Each unit has

- a ``binary_sensor`` (device class ``problem``): on while an alarm episode is open, from the
  stream's retained state topic;
- a ``sensor``: the anomaly score (``state_class: measurement``, so Home Assistant keeps
  statistics and graphs it), from the stream's score topic, which the daemon feeds once per
  ``score_interval_seconds`` (10 s) or every hop (``score_messages``);
- an ``image``: the spectrogram of the latest alarm's evidence clip, a PNG published retained
  on the stream's ``spectrogram`` topic (``image_topic``; not ``url_topic``, which would need
  Home Assistant to reach the daemon's web page, off by default and behind a password when it
  is reachable at all).

Every unit entity is available only while the node's status says ``online`` *and* the
stream's signal topic says ``ok`` (``availability_mode: all``), so a dead microphone shows as
unavailable, not as a healthy or a faulty machine. Each payload has an ``origin`` block, and
``default_entity_id`` (Home Assistant 2025.10 replaced ``object_id`` with it; ``object_id``
stops working in 2026.4).

Configs go retained, one per entity, to ``<discovery_prefix>/<component>/<node>/<id>/config``
(Home Assistant's optional node level: the broker's ACL can then confine each box to its own
discovery topics, ``deploy/mosquitto.acl``). The topic of releases before it,
``<discovery_prefix>/binary_sensor/<node>_<machine>_<section>/config``, is cleared (an empty
retained message) when a stream is announced, so Home Assistant does not keep a second
config of the same entity. Home Assistant publishes ``online`` on
``<discovery_prefix>/status`` when it starts; the MQTT output then announces again.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, metadata
from typing import Any

from edge import __version__
from edge.alarms.rule import StreamKey

DEFAULT_DISCOVERY_PREFIX = "homeassistant"
VALUE_TEMPLATE = "{{ 'ON' if value_json.state == 'alarm' else 'OFF' }}"
SIGNAL_TEMPLATE = "{{ 'online' if value_json.state == 'ok' else 'offline' }}"
SCORE_TEMPLATE = "{{ value_json.score }}"
THRESHOLD_ATTRIBUTES = "{{ {'threshold': value_json.threshold} | tojson }}"


@dataclass(frozen=True)
class StreamTopics:
    """The topics of one stream the entities read (``edge.outputs.mqtt.Topics``)."""

    state: str
    score: str
    signal: str
    spectrogram: str


def _safe(value: str) -> str:
    """``value`` with anything Home Assistant refuses in ids replaced by ``_``."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", value)


def object_id(stream: StreamKey) -> str:
    """``<node>_<machine>_<section>``, safe for topics and entity ids."""
    return _safe(f"{stream.node}_{stream.machine}_{stream.section}")


def node_device_id(node: str) -> str:
    return f"asd_edge_{_safe(node)}"


def discovery_topic(stream: StreamKey, discovery_prefix: str = DEFAULT_DISCOVERY_PREFIX,
                    component: str = "binary_sensor", suffix: str = "") -> str:
    """Where the config of one entity of ``stream`` goes (``suffix``: which one)."""
    unit = _safe(f"{stream.machine}_{stream.section}")
    return f"{discovery_prefix}/{component}/{_safe(stream.node)}/{unit}{suffix}/config"


def legacy_topic(stream: StreamKey, discovery_prefix: str = DEFAULT_DISCOVERY_PREFIX) -> str:
    """The problem sensor's topic before the node level (cleared on announcing)."""
    return f"{discovery_prefix}/binary_sensor/{object_id(stream)}/config"


def ha_status_topic(discovery_prefix: str = DEFAULT_DISCOVERY_PREFIX) -> str:
    """Where Home Assistant announces ``online`` when it (re)starts."""
    return f"{discovery_prefix}/status"


def origin() -> dict[str, str]:
    """The application behind the entities: name, version from the installed package, and
    its support URL where the package declares one (Project-URL)."""
    block = {"name": "asd-edge", "sw_version": __version__}
    try:
        urls = metadata("asd-edge").get_all("Project-URL") or []
    except PackageNotFoundError:
        urls = []
    for entry in urls:  # "Label, https://..."
        _, _, url = entry.partition(",")
        if url.strip().startswith(("http://", "https://")):
            block["support_url"] = url.strip()
            break
    return block


def node_device(node: str) -> dict[str, Any]:
    return {"identifiers": [node_device_id(node)], "name": f"asd-edge {node}",
            "manufacturer": "asd-edge", "model": "edge daemon", "sw_version": __version__}


def unit_device(stream: StreamKey) -> dict[str, Any]:
    """The monitored unit (machine + section), routed through the node's device."""
    return {"identifiers": [f"asd_edge_{object_id(stream)}"],
            "name": f"{stream.machine} section {stream.section} ({stream.node})",
            "manufacturer": "asd-edge", "model": f"{stream.machine} (anomalous sound)",
            "via_device": node_device_id(stream.node)}


def node_config(node: str, status_topic: str,
                discovery_prefix: str = DEFAULT_DISCOVERY_PREFIX) -> tuple[str, dict[str, Any]]:
    """(topic, payload) of the node's connectivity sensor: it makes the node device exist,
    which ``via_device`` of every unit points at."""
    node_id = node_device_id(node)
    return (f"{discovery_prefix}/binary_sensor/{_safe(node)}/status/config", {
        "name": "Status", "unique_id": f"{node_id}_status",
        "default_entity_id": f"binary_sensor.{node_id}_status",
        "device_class": "connectivity", "entity_category": "diagnostic",
        "state_topic": status_topic, "payload_on": "online", "payload_off": "offline",
        "device": node_device(node), "origin": origin()})


def stream_configs(stream: StreamKey, topics: StreamTopics, status_topic: str,
                   discovery_prefix: str = DEFAULT_DISCOVERY_PREFIX
                   ) -> list[tuple[str, dict[str, Any]]]:
    """(topic, payload) of each entity of one stream's unit: problem, score, spectrogram."""
    sensor_id = f"asd_edge_{object_id(stream)}"
    common = {
        "availability": [
            {"topic": status_topic, "payload_available": "online",
             "payload_not_available": "offline"},
            {"topic": topics.signal, "value_template": SIGNAL_TEMPLATE,
             "payload_available": "online", "payload_not_available": "offline"}],
        "availability_mode": "all",
        "device": unit_device(stream), "origin": origin()}
    return [
        (discovery_topic(stream, discovery_prefix), {
            "name": "Anomaly", "unique_id": sensor_id,
            "default_entity_id": f"binary_sensor.{sensor_id}",
            "device_class": "problem", "state_topic": topics.state,
            "value_template": VALUE_TEMPLATE, "payload_on": "ON", "payload_off": "OFF",
            "json_attributes_topic": topics.state, **common}),
        (discovery_topic(stream, discovery_prefix, "sensor", "_score"), {
            "name": "Anomaly score", "unique_id": f"{sensor_id}_score",
            "default_entity_id": f"sensor.{sensor_id}_score",
            "state_topic": topics.score, "value_template": SCORE_TEMPLATE,
            "state_class": "measurement", "suggested_display_precision": 3,
            "json_attributes_topic": topics.score,
            "json_attributes_template": THRESHOLD_ATTRIBUTES, "icon": "mdi:waveform",
            **common}),
        (discovery_topic(stream, discovery_prefix, "image", "_spectrogram"), {
            "name": "Last alarm spectrogram", "unique_id": f"{sensor_id}_spectrogram",
            "default_entity_id": f"image.{sensor_id}_spectrogram",
            "image_topic": topics.spectrogram, "content_type": "image/png", **common}),
    ]


def payload(config: dict[str, Any]) -> str:
    return json.dumps(config)
