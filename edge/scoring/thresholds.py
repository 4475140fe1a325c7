"""Decision thresholds from scores of normal clips that were not references.

``gamma`` fits a gamma distribution to the scores and takes its ``quantile`` (0.9, as the
DCASE baseline does), never below the empirical quantile; ``quantile`` takes the empirical
quantile 1 - false-alarm rate. These are the DCASE decision thresholds; alarm thresholds for a
false-alarm budget are ``edge.bundle.calibrate``'s.
"""

from __future__ import annotations

import logging
import warnings
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

logger = logging.getLogger(__name__)


class ThresholdConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    method: Literal["gamma", "quantile"] = Field("gamma", description="how to calibrate")
    quantile: float = Field(0.9, gt=0.0, lt=1.0, description="gamma: the fitted quantile; "
                            "quantile: 1 - the target false-alarm rate")


def calibrate_threshold(normal_scores: np.ndarray, config: ThresholdConfig) -> float:
    """Threshold from (N,) out-of-sample scores of normal clips; above it = anomalous.

    The gamma fit falls back to the empirical quantile when it fails or gives a non-finite
    value (e.g. very few or identical scores).
    """
    scores = np.asarray(normal_scores, dtype=np.float64)
    scores = scores[np.isfinite(scores)]
    if scores.size == 0:
        raise ValueError("no finite normal scores to calibrate a threshold on")
    empirical = float(np.quantile(scores, config.quantile))
    if config.method == "quantile" or scores.size < 3 or np.ptp(scores) == 0:
        return empirical
    from scipy import stats

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            shape, loc, scale = stats.gamma.fit(scores)
            value = float(stats.gamma.ppf(config.quantile, shape, loc=loc, scale=scale))
    except (ValueError, RuntimeError, FloatingPointError) as err:
        logger.warning("gamma fit failed (%s); using the empirical quantile", err)
        return empirical
    if not np.isfinite(value):
        return empirical
    # a fit that claims its quantile below the empirical one is refuted by the data it was
    # fitted on (a free-location gamma on widely spread real scores put its "0.9 quantile" at
    # the median): never below what the scores themselves show
    return max(value, empirical)


def section_thresholds(normal_scores: dict[int, np.ndarray], config: ThresholdConfig) -> dict:
    """Per section {"SS": {"threshold", "method", "quantile", "n_scores"}}, JSON-able.

    ``normal_scores``: section -> (n,) out-of-sample scores of its normal clips (e.g.
    ``cross_fit_scores``). What a bundle stores and the edge compares a score with.
    """
    return {f"{section:02d}": {"threshold": calibrate_threshold(scores, config),
                               "method": config.method, "quantile": config.quantile,
                               "n_scores": int(np.asarray(scores).size)}
            for section, scores in sorted(normal_scores.items())}
