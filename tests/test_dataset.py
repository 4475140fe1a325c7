"""The DCASE layout: file-name grammar, attributes CSV, enumeration, the `data` command."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edge.audio import write_audio
from edge.cli import main
from edge.dataset import format_clip_name, parse_clip_name, scan
from edge.errors import BadInput


def test_real_sample_set_is_enumerated(sample_dir: Path) -> None:
    dataset = scan(sample_dir)
    assert len(dataset.clips) == 28
    assert dataset.machines == sorted(
        ["ToyCar", "ToyTrain", "bearing", "fan", "gearbox", "slider", "valve"])
    assert {c.domain for c in dataset.clips} == {"source", "target"}
    assert len(dataset.select(label="anomaly")) == 5
    assert len(dataset.select(split="train")) == 14
    toy = dataset.select(machine="ToyTrain", label="anomaly")[0]
    assert toy.attribute_dict() == {"car": "A2", "spd": "6", "mic": "2"}
    slider = dataset.select(machine="slider", domain="target")[0]
    assert slider.attribute_dict() == {"vel": "620", "ac": "0.08"}  # strings, not floats


def test_data_command_lists_real_clips(sample_dir: Path, capsys) -> None:
    assert main(["data", str(sample_dir), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["clips"] == 28
    assert summary["machines"]["ToyCar"]["durations_s"] == {"12.0": 4}
    assert summary["machines"]["ToyTrain"]["durations_s"] == {"12.0": 4}
    assert summary["machines"]["fan"]["durations_s"] == {"10.0": 4}
    assert summary["machines"]["gearbox"]["attributes"] == {
        "volt": ["1.5"], "wt": ["0", "130", "150", "50"]}
    assert all(rates == {"16000": 4} for rates in
               (m["sample_rates"] for m in summary["machines"].values()))
    # nothing in the sample has target training clips: reported as odd, not an error
    assert any("no target-domain training clips" in p for p in summary["problems"])


def test_name_round_trip() -> None:
    name = format_clip_name(3, "target", "test", "anomaly", 42, [("vel", "9"), ("loc", "A")])
    clip = parse_clip_name(Path("/x/bearing/test") / name)
    assert (clip.machine, clip.section, clip.domain, clip.split, clip.label, clip.index) == (
        "bearing", 3, "target", "test", "anomaly", "0042")
    assert clip.attributes == (("vel", "9"), ("loc", "A"))
    assert parse_clip_name(Path("/x/fan/train") / format_clip_name(
        0, "source", "train", "normal", 1)).attributes == ()


def test_evaluation_layout_with_ground_truth(tmp_path: Path) -> None:
    tone = np.sin(np.linspace(0, 100, 16000)).astype(np.float32) * 0.1
    for index in range(3):
        write_audio(tmp_path / "fan" / "test" / f"section_03_{index:04d}.wav", tone)
    (tmp_path / "gt").mkdir()
    (tmp_path / "gt" / "ground_truth_fan_section_03_test.csv").write_text(
        "section_03_0000.wav,0\nsection_03_0001.wav,1\nsection_03_0002.wav,0\n")
    (tmp_path / "gt_domain").mkdir()
    (tmp_path / "gt_domain" / "ground_truth_fan_section_03_test.csv").write_text(
        "section_03_0000.wav,0\nsection_03_0001.wav,1\nsection_03_0002.wav,1\n")
    clips = scan(tmp_path).select(machine="fan")
    assert [(c.section, c.label, c.domain) for c in clips] == [
        (3, "normal", "source"), (3, "anomaly", "target"), (3, "normal", "target")]


def test_attributes_csv_wins_over_file_name(tmp_path: Path) -> None:
    name = format_clip_name(0, "source", "train", "normal", 0)  # noAttribute in the name
    write_audio(tmp_path / "valve" / "train" / name, np.zeros(1600, np.float32) + 0.01)
    (tmp_path / "valve" / "attributes_00.csv").write_text(
        f"file_name,d1p,d1v,d2p,d2v\nvalve/train/{name},pat,02,v1pat,00\n")
    clip = scan(tmp_path).clips[0]
    assert clip.attributes == (("pat", "02"), ("v1pat", "00"))


def test_bad_layouts_are_refused(tmp_path: Path, capsys) -> None:
    (tmp_path / "notdata").mkdir()
    (tmp_path / "notdata" / "x.txt").write_text("hi")
    assert main(["data", str(tmp_path / "notdata")]) == 2
    err = capsys.readouterr().err
    assert "not a DCASE layout" in err and err.count("\n") == 1
    assert main(["data", str(tmp_path / "missing")]) == 2
    bad = tmp_path / "set" / "fan" / "train" / "recording_01.wav"
    write_audio(bad, np.zeros(1600, np.float32))
    assert main(["data", str(tmp_path / "set")]) == 2
    err = capsys.readouterr().err
    assert "recording_01.wav" in err and "does not follow the DCASE grammar" in err
    with pytest.raises(BadInput, match="odd number"):
        parse_clip_name("fan/train/section_00_source_train_normal_0000_speed.wav")
