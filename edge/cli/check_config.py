"""``asd-edge check-config YAML``: check a daemon config; OK with a summary, or each error
with its line (exit 2)."""

from __future__ import annotations

import argparse
import sys

from edge.config import ConfigError, load_config


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="the daemon's YAML config (e.g. deploy/edge.yaml)")


def run(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config)
    except ConfigError as err:
        print(f"{args.config}: {len(err.problems)} error(s)", file=sys.stderr)
        for line in err.lines():
            print(f"  {line}", file=sys.stderr)
        return 2
    print(f"{args.config}: OK")
    for line in config.summary():
        print(line)
    return 0
