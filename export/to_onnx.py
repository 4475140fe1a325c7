"""Export a trained run to ONNX and write the model bundle the edge loads.

    python export/to_onnx.py --run RUN --machine M --data DIR --out MODELS
    asd-edge export          --run RUN --machine M --data DIR --out MODELS     (the same)

Steps, and nothing is written to MODELS unless all of them pass:

1. the averaged weights of RUN -> ONNX (opset 18, input ``spectrogram`` (batch, F, T), outputs
   ``section_embedding`` (batch, D_S) and ``attribute_embedding`` (batch, D_A), dynamic batch,
   weights inside the one file); ``onnx.checker`` passes;
2. parity: PyTorch and ONNX Runtime embed patches of real clips of the data set; the largest
   absolute difference must stay under ``--max-abs-diff`` (1e-4) and the smallest cosine
   similarity over ``--min-cosine`` (0.99999); a failing export says by how much;
3. when the system shipped has an ``anp`` member (the attentive neural process, from the
   selection or ``--system ...+anp`` with ``--anp-run RUN``): the ANP run -> ``anp.onnx`` with
   its ANP-Boot partitions baked in, and its own parity (export/anp_onnx.py);
4. the bundle (export/build.py): references, thresholds and manifest, computed through ONNX
   Runtime and the edge's own front end.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edge.errors import BadInput, RuntimeFailure  # noqa: E402
from edge.features import patches, spectrogram  # noqa: E402
from edge.inference.onnx_runtime import INPUT_NAME, OUTPUT_NAMES, OnnxEmbedder  # noqa: E402

logger = logging.getLogger(__name__)

OPSET = 18
MAX_ABS_DIFF = 1e-4
MIN_COSINE = 0.99999


@dataclass(frozen=True)
class Parity:
    """How closely ONNX Runtime reproduces PyTorch on the same patches."""

    patches: int
    max_abs_diff: float
    min_cosine: float

    def ok(self, max_abs_diff: float = MAX_ABS_DIFF, min_cosine: float = MIN_COSINE) -> bool:
        return self.max_abs_diff <= max_abs_diff and self.min_cosine >= min_cosine

    def as_dict(self) -> dict:
        return {"patches": self.patches, "max_abs_diff": self.max_abs_diff,
                "min_cosine": self.min_cosine,
                "limits": {"max_abs_diff": MAX_ABS_DIFF, "min_cosine": MIN_COSINE}}


def export_patch_model(module, n_bins: int, patch_frames: int, output_names: list[str],
                       path: Path, opset: int = OPSET) -> Path:
    """Write a torch ``module`` over patches (batch, F, T) to ``path`` as one ONNX file: input
    ``spectrogram`` with a dynamic batch axis, the named outputs, weights inside the file,
    ``onnx.checker`` passed."""
    import inspect

    import onnx
    import torch

    example = torch.zeros(2, n_bins, patch_frames)
    batch = torch.export.Dim("batch", min=1, max=65536)
    argument = next(iter(inspect.signature(module.forward).parameters))
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(module.eval().cpu(), (example,), str(path), input_names=[INPUT_NAME],
                          output_names=output_names, opset_version=opset, dynamo=True,
                          external_data=False, verbose=False,
                          dynamic_shapes={argument: {0: batch}})
    onnx.checker.check_model(onnx.load(str(path)), full_check=True)
    return path


def export_model(run, path: Path, opset: int = OPSET) -> Path:
    """Write the run's embedding network (``run.model``) to ``path`` as one ONNX file."""
    from training.model import EmbeddingModel

    return export_patch_model(EmbeddingModel(run.model), run.front_end.n_bins,
                              run.patching.patch_frames, list(OUTPUT_NAMES), path, opset)


def check_parity(run, embedder: OnnxEmbedder, clip_patches: np.ndarray) -> Parity:
    """Embed (P, F, T) patches with PyTorch (``run.embed``) and ONNX Runtime; compare."""
    torch_outputs = run.embed(clip_patches)
    onnx_outputs = embedder.embed(clip_patches)
    max_abs, min_cos = 0.0, 1.0
    for expected, got in zip(torch_outputs, onnx_outputs, strict=True):
        if expected.shape[1] == 0:
            continue
        max_abs = max(max_abs, float(np.abs(expected - got).max()))
        cos = (expected * got).sum(1) / np.maximum(
            np.linalg.norm(expected, axis=1) * np.linalg.norm(got, axis=1), 1e-12)
        min_cos = min(min_cos, float(cos.min()))
    return Parity(int(clip_patches.shape[0]), max_abs, min_cos)


