"""Fuzzing what comes from outside (issue 13): the YAML config, ``bundle.json``, WAV headers
and inbound MQTT command payloads. Whatever hypothesis makes of them, the answer is the value
or a ``BadInput`` (one line, exit 2 at the CLI), never another exception, and quickly.

CI runs a fixed, derandomised few hundred examples per target (the "ci" profile, seconds);
``HYPOTHESIS_PROFILE=fuzz pytest tests/test_fuzz.py`` runs 5,000 random ones each.
"""

from __future__ import annotations

import io
import json
import os
import struct
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import yaml
from _pipeline import MACHINE, stats_setup
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge.audio import read_audio
from edge.bundle.load import load_bundle
from edge.bundle.manifest import content_digest
from edge.config import load_config
from edge.errors import BadInput
from edge.feedback import FeedbackAck, NotAFaultCommand, parse_command, request_id_of

REPO = Path(__file__).resolve().parents[1]
SHIPPED_CONFIG = REPO / "deploy" / "edge.yaml"

settings.register_profile("ci", max_examples=150, derandomize=True, deadline=5000,
                          suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                 HealthCheck.too_slow])
settings.register_profile("fuzz", max_examples=5000, deadline=5000,
                          suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                 HealthCheck.too_slow])
PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "ci")

# Values a hand-edited file holds by mistake: every YAML scalar kind, extremes, and nesting.
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=40), st.sampled_from(["1e308", "-1", "0", ".nan", "~", "", "yes", "0x10",
                                           "9" * 5000, "[", "{", "*a", "&a x", "!!python/x"]))
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=12), inner, max_size=4)),
    max_leaves=12)


