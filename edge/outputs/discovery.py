"""Home Assistant MQTT discovery: one device per node, one ``problem`` binary sensor per stream.

The config goes retained to ``<discovery_prefix>/binary_sensor/<node>_<machine>_<section>/config``;
the sensor reads the stream's retained state topic (``state == "alarm"`` is on) and is
available while the node's status topic says ``online``. Home Assistant publishes ``online``
on ``<discovery_prefix>/status`` when it starts; the MQTT output then announces again.
"""

from __future__ import annotations

import re
from typing import Any

from edge import __version__
from edge.alarms.rule import StreamKey

DEFAULT_DISCOVERY_PREFIX = "homeassistant"
VALUE_TEMPLATE = "{{ 'ON' if value_json.state == 'alarm' else 'OFF' }}"


def object_id(stream: StreamKey) -> str:
    """``<node>_<machine>_<section>`` with anything Home Assistant refuses replaced by ``_``."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", f"{stream.node}_{stream.machine}_{stream.section}")


def discovery_topic(stream: StreamKey, discovery_prefix: str = DEFAULT_DISCOVERY_PREFIX) -> str:
    return f"{discovery_prefix}/binary_sensor/{object_id(stream)}/config"


def ha_status_topic(discovery_prefix: str = DEFAULT_DISCOVERY_PREFIX) -> str:
    """Where Home Assistant announces ``online`` when it (re)starts."""
    return f"{discovery_prefix}/status"


def discovery_config(stream: StreamKey, state_topic: str, status_topic: str) -> dict[str, Any]:
    """The retained discovery payload of one stream's binary sensor."""
    sensor_id = object_id(stream)
    node_id = re.sub(r"[^A-Za-z0-9_-]", "_", stream.node)
    return {
        "name": f"{stream.machine} section {stream.section} anomaly",
        "unique_id": f"asd_edge_{sensor_id}",
        "object_id": f"asd_edge_{sensor_id}",
        "device_class": "problem",
        "state_topic": state_topic,
        "value_template": VALUE_TEMPLATE,
        "payload_on": "ON",
        "payload_off": "OFF",
        "json_attributes_topic": state_topic,
        "availability_topic": status_topic,
        "payload_available": "online",
        "payload_not_available": "offline",
        "device": {
            "identifiers": [f"asd_edge_{node_id}"],
            "name": f"asd-edge {stream.node}",
            "manufacturer": "asd-edge",
            "model": "edge daemon",
            "sw_version": __version__,
        },
    }
