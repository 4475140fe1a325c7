"""The training loop every objective runs: ``train_run(config, objective)``.

The loop owns what every objective shares; an ``Objective`` contributes its model and step:

    the loop                                        the objective
    options (``TrainConfig``), device, torchrun     its own refusals (``check``)
    clips, label maps, validation hold-out, cache   its model, built or taken from a checkpoint
    the run folder guard, --resume, --init          how a batch of clips is drawn and stepped
    AdamW, warm-up + cosine learning rate, AMP      what an epoch measures on held-out clips
    the average of the last K epochs' weights       (batch-norm recalibration, if it has any)
    metrics.jsonl, curves.png, checkpoint.pt

Per epoch: draw the clips (weighted, see ``training.data``), step each batch under the
learning-rate schedule, then (rank 0) snapshot and average the weights, measure the held-out
normal clips, append to ``RUN/metrics.jsonl``, redraw ``RUN/curves.png`` and save
``RUN/checkpoint.pt`` (format in ``training.checkpoint``). Only normal TRAIN clips are used;
``--val-fraction`` of them are held out. Under torchrun (``Objective.distributed``) rank 0
builds the cache and writes the run; every rank steps its share of the draws (DDP).
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from abc import ABC, abstractmethod
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Generic, TypeVar

import numpy as np
import torch
import torch.distributed as dist
from pydantic import BaseModel, ConfigDict, Field

from edge.dataset import Clip, scan
from edge.errors import BadInput
from edge.features import (
    DEFAULT_FRONT_END,
    DEFAULT_PATCHING,
    LOG_MEL_FRONT_END,
    FrontEnd,
    Patching,
    mel_filterbank,
)
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
from training.model import OBJECTIVES

logger = logging.getLogger(__name__)

ModelT = TypeVar("ModelT", bound=torch.nn.Module)

FRONT_ENDS = {"log-linear": DEFAULT_FRONT_END, "log-mel": LOG_MEL_FRONT_END}
# the spectrum-branch model's input: every linear bin of the log-mel front end's FFT (513 at
# 0-8 kHz); the model computes the log-mel bands itself (training/model.py)
SPECTRUM_FRONT_END = FrontEnd(**{**LOG_MEL_FRONT_END.model_dump(), "n_mels": None})


def spectrum_mel_filters(front_end: FrontEnd) -> np.ndarray:
    """(M, F) float32: the log-mel front end's filters over ``front_end``'s bins (all of them)."""
    filters = mel_filterbank(LOG_MEL_FRONT_END)
    if front_end != SPECTRUM_FRONT_END:
        raise BadInput("the spectrum branch reads every linear bin of the log-mel front end's "
                       f"FFT; this run's front end is {front_end.model_dump()}")
    return filters


class TrainConfig(BaseModel):
    """The options of one run (the CLI's flags); saved in the checkpoint."""

    model_config = ConfigDict(extra="forbid")

    data: str = Field(description="data-set root in the DCASE layout")
    machines: list[str] = Field(description="machine types, or ['all']")
    out: str = Field(description="run folder")
    objective: str = Field("disentangled", description=f"one of {OBJECTIVES} or anp")
    epochs: int = Field(20, ge=1)
    batch_size: int = Field(64, ge=2)
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    warmup_epochs: float = Field(1.0, ge=0)
    device: str = Field("auto", description="auto, cpu or cuda")
    seed: int = 0
    init: str | None = Field(None, description="run folder to fine-tune from")
    resume: bool = False
    cache_dir: str | None = Field(None, description="spectrogram cache folder")
    val_fraction: float = Field(0.1, ge=0, lt=1)
    balance: float = Field(0.5, ge=0, le=1, description="target-domain sampling exponent")
    average_last: int | None = Field(None, ge=1, description="K epochs averaged")
    section_dim: int = Field(64, ge=2)
    attribute_dim: int = Field(64, ge=2)
    arcface_scale: float = Field(16.0, gt=0)
    arcface_margin: float = Field(0.2, ge=0)
    front_end: str = Field("log-mel", description=f"one of {list(FRONT_ENDS)}")
    patch_frames: int = Field(DEFAULT_PATCHING.patch_frames, ge=32, le=256,
                              description="frames per input patch (64 x 32 ms = 2.05 s)")
    allow_no_target: bool = False
    val_patches_per_clip: int = Field(4, ge=1)
    bn_clips: int = Field(2048, ge=2, description="clips for batch-norm recalibration")
    mix_probability: float = Field(
        0.0, ge=0, le=1, description="share of training patches with another training clip "
                                     "mixed in (training/augment.py); 0: none")
    mix_snr_db: tuple[float, float] = Field(
        (0.0, 20.0), description="range of the signal-to-interference ratio of the mix (dB)")
    spectrum_branch: bool = Field(
        False, description="a second branch on each patch's high-resolution spectrum "
                           "(training/model.py); needs the log-mel front end")
    subclusters: int = Field(0, ge=0, le=64, description="sub-cluster AdaCos classifiers with "
                             "this many centres per class (training/model.py); 0: softmax")
    progress: bool = True


def front_end_for(config: TrainConfig) -> FrontEnd:
    """The spectrogram the run's model reads: the named one, or the spectrum branch's bins."""
    if config.front_end not in FRONT_ENDS:
        raise BadInput(f"--front-end {config.front_end!r}: choose one of {', '.join(FRONT_ENDS)}")
    if config.spectrum_branch:
        if config.front_end != "log-mel":
            raise BadInput(f"--spectrum-branch with --front-end {config.front_end}: the branch's "
                           "model computes log-mel bands itself; drop --front-end")
        return SPECTRUM_FRONT_END
    return FRONT_ENDS[config.front_end]


# --- the parts of a run every objective shares ---------------------------------------------


def patching_for(config: TrainConfig) -> Patching:
    """The run's patches: ``config.patch_frames`` long, starting every 16 frames (0.512 s)."""
    return Patching(patch_frames=config.patch_frames, patch_hop=DEFAULT_PATCHING.patch_hop)


def learning_rate(step: int, total_steps: int, base_lr: float, warmup_steps: int) -> float:
    """Linear warm-up to ``base_lr`` over ``warmup_steps``, then cosine decay to 1 % of it."""
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return base_lr * (0.01 + 0.99 * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress))))


