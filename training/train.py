"""The surrogate-task objectives (disentangled, mtl, arcface, sections) and ``train(config)``.

    asd-edge train --data DIR --machines fan,gearbox|all --out RUN [--objective ...]
    torchrun --nproc_per_node N -m training.train --data DIR ...     (DDP; same checkpoint)

``train`` runs the shared loop (``training.loop``) with the objective the config names: a
``SurrogateObjective`` here, or the attentive neural process (``training.anp``). Each step
takes one random patch of each drawn clip and minimises L = L_Sec + L_Att (mixed precision on
CUDA); at each epoch end the batch-norm statistics of the last and of the averaged weights are
recomputed, and the held-out clips' loss and section/attribute accuracies are measured.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import numpy as np
import torch

from edge.errors import BadInput
from edge.features import LOG_MEL_FRONT_END
from training import data as tdata
from training.anp import AnpObjective
from training.augment import mix_interference
from training.loop import (
    Objective,
    RunData,
    TrainConfig,
    average_states,
    patching_for,
    spectrum_mel_filters,
    state_copy,
    train_run,
)
from training.losses import surrogate_loss
from training.model import (
    MEL_FLOOR,
    OBJECTIVES,
    ONE_EMBEDDING_OBJECTIVES,
    ModelArgs,
    SurrogateTaskModel,
    count_parameters,
    multiply_adds_per_patch,
)

logger = logging.getLogger(__name__)

__all__ = ["SurrogateObjective", "TrainConfig", "evaluate", "recalibrate_batch_norm", "train"]


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


class SurrogateObjective(Objective[SurrogateTaskModel]):
    """The classifier objectives: sections and attributes of normal clips, one patch per draw.

    Runs under torchrun (DDP), fine-tunes from ``--init``, uses AMP on CUDA."""

    distributed = True
    fine_tuning = True
    amp = True
    loss_label = "loss (L_Sec + L_Att)"

    def __init__(self, objective: str) -> None:
        if objective not in OBJECTIVES:
            raise BadInput(f"--objective {objective!r}: choose one of "
                           f"{', '.join(OBJECTIVES)}, anp")
        self.name = objective

    def check(self, config: TrainConfig) -> None:
        if config.subclusters and config.objective == "arcface":
            raise BadInput(f"--subclusters {config.subclusters} with --objective arcface: "
                           "ArcFace has its own cosine classifier; drop one of them")

    def build(self, run: RunData, resume: dict | None, init: dict | None
              ) -> SurrogateTaskModel:
        config, maps = run.config, run.maps
        self.run = run
        self.section_labels, self.attribute_labels = maps.encode(run.clips)
        self.sections = torch.from_numpy(self.section_labels)
        self.attributes = torch.from_numpy(self.attribute_labels)
        if resume or init:
            base = ModelArgs.from_dict((resume or init or {})["model_args"])
        else:
            one_embedding = config.objective in ONE_EMBEDDING_OBJECTIVES
            base = ModelArgs(section_dim=config.section_dim,
                             attribute_dim=0 if one_embedding else config.attribute_dim,
                             mel_bands=LOG_MEL_FRONT_END.n_mels if config.spectrum_branch else 0,
                             subclusters=config.subclusters)
        self.args = ModelArgs(**{
            **base.to_dict(), "n_bins": run.front_end.n_bins,
            "patch_frames": run.patching.patch_frames, "n_sections": len(maps.section_labels),
            "attribute_sizes": [len(v) for v in maps.attribute_labels.values()],
            "objective": config.objective, "arcface_scale": config.arcface_scale,
            "subclusters": base.subclusters if resume else config.subclusters})
        model = SurrogateTaskModel(self.args)
        if resume:
            pass  # the loop loads the resumed weights
        elif init:
            fresh = _init_from(model, init, maps)
            logger.info("initialised from %s; fresh: %s", config.init,
                        ", ".join(fresh) or "nothing")
        else:
            mean, std = run.cache.frequency_statistics(run.train_idx)
            model.set_input_statistics(torch.from_numpy(mean), torch.from_numpy(std))
            if self.args.mel_bands:
                filters = spectrum_mel_filters(run.front_end)
                mel_mean, mel_std = run.cache.frequency_statistics(
                    run.train_idx, lambda block: np.log(np.maximum(
                        np.exp(block) @ filters.T.astype(np.float64), MEL_FLOOR)))
                model.set_mel(torch.from_numpy(filters), torch.from_numpy(mel_mean),
                              torch.from_numpy(mel_std))
        return model

    def model_args(self) -> dict:
        return self.args.to_dict()

    def plan(self, run: RunData) -> tuple[int, int]:
        self.per_rank = per_rank = len(run.train_idx) // run.world
        self.batch_size = batch_size = min(run.config.batch_size, per_rank)
        if batch_size < 2:
            raise BadInput(f"{run.config.data}: only {len(run.train_idx)} training clip(s) after "
                           f"the validation hold-out for {run.world} process(es); add clips or "
                           "lower --val-fraction")
        return batch_size, per_rank // batch_size + (1 if per_rank % batch_size >= 2 else 0)

    def epoch_draws(self, run: RunData, epoch: int
                    ) -> tuple[np.ndarray, np.random.Generator]:
        generator = torch.Generator().manual_seed(run.config.seed * 100_003 + epoch)
        draws = torch.multinomial(torch.from_numpy(run.weights), self.per_rank * run.world,
                                  replacement=True, generator=generator).numpy()
        mine = np.asarray(run.train_idx)[draws[run.rank::run.world]]
        return mine, np.random.default_rng([run.config.seed, epoch, run.rank])

    def begin_epoch(self) -> None:
        self.counts: dict = {}

    def step(self, module: torch.nn.Module, batch: np.ndarray,
             rng: np.random.Generator) -> dict[str, torch.Tensor]:
        run, config = self.run, self.run.config
        patches = run.cache.random_patches(batch, run.patching.patch_frames, rng)
        if config.mix_probability > 0:  # other training sounds mixed in (training/augment.py)
            others = rng.choice(np.asarray(run.train_idx), size=len(batch))
            patches = mix_interference(
                patches, run.cache.random_patches(others, run.patching.patch_frames, rng), rng,
                config.mix_probability, config.mix_snr_db)
        x = torch.from_numpy(patches).to(run.device, non_blocking=True)     # (B, F, T)
        sec = self.sections[batch].to(run.device)
        att = self.attributes[batch].to(run.device)
        with torch.autocast(run.device.type, dtype=torch.float16, enabled=run.amp):
            outputs = module(x)
        losses = surrogate_loss(outputs, sec, att, config.objective, config.arcface_scale,
                                config.arcface_margin)
        for k, v in _accuracies(outputs, sec, att).items():
            self.counts[k] = self.counts.get(k, 0) + v
        return losses

    def progress(self) -> dict[str, str]:
        return {"sec": f"{_ratio(self.counts, 'section'):.2f}",
                "att": f"{(_ratio(self.counts, 'attribute') or 0):.2f}"}

    def train_metrics(self) -> dict:
        return {"train_section_accuracy": _ratio(self.counts, "section"),
                "train_attribute_accuracy": _ratio(self.counts, "attribute")}

    def _recalibrate(self, model: SurrogateTaskModel, epoch: int) -> None:
        run = self.run
        recalibrate_batch_norm(model, run.cache, run.train_idx, run.patching.patch_frames,
                               self.batch_size, run.device, run.config.seed + epoch,
                               run.config.bn_clips)

    def before_snapshot(self, model: SurrogateTaskModel, epoch: int) -> None:
        self._recalibrate(model, epoch)

    def average(self, snapshots: list[dict[str, torch.Tensor]], epoch: int
                ) -> tuple[dict[str, torch.Tensor], SurrogateTaskModel | None]:
        """Averaged weights have no batch-norm statistics of their own: recompute them."""
        averaged = SurrogateTaskModel(self.args).to(self.run.device)
        averaged.load_state_dict(average_states(snapshots))
        self._recalibrate(averaged, epoch)
        return state_copy(averaged), averaged

    def validate(self, model: SurrogateTaskModel, averaged: SurrogateTaskModel | None,
                 epoch: int) -> dict:
        run = self.run
        val = evaluate(model, run.cache, run.val_idx, self.section_labels,
                       self.attribute_labels, run.config, run.device)
        record = {"val_loss": val.get("loss"),
                  "val_section_accuracy": val.get("section_accuracy"),
                  "val_attribute_accuracy": val.get("attribute_accuracy")}
        if averaged is not None and run.val_idx:
            val_avg = evaluate(averaged, run.cache, run.val_idx, self.section_labels,
                               self.attribute_labels, run.config, run.device)
            record.update({"val_averaged_section_accuracy": val_avg["section_accuracy"],
                           "val_averaged_attribute_accuracy": val_avg["attribute_accuracy"]})
        return record

    def model_summary(self, model: SurrogateTaskModel) -> dict:
        front_end, patching = self.run.front_end, self.run.patching
        self.macs = multiply_adds_per_patch(model)
        self.patches_per_second = front_end.sample_rate / (front_end.hop_length
                                                           * patching.patch_hop)
        return {"parameters": count_parameters(model), "multiply_adds_per_patch": self.macs,
                "multiply_adds_per_second": int(self.macs * self.patches_per_second)}

    def describe(self, model: SurrogateTaskModel) -> str:
        maps = self.run.maps
        return (f"model: {count_parameters(model)} parameters, {self.macs / 1e6:.1f} M "
                f"multiply-adds per patch ({self.macs * self.patches_per_second / 1e6:.0f} M per "
                f"second of audio); {len(maps.section_labels)} section(s), "
                f"{len(maps.attribute_keys)} attribute key(s)")

    def epoch_line(self, record: dict) -> str:
        attribute = record["val_attribute_accuracy"]
        return (f"loss {record['train_loss']:.3f}, val section "
                f"{record['val_section_accuracy'] or float('nan'):.3f} attribute "
                f"{'-' if attribute is None else f'{attribute:.3f}'}")


def train(config: TrainConfig) -> Path:
    """Train (or resume, or fine-tune) one run of ``config.objective``; returns the checkpoint
    path."""
    if config.objective == "anp":  # no labels, no batch norm: its own model and step
        return train_run(config, AnpObjective())
    return train_run(config, SurrogateObjective(config.objective))


def main(argv: list[str] | None = None) -> int:
    """``python -m training.train ...`` (what torchrun runs): the ``train`` command."""
    from edge.cli import main as cli_main
    return cli_main(["train", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
