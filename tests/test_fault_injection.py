"""The fault-injection suite, CI-sized (issue 13): the real daemon against a real Mosquitto
while the broker restarts, the daemon is SIGKILLed, the link stalls, the state disk is full or
the password is wrong. Every event the daemon raised reaches the subscriber; a re-delivery
carries the same event_id. Full size: ``python bench/fault_injection.py`` (docs/RELIABILITY.md).
"""

from __future__ import annotations

import pytest
from _faults import (
    bad_credentials,
    broker_restarts,
    full_disk,
    long_recording,
    sigkills,
    stalled_broker,
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def recording(tmp_path_factory):
    """Ten minutes with a fault a minute: 20 alarm events per replay (about 5 s)."""
    return long_recording(tmp_path_factory.mktemp("faults"), minutes=10)


def assert_nothing_lost(tally) -> None:
    assert tally.raised >= 20, str(tally)
    assert tally.lost == [], f"{len(tally.lost)} of {tally.raised} events never arrived: {tally}"
    assert tally.unknown == 0 and tally.conflicting == 0, str(tally)


def test_broker_restarted_ten_times_during_a_replay(recording, tmp_path):
    tally = broker_restarts(recording, tmp_path, restarts=10)
    assert tally.notes["restarts"] >= 5  # the replay lasted through several restarts
    assert_nothing_lost(tally)
    assert tally.notes["exit_code"] == 0
    assert tally.notes["outbox_depth_at_exit"] == 0  # nothing left behind at exit


def test_daemon_sigkilled_four_times_loses_nothing(recording, tmp_path):
    tally = sigkills(recording, tmp_path, kills=4)
    assert_nothing_lost(tally)
    assert tally.notes["exit_code"] == 0
    # each kill that caught an episode open was closed with reason "restart" at the next start
    assert tally.notes["episodes_closed_at_restart"] >= 2


def test_a_stalled_link_is_reopened_and_its_alarms_delivered(tmp_path):
    """A proxy black-holes the broker connection twice for 3 s (the TCP connection stays
    open). Without an answer timeout paho waits for the keep-alive (45 s) and the replay ends
    with every event still in the outbox; with it the connection is opened again."""
    tally = stalled_broker(long_recording(tmp_path / "rec", minutes=30), tmp_path, stalls=2,
                           stall_s=3.0, ack_timeout_s=2.0)
    assert_nothing_lost(tally)
    assert tally.notes["reopened"] >= 1


@pytest.mark.parametrize("max_file_bytes", [100_000, 0], ids=["clips-do-not-fit", "nothing-fits"])
def test_a_full_state_disk_loses_no_alarm(recording, tmp_path, max_file_bytes):
    """No alarm clip fits (100 kB), or no byte at all (0): every event decided still reaches
    the broker, no partial clip is left behind, no traceback."""
    tally = full_disk(recording, tmp_path, max_file_bytes)
    assert tally.raised >= 20
    assert tally.lost == [], tally
    assert tally.notes["exit_code"] == 0
    assert tally.notes["partial_files_left"] == []
    assert tally.notes["tracebacks"] == 0


def test_wrong_password_keeps_events_until_the_right_one_and_no_secret_leaks(recording,
                                                                            tmp_path):
    tally = bad_credentials(recording, tmp_path)
    assert_nothing_lost(tally)
    assert tally.notes["exit_codes"] == [0, 0]
    assert tally.notes["credential_errors_logged"] == 1  # once per outage, not per retry
    assert {"argv", "environment", "log", "metrics", "mqtt"} <= set(
        tally.notes["places_searched"])  # type: ignore[arg-type]
    assert tally.notes["secrets_found_in"] == []
