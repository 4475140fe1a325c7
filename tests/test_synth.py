"""The synthetic machine-sound generator: layout, determinism, domains, streams, CLI.

Also holds the plain band-energy nearest-neighbour baseline used to check that the default
data are not trivially easy: ``python tests/test_synth.py OUT`` writes a default-size data
set and prints its per-machine DCASE scores.
"""

from __future__ import annotations

import csv
import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from edge.audio import SAMPLE_RATE, audio_info, read_audio
from edge.cli import main as cli_main
from edge.dataset import MACHINE_TYPES, scan
from edge.features import FrontEnd, spectrogram
from edge.synth import attribute_values, synthesize_dataset, synthesize_stream

BAND_FRONT_END = FrontEnd(n_fft=1024, hop_length=512, f_min=0.0, f_max=8000.0, n_mels=32)


def band_energies(path: Path) -> np.ndarray:
    """(32,) log band energies averaged over the clip: the baseline's whole feature."""
    return spectrogram(read_audio(path), BAND_FRONT_END).mean(axis=1)


def band_statistics(path: Path) -> np.ndarray:
    """(64,) per-band mean and standard deviation over time: sees impacts and modulation too."""
    spec = spectrogram(read_audio(path), BAND_FRONT_END)
    return np.concatenate([spec.mean(axis=1), spec.std(axis=1)])


def dcase_scores(root: Path, machine: str, feature=band_energies,
                 standardise: bool = False) -> dict[str, float]:
    """Nearest-neighbour detector on a clip ``feature`` (default: band energies, the plain
    baseline; ``standardise`` z-scores with the section's training clips), scored as the
    official DCASE 2022 evaluator.

    Per section: AUC(source) over source normal + all anomalies, AUC(target) over target
    normal + all anomalies, pAUC (max_fpr 0.1) over all test clips; official = harmonic mean
    of all of them over the sections.
    """
    from scipy.stats import hmean
    from sklearn.metrics import roc_auc_score

    dataset = scan(root)
    aucs_source, aucs_target, paucs = [], [], []
    for section in dataset.sections(machine):
        train = dataset.select(machine=machine, section=section, split="train")
        test = dataset.select(machine=machine, section=section, split="test")
        references = np.stack([feature(c.path) for c in train])
        features = np.stack([feature(c.path) for c in test])
        if standardise:
            mean, spread = references.mean(axis=0), references.std(axis=0) + 1e-6
            references, features = (references - mean) / spread, (features - mean) / spread
        scores = np.min(np.linalg.norm(features[:, None] - references[None], axis=2), axis=1)
        labels = np.array([c.label == "anomaly" for c in test])
        domains = np.array([c.domain for c in test])
        for domain, sink in (("source", aucs_source), ("target", aucs_target)):
            keep = labels | (domains == domain)
            sink.append(roc_auc_score(labels[keep], scores[keep]))
        paucs.append(roc_auc_score(labels, scores, max_fpr=0.1))
    return {"auc_source": float(np.mean(aucs_source)), "auc_target": float(np.mean(aucs_target)),
            "pauc": float(np.mean(paucs)),
            "official": float(hmean(aucs_source + aucs_target + paucs))}


