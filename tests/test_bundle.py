"""Bundles: enrollment makes and extends them; the edge refuses a bundle that does not match."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from _pipeline import MACHINE, stats_setup

from edge.audio import read_audio
from edge.bundle.load import load_bundle
from edge.cli import main
from edge.errors import BadInput
from edge.synth import synthesize_dataset


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    return stats_setup(tmp_path_factory.mktemp("bundle"))


def test_enrolled_bundle_verifies_and_scores_anomalies_higher(setup, capsys) -> None:
    bundle_dir = setup.models / MACHINE
    assert main(["bundle", "verify", str(bundle_dir)]) == 0
    out = capsys.readouterr().out
    assert "OK" in out and "stats" in out and "section_00: threshold" in out
    system = load_bundle(setup.models, MACHINE).system
    test = sorted((setup.data / MACHINE / "test").glob("*.wav"))
    scores = {p.name: system.score_clip(read_audio(p), 0)[0] for p in test}
    normal = [s for n, s in scores.items() if "_source_" in n and "_normal_" in n]
    anomaly = [s for n, s in scores.items() if "_anomaly_" in n]
    assert np.mean(anomaly) > np.mean(normal)


def _copy(setup, tmp_path: Path) -> Path:
    target = tmp_path / "models" / MACHINE
    shutil.copytree(setup.models / MACHINE, target)
    return target


def _refused(path: Path, capsys, *fragments: str) -> None:
    assert main(["bundle", "verify", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    for fragment in fragments:
        assert fragment in err, err


def printed_thresholds(out: str) -> dict:
    """Per section of ``bundle verify``'s output, its thresholds as ``pytest.approx`` of the
    printed 4 significant digits, shaped like bundle.json's ``sections`` entries."""
    level = r"(\S+)(?: \(([^)]*)\))?"
    sections: dict = {}
    for match in re.finditer(rf"section_(\d\d): threshold {level}, clear {level};", out):
        section, threshold, domains, clear, clear_domains = match.groups()
        by_domain = [dict(pair.split(" ") for pair in (text or "").split(", ") if pair)
                     for text in (domains, clear_domains)]
        assert by_domain[0].keys() == by_domain[1].keys(), match.group(0)

        def approx(text: str) -> object:
            return pytest.approx(float(text), rel=5e-4)

        sections[section] = {
            "threshold": approx(threshold), "clear_threshold": approx(clear),
            "domains": {d: {"threshold": approx(by_domain[0][d]),
                            "clear_threshold": approx(by_domain[1][d])} for d in by_domain[0]}}
    return sections


def test_tampered_or_missing_files_are_refused(setup, tmp_path, capsys) -> None:
    bundle = _copy(setup, tmp_path)
    index = bundle / "stats" / "section_00_part0.npz"
    index.write_bytes(index.read_bytes()[:-8] + b"tampered")
    _refused(bundle, capsys, "section_00_part0.npz", "sha256 does not match", "re-export")
    index.unlink()
    _refused(bundle, capsys, "section_00_part0.npz", "missing from the bundle")


def test_newer_format_and_other_machine_are_refused(setup, tmp_path, capsys) -> None:
    bundle = _copy(setup, tmp_path)
    manifest = json.loads((bundle / "bundle.json").read_text())
    manifest["format_version"] = 99
    (bundle / "bundle.json").write_text(json.dumps(manifest))
    _refused(bundle, capsys, "format version 99 is newer", "upgrade asd-edge")
    other = tmp_path / "other" / "fan"
    shutil.copytree(setup.models / MACHINE, other)
    with pytest.raises(BadInput, match=f"bundle is for machine type '{MACHINE}', not 'fan'"):
        load_bundle(other.parent, "fan")


def test_enrolling_a_new_unit_adds_a_section(setup, tmp_path, capsys) -> None:
    bundle = _copy(setup, tmp_path)
    assert load_bundle(bundle).system.sections == [0]
    more = synthesize_dataset(tmp_path / "more", [MACHINE], sections=2, n_train=4,
                              n_target_train=1, n_test=1, seed=3)
    clips = more / MACHINE / "train"
    unit1 = tmp_path / "unit1"
    unit1.mkdir()
    for path in clips.glob("section_01_*.wav"):
        shutil.copy(path, unit1)
    assert main(["enroll", "--dir", str(unit1), "--machine", MACHINE, "--section", "1",
                 "--models", str(bundle.parent)]) == 0
    system = load_bundle(bundle).system
    assert system.sections == [0, 1]
    manifest = json.loads((bundle / "bundle.json").read_text())
    assert manifest["provenance"]["enrollments"][-1]["section"] == 1
    capsys.readouterr()
    assert main(["bundle", "verify", str(bundle)]) == 0
    # verify lists each section's pooled levels and those of every domain it calibrated: the
    # first unit's source-domain clips, the new unit's clips in the domains their DCASE names
    # carry (4 source clips; its 1 target clip is too little for levels of its own)
    printed = printed_thresholds(capsys.readouterr().out)
    assert printed == {
        section: {"threshold": entry["threshold"], "clear_threshold": entry["clear_threshold"],
                  "domains": {domain: {"threshold": levels["threshold"],
                                       "clear_threshold": levels["clear_threshold"]}
                              for domain, levels in entry["domains"].items()}}
        for section, entry in manifest["sections"].items()}
    assert set(printed["00"]["domains"]) == {"source"}
    assert set(printed["01"]["domains"]) == {"source"}
    assert manifest["provenance"]["enrollments"][-1]["domain"] == {"source": 4, "target": 1}
    # a unit never enrolled: a clear error naming the fix
    with pytest.raises(BadInput, match="section 05 has no normal references"):
        system.check_section(5)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["enroll", "--dir", str(empty), "--machine", MACHINE, "--section", "0",
                 "--models", str(bundle.parent)]) == 2
    assert "no WAV or FLAC files" in capsys.readouterr().err
    # a folder holding a test clip named as an anomaly: refused, nothing enrolled
    shutil.copy(next((more / MACHINE / "test").glob("*_anomaly_*.wav")), unit1)
    assert main(["enroll", "--dir", str(unit1), "--machine", MACHINE, "--section", "1",
                 "--models", str(bundle.parent)]) == 2
    assert "named as anomalies" in capsys.readouterr().err
    assert json.loads((bundle / "bundle.json").read_text()) == manifest


def test_real_sample_clips_pass_enrollment_scoring_and_streaming(sample_dir, tmp_path) -> None:
    """The 28 real DCASE clips (10 s and 12 s) through enrollment, offline and streamed
    scoring: every machine type gets a bundle from its two normal clips and scores its tests."""
    from edge.streaming import window_patches_for

    for machine_dir in sorted(p for p in sample_dir.iterdir() if p.is_dir()):
        machine = machine_dir.name
        assert main(["enroll", "--dir", str(machine_dir / "train"), "--machine", machine,
                     "--section", "0", "--models", str(tmp_path), "--domain", "source"]) == 0
        system = load_bundle(tmp_path, machine).system
        for test in sorted((machine_dir / "test").glob("*.wav")):
            wave = read_audio(test)
            score = system.score_clip(wave, 0)[0]
            assert np.isfinite(score)
            stream = system.stream(window_patches_for(10.0, system.front_end,
                                                      system.patching), 4)
            for start in range(0, wave.size, 8000):
                stream.push(wave[start:start + 8000])
                for window in stream.accept(None, None):
                    offline = system.score_clip(wave[window.start_sample:window.end_sample], 0)
                    assert system.score_window(window, 0)[0] == pytest.approx(offline[0],
                                                                             rel=1e-5)
