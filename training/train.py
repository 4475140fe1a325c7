"""The training loop: one flat function, ``train(config)``, for every objective.

    asd-edge train --data DIR --machines fan,gearbox|all --out RUN [--objective ...]
    torchrun --nproc_per_node N -m training.train --data DIR ...     (DDP; same checkpoint)

Per epoch: draw the clips (weighted, see ``training.data``), take one random patch of each,
step AdamW on L = L_Sec + L_Att under a warm-up + cosine learning rate, then measure the
held-out normal clips, update the average of the last K epochs' weights, append to
``RUN/metrics.jsonl``, redraw ``RUN/curves.png`` and save ``RUN/checkpoint.pt``. Only normal
TRAIN clips are used; ``--val-fraction`` of them are held out for the accuracies.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from pydantic import BaseModel, ConfigDict, Field

from edge.dataset import scan
from edge.errors import BadInput
from edge.features import DEFAULT_FRONT_END, DEFAULT_PATCHING, LOG_MEL_FRONT_END, Patching
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
from training.losses import surrogate_loss
from training.model import (
    OBJECTIVES,
    ONE_EMBEDDING_OBJECTIVES,
    ModelArgs,
    SurrogateTaskModel,
    count_parameters,
    multiply_adds_per_patch,
)

logger = logging.getLogger(__name__)

FRONT_ENDS = {"log-linear": DEFAULT_FRONT_END, "log-mel": LOG_MEL_FRONT_END}


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
    progress: bool = True


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


def _distributed() -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun's environment; (0, 1, 0) without it."""
    return (int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
            int(os.environ.get("LOCAL_RANK", 0)))


