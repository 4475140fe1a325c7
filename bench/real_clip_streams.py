"""The real DCASE 2023 clips in the repository, spliced into streams, through evaluate-streams.

For every machine type of ``tests/data/dcase2023_sample`` (3 normal clips and 1 anomalous
clip each) and every normal clip ``h`` held out in turn: a bundle of the no-training detectors
``--system`` (default: what ``enroll`` makes for an unseen unit) is enrolled
from the other normal clips (leave-clips-out: the streamed clip is never a reference), and a
recording is spliced of ``h`` three times (two splices) followed by the anomalous clip,
labelled as a fault (ToyCar has none in the sample: normal only). Every
recording goes through ``asd-edge evaluate-streams`` (the daemon's path). What it shows:
whether real normal sound of a unit raises a false alarm against a bundle that never heard it,
and whether the real anomaly is caught. Few clips: a smoke check on real audio, not a rate.

    .venv/bin/python bench/real_clip_streams.py [--system stats+modulation]
        [--out bench/results/real_clip_streams]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np

from edge.audio import SAMPLE_RATE, read_audio, write_audio
from edge.bundle.enroll import UNSEEN_SYSTEM, enroll
from edge.dataset import scan
from edge.evaluation.streams import evaluate_streams

LOOPS = 3  # the held-out clip is played this many times before the anomaly
SAMPLE = Path(__file__).resolve().parents[1] / "tests" / "data" / "dcase2023_sample"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--system", default=UNSEEN_SYSTEM,
                        help="spectral detector(s) to enroll, e.g. stats, modulation, "
                             "stats+modulation")
    parser.add_argument("--out", default="bench/results/real_clip_streams")
    args = parser.parse_args()
    clips = scan(SAMPLE).clips
    machines = sorted({c.machine for c in clips})
    rows = []
    with tempfile.TemporaryDirectory(prefix="asd-real-") as tmp:
        for fold in range(3):
            models, streams = Path(tmp) / f"models{fold}", Path(tmp) / f"streams{fold}"
            streams.mkdir(parents=True)
            for machine in machines:
                normal = sorted((c for c in clips if c.machine == machine and not c.is_anomaly),
                                key=lambda c: c.name)
                anomaly = next((c for c in clips if c.machine == machine and c.is_anomaly), None)
                held = normal[fold % len(normal)]
                enroll(models, machine, held.section,
                       [read_audio(c.path) for c in normal if c is not held], "real clips",
                       "source", system_name=args.system)
                head = np.tile(read_audio(held.path), LOOPS)  # spliced to itself: 30 s
                tail = read_audio(anomaly.path) if anomaly else np.zeros(0, np.float32)
                wav = streams / f"{machine}_holdout_{fold}.wav"
                write_audio(wav, np.concatenate([head, tail]))
                start, end = head.shape[0] / SAMPLE_RATE, (head.shape[0] + tail.shape[0]) \
                    / SAMPLE_RATE
                faults = [{"start_s": start, "end_s": end,
                           "kind": f"real anomaly {anomaly.name}"}] if anomaly else []
                wav.with_suffix(".json").write_text(json.dumps({
                    "machine": machine, "section": held.section, "seconds": end,
                    "faults": faults, "held_out": held.name}))
            report = evaluate_streams(streams, models, Path(args.out) / f"fold{fold}",
                                      plots=False)
            for row in report["recordings"]:
                rows.append({"fold": fold, "stream": row["stream"], "machine": row["machine"],
                             "false_alarms": row["false_alarms"],
                             "normal_seconds": round(3600 * row["normal_hours"], 1),
                             "anomaly_detected": row["faults"][0]["detected"]
                             if row["faults"] else None})
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    false_alarms = sum(r["false_alarms"] for r in rows)
    with_anomaly = [r for r in rows if r["anomaly_detected"] is not None]
    detected = sum(r["anomaly_detected"] for r in with_anomaly)
    summary = {"system": args.system, "recordings": len(rows), "false_alarms": false_alarms,
               "normal_seconds": sum(r["normal_seconds"] for r in rows),
               "anomalies_detected": detected, "rows": rows}
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"{len(rows)} spliced real recordings (leave-clips-out {args.system} bundles): "
          f"{false_alarms} false alarm(s) in {summary['normal_seconds']:.0f} s of held-out "
          f"normal audio; real anomalies detected {detected}/{len(with_anomaly)}")
    print("false alarms: none" if not false_alarms else
          "false alarms in: " + ", ".join(r["stream"] for r in rows if r["false_alarms"]))


if __name__ == "__main__":
    main()
