"""Explanations of scored test clips for results.json, and a PNG for a chosen clip."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from edge.audio import read_audio
from edge.dataset import Clip, Dataset
from edge.features import LOG_MEL_FRONT_END, spectrogram
from edge.scoring.explain import explain_spectra, row_spread
from training.evaluate.systems import MachineScores, score_spectral

logger = logging.getLogger(__name__)


def _clip_info(clip: Clip) -> dict:
    return {"file": clip.name, "section": clip.section, "domain": clip.domain,
            "attributes": clip.attribute_dict()}


def add_explanations(dataset: Dataset, results: list[MachineScores], out: str | Path,
                     clip_name: str | None = None, plot: bool = True) -> None:
    """Fill ``explanations`` of every result; plot ``clip_name`` (default: top-scoring clip)."""
    out = Path(out)
    for scores in results:
        nearest = scores.nearest or score_spectral(dataset, scores.machine, "stats").nearest
        front_end = scores.front_end or LOG_MEL_FRONT_END
        spreads = {section: row_spread([
            spectrogram(read_audio(c.path), front_end)
            for c in dataset.select(machine=scores.machine, section=section, split="train",
                                    label="normal")]) for section in scores.sections}
        for clip in scores.clips:
            near = nearest[clip.name]
            entry = {"nearest": _clip_info(near),
                     **explain_spectra(read_audio(clip.path), read_audio(near.path), front_end,
                                       spread=spreads[clip.section])}
            if clip.name in scores.subspaces:
                entry["subspaces"] = scores.subspaces[clip.name]
            scores.explanations[clip.name] = entry
        if plot:
            names = [c.name for c in scores.clips]
            chosen = clip_name if clip_name in names else names[int(np.argmax(scores.scores))]
            clip = scores.clips[names.index(chosen)]
            plot_explanation(out / f"explain_{scores.machine}_{Path(chosen).stem}.png",
                             clip, scores.explanations[chosen], front_end)


def plot_explanation(path: Path, clip: Clip, explanation: dict, front_end) -> None:
    """Spectrogram of the clip, deviating bands boxed in cyan, spans dashed in white."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    spec = spectrogram(read_audio(clip.path), front_end)
    edges = front_end.band_edges_hz()
    seconds = spec.shape[1] * front_end.hop_length / front_end.sample_rate
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(8, 4))
    ax.imshow(spec, origin="lower", aspect="auto", cmap="magma",
              extent=(0, seconds, 0, spec.shape[0]))
    centres = edges.mean(1)
    for band in explanation["bands"]:
        low = np.searchsorted(centres, band["low_hz"])
        high = np.searchsorted(centres, band["high_hz"])
        ax.axhspan(low, high, fill=False, edgecolor="cyan", linewidth=1.5)
    for span in explanation["spans"]:
        ax.axvspan(span["start_s"], span["end_s"], fill=False, edgecolor="white",
                   linestyle="--", linewidth=1.0)
    ticks = np.linspace(0, spec.shape[0] - 1, 6).astype(int)
    ax.set_yticks(ticks, [f"{centres[t]:.0f}" for t in ticks])
    near = explanation["nearest"]["file"]
    ax.set(xlabel="time (s)", ylabel="frequency (Hz)",
           title=f"{clip.name}\nvs nearest normal {near}")
    ax.title.set_fontsize(8)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
