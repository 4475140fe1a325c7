"""Long labelled streams: the label sidecar's shape, states, plant events, faults (sudden and
gradual), determinism, the CLI (--stream, --stream-set) and its one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edge.audio import SAMPLE_RATE, audio_info, read_audio
from edge.cli import main as cli_main
from edge.synth import FaultSpec, StreamOptions, attribute_values, synthesize_stream
from edge.synth import stream as stream_module

BUSY = StreamOptions(state_seconds=(5.0, 9.0), ramp_seconds=(0.5, 2.0), drift_db=1.5,
                     background_changes_per_hour=300.0, other_machine_per_hour=200.0,
                     transients_per_hour=500.0, splices_per_hour=600.0)
TOP_KEYS = ["format", "version", "machine", "section", "seconds", "sample_rate", "seed",
            "domain", "attributes", "faults", "fault", "states", "events"]


def _known(machine: str, domain: str) -> list[dict[str, str]]:
    values = attribute_values(machine, domain)
    combos: list[dict[str, str]] = [{}]
    for key, options in values.items():
        combos = [{**c, key: v} for c in combos for v in options]
    return combos


def test_labels_have_the_documented_shape_and_states_cover_the_stream(tmp_path: Path) -> None:
    labels = synthesize_stream(tmp_path / "g.wav", "gearbox", section=1, seconds=40.0, seed=4,
                               faults=[FaultSpec(12.0, 20.0, "chipped", 1.0),
                                       FaultSpec(25.0, 35.0, None, None, "gradual", 6.0)],
                               domains=["source", "target"], options=BUSY)
    assert json.loads((tmp_path / "g.json").read_text()) == labels
    assert list(labels) == TOP_KEYS
    assert (labels["format"], labels["version"]) == ("asd-edge-stream-labels", 2)
    assert (labels["machine"], labels["section"], labels["seconds"], labels["sample_rate"],
            labels["seed"], labels["domain"]) == ("gearbox", 1, 40.0, SAMPLE_RATE, 4, "source")
    assert audio_info(tmp_path / "g.wav").frames == 40 * SAMPLE_RATE
    faults = labels["faults"]
    assert [list(f) for f in faults] == [["start_s", "end_s", "kind", "severity", "onset",
                                          "ramp_s"]] * 2
    assert faults[0] == {"start_s": 12.0, "end_s": 20.0, "kind": "chipped", "severity": 1.0,
                         "onset": "sudden", "ramp_s": 0.05}
    assert faults[1]["onset"] == "gradual" and faults[1]["ramp_s"] == 6.0
    assert faults[1]["kind"] in ("chipped", "wear", "bearing", "loose")
    assert labels["fault"] == faults[0]
    states = labels["states"]
    assert len(states) >= 4
    assert states[0]["start_s"] == 0.0 and states[-1]["end_s"] == 40.0
    assert states[0]["transition_s"] == 0.0
    assert states[0]["attributes"] == labels["attributes"]
    for before, after in zip(states, states[1:], strict=False):
        assert before["end_s"] == after["start_s"]  # no gaps, no overlaps
        assert (before["domain"], before["attributes"]) != (after["domain"], after["attributes"])
        assert 0.0 <= after["transition_s"] <= (after["end_s"] - after["start_s"]) / 2
    for state in states:
        assert list(state) == ["start_s", "end_s", "domain", "attributes", "transition_s"]
        assert state["attributes"] in _known("gearbox", state["domain"])
    assert {s["domain"] for s in states} <= {"source", "target"}
    kinds = {e["kind"] for e in labels["events"]}
    assert kinds <= {"impact", "door", "speech", "forklift", "splice", "background",
                     "other_machine"}
    assert {"splice", "background", "other_machine"} <= kinds and kinds & {"impact", "speech"}
    for event in labels["events"]:
        assert list(event) == ["start_s", "end_s", "kind"]
        assert 0.0 <= event["start_s"] < event["end_s"] <= 40.0
    audio = read_audio(tmp_path / "g.wav")
    assert np.max(np.abs(audio)) < 1.0 and np.sqrt(np.mean(audio ** 2)) > 0.003


def test_one_domain_only_uses_its_own_conditions(tmp_path: Path) -> None:
    labels = synthesize_stream(tmp_path / "v.wav", "valve", seconds=30.0, faults=[],
                               domain="target", options=StreamOptions(state_seconds=(3.0, 5.0)))
    assert len(labels["states"]) >= 5
    assert {s["domain"] for s in labels["states"]} == {"target"}
    assert all(s["attributes"] in _known("valve", "target") for s in labels["states"])
    assert labels["events"] == []  # only state changes were asked for


def test_no_fault_stream_is_all_normal(tmp_path: Path) -> None:
    labels = synthesize_stream(tmp_path / "n.wav", "fan", seconds=5.0, faults=[])
    assert labels["faults"] == [] and labels["fault"] is None
    assert len(labels["states"]) == 1 and labels["states"][0]["end_s"] == 5.0


def _difference(tmp_path: Path, name: str, **fault: float | str) -> tuple[np.ndarray, dict]:
    common = dict(machine="bearing", section=0, seconds=36.0, seed=1,
                  options=StreamOptions(state_seconds=(8.0, 14.0), transients_per_hour=200.0))
    normal = synthesize_stream(tmp_path / f"{name}-normal.wav", faults=[], **common)
    labels = synthesize_stream(tmp_path / f"{name}.wav", faults=[FaultSpec(**fault)], **common)
    assert normal["states"] == labels["states"] and normal["events"] == labels["events"]
    return read_audio(tmp_path / f"{name}.wav") - read_audio(tmp_path / f"{name}-normal.wav"), \
        labels


def test_gradual_fault_grows_over_its_ramp_and_nothing_else_changes(tmp_path: Path) -> None:
    diff, labels = _difference(tmp_path, "gradual", start_s=6.0, end_s=32.0, kind="outer",
                               severity=1.0, onset="gradual", ramp_s=24.0)
    assert labels["faults"][0]["ramp_s"] == 24.0
    outside = np.r_[diff[:6 * SAMPLE_RATE], diff[int(32.0 * SAMPLE_RATE) + 1:]]
    assert not outside.any()  # the same recording outside the fault interval
    energy = [np.sqrt(np.mean(diff[int(s * SAMPLE_RATE):int((s + 4) * SAMPLE_RATE)] ** 2))
              for s in (6.5, 12.0, 18.0, 24.0)]
    assert all(a < b for a, b in zip(energy, energy[1:], strict=False)), energy
    assert energy[-1] > 3 * energy[0], energy
    sudden, _ = _difference(tmp_path, "sudden", start_s=6.0, end_s=32.0, kind="outer",
                            severity=1.0)
    first = np.sqrt(np.mean(sudden[int(6.5 * SAMPLE_RATE):int(10.5 * SAMPLE_RATE)] ** 2))
    assert first > 2 * energy[0]  # a sudden fault is there at full strength at once


def test_same_seed_same_bytes_another_take_another_recording(tmp_path: Path) -> None:
    def write(name: str, take: int = 0) -> tuple[bytes, bytes]:
        synthesize_stream(tmp_path / f"{name}.wav", "slider", seconds=20.0, seed=7,
                          fault_start=8.0, fault_seconds=6.0, fault_onset="gradual",
                          fault_ramp_s=4.0, options=BUSY, take=take)
        return (tmp_path / f"{name}.wav").read_bytes(), (tmp_path / f"{name}.json").read_bytes()

    first = write("a")
    assert write("b") == first
    other = write("c", take=3)
    assert other[0] != first[0]


def test_long_stationary_stream_is_rendered_in_blocks(tmp_path: Path) -> None:
    labels = synthesize_stream(tmp_path / "long.wav", "valve", seconds=130.0, fault_start=100.0,
                               fault_seconds=10.0, seed=2)
    assert len(labels["states"]) == 1 and labels["events"] == []
    audio = read_audio(tmp_path / "long.wav")
    assert audio.shape[0] == 130 * SAMPLE_RATE
    per_second = np.sqrt(np.mean(audio.reshape(130, -1) ** 2, axis=1))
    assert per_second.min() > 0.5 * np.median(per_second)  # no dropouts at the block seams


def test_cli_stream_writes_audio_and_labels(tmp_path: Path, capsys) -> None:
    assert cli_main(["synth", str(tmp_path / "s"), "--stream", "--machine", "fan",
                     "--seconds", "12", "--plant", "--state-seconds", "4,6",
                     "--transients-per-hour", "600", "--no-fault", "--domains",
                     "source,target", "--seed", "5"]) == 0
    assert "no fault" in capsys.readouterr().out
    labels = json.loads((tmp_path / "s" / "fan_section_00_stream.json").read_text())
    assert (tmp_path / "s" / "fan_section_00_stream.wav").is_file()
    assert labels["faults"] == [] and len(labels["states"]) >= 2 and labels["events"]
    assert cli_main(["synth", str(tmp_path / "g.wav"), "--stream", "--machine", "valve",
                     "--seconds", "10", "--fault-start", "2", "--fault-seconds", "6",
                     "--fault-onset", "gradual", "--fault-ramp-seconds", "4",
                     "--fault-kind", "leak"]) == 0
    fault = json.loads((tmp_path / "g.json").read_text())["fault"]
    assert fault == {**fault, "start_s": 2.0, "end_s": 8.0, "kind": "leak", "onset": "gradual",
                     "ramp_s": 4.0}


def test_cli_stream_set_writes_normal_and_fault_streams(tmp_path: Path, capsys,
                                                         monkeypatch) -> None:
    monkeypatch.setattr(stream_module, "SET_FAULT_SECONDS", 12.0)
    monkeypatch.setattr(stream_module, "SET_FAULT_START", (3.0, 4.0))
    monkeypatch.setattr(stream_module, "SET_FAULT_LENGTH", (4.0, 6.0))
    monkeypatch.setattr(stream_module, "SET_TAIL_S", 1.0)
    out = tmp_path / "set"
    assert cli_main(["synth", str(out), "--stream-set", "--hours", "0.01", "--machines",
                     "fan,valve", "--sections", "0,1", "--stream-minutes", "0.25",
                     "--faults-per-machine", "2", "--seed", "3"]) == 0
    printed = capsys.readouterr().out
    assert "[1/" in printed and "h of audio" in printed and "--seed 3" in printed
    manifest = json.loads((out / "manifest.json").read_text())
    assert "asd-edge synth" in (out / "README.md").read_text()
    assert manifest["command"].startswith(f"asd-edge synth {out} --stream-set --hours 0.01")
    normal = sorted((out / "normal").glob("*.wav"))
    faulty = sorted((out / "faults").glob("*.wav"))
    assert len(faulty) == 4 and all(p.with_suffix(".json").is_file() for p in normal + faulty)
    total = sum(audio_info(p).duration for p in normal)
    assert total == pytest.approx(36.0, abs=0.01) == manifest["normal_seconds"]
    for path in normal:
        labels = json.loads(path.with_suffix(".json").read_text())
        assert labels["faults"] == [] and labels["seed"] == 3
        assert labels["machine"] in ("fan", "valve") and labels["section"] in (0, 1)
    onsets = []
    for path in faulty:
        labels = json.loads(path.with_suffix(".json").read_text())
        (fault,) = labels["faults"]
        assert 3.0 <= fault["start_s"] <= 4.0 and 4.0 <= fault["end_s"] - fault["start_s"] <= 6
        assert fault["severity"] == 1.0 and fault["kind"] in path.name
        onsets.append(fault["onset"])
    assert sorted(onsets) == ["gradual", "gradual", "sudden", "sudden"]


@pytest.mark.parametrize("argv, names", [
    (["--stream", "--machine", "fan", "--state-seconds", "30"], "--state-seconds"),
    (["--stream", "--machine", "fan", "--state-seconds", "60,20"], "state seconds"),
    (["--stream", "--machine", "fan", "--fault-onset", "sideways"], "sideways"),
    (["--stream", "--machine", "fan", "--domains", "source,moon"], "moon"),
    (["--stream", "--machine", "fan", "--fault-ramp-seconds", "5"], "--fault-onset gradual"),
    (["--stream", "--machine", "fan", "--fault-onset", "gradual", "--fault-ramp-seconds",
      "50"], "fault ramp"),
    (["--stream", "--machine", "fan", "--transients-per-hour", "-1"], "transients"),
    (["--stream", "--stream-set"], "give one"),
    (["--stream-set", "--sections", "x"], "--sections"),
    (["--stream-set", "--hours", "0"], "hours"),
    (["--stream-set", "--machines", "drill"], "drill"),
    (["--stream-set", "--fault-severity", "3"], "severity"),
])
def test_cli_bad_stream_flags_exit_2_in_one_line(tmp_path: Path, capsys, argv, names) -> None:
    assert cli_main(["synth", str(tmp_path / "x"), *argv]) == 2
    err = capsys.readouterr().err
    assert names in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists()
