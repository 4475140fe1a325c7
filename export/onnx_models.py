"""The ONNX helpers export shares: patch models to one ONNX file, and parity with PyTorch.

Every model the edge runs takes patches (batch, F, T) of the front end, input ``spectrogram``
with a dynamic batch axis, weights inside the one file (opset 18), ``onnx.checker`` passed:
``export_patch_model`` writes any such torch module (the embedding network: ``export_model``;
the ANP-Boot graph: ``export.anp_onnx``). Parity: PyTorch and ONNX Runtime on the same patches
of real clips (``parity_patches``); ``check_parity`` compares the embeddings (largest absolute
difference, smallest cosine similarity).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge.errors import BadInput
from edge.features import patches, spectrogram
from edge.inference.onnx_runtime import INPUT_NAME, OUTPUT_NAMES, OnnxEmbedder

OPSET = 18
MAX_ABS_DIFF = 1e-4
MIN_COSINE = 0.99999
ANP_MAX_ABS_DIFF = 1e-3  # nats; the ANP's NLL divides by variances down to min_std ** 2


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


@dataclass(frozen=True)
class AnpParity:
    """How closely ONNX Runtime reproduces PyTorch's ANP-Boot NLLs (nats) on the same
    patches."""

    patches: int
    max_abs_diff: float
    limit: float

    def ok(self) -> bool:
        return self.max_abs_diff <= self.limit

    def as_dict(self) -> dict:
        return {"patches": self.patches, "max_abs_diff": self.max_abs_diff,
                "limits": {"max_abs_diff": self.limit}}


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