def parity_patches(run, clips, max_clips: int = 4) -> np.ndarray:
    """Patches (P, F, T) of up to ``max_clips`` real clips, through the edge front end."""
    from edge.audio import read_audio

    out = [patches(spectrogram(read_audio(c.path), run.front_end), run.patching.patch_frames,
                   run.patching.patch_hop) for c in clips[:max_clips]]
    out = [p for p in out if p.shape[0]]
    if not out:
        raise BadInput("no clip is long enough for one patch; parity needs real clips")
    return np.concatenate(out).astype(np.float32)


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
    parser.add_argument("--false-alarms-per-day", type=float, default=None,
                        help="set the alarm thresholds for this false-alarm rate per stream "
                             "(an upper confidence bound, e.g. 0.0333 = one a month), from the "
                             "references streamed out of sample (docs/ALARMS.md); default: "
                             "the clip-quantile thresholds")
    parser.add_argument("--opset", type=int, default=OPSET)
    parser.add_argument("--max-abs-diff", type=float, default=MAX_ABS_DIFF)
    parser.add_argument("--min-cosine", type=float, default=MIN_COSINE)
    parser.add_argument("--anp-max-abs-diff", type=float, default=1e-3,
                        help="ANP parity limit on the per-partition NLL, nats")


def run(args: argparse.Namespace) -> int:
    import tempfile

    from edge.dataset import scan
    from export.build import build_bundle, read_choice
    from training.infer import load_run

    started = time.perf_counter()
    loaded = load_run(args.run, weights=args.weights)
    if args.machine not in loaded.machines:
        raise BadInput(f"--machine {args.machine}: run {args.run} was trained on "
                       f"{', '.join(loaded.machines)}; export one of those or train on "
                       f"{args.machine}")
    dataset = scan(args.data)
    dataset.require_machines([args.machine])
    clips = dataset.select(machine=args.machine, split="train", label="normal")
    if not clips:
        raise BadInput(f"{args.data}: no normal training clips of {args.machine}; the bundle's "
                       "references come from them")
    choice = read_choice(args)  # a choice export cannot ship fails before any work
    with tempfile.TemporaryDirectory(prefix="asd-export-") as tmp:
        onnx_path = export_model(loaded, Path(tmp) / "model.onnx", args.opset)
        embedder = OnnxEmbedder(onnx_path, loaded.front_end, loaded.patching, device="cpu")
        parity = check_parity(loaded, embedder, parity_patches(loaded, clips))
        print(f"parity on {parity.patches} patches: max |diff| {parity.max_abs_diff:.2e} "
              f"(limit {args.max_abs_diff:.0e}), min cosine {parity.min_cosine:.7f} "
              f"(limit {args.min_cosine})")
        if not parity.ok(args.max_abs_diff, args.min_cosine):
            raise RuntimeFailure(
                f"ONNX parity failed: max |diff| {parity.max_abs_diff:.2e} vs limit "
                f"{args.max_abs_diff:.0e}, min cosine {parity.min_cosine:.7f} vs limit "
                f"{args.min_cosine}; nothing was written")
        anp = None
        anp_member = next((m for m in choice.members if m.kind == "anp"), None)
        if anp_member is not None:
            from export.anp_onnx import export_anp_member

            assert anp_member.run is not None  # read_choice made sure
            anp = export_anp_member(anp_member.run, args.machine, loaded.front_end,
                                    loaded.patching, parity_patches(loaded, clips), Path(tmp),
                                    anp_member.partitions, anp_member.seed, args.weights,
                                    args.opset, args.anp_max_abs_diff)
        bundle = build_bundle(loaded, args, dataset, onnx_path, embedder, parity, choice, anp)
    elapsed = time.perf_counter() - started
    size = sum(p.stat().st_size for p in bundle.rglob("*") if p.is_file())
    print(f"bundle {bundle} written in {elapsed:.1f} s ({size / 1e6:.2f} MB); check it with "
          f"'asd-edge bundle verify {bundle}'")
    return 0


def main(argv: list[str] | None = None) -> int:
    from edge.cli import main as cli_main

    return cli_main(["export", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    sys.exit(main())
