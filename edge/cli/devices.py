"""``asd-edge devices``: the audio inputs PortAudio sees (what ``--mic`` can name)."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict

from edge.capture.devices import find_input_device, list_input_devices


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--find", metavar="DEVICE",
                        help="check what --mic DEVICE (an index or part of a name) would open")


def run(args: argparse.Namespace) -> int:
    devices = list_input_devices()  # RuntimeFailure naming the fix when PortAudio is missing
    if args.find is not None:
        device = find_input_device(args.find, devices)  # BadInput listing the inputs
        print(json.dumps(asdict(device)) if args.json else f"--mic {args.find!r} opens "
              f"{device.describe()}")
        return 0
    if args.json:
        print(json.dumps([asdict(d) for d in devices], indent=2))
        return 0
    if not devices:
        print("No audio input devices found: PortAudio sees no sound card (check that one is "
              "connected, that the user is in the 'audio' group, and 'arecord -l').")
        return 0
    print(f"{'index':>5}  {'channels':>8}  {'default Hz':>10}  name (host API)")
    for d in devices:
        print(f"{d.index:>5}  {d.channels:>8}  {d.default_rate:>10.0f}  {d.name} ({d.host_api})")
    print("\nUse --mic INDEX or --mic NAME (a unique part of the name is enough).")
    return 0
