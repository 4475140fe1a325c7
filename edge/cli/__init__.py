"""The ``asd-edge`` console script.

Each command is a module with ``add_arguments(parser)`` and ``run(args) -> int``, imported only
when it is used (so ``edge`` never imports torch: the training commands live in ``training`` and
``export`` and import torch inside ``run``). Errors: ``BadInput`` -> one line, exit 2;
``RuntimeFailure`` -> one line, exit 1; no traceback unless ``--debug``. The global flags
(``-v``/``--verbose``, ``--debug``, ``--progress``) go before or after the command;
``--version`` prints the installed package's version. Progress bars (``edge.progress``) show on
stderr when it is a terminal, or with ``--progress``; never under ``--json``.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from edge import __version__, progress
from edge.errors import AsdEdgeError, BadInput

logger = logging.getLogger("asd_edge")

# name -> (module, one-line help, extra the module needs or None)
COMMANDS: dict[str, tuple[str, str, str | None]] = {
    "synth": ("edge.cli.synth", "write synthetic machine sounds in the DCASE layout", None),
    "data": ("edge.cli.data", "show what a data set in the DCASE layout holds", None),
    "devices": ("edge.cli.devices", "list the audio input devices --mic can name", None),
    "check-config": ("edge.cli.check_config", "check a daemon config file (YAML)", None),
    "train": ("training.cli_train", "train a surrogate-task model on normal clips", "train"),
    "evaluate": ("training.evaluate.cli", "score test clips and report the DCASE metric", "train"),
    "evaluate-streams": ("edge.cli.evaluate_streams",
                         "replay labelled recordings through the daemon: false alarms, "
                         "faults caught, delays (= evaluate --streams)", None),
    "select": ("training.evaluate.select",
               "choose the best system or ensemble per machine type (dev/held-out)", "train"),
    "export": ("export.to_onnx", "export a run to ONNX and write the model bundle", "train"),
    "bundle": ("edge.cli.bundle", "check a model bundle (bundle verify MODELS/M)", None),
    "run": ("edge.cli.run", "the daemon: listen, score, raise alarms over MQTT", None),
    "enroll": ("edge.cli.enroll", "add normal sound of a unit to its bundle", None),
    "demo": ("edge.cli.demo", "the whole pipeline on synthetic sounds, in a few minutes", None),
}

EXTRA_HINT = {
    "train": "pip install 'asd-edge[train]' (with -c constraints.txt in development)",
    "cpu": "pip install 'asd-edge[cpu]' (or 'asd-edge[gpu]' on a CUDA machine)",
}


def _missing_package(name: str, err: ModuleNotFoundError) -> BadInput:
    """A missing optional dependency (torch, onnx, ...) as a one-line error with the fix."""
    missing = err.name or "?"
    if missing.split(".")[0] in ("edge", "training", "export"):
        raise err  # our own module missing is a bug, not a user's mistake
    hint = EXTRA_HINT.get(COMMANDS[name][2] or "", f"pip install {missing}")
    return BadInput(f"'asd-edge {name}' needs the Python package {missing!r}, which is not "
                    f"installed: {hint}")


def _load(name: str):
    try:
        return importlib.import_module(COMMANDS[name][0])
    except ModuleNotFoundError as err:
        raise _missing_package(name, err) from err


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="asd-edge",
        description="Anomalous sound detection for machines: train, export, run on the edge.")
    parser.add_argument("--version", action="version", version=f"asd-edge {__version__}")
    _add_global_flags(parser, default=False)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_module, help_text, _extra) in COMMANDS.items():
        # The global flags also after the command (`asd-edge devices -v`); SUPPRESS keeps a
        # flag given before the command from being reset by the command's default.
        _add_global_flags(sub.add_parser(name, help=help_text, add_help=False,
                                         allow_abbrev=False), default=argparse.SUPPRESS)
    return parser


def _add_global_flags(parser: argparse.ArgumentParser, default: object) -> None:
    parser.add_argument("-v", "--verbose", action="store_true", default=default,
                        help="debug logging")
    parser.add_argument("--debug", action="store_true", default=default,
                        help="show tracebacks on errors")
    parser.add_argument("--progress", action="store_true", default=default,
                        help="progress bars on stderr even when it is not a terminal "
                             "(default: only on a terminal, never with --json)")


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    # First pass: global flags and the command name; the command's own flags come next.
    known, rest = parser.parse_known_args(argv)
    logging.basicConfig(level=logging.DEBUG if known.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not known.command:
        parser.print_help()
        return 2
    if known.command == "evaluate" and any(a == "--streams" or a.startswith("--streams=")
                                           for a in rest):
        known.command = "evaluate-streams"  # the edge path: needs no torch, no --data
    try:
        module = _load(known.command)
        sub = argparse.ArgumentParser(prog=f"asd-edge {known.command}",
                                      description=COMMANDS[known.command][1],
                                      epilog="global options, before or after the command: "
                                             "-v/--verbose (debug logging), --debug "
                                             "(tracebacks on errors), --progress (progress "
                                             "bars also when stderr is not a terminal)")
        module.add_arguments(sub)
        args = sub.parse_args(rest)
        args.debug = known.debug
        progress.configure(progress.wanted(known.progress, bool(getattr(args, "json", False))))
        try:
            return int(module.run(args) or 0)
        except ModuleNotFoundError as err:  # optional packages are imported where used
            raise _missing_package(known.command, err) from err
        finally:
            progress.configure(False)  # a caller in the same process (tests) starts off again
    except AsdEdgeError as err:
        if known.debug:
            raise
        print(f"asd-edge {known.command}: error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
