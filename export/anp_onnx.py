"""Export the attentive neural process (ANP-Boot) to ONNX, with its partitions baked in.

    patches (batch, F, T) "spectrogram"
      -> the ANP's grid (pool, per-row normalisation)                    (batch, N)
      -> for each of the R partitions fixed at export (``training.anp.boot_partitions``:
         the same ones ``boot_nll`` draws from the seed), the target points' Gaussian NLL
      -> "partition_nll" (batch, R)

Partitions with the same number of target points (all frame blocks, all bands) run as one
batched forward; the NLL is computed inside the graph, so the edge needs only numpy to pool it
(``edge.inference.anp.OnnxAnp``, ``edge.bundle.system``). Parity: PyTorch's ``boot_nll`` and
ONNX Runtime on the same patches of real clips, max absolute difference of the per-partition
NLL (nats); a failing parity writes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from edge.errors import BadInput, RuntimeFailure
from edge.inference.anp import ANP_OUTPUT, OnnxAnp
from edge.inference.onnx_runtime import INPUT_NAME
from export.onnx_models import ANP_MAX_ABS_DIFF, OPSET, AnpParity, export_patch_model
from training.anp import (
    AttentiveNeuralProcess,
    LoadedAnp,
    boot_nll,
    boot_partitions,
    gaussian_nll,
    load_anp_run,
)


class AnpBoot(nn.Module):
    """(B, F, T) patches -> (B, R) mean target NLL under each fixed partition."""

    def __init__(self, model: AttentiveNeuralProcess, partitions: int, seed: int) -> None:
        super().__init__()
        self.model = model
        draws = boot_partitions(model.args, partitions, seed)
        groups: dict[int, list[int]] = {}
        for r, (_, target) in enumerate(draws):
            groups.setdefault(target.shape[1], []).append(r)
        self.n_groups = len(groups)
        order = [r for rows in groups.values() for r in rows]
        for g, rows in enumerate(groups.values()):
            self.register_buffer(f"context_{g}", torch.from_numpy(
                np.concatenate([draws[r][0] for r in rows])))            # (R_g, Nc)
            self.register_buffer(f"target_{g}", torch.from_numpy(
                np.concatenate([draws[r][1] for r in rows])))            # (R_g, Nt)
        self.register_buffer("column_of", torch.from_numpy(
            np.argsort(order).astype(np.int64)))                         # (R,) back to draw order

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        values = self.model.grid(x)                                       # (B, N)
        batch = values.shape[0]
        out = []
        for g in range(self.n_groups):
            context, target = getattr(self, f"context_{g}"), getattr(self, f"target_{g}")
            r_g = context.shape[0]
            context_values = values[:, context].reshape(batch * r_g, -1)  # (B R_g, Nc)
            target_values = values[:, target].reshape(batch * r_g, -1)    # (B R_g, Nt)
            context_index = context.repeat(batch, 1)                      # (B R_g, Nc)
            target_index = target.repeat(batch, 1)                        # (B R_g, Nt)
            mean, log_variance = self.model(context_index, context_values, target_index)
            nll = gaussian_nll(mean, log_variance, target_values).mean(1)  # (B R_g,)
            out.append(nll.reshape(batch, r_g))
        return torch.cat(out, 1)[:, self.column_of]                       # (B, R)


def export_anp(loaded: LoadedAnp, path: Path, partitions: int, seed: int,
               opset: int = OPSET) -> Path:
    """Write ``loaded``'s ANP (a ``training.anp.LoadedAnp``) with its ANP-Boot partitions to
    ``path`` as one ONNX file: input ``spectrogram`` (batch, F, T), output ``partition_nll``
    (batch, partitions)."""
    return export_patch_model(AnpBoot(loaded.model.cpu().eval(), partitions, seed),
                              loaded.front_end.n_bins, loaded.patching.patch_frames,
                              [ANP_OUTPUT], path, opset)


def check_anp_parity(loaded: LoadedAnp, session: OnnxAnp, clip_patches: np.ndarray,
                     partitions: int, seed: int, limit: float = ANP_MAX_ABS_DIFF) -> AnpParity:
    """PyTorch ``boot_nll`` vs ONNX Runtime on (P, F, T) patches: max |diff| of (P, R)."""
    expected = boot_nll(loaded.model, clip_patches, partitions, seed)
    got = session.score_patches(clip_patches)
    return AnpParity(int(clip_patches.shape[0]), float(np.abs(expected - got).max()), limit)


@dataclass
class AnpExport:
    """The exported ANP of a bundle's ``anp`` member: file, session, its bundle.json entry."""

    path: Path
    session: OnnxAnp
    parity: AnpParity
    manifest: dict


def export_anp_member(run_dir: str, machine: str, front_end, patching, clip_patches,
                      out_dir: Path, partitions: int, seed: int, weights: str = "averaged",
                      opset: int = OPSET, limit: float = ANP_MAX_ABS_DIFF) -> AnpExport:
    """Load the ANP run, check it fits the bundle (machine, front end, patches), export it to
    ``out_dir/anp.onnx`` and check parity on ``clip_patches`` (P, F, T) of real clips.

    ``BadInput`` for a run that does not fit, ``RuntimeFailure`` for a failed parity."""
    loaded = load_anp_run(run_dir, weights=weights)
    if machine not in loaded.machines:
        raise BadInput(f"--anp-run {run_dir}: trained on {', '.join(loaded.machines)}, not "
                       f"{machine}; give an ANP run of {machine}")
    if (loaded.front_end, loaded.patching) != (front_end, patching):
        raise BadInput(f"--anp-run {run_dir}: its front end or patches differ from the "
                       "embedding run's, and a bundle has one; train both with the same "
                       "--front-end")
    path = export_anp(loaded, out_dir / "anp.onnx", partitions, seed, opset)
    session = OnnxAnp(path, front_end, patching, partitions, device="cpu")
    parity = check_anp_parity(loaded, session, clip_patches, partitions, seed, limit)
    if not parity.ok():
        raise RuntimeFailure(f"ANP ONNX parity failed: max |diff| {parity.max_abs_diff:.2e} "
                             f"nats vs limit {limit:.0e}; nothing was written")
    manifest = {
        "file": path.name, "opset": opset, "objective": "anp", "weights": weights,
        "partitions": partitions, "seed": seed,
        "input": {"name": INPUT_NAME, "shape": session.session.get_inputs()[0].shape},
        "output": {"name": ANP_OUTPUT, "shape": session.session.get_outputs()[0].shape},
        "parity": parity.as_dict(), "run": str(Path(run_dir).resolve()),
    }
    return AnpExport(path, session, parity, manifest)
