"""A trained run, loaded for embedding: what evaluation and export call.

    run = load_run("runs/fan")                      # averaged weights, CPU
    section_embedding, attribute_embedding = run.embed_clip(waveform)   # (P, D_S), (P, D_A)

For the one-embedding objectives (``mtl``, ``arcface``, ``sections``) ``attribute_dim`` is 0:
the single embedding is ``section_embedding`` and ``attribute_embedding`` is a (P, 0) array.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from edge.errors import BadInput
from edge.features import FrontEnd, Patching, patches, spectrogram
from training.checkpoint import build_model, load_checkpoint
from training.model import SurrogateTaskModel

logger = logging.getLogger(__name__)


@dataclass
class LoadedRun:
    """A run's model in evaluation mode with everything needed to feed it."""

    run_dir: Path
    front_end: FrontEnd
    patching: Patching
    objective: str
    machines: list[str]
    section_labels: list[str]              # e.g. "fan/section_00"
    attribute_labels: dict[str, list[str]]  # e.g. {"fan/m-n": ["V", "W", ...]}
    section_dim: int
    attribute_dim: int                     # 0 for the one-embedding objectives
    model: SurrogateTaskModel
    weights: str                           # "averaged" or "last"
    device: torch.device
    checkpoint: dict                       # the rest of the checkpoint (config, data, epoch...)
    batch_size: int = 256

    @torch.no_grad()
    def embed(self, patch_batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Patches (P, F, T) float32 -> section (P, D_S) and attribute (P, D_A) embeddings."""
        patch_batch = np.asarray(patch_batch, dtype=np.float32)
        if patch_batch.ndim != 3 or patch_batch.shape[1] != self.front_end.n_bins:
            raise BadInput(f"patches of shape {patch_batch.shape}: expected (P, "
                           f"{self.front_end.n_bins}, T) from this run's front end")
        sections, attributes = [], []
        for start in range(0, len(patch_batch), self.batch_size):
            x = torch.from_numpy(patch_batch[start:start + self.batch_size]).to(self.device)
            section_embedding, attribute_embedding = self.model.embed(x)
            sections.append(section_embedding.float().cpu().numpy())
            attributes.append(attribute_embedding.float().cpu().numpy())
        if not sections:
            return (np.zeros((0, self.section_dim), np.float32),
                    np.zeros((0, self.attribute_dim), np.float32))
        return np.concatenate(sections), np.concatenate(attributes)

    def patches(self, waveform: np.ndarray) -> np.ndarray:
        """16 kHz waveform (N,) -> the model's input patches (P, F, T), as the edge cuts them."""
        spec = spectrogram(np.asarray(waveform, dtype=np.float32), self.front_end)
        return patches(spec, self.patching.patch_frames, self.patching.patch_hop)

    def embed_clip(self, waveform: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """16 kHz waveform (N,) -> per-patch embeddings (P, D_S), (P, D_A); P = 0 if too short."""
        return self.embed(self.patches(waveform))


def load_run(run_dir: str | Path, weights: str = "averaged", device: str = "cpu") -> LoadedRun:
    """Load a run folder written by ``asd-edge train``; ``BadInput`` if missing or corrupt.

    ``weights``: ``averaged`` (the average of the last epochs, the default) or ``last``.
    """
    payload = load_checkpoint(run_dir)
    if payload.get("objective") == "anp":
        raise BadInput(f"{run_dir}: an attentive neural process run (objective anp) has no "
                       "embeddings; score it with 'asd-edge evaluate --run' or 'asd-edge "
                       "select --run anp=RUN', and give an embedding run here (the ANP is not "
                       "exported to the edge)")
    if device == "cuda" and not torch.cuda.is_available():
        raise BadInput("device 'cuda' asked for, but torch sees no CUDA device; use 'cpu'")
    model = build_model(payload, weights).to(device).eval()
    rest = {k: v for k, v in payload.items()
            if k not in ("model", "averaged", "average_snapshots", "optimizer", "scaler")}
    return LoadedRun(
        run_dir=Path(run_dir), front_end=FrontEnd(**payload["front_end"]),
        patching=Patching(**payload["patching"]), objective=payload["objective"],
        machines=list(payload["machines"]), section_labels=list(payload["section_labels"]),
        attribute_labels={k: list(v) for k, v in payload["attribute_labels"].items()},
        section_dim=model.section_dim, attribute_dim=model.attribute_dim, model=model,
        weights=weights, device=torch.device(device), checkpoint=rest)
