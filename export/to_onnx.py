"""``asd-edge export``: the command's flags, parsed into ``ExportOptions`` for the library.

    python export/to_onnx.py --run RUN --machine M --data DIR --out MODELS
    asd-edge export          --run RUN --machine M --data DIR --out MODELS     (the same)

What it does, and that nothing is written to MODELS unless every step passes, is
``export.pipeline.export_bundle``: the run -> ONNX with parity (``export.onnx_models``), an ANP
member -> ``anp.onnx`` with its own parity (``export.anp_onnx``), the bundle
(``export.build``).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edge.bundle.calibrate import DEFAULT_FALSE_ALARMS_PER_DAY  # noqa: E402
from export.build import ExportOptions  # noqa: E402
from export.onnx_models import ANP_MAX_ABS_DIFF, MAX_ABS_DIFF, MIN_COSINE, OPSET  # noqa: E402


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run", required=True, help="training run folder (asd-edge train --out)")
    parser.add_argument("--machine", required=True, help="machine type to export")
    parser.add_argument("--data", required=True,
                        help="data set in the DCASE layout: its normal training clips become "
                             "the references, its real clips check parity")
    parser.add_argument("--out", required=True, help="models folder; writes OUT/<machine>/")
    parser.add_argument("--weights", choices=("averaged", "last"), default="averaged")
    parser.add_argument("--selection", default=None, metavar="FILE",
                        help="selection.json of 'python -m training.evaluate.select' (or its "
                             "folder): ships the system it chose for --machine; default "
                             "RUN/selection.json when present")
    parser.add_argument("--system", default=None,
                        help="override the selection: embedding, stats, bandenergy, anp, or "
                             "an ensemble like embedding+stats (equal weights); without a "
                             "selection the default is embedding")
    parser.add_argument("--anp-run", default=None, metavar="RUN",
                        help="run folder of the attentive neural process (asd-edge train "
                             "--objective anp) for an anp member; default: the run the "
                             "selection scored it from")
    parser.add_argument("--variant", default=None,
                        choices=("concat", "weighted", "sections", "attributes"),
                        help="with --system embedding (default concat)")
    parser.add_argument("--backend", default=None, choices=("knn", "gmm"),
                        help="backend of the embedding member(s); default: the selection's, "
                             "else knn")
    parser.add_argument("--pooling", default=None, choices=("mean", "std", "meanstd"),
                        help="with --system embedding (default mean)")
    parser.add_argument("--threshold-quantile", type=float, default=0.9,
                        help="per-section threshold: this quantile of a gamma fit to "
                             "out-of-sample normal scores (0.9 as the DCASE baseline)")
    thresholds = parser.add_mutually_exclusive_group()
    thresholds.add_argument("--false-alarms-per-day", type=float,
                            default=DEFAULT_FALSE_ALARMS_PER_DAY,
                            help="set the alarm thresholds for this false-alarm rate per stream "
                                 "(an upper confidence bound; default 0.0333 = one a month), "
                                 "from the references streamed out of sample (docs/ALARMS.md)")
    thresholds.add_argument("--clip-quantile-thresholds", action="store_true",
                            help="alarm at the DCASE clip-quantile thresholds instead (no "
                                 "false-alarm promise; for comparisons)")
    parser.add_argument("--opset", type=int, default=OPSET)
    parser.add_argument("--max-abs-diff", type=float, default=MAX_ABS_DIFF)
    parser.add_argument("--min-cosine", type=float, default=MIN_COSINE)
    parser.add_argument("--anp-max-abs-diff", type=float, default=ANP_MAX_ABS_DIFF,
                        help="ANP parity limit on the per-partition NLL, nats")


def options_from(args: argparse.Namespace) -> ExportOptions:
    """The parsed flags as the library's typed options."""
    return ExportOptions(
        run=args.run, machine=args.machine, data=args.data, out=args.out, weights=args.weights,
        selection=args.selection, system=args.system, anp_run=args.anp_run,
        variant=args.variant, backend=args.backend, pooling=args.pooling,
        threshold_quantile=args.threshold_quantile,
        false_alarms_per_day=None if args.clip_quantile_thresholds
        else args.false_alarms_per_day, opset=args.opset,
        max_abs_diff=args.max_abs_diff, min_cosine=args.min_cosine,
        anp_max_abs_diff=args.anp_max_abs_diff)


def run(args: argparse.Namespace) -> int:
    from export.pipeline import export_bundle

    options = options_from(args)
    result = export_bundle(options)
    parity = result.parity
    print(f"parity on {parity.patches} patches: max |diff| {parity.max_abs_diff:.2e} "
          f"(limit {options.max_abs_diff:.0e}), min cosine {parity.min_cosine:.7f} "
          f"(limit {options.min_cosine})")
    if result.anp_parity is not None:
        anp = result.anp_parity
        print(f"ANP parity on {anp.patches} patches x {result.partitions} partitions: max "
              f"|diff| {anp.max_abs_diff:.2e} nats (limit {anp.limit:.0e})")
    print(f"bundle {result.bundle} written in {result.seconds:.1f} s "
          f"({result.size_bytes / 1e6:.2f} MB); check it with "
          f"'asd-edge bundle verify {result.bundle}'")
    return 0


def main(argv: list[str] | None = None) -> int:
    from edge.cli import main as cli_main

    return cli_main(["export", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    sys.exit(main())