def averaging_window(epochs: int, average_last: int | None) -> int:
    """K, the number of final epochs averaged: given, else a quarter of the run in [2, 5]."""
    if average_last:
        return min(average_last, epochs)
    return min(epochs, max(2, min(5, epochs // 4)))


def default_cache_dir(out: Path) -> Path:
    """Beside the run folder, shared by the runs in the same parent folder."""
    return out.resolve().parent / ".asd-edge-cache"


def select_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise BadInput("--device cuda asked for, but no CUDA device is available to torch; "
                       "use --device cpu or auto")
    if name not in ("cpu", "cuda"):
        raise BadInput(f"--device {name!r}: choose auto, cpu or cuda")
    return torch.device(name)


def distributed_environment() -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun's environment; (0, 1, 0) without it."""
    return (int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
            int(os.environ.get("LOCAL_RANK", 0)))


def resumed_position(payload: dict, epochs: int, window: int
                     ) -> tuple[int, int, list[int], list[dict]]:
    """Where a resumed run continues: (start epoch, step, averaged epochs, their snapshots).

    Keeps the saved weight snapshots that fall in this run's averaging window (``--epochs``
    may have grown since the checkpoint was written).
    """
    kept = [(e, s) for e, s in zip(payload["averaged_epochs"], payload["average_snapshots"],
                                   strict=True) if e > epochs - window]
    return (payload["epoch"] + 1, payload["step"], [e for e, _ in kept],
            [s for _, s in kept])


def state_copy(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The model's state dict, detached and copied to the CPU."""
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def average_states(states: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Element-wise mean of state dicts; integer buffers (BN batch counts) take the last's."""
    last = states[-1]
    return {k: (torch.stack([s[k].double() for s in states]).mean(0).to(v.dtype)
                if v.is_floating_point() else v.clone()) for k, v in last.items()}


def _check_data(config: TrainConfig, machines: list[str], clips: list[Clip]) -> None:
    if not clips:
        raise BadInput(f"{config.data}: no normal training clips for {', '.join(machines)} "
                       "(expected <machine>/train/section_XX_<domain>_train_normal_*.wav)")
    without = [m for m in machines if not any(c.machine == m for c in clips)]
    if without:
        raise BadInput(f"{config.data}: no normal training clips for {', '.join(without)}; "
                       "leave it out of --machines or add its train/ folder")
    groups = {(c.machine, c.section, c.domain) for c in clips}
    missing = sorted({(m, s) for m, s, _ in groups if (m, s, "target") not in groups})
    if missing and not config.allow_no_target:
        named = ", ".join(f"{m} section_{s:02d}" for m, s in missing[:6])
        raise BadInput(f"{config.data}: no target-domain training clips for {named}; the "
                       "DCASE layout has ~10 per section: add them or pass --allow-no-target")
    for machine, section in missing:
        logger.warning("%s section_%02d: no target-domain training clips", machine, section)


def training_clips(config: TrainConfig, front_end: FrontEnd, patching: Patching
                   ) -> tuple[list[str], list[Clip]]:
    """The run's machine types and their normal training clips, without clips shorter than
    one patch."""
    dataset = scan(config.data)
    machines = dataset.require_machines(config.machines)
    clips = dataset.select(machine=machines, split="train", label="normal")
    _check_data(config, machines, clips)
    patch_samples = front_end.n_fft + (patching.patch_frames - 1) * front_end.hop_length
    short = [c for c in clips if tdata.clip_samples(c) < patch_samples]
    if short:
        logger.warning("%d clip(s) shorter than one patch (%.2f s) are left out, e.g. %s",
                       len(short), patch_samples / front_end.sample_rate, short[0].path)
        left_out = set(short)
        clips = [c for c in clips if c not in left_out]
        _check_data(config, machines, clips)
    return machines, clips


def read_history(path: Path, before_epoch: int) -> list[dict]:
    """The records of ``metrics.jsonl`` of the epochs before ``before_epoch`` ([] without it)."""
    if not path.exists():
        return []
    history = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [m for m in history if m["epoch"] < before_epoch]


def write_history(path: Path, history: list[dict]) -> None:
    path.write_text("".join(json.dumps(m) + "\n" for m in history))


ACCURACY_CURVES = (("train_section_accuracy", "train section"),
                   ("train_attribute_accuracy", "train attribute"),
                   ("val_section_accuracy", "val section"),
                   ("val_attribute_accuracy", "val attribute"))


def plot_curves(metrics: list[dict], path: Path, loss_label: str) -> None:
    """``curves.png``: train and validation loss per epoch, and the accuracies a run has."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [m["epoch"] for m in metrics]
    accuracies = [(key, label) for key, label in ACCURACY_CURVES
                  if all(m.get(key) is not None for m in metrics)]
    fig, axes = plt.subplots(1, 2 if accuracies else 1, figsize=(10 if accuracies else 5, 4),
                             squeeze=False)
    ax_loss = axes[0][0]
    for key, label in (("train_loss", "train"), ("val_loss", "validation")):
        if all(m.get(key) is not None for m in metrics):
            ax_loss.plot(epochs, [m[key] for m in metrics], marker="o", label=label)
    ax_loss.set(xlabel="epoch", ylabel=loss_label, title="loss")
    if accuracies:
        ax_acc = axes[0][1]
        for key, label in accuracies:
            ax_acc.plot(epochs, [m[key] for m in metrics], marker="o", label=label)
        ax_acc.set(xlabel="epoch", ylabel="accuracy", ylim=(0, 1.02), title="accuracy")
    for ax in axes[0]:
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# --- what an objective contributes ---------------------------------------------------------


@dataclass
class RunData:
    """What the loop hands an objective: the run's clips, labels, cache, split and device."""

    config: TrainConfig
    front_end: FrontEnd
    patching: Patching
    machines: list[str]
    clips: list[Clip]
    maps: tdata.LabelMaps
    cache: tdata.SpectrogramCache
    train_idx: list[int]
    val_idx: list[int]
    weights: np.ndarray       # sampling probability of each training clip (sums to 1)
    device: torch.device
    rank: int = 0
    world: int = 1
    amp: bool = False         # mixed precision (float16 autocast and a gradient scaler)


class Objective(ABC, Generic[ModelT]):
    """One training objective: its model, how it draws and steps a batch, what it measures.

    The loop calls, in order: ``check`` (before any data is read), ``build`` (once), ``plan``
    (once), then per epoch ``epoch_draws``, ``step`` per batch, ``train_metrics``, and on
    rank 0 ``before_snapshot``, ``average`` (with the window's snapshots) and ``validate``.
    """

    name: str = ""
    distributed: bool = False   # may run under torchrun (DDP)
    fine_tuning: bool = False   # accepts --init RUN
    amp: bool = False           # float16 autocast and a gradient scaler on CUDA
    loss_label: str = "loss"    # the loss axis of curves.png
    draws: str = "clips"        # what one draw is, for the throughput in the log

    def check(self, config: TrainConfig) -> None:  # noqa: B027  (optional hook)
        """Refuse options the objective cannot honour (BadInput)."""

    def patching(self, config: TrainConfig) -> Patching:
        return patching_for(config)

    @abstractmethod
    def build(self, run: RunData, resume: dict | None, init: dict | None) -> ModelT:
        """The model on the CPU. Resumed: from ``resume["model_args"]`` (the loop loads its
        weights); else fine-tuned from the checkpoint ``init``; else fresh, with its input
        statistics from the training clips."""

    @abstractmethod
    def model_args(self) -> dict:
        """The built model's arguments, as the checkpoint keeps them (``model_args``)."""

    @abstractmethod
    def plan(self, run: RunData) -> tuple[int, int]:
        """(batch size, steps per epoch) of each process."""

    @abstractmethod
    def epoch_draws(self, run: RunData, epoch: int
                    ) -> tuple[np.ndarray, np.random.Generator]:
        """This process's clip indices for the epoch, in batch order, and the generator its
        steps draw from (patch offsets, masks)."""

    @abstractmethod
    def step(self, module: torch.nn.Module, batch: np.ndarray,
             rng: np.random.Generator) -> dict[str, torch.Tensor]:
        """Forward one batch of clip indices; {"loss": what to minimise, ...}: every entry is
        averaged over the epoch into ``train_<name>``."""

    def begin_epoch(self) -> None:  # noqa: B027  (optional hook)
        """Reset what the objective counts over an epoch."""

    def train_metrics(self) -> dict[str, Any]:
        """Epoch figures beyond the averaged losses (e.g. training accuracies)."""
        return {}

    def progress(self) -> dict[str, str]:
        """Figures for the progress bar beyond the loss."""
        return {}

    def before_snapshot(self, model: ModelT, epoch: int) -> None:  # noqa: B027
        """Bring the model's state up to date before its weights are copied."""

    def average(self, snapshots: list[dict[str, torch.Tensor]], epoch: int
                ) -> tuple[dict[str, torch.Tensor], ModelT | None]:
        """The averaged weights of the window's snapshots, and a model holding them when the
        objective measures it (else None)."""
        return average_states(snapshots), None

    @abstractmethod
    def validate(self, model: ModelT, averaged: ModelT | None, epoch: int) -> dict[str, Any]:
        """The epoch's figures on the held-out clips (``val_loss``, ...)."""

    @abstractmethod
    def model_summary(self, model: ModelT) -> dict[str, Any]:
        """The checkpoint's ``model_summary`` (parameters, cost)."""

    @abstractmethod
    def describe(self, model: ModelT) -> str:
        """The model and its labels, for the log line at the start."""

    @abstractmethod
    def epoch_line(self, record: dict[str, Any]) -> str:
        """A finished epoch's losses and accuracies, for its log line."""


# --- the loop ------------------------------------------------------------------------------


def _guard(config: TrainConfig, objective: Objective[Any], front_end: FrontEnd, patching: Patching,
           maps: tdata.LabelMaps) -> tuple[dict | None, dict | None]:
    """The run folder guard: (the checkpoint to resume, the checkpoint to fine-tune from)."""
    out = Path(config.out)
    resume = init = None
    if config.resume:
        resume = load_checkpoint(out)
        check_compatible(resume, f"--resume {out}", objective.name, front_end, patching)
        if (resume["section_labels"] != maps.section_labels
                or resume["attribute_labels"] != maps.attribute_labels):
            raise BadInput(f"--resume {out}: the data's sections or attributes differ from the "
                           "run's; resume with the same --data and --machines")
    elif (out / CHECKPOINT_NAME).exists():
        raise BadInput(f"{out}: already holds a run; pass --resume to continue it or choose "
                       "another --out")
    if config.init:
        init = load_checkpoint(config.init)
        check_compatible(init, f"--init {config.init}", objective.name, front_end, patching)
    return resume, init


def train_run(config: TrainConfig, objective: Objective[Any]) -> Path:
    """Train (or resume, or fine-tune) one run of ``objective``; returns the checkpoint path."""
    rank, world, local_rank = distributed_environment()
    if world > 1 and not objective.distributed:
        raise BadInput(f"--objective {objective.name} trains in one process; run 'asd-edge "
                       "train' without torchrun")
    if config.init and not objective.fine_tuning:
        raise BadInput(f"--init {config.init}: fine-tuning is not available for --objective "
                       f"{objective.name}; train it from scratch (drop --init)")
    objective.check(config)
    device = select_device(config.device)
    if world > 1 and device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    front_end, patching = front_end_for(config), objective.patching(config)
    out = Path(config.out)
    ckpt_file = out / CHECKPOINT_NAME

    # --- the data, and what to continue from ---------------------------------------------------
    machines, clips = training_clips(config, front_end, patching)
    maps = tdata.LabelMaps.from_clips(clips)
    resume_payload, init_payload = _guard(config, objective, front_end, patching, maps)

    # --- the spectrogram cache (rank 0 builds it, the others wait) ---------------------------
    cache_dir = Path(config.cache_dir) if config.cache_dir else default_cache_dir(out)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    if rank == 0:
        cache = tdata.build_cache(clips, front_end, cache_dir, progress=config.progress)
    if world > 1:
        dist.barrier()
    if rank != 0:
        cache = tdata.open_cache(cache_dir, tdata.cache_key(clips, front_end))
    train_idx, val_idx = tdata.split_validation(clips, config.val_fraction, config.seed)
    weights = tdata.sampling_weights([clips[i] for i in train_idx], config.balance)
    use_amp = objective.amp and device.type == "cuda"
    run = RunData(config, front_end, patching, machines, clips, maps, cache, train_idx, val_idx,
                  weights, device, rank, world, use_amp)

    # --- the model and its optimiser -----------------------------------------------------------
    torch.manual_seed(config.seed)
    model = objective.build(run, resume_payload, init_payload)
    if resume_payload:
        model.load_state_dict(resume_payload["model"])
    model.to(device)
    module: torch.nn.Module = model
    if world > 1:
        module = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr,
                                  weight_decay=config.weight_decay)
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)

    batch_size, steps_per_epoch = objective.plan(run)
    total_steps = steps_per_epoch * config.epochs
    warmup_steps = int(config.warmup_epochs * steps_per_epoch)
    window = averaging_window(config.epochs, config.average_last)
    start_epoch, step = 1, 0
    snapshots: list[dict] = []  # the window's epoch-end weights, oldest first
    averaged_epochs: list[int] = []
    if resume_payload:
        optimizer.load_state_dict(resume_payload["optimizer"])
        if use_amp and resume_payload.get("scaler"):
            scaler.load_state_dict(resume_payload["scaler"])
        start_epoch, step, averaged_epochs, snapshots = resumed_position(
            resume_payload, config.epochs, window)
        if start_epoch > config.epochs:
            logger.info("%s: already trained for %d epoch(s); raise --epochs to continue",
                        out, resume_payload["epoch"])
            if world > 1:
                dist.destroy_process_group()
            return ckpt_file

    summary = {"root": str(Path(config.data).resolve()), "machines": machines,
               "train_clips": len(train_idx), "validation_clips": len(val_idx),
               "groups": {f"{m}/section_{s:02d}/{d}": n for (m, s, d), n in sorted(
                   Counter(tdata.group_of(c) for c in clips).items())},
               "cache_key": tdata.cache_key(clips, front_end)}
    model_summary = objective.model_summary(model)
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        logger.info("%s; %d train / %d validation clips; %d step(s) per epoch on %d "
                    "process(es), device %s", objective.describe(model), len(train_idx),
                    len(val_idx), steps_per_epoch, world, device)
    metrics_path = out / "metrics.jsonl"
    history = read_history(metrics_path, start_epoch) if resume_payload else []

    last_plot = -math.inf
    for epoch in range(start_epoch, config.epochs + 1):
        started = time.perf_counter()
        draws, rng = objective.epoch_draws(run, epoch)
        module.train()
        objective.begin_epoch()
        sums: dict[str, float] = {}
        seen = 0
        bar: Any = range(steps_per_epoch)
        if rank == 0 and config.progress:
            from tqdm import tqdm
            bar = tqdm(bar, desc=f"epoch {epoch}/{config.epochs}", unit="step", leave=False)
        for b in bar:
            batch = draws[b * batch_size:(b + 1) * batch_size]
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(step, total_steps, config.lr, warmup_steps)
            losses = objective.step(module, batch, rng)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(losses["loss"]).backward()
            scaler.step(optimizer)
            scaler.update()
            step += 1
            for key, value in losses.items():
                sums[key] = sums.get(key, 0.0) + float(value.detach()) * len(batch)
            seen += len(batch)
            if rank == 0 and config.progress:
                bar.set_postfix(loss=f"{sums['loss'] / seen:.3f}", **objective.progress())
        seconds = time.perf_counter() - started
        if rank == 0:
            # --- end of epoch: snapshot, average, measure, record, save --------------------
            objective.before_snapshot(model, epoch)
            last_state = state_copy(model)
            if epoch > config.epochs - window:
                snapshots.append(last_state)
                averaged_epochs.append(epoch)
            averaged_state, averaged_model = last_state, None
            if snapshots:
                averaged_state, averaged_model = objective.average(snapshots, epoch)
            record = {"epoch": epoch,
                      "lr": learning_rate(step - 1, total_steps, config.lr, warmup_steps),
                      **{f"train_{key}": value / seen for key, value in sums.items()},
                      **objective.train_metrics(),
                      **objective.validate(model, averaged_model, epoch),
                      "seconds": seconds, "clips_per_second": seen * world / seconds}
            history.append(record)
            write_history(metrics_path, history)
            if epoch == config.epochs or time.monotonic() - last_plot > 60:
                plot_curves(history, out / "curves.png", objective.loss_label)  # ~0.7 s
                last_plot = time.monotonic()
            save_checkpoint(ckpt_file, {
                "format": FORMAT, "version": VERSION,
                "model_args": objective.model_args(),
                "front_end": front_end.model_dump(), "patching": patching.model_dump(),
                "objective": objective.name, "machines": machines,
                "section_labels": maps.section_labels,
                "attribute_labels": maps.attribute_labels,
                "validation_clips": [f"{clips[i].machine}/{clips[i].name}" for i in val_idx],
                "config": config.model_dump(), "data": summary,
                "model_summary": model_summary,
                "git_revision": git_revision(), "torch_version": str(torch.__version__),
                "created": datetime.now(UTC).isoformat(timespec="seconds"),
                "epoch": epoch, "epochs": config.epochs, "step": step, "world_size": world,
                "model": last_state, "averaged": averaged_state,
                "averaged_epochs": list(averaged_epochs), "average_snapshots": snapshots,
                "optimizer": optimizer.state_dict(),
                "scaler": scaler.state_dict() if use_amp else {},
            })
            logger.info("epoch %d: %s, %.1f %s/s", epoch, objective.epoch_line(record),
                        record["clips_per_second"], objective.draws)
        if world > 1:
            dist.barrier()
    if world > 1:
        dist.destroy_process_group()
    return ckpt_file