def _digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def small_set(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "data"
    return synthesize_dataset(out, machines=["fan", "valve"], sections=2, n_train=3,
                              n_target_train=2, n_test=2, seconds=1.0, seed=3)


def test_layout_reads_back_with_counts_domains_labels_and_attributes(small_set: Path) -> None:
    dataset = scan(small_set)
    assert dataset.machines == ["fan", "valve"]
    assert dataset.problems == []
    for machine in ("fan", "valve"):
        assert dataset.sections(machine) == [0, 1]
        for section in (0, 1):
            pick = dict(machine=machine, section=section)
            assert len(dataset.select(**pick, split="train", domain="source")) == 3
            assert len(dataset.select(**pick, split="train", domain="target")) == 2
            assert {c.label for c in dataset.select(**pick, split="train")} == {"normal"}
            for domain in ("source", "target"):
                for label in ("normal", "anomaly"):
                    assert len(dataset.select(**pick, split="test", domain=domain,
                                              label=label)) == 2
            with (small_set / machine / f"attributes_{section:02d}.csv").open() as handle:
                rows = list(csv.reader(handle))
            assert rows[0][0] == "file_name" and rows[0][1:3] == ["d1p", "d1v"]
            table = {row[0]: tuple(zip(row[1::2], row[2::2], strict=True)) for row in rows[1:]}
            clips = dataset.select(**pick)
            assert len(table) == len(clips)
            for clip in clips:
                assert table[f"{clip.split}/{clip.name}"] == clip.attributes
                assert clip.attributes  # every clip carries its operating condition
    info = audio_info(next((small_set / "fan" / "train").iterdir()))
    assert (info.sample_rate, info.channels, info.subtype) == (SAMPLE_RATE, 1, "PCM_16")
    assert info.frames == SAMPLE_RATE


def test_same_seed_same_bytes_other_seed_other_sound(small_set: Path, tmp_path: Path) -> None:
    again = synthesize_dataset(tmp_path / "again", machines=["fan", "valve"], sections=2,
                               n_train=3, n_target_train=2, n_test=2, seconds=1.0, seed=3)
    assert _digest(again) == _digest(small_set)
    other = synthesize_dataset(tmp_path / "other", machines=["fan"], sections=1, n_train=3,
                               n_target_train=0, n_test=0, seconds=1.0, seed=4)
    first = sorted((small_set / "fan" / "train").glob("section_00_source_*"))[0]
    assert not np.allclose(read_audio(first),
                           read_audio(other / "fan" / "train" / first.name)
                           if (other / "fan" / "train" / first.name).exists()
                           else read_audio(sorted((other / "fan" / "train").iterdir())[0]))


def test_target_values_never_appear_in_source(small_set: Path) -> None:
    for machine in MACHINE_TYPES:
        source, target = attribute_values(machine, "source"), attribute_values(machine, "target")
        assert source.keys() == target.keys()
        for key in source:
            assert target[key] and not set(source[key]) & set(target[key]), (machine, key)
    dataset = scan(small_set)
    for machine in dataset.machines:
        seen = {d: {pair for c in dataset.select(machine=machine, domain=d)
                    for pair in c.attributes} for d in ("source", "target")}
        assert seen["source"] and seen["target"] and not seen["source"] & seen["target"]


def test_toy_clips_last_12_seconds_by_default(tmp_path: Path) -> None:
    out = synthesize_dataset(tmp_path, machines=["ToyTrain", "gearbox"], sections=1, n_train=1,
                             n_target_train=0, n_test=0)
    assert audio_info(next((out / "ToyTrain" / "train").iterdir())).duration == 12.0
    assert audio_info(next((out / "gearbox" / "train").iterdir())).duration == 10.0


def test_every_machine_renders_bounded_distinct_units(tmp_path: Path) -> None:
    out = synthesize_dataset(tmp_path, sections=2, n_train=1, n_target_train=0, n_test=0,
                             seconds=1.0)
    for machine in MACHINE_TYPES:
        a, b = (read_audio(next((out / machine / "train").glob(f"section_0{s}_*")))
                for s in (0, 1))
        assert 0.003 < np.sqrt(np.mean(a ** 2)) < 0.3 and np.max(np.abs(a)) < 0.99, machine
        spec_a, spec_b = (spectrogram(x, BAND_FRONT_END).mean(axis=1) for x in (a, b))
        assert np.linalg.norm(spec_a - spec_b) > 1.0, machine  # sections are different units


def test_stream_fault_lies_where_the_json_says(tmp_path: Path) -> None:
    meta = synthesize_stream(tmp_path / "dry.wav", "bearing", section=1, seconds=12.0,
                             fault_start=5.0, fault_seconds=4.0, seed=2, fault_kind="dry")
    assert json.loads((tmp_path / "dry.json").read_text()) == meta
    assert meta["fault"] == {**meta["fault"], "start_s": 5.0, "end_s": 9.0, "kind": "dry"}
    assert meta["attributes"]["vel"] in attribute_values("bearing", "source")["vel"]
    audio = read_audio(tmp_path / "dry.wav")
    assert audio.shape[0] == 12 * SAMPLE_RATE
    frames = spectrogram(audio, BAND_FRONT_END)  # (32, T), 32 ms per frame
    seconds = (np.arange(frames.shape[1]) * 512 + 512) / SAMPLE_RATE
    per_second = np.stack([np.median(frames[:, (seconds >= s) & (seconds < s + 1)], axis=1)
                           for s in range(12)])
    change = np.linalg.norm(per_second - per_second[[0, 1, 2, 3, 10, 11]].mean(axis=0), axis=1)
    assert change[5:9].min() > 2 * change[[0, 1, 2, 3, 10, 11]].max(), change.round(2)
    # the same unit with the fault elsewhere differs only inside the two fault intervals
    synthesize_stream(tmp_path / "early.wav", "bearing", section=1, seconds=12.0,
                      fault_start=1.0, fault_seconds=2.0, seed=2, fault_kind="dry")
    differs = np.abs(read_audio(tmp_path / "early.wav") - audio) > 1e-4
    differs_s = np.flatnonzero(differs) / SAMPLE_RATE
    assert differs_s.min() >= 1.0 and differs_s.max() < 9.0
    assert not differs[int(3.01 * SAMPLE_RATE):int(4.99 * SAMPLE_RATE)].any()
    assert differs[int(1.5 * SAMPLE_RATE):int(2.5 * SAMPLE_RATE)].mean() > 0.5


def test_cli_writes_data_and_stream(tmp_path: Path, capsys) -> None:
    assert cli_main(["synth", str(tmp_path / "d"), "--machines", "slider", "--sections", "1",
                     "--train", "2", "--target-train", "1", "--test", "1",
                     "--seconds", "1"]) == 0
    assert "wrote 7 clips" in capsys.readouterr().out
    assert len(scan(tmp_path / "d").clips) == 7
    assert cli_main(["synth", str(tmp_path / "s"), "--stream", "--machine", "bearing",
                     "--seconds", "4", "--fault-start", "1", "--fault-seconds", "2"]) == 0
    assert (tmp_path / "s" / "bearing_section_00_stream.wav").is_file()
    assert json.loads((tmp_path / "s" / "bearing_section_00_stream.json").read_text())[
        "fault"]["end_s"] == 3.0


@pytest.mark.parametrize("argv, names", [
    (["--machines", "drill"], "drill"),
    (["--train", "-1"], "-1"),
    (["--stream", "--machine", "fan", "--seconds", "10", "--fault-start", "8",
      "--fault-seconds", "5"], "fault interval"),
    (["--stream"], "--machine"),
])
def test_cli_bad_input_exits_2_naming_the_value(tmp_path: Path, capsys, argv, names) -> None:
    assert cli_main(["synth", str(tmp_path / "x"), *argv]) == 2
    err = capsys.readouterr().err
    assert names in err and "Traceback" not in err
    assert not (tmp_path / "x").exists()


if __name__ == "__main__":  # python tests/test_synth.py OUT [seed]
    root = Path(sys.argv[1])
    if not root.exists():
        synthesize_dataset(root, seed=int(sys.argv[2]) if len(sys.argv) > 2 else 0)
    for name in MACHINE_TYPES:
        for label, options in (("bands", {}), ("stats", {"feature": band_statistics,
                                                         "standardise": True})):
            result = dcase_scores(root, name, **options)
            print(f"{name:9s} {label} " + " ".join(f"{k} {v:.3f}" for k, v in result.items()),
                  flush=True)


def test_a_fixed_snr_puts_the_plant_background_at_that_level(tmp_path) -> None:
    """Issue 14's noisy benchmark: --snr 6, 0, -6 dB; the same machine sound under each, the
    background 12 dB louder at -6 than at +6 (within the soft limiter's bend)."""
    from edge.synth import render_clip

    condition = [(k, v[0]) for k, v in attribute_values("fan", "source").items()]
    clean = render_clip("fan", 0, condition, 32_000, [1, 2], noise=False).astype(np.float64)
    noise_db = {}
    for snr in (6.0, 0.0, -6.0):
        mixed = render_clip("fan", 0, condition, 32_000, [1, 2], snr_db=snr).astype(np.float64)
        noise_db[snr] = 20 * np.log10(np.std(mixed - clean) / np.std(clean))
    # the machine's level varies with its condition around the nominal one: the steps count
    assert 5.0 < noise_db[0.0] - noise_db[6.0] < 7.0
    assert 5.0 < noise_db[-6.0] - noise_db[0.0] < 7.0
    assert cli_main(["synth", str(tmp_path / "d"), "--machines", "fan", "--sections", "1",
                 "--train", "1", "--target-train", "0", "--test", "0", "--snr", "-6"]) == 0
    assert cli_main(["synth", str(tmp_path / "s.wav"), "--stream", "--machine", "fan",
                 "--snr", "0"]) == 2
