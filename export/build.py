"""The bundle of one machine type from an exported model: members, references, thresholds.

The system shipped is the one ``asd-edge evaluate`` chose for the machine type (recorded in
``RUN/selection.json``), unless ``--system`` names another. Members:
``embedding`` (the network, with its variant, pooling and backend) and the model-free
``stats`` (spectral statistics) and ``bandenergy`` detectors; ``a+b`` is an ensemble of
standardised scores with the recorded weights (equal weights when none are recorded).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from edge.audio import read_audio
from edge.bundle.fit import References, fit_system, placeholder_member, write_bundle
from edge.bundle.system import ScoringSystem
from edge.errors import BadInput
from edge.scoring.backends import GmmConfig, KnnConfig
from edge.scoring.scorer import ScorerConfig, variant_parts
from edge.scoring.spectral import SPECTRAL_SYSTEMS, spectral_scorer_config
from edge.scoring.thresholds import ThresholdConfig

logger = logging.getLogger(__name__)

SELECTION_FILE = "selection.json"
DEFAULT_CHOICE = {"members": ["embedding"], "weights": [1.0], "variant": "concat",
                  "pooling": "mean", "variant_weight": 0.5, "chosen_by": "default"}


def read_choice(run_dir: Path, machine: str, system: str | None) -> dict[str, Any]:
    """The system to ship for ``machine``: ``--system`` if given, else the recorded choice."""
    choice = dict(DEFAULT_CHOICE)
    path = Path(run_dir) / SELECTION_FILE
    if path.is_file():
        recorded = json.loads(path.read_text()).get("machines", {}).get(machine)
        if recorded:
            choice.update(recorded)
            choice["chosen_by"] = f"{path} (development split)"
    if system:
        members = system.split("+")
        unknown = [m for m in members if m != "embedding" and m not in SPECTRAL_SYSTEMS]
        if unknown:
            raise BadInput(f"--system {system}: unknown member(s) {', '.join(unknown)}; use "
                           f"embedding, {', '.join(SPECTRAL_SYSTEMS)} or a '+' ensemble")
        choice.update(members=members, weights=[1.0] * len(members), chosen_by="--system")
    if len(choice["weights"]) != len(choice["members"]):
        raise BadInput(f"{path}: {len(choice['members'])} members but "
                       f"{len(choice['weights'])} weights; re-run 'asd-edge evaluate'")
    return choice


def system_for(choice: dict[str, Any], loaded, embedder, backend: str
               ) -> tuple[ScoringSystem, dict[str, ScorerConfig], dict[str, list[float]]]:
    """Unfitted members of the chosen system, with their scorer configs and part weights."""
    members, configs, part_weights = [], {}, {}
    for name, weight in zip(choice["members"], choice["weights"], strict=True):
        if name == "embedding":
            variant = choice["variant"]
            if loaded.attribute_dim == 0 and variant != "sections":
                logger.info("objective %s has one embedding: scoring its sections variant",
                            loaded.objective)
                variant = "sections"
            members.append(placeholder_member(
                "embedding", "embedding", weight=float(weight), pooling=choice["pooling"],
                variant=variant, variant_weight=float(choice["variant_weight"])))
            backend_config = KnnConfig(metric="cosine") if backend == "knn" else GmmConfig()
            configs[name] = ScorerConfig(backend=backend_config)
            part_weights[name] = variant_parts(
                [[0.0]], [[0.0]], variant, float(choice["variant_weight"]))[1]
        else:
            members.append(placeholder_member(name, "spectral", weight=float(weight),
                                              features=SPECTRAL_SYSTEMS[name]))
            configs[name] = spectral_scorer_config()
            part_weights[name] = [1.0]
    system = ScoringSystem(loaded.front_end, loaded.patching, members, embedder=embedder)
    return system, configs, part_weights


def build_bundle(loaded, args, dataset, onnx_path: Path, embedder, parity) -> Path:
    """Fit and write ``args.out/<machine>``; returns the bundle folder."""
    choice = read_choice(Path(args.run), args.machine, args.system)
    if args.variant:
        choice["variant"] = args.variant
    if args.pooling:
        choice["pooling"] = args.pooling
    system, configs, part_weights = system_for(choice, loaded, embedder, args.backend)
    references = References()
    clips = dataset.select(machine=args.machine, split="train", label="normal")
    for clip in clips:
        references.add(system, read_audio(clip.path), {
            "file": clip.name, "section": clip.section, "domain": clip.domain,
            "attributes": clip.attribute_dict()})
    fit_system(system, references, configs, part_weights,
               ThresholdConfig(quantile=args.threshold_quantile))
    session = embedder.session
    shapes = {o.name: o.shape for o in session.get_outputs()}
    extra = {
        "model": {
            "file": "model.onnx", "opset": args.opset, "objective": loaded.objective,
            "weights": args.weights,
            "input": {"name": "spectrogram", "shape": session.get_inputs()[0].shape},
            "outputs": shapes,
            "parity": parity.as_dict(),
        },
        "system": {"chosen_by": choice["chosen_by"]},
        "labels": {"sections": list(loaded.section_labels),
                   "attributes": {k: list(v) for k, v in loaded.attribute_labels.items()}},
        "provenance": {"run": str(Path(args.run).resolve()), "data": str(Path(args.data)),
                       "machines_trained": list(loaded.machines),
                       "checkpoint": getattr(loaded, "provenance", {})},
    }
    uses_model = any(m.kind == "embedding" for m in system.members)
    return write_bundle(Path(args.out) / args.machine, args.machine, system, references,
                        configs, extra if uses_model else {k: v for k, v in extra.items()
                                                           if k != "model"},
                        model_file=onnx_path if uses_model else None)
