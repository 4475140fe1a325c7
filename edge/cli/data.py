"""``asd-edge data DIR``: what a data set holds, and anything odd about it."""

from __future__ import annotations

import argparse
import json
from collections import Counter, defaultdict

from edge.audio import SAMPLE_RATE, audio_info
from edge.dataset import scan
from edge.errors import BadInput


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dir", help="data-set root in the DCASE layout")
    parser.add_argument("--json", action="store_true", help="print a JSON summary instead")
    parser.add_argument("--no-headers", action="store_true",
                        help="skip reading audio headers (faster on large sets)")


def summarize(root: str, read_headers: bool = True) -> dict:
    """A JSON-able summary of a data set: counts, attributes, durations, rates, problems."""
    dataset = scan(root)
    summary: dict = {"root": str(dataset.root), "clips": len(dataset.clips), "machines": {}}
    problems = list(dataset.problems)
    for machine in dataset.machines:
        clips = dataset.select(machine=machine)
        counts: Counter = Counter()
        attributes: dict[str, set[str]] = defaultdict(set)
        durations: Counter = Counter()
        rates: Counter = Counter()
        channels: Counter = Counter()
        for clip in clips:
            key = (f"section_{clip.section:02d}", clip.domain or "?", clip.split,
                   clip.label or "unlabelled")
            counts["/".join(key)] += 1
            for k, v in clip.attributes:
                attributes[k].add(v)
            if read_headers:
                try:
                    info = audio_info(clip.path)
                except BadInput as err:
                    problems.append(str(err))
                    continue
                durations[round(info.duration, 2)] += 1
                rates[info.sample_rate] += 1
                channels[info.channels] += 1
                if info.frames == 0:
                    problems.append(f"{clip.path}: empty (0 samples)")
                if info.sample_rate != SAMPLE_RATE:
                    problems.append(f"{clip.path}: {info.sample_rate} Hz (resampled to "
                                    f"{SAMPLE_RATE} Hz on reading; refused below)")
                if info.channels != 1:
                    problems.append(f"{clip.path}: {info.channels} channels (channel 0 is used)")
        for section in dataset.sections(machine):
            for domain in ("source", "target"):
                if not dataset.select(machine=machine, section=section, domain=domain,
                                      split="train"):
                    problems.append(f"{machine} section_{section:02d}: no {domain}-domain "
                                    "training clips")
            if not any(c.label == "anomaly" for c in dataset.select(machine=machine,
                                                                      section=section)):
                problems.append(f"{machine} section_{section:02d}: no labelled anomalous clips "
                                "(evaluation needs some)")
        summary["machines"][machine] = {
            "sections": [f"section_{s:02d}" for s in dataset.sections(machine)],
            "counts": dict(sorted(counts.items())),
            "attributes": {k: sorted(v) for k, v in sorted(attributes.items())},
            "durations_s": {str(k): n for k, n in sorted(durations.items())},
            "sample_rates": {str(k): n for k, n in sorted(rates.items())},
            "channels": {str(k): n for k, n in sorted(channels.items())},
        }
    summary["problems"] = problems
    return summary


def run(args: argparse.Namespace) -> int:
    summary = summarize(args.dir, read_headers=not args.no_headers)
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    print(f"{summary['root']}: {summary['clips']} clips, "
          f"{len(summary['machines'])} machine type(s)")
    for machine, info in summary["machines"].items():
        print(f"\n{machine}  ({', '.join(info['sections'])})")
        for key, n in info["counts"].items():
            print(f"  {key:<45} {n:>6}")
        for key, values in info["attributes"].items():
            shown = ", ".join(values[:12]) + (" ..." if len(values) > 12 else "")
            print(f"  attribute {key}: {shown}")
        if info["durations_s"]:
            print("  durations (s): " + ", ".join(f"{k} x{n}" for k, n in
                                                  info["durations_s"].items()))
            print("  sample rates (Hz): " + ", ".join(f"{k} x{n}" for k, n in
                                                      info["sample_rates"].items()))
    if summary["problems"]:
        print(f"\n{len(summary['problems'])} thing(s) to look at:")
        for problem in summary["problems"][:50]:
            print(f"  - {problem}")
        if len(summary["problems"]) > 50:
            print(f"  ... and {len(summary['problems']) - 50} more (--json lists all)")
    return 0
