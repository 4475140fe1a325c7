"""``asd-edge train``: train a surrogate-task model on normal clips (torch; the ``train`` extra).

torch is imported only inside ``run`` so ``asd-edge --help`` works without it.
"""

from __future__ import annotations

import argparse

from edge.errors import BadInput

OBJECTIVE_CHOICES = ("disentangled", "mtl", "arcface", "sections", "anp")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, help="data-set root in the DCASE layout")
    parser.add_argument("--machines", required=True,
                        help="comma-separated machine types (fan,gearbox) or 'all'")
    parser.add_argument("--out", required=True, help="run folder (checkpoint, metrics, curves)")
    parser.add_argument("--objective", default="disentangled", choices=OBJECTIVE_CHOICES,
                        help="disentangled (default): z_S for sections, z_A for attributes; "
                             "mtl: one embedding for both; arcface: angular margin on "
                             "sections; sections: plain section classification; anp: "
                             "the attentive neural process baseline (training/anp.py)")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3, help="peak learning rate (AdamW)")
    parser.add_argument("--weight-decay", type=float, default=1e-4)
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--init", metavar="RUN",
                        help="fine-tune from a run folder (e.g. one pre-trained on --machines all)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out")
    parser.add_argument("--cache-dir",
                        help="spectrogram cache (default: .asd-edge-cache beside --out)")
    parser.add_argument("--val-fraction", type=float, default=0.1,
                        help="share of each section/domain's normal clips held out (0.1)")
    parser.add_argument("--balance", type=float, default=0.5,
                        help="target-domain sampling exponent: 0 natural, 1 equal domains")
    parser.add_argument("--average-last", type=int,
                        help="average the weights of the last K epochs (default: a quarter "
                             "of the epochs, 2 to 5)")
    parser.add_argument("--section-dim", type=int, default=64, help="D_S")
    parser.add_argument("--attribute-dim", type=int, default=64, help="D_A (disentangled)")
    parser.add_argument("--arcface-scale", type=float, default=16.0)
    parser.add_argument("--arcface-margin", type=float, default=0.2, help="radians")
    parser.add_argument("--front-end", default="log-mel", choices=("log-linear", "log-mel"),
                        help="the network's spectrogram: log-mel, 128 bands (default; best on "
                             "the synthetic sets, docs/RESULTS.md) or log-linear, 500 bins")
    parser.add_argument("--patch-frames", type=int, default=64,
                        help="frames per input patch, 32-256 (default 64 = 2.05 s); the bundle "
                             "and the edge take it from the run")
    parser.add_argument("--allow-no-target", action="store_true",
                        help="train even where a section has no target-domain clips")
    parser.add_argument("--mix", type=float, default=0.0, metavar="P",
                        help="mix another training clip into this share of the training "
                             "patches, as plant sounds mix into a unit's (training/augment.py); "
                             "default 0 (docs/RESULTS.md: what it did)")
    parser.add_argument("--mix-snr", default="0,20", metavar="LO,HI",
                        help="with --mix: signal-to-interference range in dB (default 0,20)")
    parser.add_argument("--spectrum-branch", action="store_true",
                        help="a second branch on each patch's high-resolution spectrum (513 "
                             "linear bins beside the 128 mel bands; training/model.py); "
                             "docs/RESULTS.md: what it did")
    parser.add_argument("--subclusters", type=int, default=0, metavar="K",
                        help="sub-cluster AdaCos classifiers, K fixed centres per section and "
                             "attribute value (training/model.py); default 0: softmax "
                             "(docs/RESULTS.md: what it did)")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def _snr_range(text: str) -> tuple[float, float]:
    try:
        low, high = (float(x) for x in text.split(","))
    except ValueError:
        raise BadInput(f"--mix-snr {text!r}: give two numbers in dB, low,high (e.g. 0,20)") \
            from None
    if not low <= high:
        raise BadInput(f"--mix-snr {text!r}: the low end must not be above the high end")
    return low, high


def run(args: argparse.Namespace) -> int:
    try:
        import torch
    except ModuleNotFoundError as err:
        raise BadInput("'asd-edge train' needs PyTorch: pip install 'asd-edge[train]'") from err
    from pydantic import ValidationError

    from training.loop import TrainConfig
    from training.train import train

    if args.threads:
        torch.set_num_threads(args.threads)
    machines = [m.strip() for m in args.machines.split(",") if m.strip()]
    if not machines:
        raise BadInput("--machines is empty; name machine types (fan,gearbox) or 'all'")
    try:
        config = TrainConfig(
            data=args.data, machines=machines, out=args.out, objective=args.objective,
            epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
            weight_decay=args.weight_decay, device=args.device, seed=args.seed,
            init=args.init, resume=args.resume, cache_dir=args.cache_dir,
            val_fraction=args.val_fraction, balance=args.balance,
            average_last=args.average_last, section_dim=args.section_dim,
            attribute_dim=args.attribute_dim, arcface_scale=args.arcface_scale,
            arcface_margin=args.arcface_margin, front_end=args.front_end,
            patch_frames=args.patch_frames,
            allow_no_target=args.allow_no_target, progress=not args.no_progress,
            mix_probability=args.mix, mix_snr_db=_snr_range(args.mix_snr),
            spectrum_branch=args.spectrum_branch, subclusters=args.subclusters)
    except ValidationError as err:
        first = err.errors()[0]
        raise BadInput(f"--{str(first['loc'][0]).replace('_', '-')} "
                       f"{first.get('input')!r}: {first['msg']}") from err
    path = train(config)
    print(f"checkpoint: {path}")
    return 0
