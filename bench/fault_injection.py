"""The fault-injection suite at full size (issue 13); CI runs the same scenarios smaller
(tests/test_fault_injection.py).

    .venv/bin/python bench/fault_injection.py [--out bench/results/fault_injection.json]
        [--minutes 120] [--restarts 100] [--kills 20] [--quick]

Each scenario runs the real daemon (``asd-edge run --config``, a subprocess) against a real
Mosquitto on loopback and tallies the alarm events it raised (its journal, every run) against
those a subscriber received: lost, duplicated (same event_id again), conflicting (two
event_ids for one episode and type). The broker-restart scenario is also the soak: the
daemon's memory, open files and outbox depth are sampled through it. Needs ``mosquitto`` and
``mosquitto_passwd`` on the PATH. Results: JSON (one row per scenario) and a Markdown table
beside it.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # the scenarios live beside the tests that run them

from _faults import (  # noqa: E402
    Tally,
    bad_credentials,
    broker_restarts,
    full_disk,
    long_recording,
    sigkills,
    stalled_broker,
    write_results,
)


def markdown(rows: list[Tally], args: argparse.Namespace) -> str:
    lines = [
        "# Fault injection (bench/fault_injection.py)",
        "",
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; recording: {args.minutes} min "
        "with a fault a minute (2 alarm events per minute), replayed at full speed.",
        "",
        "| scenario | runs | raised | delivered | lost | re-deliveries (same event_id) | "
        "conflicting | seconds | details |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        details = ", ".join(f"{key} {value}" for key, value in row.notes.items())
        lines.append(f"| {row.scenario} | {row.runs} | {row.raised} | {row.delivered} | "
                     f"{len(row.lost)} | {row.duplicates} | {row.conflicting} | {row.seconds} "
                     f"| {details} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "bench/results/fault_injection.json")
    parser.add_argument("--minutes", type=int, default=120,
                        help="audio replayed by the restart (soak) scenario")
    parser.add_argument("--restarts", type=int, default=100)
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--quick", action="store_true", help="CI sizes (a minute or two)")
    args = parser.parse_args()
    if args.quick:
        args.minutes, args.restarts, args.kills = 10, 10, 4
    root = Path(tempfile.mkdtemp(prefix="asd-edge-faults-"))
    try:
        short = long_recording(root / "recordings" / "short", minutes=10)
        soak = long_recording(root / "recordings" / "soak", minutes=args.minutes)
        stall = soak if args.quick else long_recording(root / "recordings" / "stall", 30)
        scenarios = [
            ("restarts", lambda r: broker_restarts(soak, r, restarts=args.restarts)),
            ("kills", lambda r: sigkills(short, r, kills=args.kills)),
            ("stall", lambda r: stalled_broker(stall, r, stalls=2, stall_s=3.0)),
            ("stall-no-timeout", lambda r: stalled_broker(stall, r, stalls=2, stall_s=3.0,
                                                          ack_timeout_s=3600.0)),
            ("disk-clips", lambda r: full_disk(short, r, 100_000)),
            ("disk-nothing", lambda r: full_disk(short, r, 0)),
            ("credentials", lambda r: bad_credentials(short, r)),
        ]
        rows = []
        for name, run in scenarios:
            folder = root / name
            folder.mkdir()
            rows.append(run(folder))
            print(rows[-1].row(), flush=True)
        rows[3].scenario += " (no answer timeout: before)"
        write_results(rows, args.out)
        args.out.with_suffix(".md").write_text(markdown(rows, args))
        print(f"wrote {args.out} and {args.out.with_suffix('.md')}")
        # the no-timeout row is the "before" figure: it may lose events to the outbox at exit
        return 0 if all(row.ok for index, row in enumerate(rows) if index != 3) else 1
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
