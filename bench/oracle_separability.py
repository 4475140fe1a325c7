"""How well a feature set could separate faults from a unit's healthy hours, threshold aside.

A quick screen for a new detector's features before building it into the daemon: per machine
type, the references are the enrolled recording (``--enroll DIR``, ``DIR/<machine>.wav``, e.g.
30 minutes of plant life from ``asd-edge synth ... --stream --plant --no-fault``) cut into
10 s clips; every 10 s window at the daemon's 0.512 s hop of the labelled recordings under
``--streams`` (``asd-edge synth --stream-set``) is scored by the nearest reference
(standardised features, Euclidean, as the spectral detectors do) and turned into the alarm
rule's 3-of-5 trip statistic. A fault counts as separable when its highest statistic within
``[start, end + 10 s)`` beats the highest of every healthy hop: the best any threshold could
do with no false alarm on those hours (an oracle; a calibrated threshold does worse). Reported
per fault as that ratio.

    .venv/bin/python bench/oracle_separability.py --enroll ENROLL --streams DIR [DIR ...] \
        --machines fan,gearbox --features modulation,stats,tonal [--out result.json]

Feature sets: ``modulation`` and ``stats`` (the shipped detectors' features, computed by their
own code on each window), ``tonal`` (a prototype, not shipped: a 4096-point spectrum, the
median over 0.512 s blocks of the window, minus its 31-bin running median over frequency, the
largest excess in each group of 16 bins: how far tonal lines stand above the broadband floor).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from scipy.ndimage import median_filter

from edge.alarms.budget import trip_statistic
from edge.audio import SAMPLE_RATE, read_audio
from edge.evaluation.streams import read_labels
from edge.features import FrontEnd, spectrogram
from edge.scoring.spectral import SPECTRAL_SYSTEMS

WINDOW = 10 * SAMPLE_RATE
HOP = 8192  # samples: the daemon's 0.512 s hop
TONAL_FRONT_END = FrontEnd(n_fft=4096, hop_length=512, f_min=50.0, f_max=8000.0,
                           log_floor=1e-7)
TONAL_BLOCK = 16  # frames: 0.512 s


def _tonal(spec: np.ndarray, starts: np.ndarray) -> np.ndarray:
    blocks_n = spec.shape[1] // TONAL_BLOCK
    power = np.exp(2.0 * spec[:, :blocks_n * TONAL_BLOCK].astype(np.float64))
    blocks = np.log(power.reshape(spec.shape[0], blocks_n, TONAL_BLOCK).mean(2) + 1e-14)
    per = WINDOW // (TONAL_BLOCK * TONAL_FRONT_END.hop_length)
    rows = spec.shape[0] // 16 * 16
    out = []
    for start in starts:
        first = start // (TONAL_BLOCK * TONAL_FRONT_END.hop_length)
        level = np.median(blocks[:, first:first + per], axis=1)
        excess = level - median_filter(level, size=31, mode="nearest")
        out.append(excess[:rows].reshape(-1, 16).max(1))
    return np.stack(out)


def window_features(path: Path, names: list[str]) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Each feature set of every 10 s window at the hop, (W, D) by name; window starts (W,)."""
    audio = read_audio(path)
    starts = np.arange(0, audio.shape[0] - WINDOW + 1, HOP)
    out = {}
    for name in names:
        if name == "tonal":
            out[name] = _tonal(spectrogram(audio, TONAL_FRONT_END), starts)
            continue
        features = SPECTRAL_SYSTEMS[name]
        front = features.front_end
        spec = spectrogram(audio, front)
        frames = front.n_frames(WINDOW)
        out[name] = np.stack([features.of(spec[:, s // front.hop_length:
                                                s // front.hop_length + frames])
                              for s in starts])
    return out, starts


def nearest(references: np.ndarray, test: np.ndarray) -> np.ndarray:
    """(W,) Euclidean distance of each standardised test row to its nearest reference row."""
    mean, std = references.mean(0), references.std(0)
    std = np.maximum(std, 1e-3 * np.median(std) + 1e-12)
    r, t = (references - mean) / std, (test - mean) / std
    d2 = (t ** 2).sum(1)[:, None] + (r ** 2).sum(1)[None] - 2 * t @ r.T
    return np.sqrt(np.maximum(d2.min(1), 0.0))


def separability(enroll: Path, streams: list[Path], machine: str, names: list[str]
                 ) -> dict[str, dict]:
    features, _ = window_features(enroll / f"{machine}.wav", names)
    clips = slice(0, None, WINDOW // HOP)  # windows 10 s apart: the enrolled clips
    recordings = sorted(p for folder in streams for p in folder.rglob(f"{machine}_*.wav"))
    scored = [(read_labels(p), *window_features(p, names)) for p in recordings]
    result = {}
    for name in names:
        references = features[name][clips]
        healthy, faults = [], []
        for labels, feats, starts in scored:
            statistic = trip_statistic(nearest(references, feats[name]), 3, 5)
            if not labels.faults:
                healthy.append(statistic)
                continue
            fault = labels.faults[0]
            end_s = (starts + WINDOW) / SAMPLE_RATE
            inside = (end_s >= fault.start_s) & (end_s < fault.end_s + 10.0)
            faults.append((fault.kind, float(statistic[inside].max())))
        top = float(np.concatenate(healthy).max())
        result[name] = {"healthy_max": round(top, 2),
                        "faults": {kind: round(peak / top, 2) for kind, peak in faults},
                        "separable": sum(peak > top for _, peak in faults),
                        "of": len(faults)}
        print(machine, name, result[name], flush=True)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--enroll", type=Path, required=True)
    parser.add_argument("--streams", type=Path, nargs="+", required=True)
    parser.add_argument("--machines", required=True)
    parser.add_argument("--features", default="modulation,stats,tonal")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    names = args.features.split(",")
    results = {m: separability(args.enroll, args.streams, m, names)
               for m in args.machines.split(",")}
    if args.out:
        args.out.write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
