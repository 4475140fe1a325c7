"""``asd-edge evaluate``: score a data set's test clips and report as the DCASE evaluator does.

    asd-edge evaluate --data DIR (--run RUN | --bundle MODELS/M
                                  | --system stats|bandenergy|autoencoder) --out REPORT
        [--variant concat|weighted|sections|attributes] [--weight W] [--backend knn|gmm]
        [--pooling mean|std|meanstd] [--machines M1,M2] [--threshold gamma|quantile]

``stats`` and ``bandenergy`` need no trained model; ``autoencoder`` trains the DCASE 2022
baseline on the training clips first (``--epochs``). ``--bundle`` scores through the deployed
path (the edge front end, ONNX Runtime, the bundle's scorers and ensemble) and decides with the
bundle's own thresholds; the bundle fixes variant, backend and pooling. A run of ``--objective
anp`` is scored by ANP-Boot (``--partitions``, ``--seed``; see training/anp.py). torch is
imported only inside ``run``.
"""

from __future__ import annotations

import argparse
import logging

from edge.errors import BadInput
from edge.scoring.spectral import SPECTRAL_SYSTEMS

logger = logging.getLogger(__name__)

SYSTEMS = (*SPECTRAL_SYSTEMS, "autoencoder")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, help="data set in the DCASE layout")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--run", help="a training run folder (asd-edge train --out RUN)")
    source.add_argument("--bundle", metavar="MODELS/M",
                        help="an exported bundle folder (asd-edge export): the deployed path")
    source.add_argument("--system", choices=SYSTEMS, help="a system that needs no run")
    parser.add_argument("--out", required=True, help="report folder to write")
    parser.add_argument("--machines", default="all", help="comma list of machine types or all")
    parser.add_argument("--variant", default="concat",
                        choices=("concat", "weighted", "sections", "attributes"))
    parser.add_argument("--weight", type=float, default=0.5,
                        help="w of the weighted variant: w * d_S + (1 - w) * d_A")
    parser.add_argument("--backend", default="knn", choices=("knn", "gmm"))
    parser.add_argument("--pooling", default="mean", choices=("mean", "std", "meanstd"))
    parser.add_argument("--k", type=int, default=1, help="neighbours of the knn backend")
    parser.add_argument("--source-centres", type=int, default=None,
                        help="replace source references by this many k-means centres")
    parser.add_argument("--threshold", default="gamma", choices=("gamma", "quantile"))
    parser.add_argument("--quantile", type=float, default=0.9,
                        help="gamma quantile, or 1 - false-alarm rate for 'quantile'")
    parser.add_argument("--epochs", type=int, default=100, help="autoencoder epochs")
    parser.add_argument("--seed", type=int, default=0,
                        help="autoencoder seed; the ANP's partitions")
    parser.add_argument("--partitions", type=int, default=8,
                        help="ANP runs: random context/target partitions per patch (Boot)")
    parser.add_argument("--explain", action="store_true",
                        help="add explanations of every test clip to results.json")
    parser.add_argument("--explain-clip", metavar="NAME",
                        help="test clip to plot with --explain (default: the top-scoring one)")
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG plots")


def run(args: argparse.Namespace) -> int:
    from edge.dataset import scan
    from edge.scoring.thresholds import ThresholdConfig
    from training.evaluate.report import write_report
    from training.evaluate.systems import score_embedder, score_spectral

    if args.partitions < 1:
        raise BadInput(f"--partitions {args.partitions}: give at least 1")
    if not 0.0 < args.quantile < 1.0:
        raise BadInput(f"--quantile {args.quantile} must lie strictly between 0 and 1")
    dataset = scan(args.data)
    wanted = args.machines.split(",") if args.machines != "all" else ["all"]
    machines = dataset.require_machines(wanted)
    results = []
    extra: dict = {"data": str(args.data), "run": args.run}
    if args.bundle:
        from edge.bundle.load import load_bundle
        from training.evaluate.systems import score_bundle

        bundle = load_bundle(args.bundle, device="cpu")
        if args.machines != "all" and machines != [bundle.machine]:
            raise BadInput(f"--machines {args.machines}: bundle {args.bundle} is for "
                           f"{bundle.machine} only; drop --machines or pass {bundle.machine}")
        results.append(score_bundle(dataset, bundle))
        extra.update(bundle=str(args.bundle), thresholds={
            "from": "bundle", "sections": bundle.manifest.model_dump(mode="json")["sections"]})
    elif args.run:
        from training.anp import is_anp_checkpoint, load_anp_run
        from training.checkpoint import load_checkpoint
        from training.evaluate.systems import score_anp
        from training.infer import load_run

        anp = is_anp_checkpoint(load_checkpoint(args.run))
        loaded = load_anp_run(args.run) if anp else load_run(args.run)
        known = list(loaded.machines)
        usable = [m for m in machines if m in known]
        if not usable:
            raise BadInput(f"run {args.run} was trained on {', '.join(known)} but {args.data} "
                           f"holds {', '.join(machines)}; evaluate on data of the run's machine "
                           "types or train a run on these")
        skipped = sorted(set(machines) - set(usable))
        if skipped and args.machines != "all":
            raise BadInput(f"run {args.run} was not trained on {', '.join(skipped)} (it knows "
                           f"{', '.join(known)}); drop them from --machines")
        if anp:
            logger.info("%s is an ANP run: --variant, --backend, --pooling do not apply",
                        args.run)
            results += [score_anp(dataset, machine, loaded, "run:anp", args.partitions,
                                  args.seed) for machine in usable]
        for machine in usable if not anp else []:
            results.append(score_embedder(
                dataset, machine, loaded, f"run:{args.variant}", variant=args.variant,
                weight=args.weight, backend=args.backend, pooling=args.pooling,
                source_centres=args.source_centres, k=args.k))
    elif args.system == "autoencoder":
        from training.autoencoder import AutoencoderConfig, score_autoencoder

        config = AutoencoderConfig(epochs=args.epochs, seed=args.seed)
        for machine in machines:
            results.append(score_autoencoder(dataset, machine, config))
    else:
        for machine in machines:
            results.append(score_spectral(dataset, machine, args.system, backend=args.backend))
    if args.explain:
        from training.evaluate.explain_report import add_explanations

        add_explanations(dataset, results, args.out, clip_name=args.explain_clip,
                         plot=not args.no_plots)
    thresholds = ThresholdConfig(method=args.threshold, quantile=args.quantile)
    report = write_report(args.out, results, thresholds, plots=not args.no_plots,
                          extra=extra)
    print(f"official score {100 * report['summary']['official']:.2f} "
          f"(AUC source {100 * report['summary']['auc_source']:.2f}, "
          f"AUC target {100 * report['summary']['auc_target']:.2f}, "
          f"pAUC {100 * report['summary']['pauc']:.2f}) -> {args.out}")
    return 0
