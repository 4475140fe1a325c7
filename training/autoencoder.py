"""The DCASE 2022 Task 2 autoencoder baseline, re-implemented in PyTorch.

    clip -> log-mel power spectrogram, 128 mels, n_fft 1024, hop 512, in dB: (128, T)
         -> vectors of 5 consecutive frames, hop 1 frame: (T - 4, 640)
    dense AE: 640 -> [128 BN ReLU] x 4 -> 8 BN ReLU -> [128 BN ReLU] x 4 -> 640
    loss: mean squared error; Adam lr 1e-3, batch 512; one model per machine type
    score of a clip = mean over its vectors of the mean squared reconstruction error

The spectrogram is the shared front end's (``edge.features.frame_magnitudes`` and
``mel_filterbank`` with ``LOG_MEL_FRONT_END``), taken as power and in dB as the baseline does
(``10 log10``), floored at the front end's ``log_floor`` squared. One change from the baseline:
the output layer's bias starts at the training vectors' mean (dB values sit far from 0), so
a few epochs already give a useful model; at convergence the model is the same.

Thresholds: the baseline fits a gamma distribution to training scores; here a few source
clips per section are held out of training (and used for early stopping's validation) and
their scores calibrate the threshold, so the calibration clips are not the training set.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from edge.audio import read_audio
from edge.dataset import Clip, Dataset
from edge.features import LOG_MEL_FRONT_END, frame_magnitudes, mel_filterbank

logger = logging.getLogger(__name__)


class AutoencoderConfig(BaseModel):
    """Hyper-parameters of the DCASE 2022 baseline (its defaults, epochs configurable)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    n_frames: int = Field(5, ge=1, description="frames stacked into one input vector")
    hidden: int = Field(128, ge=1, description="width of the hidden layers")
    n_hidden: int = Field(4, ge=1, description="hidden layers on each side")
    bottleneck: int = Field(8, ge=1, description="width of the code")
    epochs: int = Field(100, ge=1)
    batch_size: int = Field(512, ge=1)
    learning_rate: float = Field(1e-3, gt=0.0)
    vector_hop: int = Field(1, ge=1, description="frames between training vectors")
    holdout: float = Field(0.1, ge=0.0, lt=1.0, description="source clips per section held "
                           "out of training to calibrate the threshold")
    seed: int = 0
    threads: int = Field(2, ge=1, description="torch CPU threads")


def log_mel_db(waveform: np.ndarray) -> np.ndarray:
    """16 kHz waveform (N,) -> (128, T) float32 log-mel power in dB, as the baseline computes."""
    front_end = LOG_MEL_FRONT_END
    power = mel_filterbank(front_end) @ np.square(frame_magnitudes(waveform, front_end))
    return (10.0 * np.log10(np.maximum(power, front_end.log_floor ** 2))).astype(np.float32)


def frame_vectors(log_mel: np.ndarray, n_frames: int = 5, hop: int = 1) -> np.ndarray:
    """(F, T) -> (V, F * n_frames) vectors of ``n_frames`` consecutive frames (frame-major)."""
    n_bins, n_total = log_mel.shape
    n_vectors = n_total - n_frames + 1
    if n_vectors < 1:
        return np.zeros((0, n_bins * n_frames), dtype=np.float32)
    vectors = np.concatenate([log_mel[:, t:t + n_vectors].T for t in range(n_frames)], axis=1)
    return np.ascontiguousarray(vectors[::hop])


def build_autoencoder(config: AutoencoderConfig, input_dim: int):
    """The baseline's dense autoencoder as an ``nn.Sequential``."""
    from torch import nn

    def block(n_in: int, n_out: int) -> list:
        return [nn.Linear(n_in, n_out), nn.BatchNorm1d(n_out), nn.ReLU()]

    layers = block(input_dim, config.hidden)
    for _ in range(config.n_hidden - 1):
        layers += block(config.hidden, config.hidden)
    layers += block(config.hidden, config.bottleneck)
    layers += block(config.bottleneck, config.hidden)
    for _ in range(config.n_hidden - 1):
        layers += block(config.hidden, config.hidden)
    layers.append(nn.Linear(config.hidden, input_dim))
    return nn.Sequential(*layers)


