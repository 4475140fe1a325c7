"""The attentive neural process baseline (ANP-Boot): predict a masked region of a patch.

After "Anomalous sound detection using attentive neural processes" (WASPAA 2021). A patch of
the shared front end is coarsened to a grid of points, each with a (frequency row, time column)
coordinate and a log-magnitude value; a target region is masked (a block of columns, or a band
of rows) and predicted from a random subset of the other points:

    patch x (B, F, T) log-magnitude, the shared front end (edge.features)
      -> mean over freq_pool rows x time_pool frames                (B, R, C)  the grid
      -> (value - mean[r]) / std[r]   fixed per-row statistics of the training clips (buffers)
      -> flattened, point i at row i // C, column i % C             (B, N = R * C)
    context: Nc points outside the target, each coord(i) + value_proj(value)   (B, Nc, D)
      -> n_layers x [self-attention, MLP]  (pre-norm, residual)     (B, Nc, D)  r_i
    target: coord(j) of the Nt masked points                        (B, Nt, D)  queries
      -> cross-attention: queries coord(j), keys coord(i), values r_i   (B, Nt, D)
      -> MLP, linear -> mean (B, Nt), log-variance (B, Nt)   (std >= min_std)

coord(i) = row_embedding[i // C] + column_embedding[i % C]: learned embeddings of the
discrete coordinates (a unit or a condition is often a tone at one frequency: an embedding
per row represents that more cheaply than an MLP of a scalar coordinate). No latent path.

Training (``train_anp``, run by ``asd-edge train --objective anp``): normal clips only; each
batch masks a block of ``target_frames`` columns or a band of ``target_bands`` rows (drawn per
batch, positions per patch) and minimises the Gaussian negative log-likelihood of the targets.

Score (ANP-Boot, ``boot_nll``): the mean NLL of the target region under ``partitions`` random
context/target partitions (alternately frame blocks and bands, the same for every patch for a
given seed), averaged over partitions and then over the clip's patches; the standard deviation
over partitions of the clip's NLL is the Boot spread.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from edge.errors import BadInput
from edge.features import DEFAULT_PATCHING, FrontEnd, Patching, patches, spectrogram
from training.checkpoint import load_checkpoint
from training.loop import Objective, RunData, TrainConfig, train_run

logger = logging.getLogger(__name__)

OBJECTIVE = "anp"
MODES = ("frames", "bands")


@dataclass
class AnpArgs:
    """Everything needed to rebuild the ANP; saved in the checkpoint as ``model_args``."""

    n_bins: int = 500             # F of the front end
    patch_frames: int = 64        # T of one patch
    freq_pool: int = 15           # front-end rows averaged into one grid row
    time_pool: int = 4            # frames averaged into one grid column
    width: int = 64               # D
    heads: int = 4
    layers: int = 2               # self-attention blocks over the context
    context_points: int = 128     # Nc, drawn at random from the points outside the target
    target_frames: int = 4        # columns of a frame-block target
    target_bands: int = 8         # rows of a band target
    min_std: float = 0.05         # floor of the predicted standard deviation (normalised units)
    model: str = "anp"            # what checkpoint readers check before building

    @property
    def rows(self) -> int:
        return self.n_bins // self.freq_pool

    @property
    def columns(self) -> int:
        return self.patch_frames // self.time_pool

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> AnpArgs:
        return cls(**data)

    @classmethod
    def for_front_end(cls, n_bins: int, patch_frames: int, grid_rows: int = 32) -> AnpArgs:
        """Pool the front end's F rows to about ``grid_rows`` (500 linear bins -> 33 rows of
        15 bins, 128 mel bands -> 32 rows of 4)."""
        return cls(n_bins=n_bins, patch_frames=patch_frames,
                   freq_pool=max(1, n_bins // grid_rows))


class Attention(nn.Module):
    """Multi-head attention: queries (B, Nq, D) over keys (B, Nk, D) and values (B, Nk, D)."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.query = nn.Linear(width, width)
        self.key = nn.Linear(width, width)
        self.value = nn.Linear(width, width)
        self.out = nn.Linear(width, width)

    def forward(self, queries: torch.Tensor, keys: torch.Tensor,
                values: torch.Tensor) -> torch.Tensor:
        batch, n_queries, width = queries.shape

        def split(x: torch.Tensor) -> torch.Tensor:  # (B, N, D) -> (B, H, N, D / H)
            return x.view(batch, x.shape[1], self.heads, width // self.heads).transpose(1, 2)

        attended = F.scaled_dot_product_attention(
            split(self.query(queries)), split(self.key(keys)), split(self.value(values)))
        return self.out(attended.transpose(1, 2).reshape(batch, n_queries, width))  # (B, Nq, D)


class MLP(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.up = nn.Linear(width, 2 * width)
        self.down = nn.Linear(2 * width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(F.gelu(self.up(x)))


class SelfAttentionBlock(nn.Module):
    """Pre-norm transformer block over the context points: (B, Nc, D) -> (B, Nc, D)."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.norm_attention = nn.LayerNorm(width)
        self.attention = Attention(width, heads)
        self.norm_mlp = nn.LayerNorm(width)
        self.mlp = MLP(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm_attention(x)
        x = x + self.attention(h, h, h)
        return x + self.mlp(self.norm_mlp(x))


class AttentiveNeuralProcess(nn.Module):
    """The ANP's deterministic path; ``grid`` turns patches into points, ``forward`` predicts."""

    def __init__(self, args: AnpArgs) -> None:
        super().__init__()
        if args.rows < args.target_bands or args.columns < args.target_frames:
            raise ValueError(f"a {args.rows} x {args.columns} grid is too small for targets of "
                             f"{args.target_bands} rows or {args.target_frames} columns")
        if args.width % args.heads:
            raise ValueError(f"width {args.width} is not a multiple of heads {args.heads}")
        self.args = args
        self.register_buffer("input_mean", torch.zeros(args.rows))  # (R,)
        self.register_buffer("input_std", torch.ones(args.rows))    # (R,)
        self.row_embedding = nn.Embedding(args.rows, args.width)
        self.column_embedding = nn.Embedding(args.columns, args.width)
        self.value_proj = nn.Linear(1, args.width)
        self.context_blocks = nn.ModuleList(
            [SelfAttentionBlock(args.width, args.heads) for _ in range(args.layers)])
        self.norm_context = nn.LayerNorm(args.width)
        self.norm_query = nn.LayerNorm(args.width)
        self.cross_attention = Attention(args.width, args.heads)
        self.norm_decoder = nn.LayerNorm(args.width)
        self.decoder = MLP(args.width)
        self.head = nn.Linear(args.width, 2)

    def set_input_statistics(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        """Fix the per-row normalisation of grid values: ``mean``, ``std`` (R,)."""
        self.input_mean.copy_(mean)
        self.input_std.copy_(std.clamp_min(1e-3))

    def pool(self, x: torch.Tensor) -> torch.Tensor:
        """(B, F, T) log-magnitude patches -> (B, R, C) grid values, not normalised."""
        a = self.args
        x = x[:, :a.rows * a.freq_pool, :a.columns * a.time_pool]
        return x.reshape(x.shape[0], a.rows, a.freq_pool, a.columns, a.time_pool).mean((2, 4))

    def grid(self, x: torch.Tensor) -> torch.Tensor:
        """(B, F, T) patches -> (B, N = R * C) normalised point values, row-major."""
        values = (self.pool(x) - self.input_mean[:, None]) / self.input_std[:, None]
        return values.flatten(1)

    def coordinates(self, index: torch.Tensor) -> torch.Tensor:
        """(B, n) flat point indices -> (B, n, D) coordinate embeddings."""
        columns = self.args.columns
        return self.row_embedding(index // columns) + self.column_embedding(index % columns)

    def forward(self, context_index: torch.Tensor, context_values: torch.Tensor,
                target_index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Context (B, Nc) indices and (B, Nc) values, target (B, Nt) indices -> the
        predicted mean (B, Nt) and log-variance (B, Nt) of the target values."""
        context_keys = self.coordinates(context_index)                        # (B, Nc, D)
        r = context_keys + self.value_proj(context_values.unsqueeze(-1))      # (B, Nc, D)
        for block in self.context_blocks:
            r = block(r)                                                      # (B, Nc, D)
        queries = self.coordinates(target_index)                              # (B, Nt, D)
        h = queries + self.cross_attention(self.norm_query(queries),
                                           self.norm_query(context_keys),
                                           self.norm_context(r))              # (B, Nt, D)
        h = h + self.decoder(self.norm_decoder(h))                            # (B, Nt, D)
        mean, raw = self.head(h).unbind(-1)                                   # (B, Nt) x 2
        std = self.args.min_std + (1.0 - self.args.min_std) * F.softplus(raw)
        return mean, 2.0 * torch.log(std)


def gaussian_nll(mean: torch.Tensor, log_variance: torch.Tensor,
                 target: torch.Tensor) -> torch.Tensor:
    """Per-point negative log-likelihood (nats) of ``target`` under N(mean, exp(log_variance))."""
    return 0.5 * (math.log(2 * math.pi) + log_variance
                  + (target - mean) ** 2 * torch.exp(-log_variance))


def draw_partitions(rng: np.random.Generator, batch: int, args: AnpArgs,
                    mode: str) -> tuple[np.ndarray, np.ndarray]:
    """Random context (B, Nc) and target (B, Nt) point indices, int64.

    ``mode`` ``frames``: the target is a block of ``target_frames`` columns (every row);
    ``bands``: a band of ``target_bands`` rows (every column). Positions differ per row of the
    batch; the context is a random subset of the points outside the target.
    """
    grid = np.arange(args.rows * args.columns).reshape(args.rows, args.columns)
    if mode == "frames":
        starts = rng.integers(0, args.columns - args.target_frames + 1, size=batch)
        target = np.stack([grid[:, s:s + args.target_frames].ravel() for s in starts])
    elif mode == "bands":
        starts = rng.integers(0, args.rows - args.target_bands + 1, size=batch)
        target = np.stack([grid[s:s + args.target_bands].ravel() for s in starts])
    else:
        raise ValueError(f"mode {mode!r} not in {MODES}")
    n_points = grid.size
    keys = rng.random((batch, n_points))
    np.put_along_axis(keys, target, 2.0, axis=1)  # target points sort last
    n_context = min(args.context_points, n_points - target.shape[1])
    context = np.argsort(keys, axis=1, kind="stable")[:, :n_context]
    return context.astype(np.int64), target.astype(np.int64)


def boot_partitions(args: AnpArgs, partitions: int, seed: int
                    ) -> list[tuple[np.ndarray, np.ndarray]]:
    """ANP-Boot's ``partitions`` context (1, Nc) / target (1, Nt) index pairs, drawn from
    ``seed`` (alternately frame blocks and bands); the ONNX export bakes in the same ones."""
    if partitions < 1:
        raise BadInput(f"partitions {partitions}: give at least 1")
    rng = np.random.default_rng(seed)
    return [draw_partitions(rng, 1, args, MODES[r % 2]) for r in range(partitions)]


def partition_nll(model: AttentiveNeuralProcess, values: torch.Tensor, context: np.ndarray,
                  target: np.ndarray) -> torch.Tensor:
    """Grid values (B, N), partitions (B, Nc) / (B, Nt) -> mean target NLL per patch (B,)."""
    context_t = torch.from_numpy(context).to(values.device)
    target_t = torch.from_numpy(target).to(values.device)
    mean, log_variance = model(context_t, values.gather(1, context_t), target_t)
    return gaussian_nll(mean, log_variance, values.gather(1, target_t)).mean(1)


@torch.no_grad()
def boot_nll(model: AttentiveNeuralProcess, patch_batch: np.ndarray, partitions: int = 8,
             seed: int = 0, batch_size: int = 256) -> np.ndarray:
    """Patches (P, F, T) -> (P, partitions) mean target NLL under each partition.

    The partitions alternate frame blocks and bands and are drawn once from ``seed``, the
    same for every patch: a clip's scores are deterministic and comparable across clips.
    """
    draws = boot_partitions(model.args, partitions, seed)
    device = next(model.parameters()).device
    out = np.empty((len(patch_batch), partitions), dtype=np.float64)
    for start in range(0, len(patch_batch), batch_size):
        x = torch.from_numpy(np.asarray(patch_batch[start:start + batch_size], np.float32))
        values = model.grid(x.to(device))                                   # (B, N)
        for r, (context, target) in enumerate(draws):
            repeat = (len(values), 1)
            out[start:start + len(values), r] = partition_nll(
                model, values, np.tile(context, repeat), np.tile(target, repeat)).cpu().numpy()
    return out


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# --- a trained run, loaded for scoring ------------------------------------------------------


@dataclass
class LoadedAnp:
    """An ANP run in evaluation mode: ``boot_clip(waveform)`` gives a clip's ANP-Boot NLLs."""

    run_dir: Path
    front_end: FrontEnd
    patching: Patching
    machines: list[str]
    model: AttentiveNeuralProcess
    weights: str
    validation_clips: list[str]   # "<machine>/<file name>" held out of training
    checkpoint: dict
    objective: str = OBJECTIVE

    def patches(self, waveform: np.ndarray) -> np.ndarray:
        """16 kHz waveform (N,) -> patches (P, F, T), as the edge cuts them."""
        spec = spectrogram(np.asarray(waveform, dtype=np.float32), self.front_end)
        return patches(spec, self.patching.patch_frames, self.patching.patch_hop)

    def boot_clip(self, waveform: np.ndarray, partitions: int = 8, seed: int = 0) -> np.ndarray:
        """16 kHz waveform (N,) -> (partitions,) the clip's mean target NLL per partition
        (mean over its patches); NaN where the clip is shorter than one patch."""
        cut = self.patches(waveform)
        if len(cut) == 0:
            return np.full(partitions, np.nan)
        return boot_nll(self.model, cut, partitions, seed).mean(0)


def is_anp_checkpoint(payload: dict) -> bool:
    return payload.get("objective") == OBJECTIVE


def load_anp_run(run_dir: str | Path, weights: str = "averaged") -> LoadedAnp:
    """Load a run folder written by ``asd-edge train --objective anp``; BadInput otherwise."""
    if weights not in ("averaged", "last"):
        raise BadInput(f"weights {weights!r}: choose 'averaged' or 'last'")
    payload = load_checkpoint(run_dir)
    if not is_anp_checkpoint(payload):
        raise BadInput(f"{run_dir}: objective {payload.get('objective')!r}, not an attentive "
                       "neural process run; train one with 'asd-edge train --objective anp'")
    model = AttentiveNeuralProcess(AnpArgs.from_dict(payload["model_args"]))
    try:
        model.load_state_dict(payload["averaged" if weights == "averaged" else "model"])
    except RuntimeError as err:
        raise BadInput(f"{run_dir}: checkpoint weights do not fit its model arguments ({err}); "
                       "the file is damaged: retrain") from err
    rest = {k: v for k, v in payload.items()
            if k not in ("model", "averaged", "average_snapshots", "optimizer", "scaler")}
    return LoadedAnp(Path(run_dir), FrontEnd(**payload["front_end"]),
                     Patching(**payload["patching"]), list(payload["machines"]), model.eval(),
                     weights, list(payload.get("validation_clips", [])), rest)


# --- training: the ANP's model and step in the shared loop (training.loop) --------------


@torch.no_grad()
def validation_nll(model: AttentiveNeuralProcess, cache, indices: list[int],
                   patching: Patching, partitions: int, seed: int) -> float | None:
    """Mean ANP-Boot NLL of up to 4 patches of each held-out clip (None without clips)."""
    if not indices:
        return None
    cut = np.concatenate([cache.clip_patches(i, patching.patch_frames, patching.patch_hop, 4)
                          for i in indices])
    was_training = model.training
    model.eval()
    value = float(boot_nll(model, cut, partitions, seed).mean())
    model.train(was_training)
    return value


class AnpObjective(Objective[AttentiveNeuralProcess]):
    """The ANP's part of the shared loop (``training.loop``): one process, no ``--init``, no
    labels and no batch norm; each epoch draws ``draws_per_clip`` random patches per training
    clip, and each batch masks a block of columns or a band of rows (drawn per batch)."""

    name = OBJECTIVE
    loss_label = "target NLL (nats)"
    draws = "patches"

    def __init__(self, args: AnpArgs | None = None, draws_per_clip: int = 8) -> None:
        self.args = args
        self.draws_per_clip = draws_per_clip

    def check(self, config: TrainConfig) -> None:
        if config.patch_frames != DEFAULT_PATCHING.patch_frames:
            raise BadInput(f"--patch-frames {config.patch_frames}: the ANP is built for "
                           f"{DEFAULT_PATCHING.patch_frames}-frame patches; drop --patch-frames")
        if config.subclusters:
            raise BadInput(f"--subclusters {config.subclusters}: the ANP has no classifier; "
                           "drop --subclusters or choose another --objective")
        if config.spectrum_branch:
            raise BadInput("--spectrum-branch is a branch of the surrogate-task CNN; the ANP "
                           "has none: drop --spectrum-branch or choose another --objective")

    def patching(self, config: TrainConfig) -> Patching:
        return DEFAULT_PATCHING

    def build(self, run: RunData, resume: dict | None, init: dict | None
              ) -> AttentiveNeuralProcess:
        self.run = run
        front_end, patching = run.front_end, run.patching
        if resume:
            self.args = AnpArgs.from_dict(resume["model_args"])
        args = self.args = self.args or AnpArgs.for_front_end(front_end.n_bins,
                                                              patching.patch_frames)
        if (args.n_bins, args.patch_frames) != (front_end.n_bins, patching.patch_frames):
            raise BadInput(f"ANP arguments for {args.n_bins} x {args.patch_frames} patches, but "
                           f"the front end gives {front_end.n_bins} x {patching.patch_frames}")
        model = AttentiveNeuralProcess(args)
        if not resume:
            # per-row statistics of the pooled grid, from the clips' per-bin statistics
            mean, std = run.cache.frequency_statistics(run.train_idx)
            pooled_mean = mean[:args.rows * args.freq_pool].reshape(args.rows, -1).mean(1)
            second = (std ** 2 + mean ** 2)[:args.rows * args.freq_pool].reshape(args.rows, -1)
            pooled_std = np.sqrt(np.maximum(second.mean(1) - pooled_mean ** 2, 0.0))
            model.set_input_statistics(torch.from_numpy(pooled_mean.astype(np.float32)),
                                       torch.from_numpy(pooled_std.astype(np.float32)))
        self.model = model
        return model

    def model_args(self) -> dict:
        assert self.args is not None  # set by build
        return self.args.to_dict()

    def plan(self, run: RunData) -> tuple[int, int]:
        self.draws_per_epoch = len(run.train_idx) * self.draws_per_clip
        batch_size = min(run.config.batch_size, self.draws_per_epoch)
        return batch_size, max(1, self.draws_per_epoch // batch_size)

    def epoch_draws(self, run: RunData, epoch: int
                    ) -> tuple[np.ndarray, np.random.Generator]:
        rng = np.random.default_rng([run.config.seed, epoch])
        train_array = np.asarray(run.train_idx)
        return train_array[rng.choice(len(train_array), self.draws_per_epoch,
                                      p=run.weights)], rng

    def step(self, module: nn.Module, batch: np.ndarray,
             rng: np.random.Generator) -> dict[str, torch.Tensor]:
        run, model = self.run, self.model
        assert self.args is not None
        x = torch.from_numpy(run.cache.random_patches(batch, run.patching.patch_frames, rng))
        values = model.grid(x.to(run.device))                               # (B, N)
        context, target = draw_partitions(rng, len(batch), self.args, MODES[rng.integers(2)])
        return {"loss": partition_nll(model, values, context, target).mean()}

    def validate(self, model: AttentiveNeuralProcess, averaged: AttentiveNeuralProcess | None,
                 epoch: int) -> dict:
        run = self.run
        return {"val_loss": validation_nll(model, run.cache, run.val_idx, run.patching, 4,
                                           run.config.seed)}

    def model_summary(self, model: AttentiveNeuralProcess) -> dict:
        assert self.args is not None
        return {"model": "anp", "parameters": count_parameters(model),
                "grid": [self.args.rows, self.args.columns]}

    def describe(self, model: AttentiveNeuralProcess) -> str:
        args = self.args
        assert args is not None
        return (f"ANP: {count_parameters(model)} parameters, {args.rows} x {args.columns} grid, "
                f"{args.context_points} context points")

    def epoch_line(self, record: dict) -> str:
        val = record["val_loss"]
        return (f"NLL {record['train_loss']:.3f}, validation "
                f"{'-' if val is None else f'{val:.3f}'}")


def train_anp(config: TrainConfig, args: AnpArgs | None = None, draws_per_clip: int = 8) -> Path:
    """``asd-edge train --objective anp``: train (or resume) an ANP run; returns the checkpoint.

    ``config`` is the loop's ``TrainConfig`` (data, machines, out, epochs, batch size, lr,
    weight decay, warm-up, seed, cache, validation hold-out, balance, weight averaging, front
    end, device); each epoch draws ``draws_per_clip`` random patches per training clip.
    Options of the classifier objectives (dimensions, ArcFace) do not apply.
    """
    return train_run(config, AnpObjective(args, draws_per_clip))
