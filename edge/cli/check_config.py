"""``asd-edge check-config YAML``: check a daemon config and what it names on this box (files,
microphones, bundles and their sections, password and TLS files, state folders); OK with a
summary, or each error with its line or field (exit 2). ``--syntax-only``: the form alone."""

from __future__ import annotations

import argparse
import json
import sys

from edge.config import ConfigError, load_config
from edge.preflight import preflight


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="the daemon's YAML config (e.g. deploy/edge.yaml)")
    parser.add_argument("--json", action="store_true",
                        help="print one JSON document instead: ok, errors (line, where, "
                             "message), summary, the checked config; same exit codes")
    parser.add_argument("--syntax-only", action="store_true",
                        help="check the file's form only, not that its files, devices, "
                             "bundles and folders are here (a config checked away from its box)")


def run(args: argparse.Namespace) -> int:
    if args.json:
        return _run_json(args.config, args.syntax_only)
    try:
        config = load_config(args.config)
    except ConfigError as err:
        print(f"{args.config}: {len(err.problems)} error(s)", file=sys.stderr)
        for line in err.lines():
            print(f"  {line}", file=sys.stderr)
        return 2
    findings = [] if args.syntax_only else preflight(config)
    if findings:
        print(f"{args.config}: the form is right, but {len(findings)} thing(s) it names are "
              "not right on this machine:", file=sys.stderr)
        for finding in findings:
            print(f"  {finding.line(args.config)}", file=sys.stderr)
        return 2
    print(f"{args.config}: OK" + (" (form only)" if args.syntax_only else
                                  " (files, devices, bundles and folders checked)"))
    for line in config.summary():
        print(line)
    return 0


def _run_json(path: str, syntax_only: bool) -> int:
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
    findings = [] if syntax_only else preflight(config)
    errors = [{"line": None, "where": f.where, "message": f.message} for f in findings]
    print(json.dumps({"config": path, "ok": not findings, "errors": errors,
                      "lines": [f.line(path) for f in findings],
                      "checked": "form" if syntax_only else "form and parts",
                      "summary": config.summary(),
                      "settings": config.model_dump(mode="json")}, indent=2))
    return 2 if findings else 0
