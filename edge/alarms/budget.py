"""Alarm thresholds for a false-alarm budget: so many false alarms per day per stream.

The DCASE decision threshold (a 0.9 quantile of clip scores) calls one normal clip in ten
anomalous; a stream scored every half second would be in alarm every few minutes. Here the
threshold is set for a promise a plant can hold the monitor to: at most ``r`` false alarms per
day on healthy sound, from out-of-sample hop scores of normal references streamed exactly as
the daemon streams them and run through the alarm rule itself.

    hop scores (H,) of normal audio, out of sample
      -> trip statistic: the k-th largest of the last n hops  (the rule trips when it exceeds T)
      -> block maxima over one window (20 hops at 10 s / 0.5 s): about one independent
         look each, and an upper bound on the episodes of a block
      -> exponential tail over the highest blocks (peaks over a level u)
      -> T such that the rate of blocks over T is r per day, at an upper confidence bound

The tail: with m block maxima over u in D days of audio, the rate over u is lambda = m / D and
the excesses over u are exponential with mean sigma (light or exponential tails: distances,
log-likelihoods, sums of standardised scores). The rate over T > u is
lambda * exp(-(T - u) / sigma), hence T = u + sigma * ln(lambda / r). Few references mean
uncertainty, and the promise must hold for the unit, not for the data: both lambda and sigma
are replaced by their one-sided upper confidence bounds at ``confidence`` (Poisson for the
count, chi-square for the exponential mean), so a bundle built from 10 clips sets a higher
threshold than one built from 1,000 clips of the same sound. The threshold is never below the
highest trip statistic seen in the calibration audio (an empirical rate of one per calibration
length is far above any useful promise), nor below the empirical quantile the fit claims.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

MIN_TAIL = 5  # block maxima in the tail at the least
TAIL_FRACTION = 0.25  # the highest quarter of the blocks (at least MIN_TAIL)
SECONDS_PER_DAY = 86400.0


def trip_statistic(scores: np.ndarray, trip_hops: int, window_hops: int) -> np.ndarray:
    """(H,) hop scores -> (H,) the k-th largest of the last n (k = trip_hops, n = window_hops).

    The rule trips at hop h exactly when this exceeds the threshold (``AlarmRule``: at least k
    of the last n hops over it). Hops before the n-th use those available; a hop of NaN or
    -inf (not of this domain) counts as under every threshold.
    """
    x = np.asarray(scores, dtype=np.float64)
    x = np.where(np.isfinite(x), x, -np.inf)
    padded = np.concatenate([np.full(window_hops - 1, -np.inf), x])
    recent = np.lib.stride_tricks.sliding_window_view(padded, window_hops)  # (H, n)
    return np.partition(recent, window_hops - trip_hops, axis=1)[:, window_hops - trip_hops]


def block_maxima(statistic: np.ndarray, block_hops: int) -> np.ndarray:
    """(H,) -> (ceil(H / block_hops),) maxima of consecutive blocks (finite ones only)."""
    x = np.asarray(statistic, dtype=np.float64)
    maxima = [x[i:i + block_hops].max() for i in range(0, x.shape[0], block_hops)]
    values = np.asarray(maxima, dtype=np.float64)
    return values[np.isfinite(values)]


def _chi2_ppf(q: float, dof: float) -> float:
    from scipy import stats

    return float(stats.chi2.ppf(q, dof))


@dataclass(frozen=True)
class BudgetThreshold:
    """A threshold for a false-alarm budget, and what it rests on (JSON-able via ``asdict``).

    ``threshold``: the level; ``false_alarms_per_day``: the promise (at most this many, at the
    one-sided ``confidence``); ``expected_per_day``: the point estimate of the rate at the
    threshold; ``audio_minutes``/``blocks``: the calibration audio; ``tail_level``,
    ``tail_blocks``, ``tail_scale``/``tail_scale_upper``, ``rate_over_level_per_day``/``_upper``:
    the fit; ``bound``: which constraint set the threshold ("tail", "highest seen" or "empirical
    quantile").
    """

    threshold: float
    false_alarms_per_day: float
    confidence: float
    expected_per_day: float
    audio_minutes: float
    blocks: int
    tail_level: float
    tail_blocks: int
    tail_scale: float
    tail_scale_upper: float
    rate_over_level_per_day: float
    rate_over_level_upper_per_day: float
    highest_seen: float
    bound: str

    def as_dict(self) -> dict[str, float | int | str]:
        return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def budget_threshold(maxima: np.ndarray, block_seconds: float, false_alarms_per_day: float,
                     confidence: float = 0.9) -> BudgetThreshold:
    """The level whose rate of exceeding blocks is at most ``false_alarms_per_day`` at the
    one-sided ``confidence``, from (B,) block maxima of the trip statistic of normal audio,
    each block ``block_seconds`` long (module docstring)."""
    x = np.sort(np.asarray(maxima, dtype=np.float64))[::-1]
    if x.size < MIN_TAIL + 1:
        raise ValueError(f"{x.size} blocks of calibration audio; at least {MIN_TAIL + 1} are "
                         "needed for a tail fit")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence {confidence}: give a value between 0 and 1")
    days = x.size * block_seconds / SECONDS_PER_DAY
    m = max(MIN_TAIL, int(math.ceil(TAIL_FRACTION * x.size)))
    m = min(m, x.size - 1)
    level = float(x[m])  # the (m+1)-th highest: m blocks strictly above it (ties aside)
    excess = x[:m] - level
    scale = float(max(excess.mean(), 1e-12 * max(1.0, abs(level))))
    # one-sided upper bounds: the exponential mean (2 m sigma_hat / sigma ~ chi2(2m)) and the
    # Poisson rate of blocks over the level (Garwood)
    scale_upper = 2 * m * scale / _chi2_ppf(1 - confidence, 2 * m)
    rate = m / days
    rate_upper = _chi2_ppf(confidence, 2 * m + 2) / 2 / days
    target = float(false_alarms_per_day)

    def level_for(rate_at_level: float, sigma: float) -> float:
        return level + sigma * math.log(rate_at_level / target) if rate_at_level > target \
            else level

    tail = level_for(rate_upper, scale_upper)
    highest = float(x[0])
    # the empirical quantile of the block maxima for the promised rate: above the highest
    # block when the promise is rarer than one block in the calibration audio
    per_block = target * block_seconds / SECONDS_PER_DAY
    empirical = highest if per_block * x.size < 1 else float(np.quantile(x, 1 - per_block))
    candidates = {"tail": tail, "highest seen": np.nextafter(highest, np.inf),
                  "empirical quantile": empirical}
    bound = max(candidates, key=lambda k: candidates[k])
    threshold = float(candidates[bound])
    expected = rate * math.exp(-(threshold - level) / scale) if threshold > level else rate
    return BudgetThreshold(
        threshold=threshold, false_alarms_per_day=target, confidence=confidence,
        expected_per_day=float(expected), audio_minutes=x.size * block_seconds / 60.0,
        blocks=int(x.size), tail_level=level, tail_blocks=m, tail_scale=scale,
        tail_scale_upper=float(scale_upper), rate_over_level_per_day=float(rate),
        rate_over_level_upper_per_day=float(rate_upper), highest_seen=highest, bound=bound)
