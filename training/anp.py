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

import json
import logging
import math
import time
from collections import Counter
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from edge.errors import BadInput
from edge.features import DEFAULT_PATCHING, FrontEnd, Patching, patches, spectrogram

logger = logging.getLogger(__name__)

if TYPE_CHECKING:
    from training.train import TrainConfig

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
    from training.checkpoint import load_checkpoint

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


# --- training: the ANP's loop, on the shared data, cache and checkpoint code ----------------


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


def train_anp(config: TrainConfig, args: AnpArgs | None = None, draws_per_clip: int = 8) -> Path:
    """``asd-edge train --objective anp``: train (or resume) an ANP run; returns the checkpoint.

    ``config`` is the loop's ``TrainConfig`` (data, machines, out, epochs, batch size, lr,
    weight decay, warm-up, seed, cache, validation hold-out, balance, weight averaging, front
    end, device); each epoch draws ``draws_per_clip`` random patches per training clip.
    Options of the classifier objectives (dimensions, ArcFace) do not apply.
    """
    from training import data as tdata
    from training.checkpoint import (
        CHECKPOINT_NAME,
        FORMAT,
        VERSION,
        check_compatible,
        git_revision,
        load_checkpoint,
        save_checkpoint,
    )
    from training.train import (
        FRONT_ENDS,
        _distributed,
        _state_copy,
        average_states,
        averaging_window,
        default_cache_dir,
        learning_rate,
        resumed_position,
        select_device,
        training_clips,
    )

    if _distributed()[1] > 1:
        raise BadInput("--objective anp trains in one process; run 'asd-edge train' without "
                       "torchrun")
    if config.init:
        raise BadInput(f"--init {config.init}: fine-tuning is not available for --objective "
                       "anp; train it from scratch (drop --init)")
    if config.front_end not in FRONT_ENDS:
        raise BadInput(f"--front-end {config.front_end!r}: choose one of {', '.join(FRONT_ENDS)}")
    if config.patch_frames != DEFAULT_PATCHING.patch_frames:
        raise BadInput(f"--patch-frames {config.patch_frames}: the ANP is built for "
                       f"{DEFAULT_PATCHING.patch_frames}-frame patches; drop --patch-frames")
    device = select_device(config.device)
    front_end, patching = FRONT_ENDS[config.front_end], DEFAULT_PATCHING
    out = Path(config.out)
    ckpt_file = out / CHECKPOINT_NAME
    machines, clips = training_clips(config, front_end, patching)
    maps = tdata.LabelMaps.from_clips(clips)

    resume_payload = None
    if config.resume:
        resume_payload = load_checkpoint(out)
        check_compatible(resume_payload, f"--resume {out}", OBJECTIVE, front_end, patching)
    elif ckpt_file.exists():
        raise BadInput(f"{out}: already holds a run; pass --resume to continue it or choose "
                       "another --out")

    cache = tdata.build_cache(clips, front_end, Path(config.cache_dir) if config.cache_dir
                              else default_cache_dir(out), progress=config.progress)
    train_idx, val_idx = tdata.split_validation(clips, config.val_fraction, config.seed)
    weights = tdata.sampling_weights([clips[i] for i in train_idx], config.balance)

    torch.manual_seed(config.seed)
    if resume_payload:
        args = AnpArgs.from_dict(resume_payload["model_args"])
    args = args or AnpArgs.for_front_end(front_end.n_bins, patching.patch_frames)
    if (args.n_bins, args.patch_frames) != (front_end.n_bins, patching.patch_frames):
        raise BadInput(f"ANP arguments for {args.n_bins} x {args.patch_frames} patches, but the "
                       f"front end gives {front_end.n_bins} x {patching.patch_frames}")
    model = AttentiveNeuralProcess(args)
    if resume_payload:
        model.load_state_dict(resume_payload["model"])
    else:
        # per-row statistics of the pooled grid, from the clips' per-bin statistics
        mean, std = cache.frequency_statistics(train_idx)
        pooled_mean = mean[:args.rows * args.freq_pool].reshape(args.rows, -1).mean(1)
        second = (std ** 2 + mean ** 2)[:args.rows * args.freq_pool].reshape(args.rows, -1)
        pooled_std = np.sqrt(np.maximum(second.mean(1) - pooled_mean ** 2, 0.0))
        model.set_input_statistics(torch.from_numpy(pooled_mean.astype(np.float32)),
                                   torch.from_numpy(pooled_std.astype(np.float32)))
    model.to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr,
                                  weight_decay=config.weight_decay)

    draws_per_epoch = len(train_idx) * draws_per_clip
    batch_size = min(config.batch_size, draws_per_epoch)
    steps_per_epoch = max(1, draws_per_epoch // batch_size)
    total_steps = steps_per_epoch * config.epochs
    warmup_steps = int(config.warmup_epochs * steps_per_epoch)
    window = averaging_window(config.epochs, config.average_last)
    start_epoch, step, snapshots, averaged_epochs = 1, 0, [], []
    if resume_payload:
        optimizer.load_state_dict(resume_payload["optimizer"])
        start_epoch, step, averaged_epochs, snapshots = resumed_position(
            resume_payload, config.epochs, window)
        if start_epoch > config.epochs:
            logger.info("%s: already trained for %d epoch(s); raise --epochs to continue",
                        out, resume_payload["epoch"])
            return ckpt_file

    parameters = count_parameters(model)
    out.mkdir(parents=True, exist_ok=True)
    logger.info("ANP: %d parameters, %d x %d grid, %d context points; %d train / %d "
                "validation clips; %d step(s) per epoch, device %s", parameters, args.rows,
                args.columns, args.context_points, len(train_idx), len(val_idx),
                steps_per_epoch, device)
    summary = {"root": str(Path(config.data).resolve()), "machines": machines,
               "train_clips": len(train_idx), "validation_clips": len(val_idx),
               "groups": {f"{m}/section_{s:02d}/{d}": n for (m, s, d), n in sorted(
                   Counter(tdata.group_of(c) for c in clips).items())},
               "cache_key": tdata.cache_key(clips, front_end)}
    metrics_path = out / "metrics.jsonl"
    history = [json.loads(line) for line in metrics_path.read_text().splitlines()
               if line.strip()] if resume_payload and metrics_path.exists() else []
    history = [m for m in history if m["epoch"] < start_epoch]
    train_array = np.asarray(train_idx)
    for epoch in range(start_epoch, config.epochs + 1):
        started = time.perf_counter()
        rng = np.random.default_rng([config.seed, epoch])
        order = train_array[rng.choice(len(train_array), draws_per_epoch, p=weights)]
        model.train()
        loss_sum, n_seen = 0.0, 0
        for b in range(steps_per_epoch):
            batch = order[b * batch_size:(b + 1) * batch_size]
            x = torch.from_numpy(cache.random_patches(batch, patching.patch_frames, rng))
            values = model.grid(x.to(device))                               # (B, N)
            context, target = draw_partitions(rng, len(batch), args, MODES[rng.integers(2)])
            loss = partition_nll(model, values, context, target).mean()
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(step, total_steps, config.lr, warmup_steps)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            loss_sum += float(loss.detach()) * len(batch)
            n_seen += len(batch)
        seconds = time.perf_counter() - started

        last_state = _state_copy(model)
        if epoch > config.epochs - window:
            snapshots.append(last_state)
            averaged_epochs.append(epoch)
        averaged_state = average_states(snapshots) if snapshots else last_state
        record = {"epoch": epoch, "lr": learning_rate(step - 1, total_steps, config.lr,
                                                      warmup_steps),
                  "train_loss": loss_sum / n_seen,
                  "val_loss": validation_nll(model, cache, val_idx, patching, 4, config.seed),
                  "seconds": seconds, "clips_per_second": n_seen / seconds}
        history.append(record)
        metrics_path.write_text("".join(json.dumps(m) + "\n" for m in history))
        save_checkpoint(ckpt_file, {
            "format": FORMAT, "version": VERSION, "model_args": args.to_dict(),
            "front_end": front_end.model_dump(), "patching": patching.model_dump(),
            "objective": OBJECTIVE, "machines": machines,
            "section_labels": maps.section_labels, "attribute_labels": maps.attribute_labels,
            "validation_clips": [f"{clips[i].machine}/{clips[i].name}" for i in val_idx],
            "config": config.model_dump(), "data": summary,
            "model_summary": {"model": "anp", "parameters": parameters,
                              "grid": [args.rows, args.columns]},
            "git_revision": git_revision(), "torch_version": str(torch.__version__),
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "epoch": epoch, "epochs": config.epochs, "step": step, "world_size": 1,
            "model": last_state, "averaged": averaged_state,
            "averaged_epochs": list(averaged_epochs), "average_snapshots": snapshots,
            "optimizer": optimizer.state_dict(), "scaler": {},
        })
        logger.info("epoch %d: NLL %.3f, validation %s, %.1f patches/s", epoch,
                    record["train_loss"], "-" if record["val_loss"] is None
                    else f"{record['val_loss']:.3f}", record["clips_per_second"])
    return ckpt_file

