"""Run an ``asd-edge`` command with the stream-robust statistics as the default (an experiment
of docs/ALARMS.md, not the shipped default): the statistics detector's features become
("mean", "blockstd") and its nearest neighbour mixture-aware (``MIX``, default 8); with
``EMBMIX=N`` the network member's nearest neighbour too.

    EMBMIX=8 .venv/bin/python bench/with_robust_statistics.py export --run RUN --machine M \\
        --data DATA --out MODELS --system embedding+stats --false-alarms-per-day 0.0333
"""

from __future__ import annotations

import os
import sys

import edge.bundle.enroll as enroll_module
import edge.scoring.spectral as spectral
import export.build as build
from edge.cli import main
from edge.scoring.backends import KnnConfig
from edge.scoring.scorer import ScorerConfig

MIX = int(os.environ.get("MIX", "8"))
EMBMIX = os.environ.get("EMBMIX")


def robust_scorer_config(backend: KnnConfig | None = None) -> ScorerConfig:
    return ScorerConfig(backend=backend or KnnConfig(metric="euclidean", mixtures=MIX),
                        standardize=True)


def knn_config(**settings) -> KnnConfig:
    return KnnConfig(**{"mixtures": int(EMBMIX or 0), **settings})


spectral.SPECTRAL_SYSTEMS["stats"] = spectral.SpectralFeatures(statistics=("mean", "blockstd"))
spectral.spectral_scorer_config = robust_scorer_config
build.spectral_scorer_config = robust_scorer_config
enroll_module.spectral_scorer_config = robust_scorer_config
if EMBMIX:
    build.KnnConfig = knn_config  # type: ignore[assignment,misc]

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