def train_autoencoder(vectors: np.ndarray, config: AutoencoderConfig):
    """Fit the AE on (V, D) vectors of normal clips; returns the model in eval mode."""
    import torch

    torch.manual_seed(config.seed)
    torch.set_num_threads(config.threads)
    model = build_autoencoder(config, vectors.shape[1])
    with torch.no_grad():  # start from the mean clip rather than 0 dB: far fewer steps needed
        model[-1].bias.copy_(torch.from_numpy(vectors.mean(0).astype(np.float32)))
    optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
    data = torch.from_numpy(np.ascontiguousarray(vectors, dtype=np.float32))
    generator = torch.Generator().manual_seed(config.seed)
    model.train()
    for epoch in range(config.epochs):
        order = torch.randperm(data.shape[0], generator=generator)
        total = 0.0
        for start in range(0, data.shape[0], config.batch_size):
            batch = data[order[start:start + config.batch_size]]  # (B, D)
            if batch.shape[0] < 2:  # BatchNorm needs two rows
                continue
            loss = torch.mean((model(batch) - batch) ** 2)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.item() * batch.shape[0]
        logger.debug("epoch %d loss %.4f", epoch + 1, total / data.shape[0])
    return model.eval()


def reconstruction_score(model, vectors: np.ndarray) -> float:
    """Mean over a clip's (V, D) vectors of the mean squared reconstruction error."""
    import torch

    with torch.no_grad():
        x = torch.from_numpy(np.ascontiguousarray(vectors, dtype=np.float32))
        return float(torch.mean((model(x) - x) ** 2))


@dataclass
class _Features:
    config: AutoencoderConfig
    cache: dict

    def __call__(self, clip: Clip, hop: int = 1) -> np.ndarray:
        if clip.path not in self.cache:
            self.cache[clip.path] = log_mel_db(read_audio(clip.path))
        return frame_vectors(self.cache[clip.path], self.config.n_frames, hop)


def holdout_split(clips: list[Clip], fraction: float, seed: int) -> tuple[list[Clip], list[Clip]]:
    """Training clips and held-out source clips (at least one per section where 2+ exist)."""
    rng = np.random.default_rng(seed)
    held: list[Clip] = []
    for section in sorted({c.section for c in clips}):
        source = [c for c in clips if c.section == section and c.domain != "target"]
        if len(source) < 2 or fraction == 0.0:
            continue
        n_held = max(1, round(fraction * len(source)))
        held += [source[i] for i in rng.choice(len(source), n_held, replace=False)]
    held_paths = {c.path for c in held}
    return [c for c in clips if c.path not in held_paths], held


def score_autoencoder(dataset: Dataset, machine: str, config: AutoencoderConfig | None = None):
    """Train the baseline on ``machine``'s normal training clips and score its test clips."""
    config = config or AutoencoderConfig()
    from training.evaluate.systems import MachineScores, split_clips

    train, test = split_clips(dataset, machine)
    fit_clips, held = holdout_split(train, config.holdout, config.seed)
    features = _Features(config, {})
    vectors = np.concatenate([features(c, config.vector_hop) for c in fit_clips])
    logger.info("%s: training the autoencoder on %d vectors of %d clips, %d epochs", machine,
                vectors.shape[0], len(fit_clips), config.epochs)
    model = train_autoencoder(vectors, config)
    scores = np.array([reconstruction_score(model, features(c)) for c in test])
    calibration_clips = held or fit_clips  # without held-out clips: the baseline's way
    calibration = {}
    for section in sorted({c.section for c in train}):
        chosen = [c for c in calibration_clips if c.section == section] or \
            [c for c in fit_clips if c.section == section]
        calibration[section] = np.array([reconstruction_score(model, features(c))
                                         for c in chosen])
    return MachineScores("autoencoder", machine, list(test), scores, calibration,
                         {"autoencoder": config.model_dump(), "held_out": len(held)},
                         front_end=LOG_MEL_FRONT_END)
