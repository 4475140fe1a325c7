"""``asd-edge check-config YAML``: check a daemon config; OK with a summary, or each error
with its line (exit 2)."""

from __future__ import annotations

import argparse
import json
import sys

from edge.config import ConfigError, load_config


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="the daemon's YAML config (e.g. deploy/edge.yaml)")
    parser.add_argument("--json", action="store_true",
                        help="print one JSON document instead: ok, errors (line, where, "
                             "message), summary, the checked config; same exit codes")


def run(args: argparse.Namespace) -> int:
    if args.json:
        return _run_json(args.config)
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


def _run_json(path: str) -> int:
    """The same facts as the text output, as one JSON document on stdout (exit 0 or 2).
    A file that cannot be read at all stays a one-line error on stderr (exit 2)."""
    try:
        config = load_config(path)
    except ConfigError as err:
        errors = [{"line": line, "where": where, "message": message}
                  for line, where, message in err.problems]
        print(json.dumps({"config": path, "ok": False, "errors": errors, "lines": err.lines()},
                         indent=2))
        return 2
    print(json.dumps({"config": path, "ok": True, "errors": [], "summary": config.summary(),
                      "settings": config.model_dump(mode="json")}, indent=2))
    return 0
