"""Checkpoints that describe themselves, loadable with ``torch.load(weights_only=True)``.

``RUN/checkpoint.pt`` is one dict of tensors, dicts, lists, str, int, float, bool and None:

    format, version          "asd-edge-training-checkpoint", 1
    model_args               ModelArgs as a dict (rebuilds the network)
    front_end, patching      edge.features.FrontEnd / Patching as dicts
    objective, machines      the run's objective and machine types
    section_labels           ["fan/section_00", ...]           (section classifier classes)
    attribute_labels         {"fan/speed": ["1000", ...], ...} (one classifier per key)
    validation_clips         ["fan/<file name>", ...] the normal clips held out of training
    config, data             the training options and a summary of the data used
    git_revision, torch_version, created
    epoch, epochs, step      progress (epoch counts from 1; the last finished epoch)
    model                    the last epoch's state dict
    averaged                 the average of the last K epochs' weights (the last if none yet)
    averaged_epochs          which epochs ``averaged`` holds
    average_snapshots        the epoch-end weights behind ``averaged`` (for --resume)
    optimizer, scaler        optimiser and AMP scaler states (for --resume)
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import torch

from edge.errors import BadInput
from edge.features import FrontEnd, Patching
from training.model import ModelArgs, SurrogateTaskModel

FORMAT = "asd-edge-training-checkpoint"
VERSION = 1
CHECKPOINT_NAME = "checkpoint.pt"


def checkpoint_path(run: str | Path) -> Path:
    """A run folder (or a checkpoint file) -> the checkpoint file."""
    run = Path(run)
    return run / CHECKPOINT_NAME if run.is_dir() or run.suffix != ".pt" else run


def git_revision() -> str:
    """The checkout's commit (with ``+dirty`` for local changes), or ``unknown``."""
    root = Path(__file__).resolve().parents[1]
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True,
                              text=True, timeout=5)
        if head.returncode != 0:
            return "unknown"
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=root, capture_output=True, text=True, timeout=5)
        return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _check_plain(value: object, where: str = "checkpoint") -> None:
    """Only what ``torch.load(weights_only=True)`` reads back: fail at save, not at load."""
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str | int):
                raise TypeError(f"{where}: key {key!r} is a {type(key).__name__}")
            _check_plain(item, f"{where}.{key}")
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            _check_plain(item, f"{where}[{i}]")
    elif not (value is None or type(value) in (str, int, float, bool)
              or isinstance(value, torch.Tensor)):
        raise TypeError(f"{where}: {type(value).__name__} cannot be loaded with weights_only")


def save_checkpoint(path: Path, payload: dict) -> None:
    """Write atomically (temporary file, then rename): a crash never leaves half a file."""
    _check_plain(payload)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    torch.save(payload, tmp)
    os.replace(tmp, path)


def load_checkpoint(run: str | Path) -> dict:
    """Load ``RUN/checkpoint.pt`` on the CPU; ``BadInput`` if missing, corrupt or foreign."""
    path = checkpoint_path(run)
    if not path.is_file():
        raise BadInput(f"{path}: no checkpoint there; give a run folder written by "
                       "'asd-edge train --out RUN'")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for a damaged file
        raise BadInput(f"{path}: not a readable checkpoint ({type(err).__name__}: "
                       f"{str(err).splitlines()[0][:120] if str(err) else ''}); "
                       "retrain or restore the run folder") from err
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise BadInput(f"{path}: not an asd-edge training checkpoint; give a run folder "
                       "written by 'asd-edge train'")
    if payload.get("version") != VERSION:
        raise BadInput(f"{path}: checkpoint version {payload.get('version')} but this code "
                       f"reads version {VERSION}; retrain with this version")
    return payload


def check_compatible(payload: dict, source: str, objective: str, front_end: FrontEnd,
                     patching: Patching) -> None:
    """Refuse to continue from a checkpoint with another objective or front end."""
    if payload["objective"] != objective:
        raise BadInput(f"{source}: the checkpoint was trained with objective "
                       f"{payload['objective']!r}, not {objective!r}; pass --objective "
                       f"{payload['objective']} or start from another run")
    if FrontEnd(**payload["front_end"]) != front_end:
        raise BadInput(f"{source}: the checkpoint's front end {payload['front_end']} differs "
                       f"from this run's {front_end.model_dump()}; use the same --front-end")
    if Patching(**payload["patching"]) != patching:
        raise BadInput(f"{source}: the checkpoint's patching {payload['patching']} differs "
                       f"from this run's {patching.model_dump()}")


def build_model(payload: dict, weights: str = "averaged") -> SurrogateTaskModel:
    """Rebuild the network of a checkpoint with its ``averaged`` or ``last`` weights."""
    if weights not in ("averaged", "last"):
        raise BadInput(f"weights {weights!r}: choose 'averaged' or 'last'")
    model = SurrogateTaskModel(ModelArgs.from_dict(payload["model_args"]))
    state = payload["averaged"] if weights == "averaged" else payload["model"]
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise BadInput(f"checkpoint weights do not fit its model arguments ({err}); "
                       "the file is damaged: retrain") from err
    return model