def _leaves(node: object, path: tuple = ()) -> list[tuple]:
    """Paths of every leaf and container in a parsed YAML/JSON document."""
    found = [path]
    if isinstance(node, dict):
        for key, value in node.items():
            found += _leaves(value, (*path, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found += _leaves(value, (*path, index))
    return found


def _mutated(document: object, path: tuple, action: str, value: object) -> object:
    """``document`` with the node at ``path`` replaced by ``value``, deleted, or its container
    given an unknown key."""
    if not path:
        return value
    copy = json.loads(json.dumps(document, default=str))
    parent = copy
    for step in path[:-1]:
        parent = parent[step]
    last = path[-1]
    if action == "delete":
        del parent[last]
    elif action == "add" and isinstance(parent, dict):
        parent[f"unknown_{last}"] = value
    else:
        parent[last] = value
    return copy


def _answer_or_bad_input(call) -> None:
    try:
        call()
    except BadInput as err:
        assert str(err).strip(), "a BadInput without a message"
        assert "\n" not in str(err).strip().splitlines()[0]


# -- the YAML config -----------------------------------------------------------------------


@settings(settings.get_profile(PROFILE))
@given(data=st.data())
def test_config_mutations_give_the_config_or_one_clear_error(tmp_path_factory, data):
    shipped = yaml.safe_load(SHIPPED_CONFIG.read_text())
    path = data.draw(st.sampled_from(_leaves(shipped)))
    action = data.draw(st.sampled_from(["replace", "delete", "add"]))
    mutated = _mutated(shipped, path, action, data.draw(values))
    folder = tmp_path_factory.mktemp("cfg")
    config = folder / "edge.yaml"
    config.write_text(yaml.safe_dump(mutated, allow_unicode=True))
    _answer_or_bad_input(lambda: load_config(config))


@settings(settings.get_profile(PROFILE))
@given(text=st.one_of(st.text(max_size=400), st.binary(max_size=400).map(
    lambda raw: raw.decode("latin-1"))), cut=st.integers(0, 3000))
def test_config_text_garbage_and_truncation_give_one_clear_error(tmp_path_factory, text, cut):
    """Arbitrary text, and the shipped config cut short at any byte with garbage after it."""
    folder = tmp_path_factory.mktemp("cfg")
    for number, body in enumerate([text, SHIPPED_CONFIG.read_text()[:cut] + text]):
        config = folder / f"edge{number}.yaml"
        config.write_text(body, encoding="utf-8", errors="surrogatepass")
        _answer_or_bad_input(lambda config=config: load_config(config))


# -- bundle.json ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    return stats_setup(tmp_path_factory.mktemp("fuzz-bundle"), n_train=6).models / MACHINE


@settings(settings.get_profile(PROFILE))
@given(data=st.data())
def test_bundle_manifest_mutations_load_or_give_one_clear_error(bundle, tmp_path_factory,
                                                                data):
    """Any field of a real bundle.json replaced, deleted or joined by an unknown key: the
    daemon's own loader answers with the bundle or a BadInput naming the problem."""
    manifest = json.loads((bundle / "bundle.json").read_text())
    path = data.draw(st.sampled_from(_leaves(manifest)))
    action = data.draw(st.sampled_from(["replace", "delete", "add"]))
    mutated = _mutated(manifest, path, action, data.draw(values))
    if isinstance(mutated, dict) and data.draw(st.booleans()):
        # as a forger would: the content digest made to match, so the fields are what is
        # checked (otherwise most mutations stop at the digest)
        mutated["content_sha256"] = content_digest(mutated)
    models = tmp_path_factory.mktemp("models")
    copy = models / MACHINE
    copy.mkdir()
    for member in bundle.iterdir():
        (copy / member.name).symlink_to(member)
    (copy / "bundle.json").unlink()
    (copy / "bundle.json").write_text(json.dumps(mutated, default=str, allow_nan=True))
    _answer_or_bad_input(lambda: load_bundle(models, MACHINE, device="cpu"))


# -- WAV headers -----------------------------------------------------------------------------


def _wav_bytes(seconds: float = 0.5, rate: int = 16000, channels: int = 1) -> bytes:
    buffer = io.BytesIO()
    noise = np.random.default_rng(0).normal(0, 0.1, (int(seconds * rate), channels))
    sf.write(buffer, noise.astype(np.float32), rate, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


WAV = _wav_bytes()
HEADER_FIELDS = {  # offset: struct format of the canonical 44-byte PCM header's fields
    4: "<I", 20: "<H", 22: "<H", 24: "<I", 28: "<I", 32: "<H", 34: "<H", 40: "<I"}


@settings(settings.get_profile(PROFILE))
@given(data=st.data())
def test_wav_header_mutations_decode_or_give_one_clear_error(tmp_path_factory, data):
    """A WAV with a header field set to any value (rate, channels, sizes, bits), random bytes
    overwritten in the header, or the file cut anywhere."""
    raw = bytearray(WAV)
    kind = data.draw(st.sampled_from(["field", "bytes", "truncate"]))
    if kind == "field":
        offset = data.draw(st.sampled_from(sorted(HEADER_FIELDS)))
        fmt = HEADER_FIELDS[offset]
        limit = 2 ** (8 * struct.calcsize(fmt)) - 1
        struct.pack_into(fmt, raw, offset, data.draw(st.integers(0, limit)))
    elif kind == "bytes":
        for _ in range(data.draw(st.integers(1, 8))):
            raw[data.draw(st.integers(0, 63))] = data.draw(st.integers(0, 255))
    else:
        raw = raw[:data.draw(st.integers(0, len(raw)))]
    path = tmp_path_factory.mktemp("wav") / "clip.wav"
    path.write_bytes(bytes(raw))
    _answer_or_bad_input(lambda: read_audio(path))


# -- MQTT command payloads -------------------------------------------------------------------

payloads = st.one_of(
    st.binary(max_size=300),
    values.map(lambda v: json.dumps(v, default=str).encode()),
    st.fixed_dictionaries({"episode": values}, optional={"request_id": values,
                                                         "even_if_open": values}).map(
        lambda v: json.dumps(v, default=str).encode()),
    st.just(b"[" * 100_000), st.just(b'{"episode": "' + b"a" * 1_000_000 + b'"}'))


@settings(settings.get_profile(PROFILE))
@given(payload=payloads)
def test_not_a_fault_payloads_parse_or_give_a_one_line_reason(payload):
    """What the daemon does with a payload on cmd/not_a_fault before anything else: parse it,
    and for a bad one build the error acknowledgement (it must serialise)."""
    command = parse_command(payload)
    if isinstance(command, NotAFaultCommand):
        return
    assert isinstance(command, str) and "\n" not in command and len(command) < 2000
    ack = FeedbackAck(request_id=request_id_of(payload), ok=False, error=command,
                      time=datetime.now(UTC), node="box")
    assert len(ack.to_json()) < 4000  # an echoed request_id is bounded too
