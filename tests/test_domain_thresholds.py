"""Per-domain thresholds: a section whose few target references score high out of sample keeps
a lower source threshold, and a source-domain unit's fault that the pooled threshold misses is
reported when the stream follows the domain of its nearest reference (``domain: auto``)."""

from __future__ import annotations

import json
import shutil
import textwrap
from pathlib import Path

import pytest

from edge.bundle.load import load_bundle
from edge.bundle.manifest import MANIFEST, write_manifest
from edge.cli import main
from edge.outputs.journal import read_journal
from edge.synth import synthesize_dataset, synthesize_stream

MACHINE = "gearbox"
CLIP_SECONDS = 4.0
FAULT = {"start_s": 10.0, "end_s": 22.0}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A statistics-only bundle of gearbox section 00: 12 source clips of the unit and, as its
    target domain, one clip of each of 4 other units (far from each other and from the source
    clips, so they score high out of sample); and a 30 s source-domain recording of the unit
    with a mild chipped-tooth fault at 10-22 s, scoring between the source and pooled levels."""
    root = tmp_path_factory.mktemp("domains")
    data = synthesize_dataset(root / "data", [MACHINE], sections=4, n_train=12,
                              n_target_train=1, n_test=0, seconds=CLIP_SECONDS, seed=3)
    source, target = root / "source", root / "target"
    source.mkdir()
    target.mkdir()
    for clip in (data / MACHINE / "train").iterdir():
        if "_source_" in clip.name and clip.name.startswith("section_00"):
            shutil.copy(clip, source / clip.name)
        elif "_target_" in clip.name:
            shutil.copy(clip, target / clip.name)
    models = root / "models"
    for folder, domain, system in ((source, "source", ["--system", "stats"]),
                                   (target, "target", [])):  # a bundle keeps its system
        assert main(["enroll", "--dir", str(folder), "--machine", MACHINE, "--section", "0",
                     "--models", str(models), "--domain", domain, *system]) == 0
    stream = root / "fault.wav"
    synthesize_stream(stream, MACHINE, 0, seconds=30.0, fault_start=FAULT["start_s"],
                      fault_seconds=FAULT["end_s"] - FAULT["start_s"], seed=3,
                      domain="source", fault_kind="chipped", severity=0.55)
    return root, models, stream


def replay(root: Path, models: Path, stream: Path, domain: str, name: str) -> list:
    """Run the daemon over the recording with the stream's ``domain``; its journal's events."""
    state = root / f"state-{name}"
    config = root / f"{name}.yaml"
    config.write_text(textwrap.dedent(f"""\
        node: test
        models_dir: {models}
        state_dir: {state}
        evidence: {{enabled: false}}
        metrics: {{enabled: false}}
        streams:
          - source: {{type: file, path: {stream}, speed: max}}
            machine: {MACHINE}
            section: 0
            window_seconds: {CLIP_SECONDS}
            domain: {domain}
        """))
    assert main(["run", "--config", str(config), "--no-metrics"]) == 0
    journal = state / "journal.jsonl"
    return read_journal(journal) if journal.is_file() else []


def test_high_scoring_target_references_leave_a_lower_source_threshold(setup, capsys) -> None:
    _, models, _ = setup
    manifest = json.loads((models / MACHINE / MANIFEST).read_text())
    section = manifest["sections"]["00"]
    source, target = section["domains"]["source"], section["domains"]["target"]
    assert (source["normal_clips"], target["normal_clips"]) == (12, 4)
    # the pooled threshold is pulled up by the 4 target clips; the source one is not
    assert source["threshold"] < 0.8 * section["threshold"] < 0.8 * target["threshold"]
    assert source["clear_threshold"] <= source["threshold"]
    loaded = load_bundle(models, MACHINE).system.thresholds[0]
    assert loaded.for_domain("source").threshold == pytest.approx(source["threshold"])
    assert loaded.for_domain("pooled").threshold == pytest.approx(section["threshold"])
    assert main(["bundle", "verify", str(models / MACHINE)]) == 0
    assert "OK" in capsys.readouterr().out


def test_source_fault_missed_by_the_pooled_threshold_is_reported_with_auto(setup) -> None:
    root, models, stream = setup
    thresholds = load_bundle(models, MACHINE).system.thresholds[0]
    assert replay(root, models, stream, "pooled", "pooled") == []
    assert replay(root, models, stream, "target", "target") == []
    events = replay(root, models, stream, "auto", "auto")
    assert [e.type for e in events] == ["raise", "clear"], [e.type for e in events]
    raised = events[0]
    assert FAULT["start_s"] < raised.window.end_s <= FAULT["end_s"] + 1.0, raised.window
    # the event carries the threshold the hop was compared with: the source domain's
    assert raised.threshold == pytest.approx(thresholds.for_domain("source").threshold)
    assert raised.threshold < raised.score < thresholds.threshold
    assert events[1].window.start_s >= FAULT["end_s"] - CLIP_SECONDS


def test_a_bundle_without_domain_thresholds_loads_and_uses_the_pooled_one(setup,
                                                                          tmp_path) -> None:
    """A bundle written before per-domain thresholds: no ``domains`` in bundle.json and no
    reference domains in the scorer. It loads, and ``auto`` behaves as the pooled threshold."""
    root, models, stream = setup
    old = tmp_path / "models"
    shutil.copytree(models, old)
    bundle = old / MACHINE
    manifest = json.loads((bundle / MANIFEST).read_text())
    for entry in manifest["sections"].values():
        del entry["domains"]
    for member in manifest["system"]["members"]:
        scorer_file = bundle / member["scorer"] / "scorer.json"
        scorer = json.loads(scorer_file.read_text())
        for name in scorer.pop("reference_domains").values():
            (bundle / member["scorer"] / name).unlink()
        scorer_file.write_text(json.dumps(scorer, indent=2))
    write_manifest(bundle, {k: v for k, v in manifest.items()
                            if k not in ("format", "format_version", "files")})
    system = load_bundle(old, MACHINE).system
    assert system.thresholds[0].domains == {}
    assert system.domain_member is None
    assert system.thresholds[0].for_domain("source").threshold == \
        pytest.approx(manifest["sections"]["00"]["threshold"])
    assert replay(tmp_path, old, stream, "auto", "old") == []


def test_a_bad_domain_in_the_config_names_its_line(tmp_path, capsys) -> None:
    path = tmp_path / "edge.yaml"
    path.write_text(textwrap.dedent("""\
        streams:
          - source: {type: mic, device: 0}
            machine: fan
            domain: sorce
        """))
    assert main(["check-config", str(path)]) == 2
    err = [line.strip() for line in capsys.readouterr().err.strip().splitlines()]
    assert err == [f"{path}: 1 error(s)",
                   f"{path}:4: streams[0].domain: Input should be 'auto', 'source', 'target' "
                   "or 'pooled' (got 'sorce')"], err
