"""Export a trained run and write the model bundle the edge loads: ``export_bundle(options)``.

Steps, and nothing is written to ``options.out`` unless all of them pass:

1. the averaged weights of the run -> ONNX (``export.onnx_models``: opset 18, input
   ``spectrogram`` (batch, F, T), outputs ``section_embedding`` (batch, D_S) and
   ``attribute_embedding`` (batch, D_A), dynamic batch, weights inside the one file);
   ``onnx.checker`` passes;
2. parity: PyTorch and ONNX Runtime embed patches of real clips of the data set; the largest
   absolute difference must stay under ``max_abs_diff`` (1e-4) and the smallest cosine
   similarity over ``min_cosine`` (0.99999); a failing export says by how much;
3. when the system shipped has an ``anp`` member (the attentive neural process, from the
   selection or ``--system ...+anp`` with ``--anp-run RUN``): the ANP run -> ``anp.onnx`` with
   its ANP-Boot partitions baked in, and its own parity (``export.anp_onnx``);
4. the bundle (``export.build``): references, thresholds and manifest, computed through ONNX
   Runtime and the edge's own front end.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from edge.dataset import scan
from edge.errors import BadInput, RuntimeFailure
from edge.inference.onnx_runtime import OnnxEmbedder
from export.build import AnpChoice, ExportOptions, build_bundle, read_choice
from export.onnx_models import AnpParity, Parity, check_parity, export_model, parity_patches


@dataclass
class ExportResult:
    """What ``export_bundle`` wrote and measured."""

    bundle: Path             # OUT/<machine>
    parity: Parity           # of the embedding network
    anp_parity: AnpParity | None  # of the anp member, when the system has one
    partitions: int          # the anp member's partitions (0 without one)
    seconds: float
    size_bytes: int


def export_bundle(options: ExportOptions) -> ExportResult:
    """Export ``options.run`` for ``options.machine`` and write ``options.out/<machine>``.

    ``BadInput`` for a run, machine, data set or choice that cannot be shipped (before any
    work where it can be told), ``RuntimeFailure`` for a failed parity; nothing is written
    then."""
    from training.infer import load_run

    started = time.perf_counter()
    loaded = load_run(options.run, weights=options.weights)
    if options.machine not in loaded.machines:
        raise BadInput(f"--machine {options.machine}: run {options.run} was trained on "
                       f"{', '.join(loaded.machines)}; export one of those or train on "
                       f"{options.machine}")
    dataset = scan(options.data)
    dataset.require_machines([options.machine])
    clips = dataset.select(machine=options.machine, split="train", label="normal")
    if not clips:
        raise BadInput(f"{options.data}: no normal training clips of {options.machine}; the "
                       "bundle's references come from them")
    choice = read_choice(options)  # a choice export cannot ship fails before any work
    with tempfile.TemporaryDirectory(prefix="asd-export-") as tmp:
        onnx_path = export_model(loaded, Path(tmp) / "model.onnx", options.opset)
        embedder = OnnxEmbedder(onnx_path, loaded.front_end, loaded.patching, device="cpu")
        parity = check_parity(loaded, embedder, parity_patches(loaded, clips))
        if not parity.ok(options.max_abs_diff, options.min_cosine):
            raise RuntimeFailure(
                f"ONNX parity failed: max |diff| {parity.max_abs_diff:.2e} vs limit "
                f"{options.max_abs_diff:.0e}, min cosine {parity.min_cosine:.7f} vs limit "
                f"{options.min_cosine}; nothing was written")
        anp = None
        anp_member = next((m for m in choice.members if isinstance(m, AnpChoice)), None)
        if anp_member is not None:
            from export.anp_onnx import export_anp_member

            assert anp_member.run is not None  # read_choice made sure
            anp = export_anp_member(anp_member.run, options.machine, loaded.front_end,
                                    loaded.patching, parity_patches(loaded, clips), Path(tmp),
                                    anp_member.partitions, anp_member.seed, options.weights,
                                    options.opset, options.anp_max_abs_diff)
        bundle = build_bundle(loaded, options, dataset, onnx_path, embedder, parity, choice,
                              anp)
    size = sum(p.stat().st_size for p in bundle.rglob("*") if p.is_file())
    return ExportResult(bundle, parity, anp.parity if anp is not None else None,
                        anp_member.partitions if anp_member is not None else 0,
                        time.perf_counter() - started, size)