def _state_copy(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def average_states(states: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Element-wise mean of state dicts; integer buffers (BN batch counts) take the last's."""
    last = states[-1]
    return {k: (torch.stack([s[k].double() for s in states]).mean(0).to(v.dtype)
                if v.is_floating_point() else v.clone()) for k, v in last.items()}


def _check_data(config: TrainConfig, machines: list[str], clips: list) -> None:
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


def training_clips(config: TrainConfig, front_end, patching) -> tuple[list[str], list]:
    """The run's machine types and their normal training clips, without clips shorter than
    one patch (shared by every objective's loop)."""
    dataset = scan(config.data)
    machines = dataset.require_machines(config.machines)
    clips = dataset.select(machine=machines, split="train", label="normal")
    _check_data(config, machines, clips)
    short = [c for c in clips if tdata._clip_samples(c) < front_end.n_fft + (
        patching.patch_frames - 1) * front_end.hop_length]
    if short:
        logger.warning("%d clip(s) shorter than one patch (%.2f s) are left out, e.g. %s",
                       len(short), (front_end.n_fft + (patching.patch_frames - 1)
                                    * front_end.hop_length) / front_end.sample_rate,
                       short[0].path)
        left_out = set(short)
        clips = [c for c in clips if c not in left_out]
        _check_data(config, machines, clips)
    return machines, clips


def _init_from(model: SurrogateTaskModel, payload: dict, maps: tdata.LabelMaps) -> list[str]:
    """Load a pre-trained run's backbone, heads and input statistics; classifiers whose label
    lists match. Returns the names of the parts that start fresh."""
    state = payload["averaged"]
    own = model.state_dict()
    fresh = []
    load = {k: v for k, v in state.items()
            if not k.startswith(("section_classifier.", "attribute_classifiers."))}
    if payload["section_labels"] == maps.section_labels:
        load.update({k: v for k, v in state.items() if k.startswith("section_classifier.")})
    else:
        fresh.append("section classifier")
    old_keys = list(payload["attribute_labels"])
    for k, key in enumerate(maps.attribute_keys):
        if key in payload["attribute_labels"] and \
                payload["attribute_labels"][key] == maps.attribute_labels[key]:
            j = old_keys.index(key)
            for name in ("weight", "bias"):
                load[f"attribute_classifiers.{k}.{name}"] = \
                    state[f"attribute_classifiers.{j}.{name}"]
        else:
            fresh.append(f"attribute classifier {key}")
    for name, tensor in load.items():
        if name not in own or own[name].shape != tensor.shape:
            raise BadInput(f"--init: the pre-trained weight {name} does not fit this model "
                           "(different architecture); pre-train with the same options")
    model.load_state_dict(load, strict=False)
    return fresh


def _plot(metrics: list[dict], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [m["epoch"] for m in metrics]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    for key, label in (("train_loss", "train"), ("val_loss", "validation")):
        if all(m.get(key) is not None for m in metrics):
            ax_loss.plot(epochs, [m[key] for m in metrics], marker="o", label=label)
    ax_loss.set(xlabel="epoch", ylabel="loss (L_Sec + L_Att)", title="loss")
    for key, label in (("train_section_accuracy", "train section"),
                       ("train_attribute_accuracy", "train attribute"),
                       ("val_section_accuracy", "val section"),
                       ("val_attribute_accuracy", "val attribute")):
        if all(m.get(key) is not None for m in metrics):
            ax_acc.plot(epochs, [m[key] for m in metrics], marker="o", label=label)
    ax_acc.set(xlabel="epoch", ylabel="accuracy", ylim=(0, 1.02), title="accuracy")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _accuracies(outputs: dict, sections: torch.Tensor, attributes: torch.Tensor) -> dict:
    """Counts for accuracy: section correct/total, attribute correct/labelled (all keys)."""
    counts = {"section_correct": int((outputs["section_logits"].argmax(1) == sections).sum()),
              "section_total": int(sections.numel()), "attribute_correct": 0,
              "attribute_total": 0}
    for k, logits in enumerate(outputs["attribute_logits"]):
        labels = attributes[:, k]
        mask = labels != tdata.IGNORE
        counts["attribute_correct"] += int((logits.argmax(1)[mask] == labels[mask]).sum())
        counts["attribute_total"] += int(mask.sum())
    return counts


def _ratio(counts: dict, name: str) -> float | None:
    total = counts.get(f"{name}_total", 0)
    return counts[f"{name}_correct"] / total if total else None


@torch.no_grad()
def recalibrate_batch_norm(model: SurrogateTaskModel, cache: tdata.SpectrogramCache,
                           indices: list[int], patch_frames: int, batch_size: int,
                           device: torch.device, seed: int, max_clips: int) -> None:
    """Recompute every batch-norm layer's running statistics with the current weights.

    The running averages kept during an epoch mix statistics of older weights; in short
    runs the evaluation-mode model then misclassifies clips it gets right in training mode,
    and averaged weights never had statistics of their own (SWA's ``update_bn``). One
    forward pass over a random patch of up to ``max_clips`` training clips fixes both.
    """
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    rng = np.random.default_rng(seed)
    chosen = rng.permutation(np.asarray(indices))[:max_clips]
    momenta = [m.momentum for m in norms]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # a cumulative average over the batches below
    was_training = model.training
    model.train()
    for start in range(0, len(chosen), batch_size):
        batch = chosen[start:start + batch_size]
        if len(batch) < 2:
            break
        model(torch.from_numpy(cache.random_patches(batch, patch_frames, rng)).to(device))
    for norm, momentum in zip(norms, momenta, strict=True):
        norm.momentum = momentum
    model.train(was_training)


@torch.no_grad()
def evaluate(model: SurrogateTaskModel, cache: tdata.SpectrogramCache, indices: list[int],
             section_labels: np.ndarray, attribute_labels: np.ndarray, config: TrainConfig,
             device: torch.device) -> dict:
    """Loss and accuracies on the patches of held-out clips (patch level)."""
    if not indices:
        return {}
    patching = patching_for(config)
    was_training = model.training
    model.eval()
    xs, secs, atts = [], [], []
    for i in indices:
        cut = cache.clip_patches(i, patching.patch_frames, patching.patch_hop,
                                 config.val_patches_per_clip)
        xs.append(cut)
        secs += [section_labels[i]] * len(cut)
        atts += [attribute_labels[i]] * len(cut)
    x_all = np.concatenate(xs)
    sec_all, att_all = torch.as_tensor(np.array(secs)), torch.as_tensor(np.array(atts))
    counts: dict = {}
    loss_sum = 0.0
    for start in range(0, len(x_all), 256):
        x = torch.from_numpy(x_all[start:start + 256]).to(device)
        outputs = model(x)
        outputs = {"section_logits": outputs["section_logits"].float().cpu(),
                   "attribute_logits": [a.float().cpu() for a in outputs["attribute_logits"]]}
        sec, att = sec_all[start:start + 256], att_all[start:start + 256]
        losses = surrogate_loss(outputs, sec, att, config.objective, config.arcface_scale,
                                config.arcface_margin)
        loss_sum += float(losses["loss"]) * len(sec)
        for k, v in _accuracies(outputs, sec, att).items():
            counts[k] = counts.get(k, 0) + v
    model.train(was_training)
    return {"loss": loss_sum / len(x_all), "section_accuracy": _ratio(counts, "section"),
            "attribute_accuracy": _ratio(counts, "attribute"), "patches": len(x_all)}


def train(config: TrainConfig) -> Path:
    """Train (or resume, or fine-tune) one run; returns the checkpoint path."""
    if config.objective == "anp":  # no labels, no batch norm: its own loop on the same parts
        from training.anp import train_anp

        return train_anp(config)
    rank, world, local_rank = _distributed()
    if config.objective not in OBJECTIVES:
        raise BadInput(f"--objective {config.objective!r}: choose one of "
                       f"{', '.join(OBJECTIVES)}, anp")
    if config.front_end not in FRONT_ENDS:
        raise BadInput(f"--front-end {config.front_end!r}: choose one of {', '.join(FRONT_ENDS)}")
    device = select_device(config.device)
    if world > 1 and device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    front_end, patching = FRONT_ENDS[config.front_end], patching_for(config)
    out = Path(config.out)
    ckpt_file = out / CHECKPOINT_NAME

    # --- the data: normal training clips of the chosen machine types -------------------------
    machines, clips = training_clips(config, front_end, patching)
    maps = tdata.LabelMaps.from_clips(clips)

    # --- what to continue from ---------------------------------------------------------------
    resume_payload = init_payload = None
    if config.resume:
        resume_payload = load_checkpoint(out)
        check_compatible(resume_payload, f"--resume {out}", config.objective, front_end, patching)
        if (resume_payload["section_labels"] != maps.section_labels
                or resume_payload["attribute_labels"] != maps.attribute_labels):
            raise BadInput(f"--resume {out}: the data's sections or attributes differ from the "
                           "run's; resume with the same --data and --machines")
    elif ckpt_file.exists():
        raise BadInput(f"{out}: already holds a run; pass --resume to continue it or choose "
                       "another --out")
    if config.init:
        init_payload = load_checkpoint(config.init)
        check_compatible(init_payload, f"--init {config.init}", config.objective, front_end,
                         patching)

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
    section_labels, attribute_labels = maps.encode(clips)
    train_clips = [clips[i] for i in train_idx]
    weights = tdata.sampling_weights(train_clips, config.balance)

    # --- the model -----------------------------------------------------------------------------
    torch.manual_seed(config.seed)
    one_embedding = config.objective in ONE_EMBEDDING_OBJECTIVES
    if resume_payload or init_payload:
        base = ModelArgs.from_dict((resume_payload or init_payload)["model_args"])
    else:
        base = ModelArgs(section_dim=config.section_dim,
                         attribute_dim=0 if one_embedding else config.attribute_dim)
    args = ModelArgs(**{**base.to_dict(), "n_bins": front_end.n_bins,
                        "patch_frames": patching.patch_frames,
                        "n_sections": len(maps.section_labels),
                        "attribute_sizes": [len(v) for v in maps.attribute_labels.values()],
                        "objective": config.objective, "arcface_scale": config.arcface_scale})
    model = SurrogateTaskModel(args)
    if resume_payload:
        model.load_state_dict(resume_payload["model"])
    elif init_payload:
        fresh = _init_from(model, init_payload, maps)
        logger.info("initialised from %s; fresh: %s", config.init, ", ".join(fresh) or "nothing")
    else:
        mean, std = cache.frequency_statistics(train_idx)
        model.set_input_statistics(torch.from_numpy(mean), torch.from_numpy(std))
    model.to(device)
    ddp_model: torch.nn.Module = model
    if world > 1:
        ddp_model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr,
                                  weight_decay=config.weight_decay)
    use_amp = device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)

    per_rank = len(train_idx) // world
    batch_size = min(config.batch_size, per_rank)
    if batch_size < 2:
        raise BadInput(f"{config.data}: only {len(train_idx)} training clip(s) after the "
                       f"validation hold-out for {world} process(es); add clips or lower "
                       "--val-fraction")
    steps_per_epoch = per_rank // batch_size + (1 if per_rank % batch_size >= 2 else 0)
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
    macs = multiply_adds_per_patch(model)
    patches_per_second = front_end.sample_rate / (front_end.hop_length * patching.patch_hop)
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        logger.info("model: %d parameters, %.1f M multiply-adds per patch (%.0f M per second "
                    "of audio); %d train / %d validation clips, %d section(s), %d attribute "
                    "key(s); %d step(s) per epoch on %d process(es), device %s",
                    count_parameters(model), macs / 1e6, macs * patches_per_second / 1e6,
                    len(train_idx), len(val_idx), len(maps.section_labels),
                    len(maps.attribute_keys), steps_per_epoch, world, device)
    metrics_path = out / "metrics.jsonl"
    history = [json.loads(line) for line in metrics_path.read_text().splitlines()
               if line.strip()] if resume_payload and metrics_path.exists() else []
    history = [m for m in history if m["epoch"] < start_epoch]

    sec_t, att_t = torch.from_numpy(section_labels), torch.from_numpy(attribute_labels)
    train_array = np.asarray(train_idx)
    last_plot = -math.inf
    for epoch in range(start_epoch, config.epochs + 1):
        started = time.perf_counter()
        generator = torch.Generator().manual_seed(config.seed * 100_003 + epoch)
        draws = torch.multinomial(torch.from_numpy(weights), per_rank * world, replacement=True,
                                  generator=generator).numpy()
        mine = train_array[draws[rank::world]]
        rng = np.random.default_rng([config.seed, epoch, rank])
        ddp_model.train()
        sums = {"loss": 0.0, "section_loss": 0.0, "attribute_loss": 0.0, "n": 0}
        counts: dict = {}
        bar = range(steps_per_epoch)
        if rank == 0 and config.progress:
            from tqdm import tqdm
            bar = tqdm(bar, desc=f"epoch {epoch}/{config.epochs}", unit="step", leave=False)
        for b in bar:
            batch = mine[b * batch_size:(b + 1) * batch_size]
            x = torch.from_numpy(cache.random_patches(batch, patching.patch_frames, rng))
            x = x.to(device, non_blocking=True)                    # (B, F, T)
            sec, att = sec_t[batch].to(device), att_t[batch].to(device)
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(step, total_steps, config.lr, warmup_steps)
            with torch.autocast(device.type, dtype=torch.float16, enabled=use_amp):
                outputs = ddp_model(x)
            losses = surrogate_loss(outputs, sec, att, config.objective, config.arcface_scale,
                                    config.arcface_margin)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(losses["loss"]).backward()
            scaler.step(optimizer)
            scaler.update()
            step += 1
            for key in ("loss", "section_loss", "attribute_loss"):
                sums[key] += float(losses[key].detach()) * len(batch)
            sums["n"] += len(batch)
            for k, v in _accuracies(outputs, sec, att).items():
                counts[k] = counts.get(k, 0) + v
            if rank == 0 and config.progress:
                bar.set_postfix(loss=f"{sums['loss'] / sums['n']:.3f}",
                                sec=f"{_ratio(counts, 'section'):.2f}",
                                att=f"{(_ratio(counts, 'attribute') or 0):.2f}")
        seconds = time.perf_counter() - started

        # --- end of epoch: batch-norm statistics, average, measure, record, save (rank 0) ----
        if rank == 0:
            recalibrate = dict(cache=cache, indices=train_idx, patch_frames=patching.patch_frames,
                               batch_size=batch_size, device=device, seed=config.seed + epoch,
                               max_clips=config.bn_clips)
            recalibrate_batch_norm(model, **recalibrate)
            last_state = _state_copy(model)
            if epoch > config.epochs - window:
                snapshots.append(last_state)
                averaged_epochs.append(epoch)
            averaged_model = None
            averaged_state = last_state
            if averaged_epochs:
                averaged_model = SurrogateTaskModel(args).to(device)
                averaged_model.load_state_dict(average_states(snapshots))
                recalibrate_batch_norm(averaged_model, **recalibrate)
                averaged_state = _state_copy(averaged_model)
            val = evaluate(model, cache, val_idx, section_labels, attribute_labels, config,
                           device)
            record = {"epoch": epoch, "lr": learning_rate(step - 1, total_steps, config.lr,
                                                          warmup_steps),
                      "train_loss": sums["loss"] / sums["n"],
                      "train_section_loss": sums["section_loss"] / sums["n"],
                      "train_attribute_loss": sums["attribute_loss"] / sums["n"],
                      "train_section_accuracy": _ratio(counts, "section"),
                      "train_attribute_accuracy": _ratio(counts, "attribute"),
                      "val_loss": val.get("loss"),
                      "val_section_accuracy": val.get("section_accuracy"),
                      "val_attribute_accuracy": val.get("attribute_accuracy"),
                      "seconds": seconds, "clips_per_second": sums["n"] * world / seconds}
            if averaged_model is not None and val_idx:
                val_avg = evaluate(averaged_model, cache, val_idx, section_labels,
                                   attribute_labels, config, device)
                record.update({"val_averaged_section_accuracy": val_avg["section_accuracy"],
                               "val_averaged_attribute_accuracy": val_avg["attribute_accuracy"]})
            history.append(record)
            metrics_path.write_text("".join(json.dumps(m) + "\n" for m in history))
            if epoch == config.epochs or time.monotonic() - last_plot > 60:
                _plot(history, out / "curves.png")  # ~0.7 s: at most once a minute
                last_plot = time.monotonic()
            payload = {
                "format": FORMAT, "version": VERSION,
                "model_args": args.to_dict(),
                "front_end": front_end.model_dump(), "patching": patching.model_dump(),
                "objective": config.objective, "machines": machines,
                "section_labels": maps.section_labels,
                "attribute_labels": maps.attribute_labels,
                "config": config.model_dump(), "data": summary,
                "model_summary": {"parameters": count_parameters(model),
                                  "multiply_adds_per_patch": macs,
                                  "multiply_adds_per_second": int(macs * patches_per_second)},
                "git_revision": git_revision(), "torch_version": str(torch.__version__),
                "created": datetime.now(UTC).isoformat(timespec="seconds"),
                "epoch": epoch, "epochs": config.epochs, "step": step, "world_size": world,
                "model": last_state, "averaged": averaged_state,
                "averaged_epochs": list(averaged_epochs), "average_snapshots": snapshots,
                "optimizer": optimizer.state_dict(),
                "scaler": scaler.state_dict() if use_amp else {},
            }
            save_checkpoint(ckpt_file, payload)
            logger.info("epoch %d: loss %.3f, val section %.3f attribute %s, %.1f clips/s", epoch,
                        record["train_loss"], record["val_section_accuracy"] or float("nan"),
                        "-" if record["val_attribute_accuracy"] is None
                        else f"{record['val_attribute_accuracy']:.3f}",
                        record["clips_per_second"])
        if world > 1:
            dist.barrier()
    if world > 1:
        dist.destroy_process_group()
    return ckpt_file


def main(argv: list[str] | None = None) -> int:
    """``python -m training.train ...`` (what torchrun runs): the ``train`` command."""
    from edge.cli import main as cli_main
    return cli_main(["train", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
