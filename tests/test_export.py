"""Export: a tiny trained run -> ONNX with parity -> a bundle that scores like the checkpoint."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from _training_data import write_tone_dataset

from edge.audio import read_audio
from edge.bundle.load import load_bundle
from edge.bundle.manifest import content_digest
from edge.cli import main
from edge.dataset import scan

pytestmark = pytest.mark.slow  # trains and exports a model

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    data = write_tone_dataset(root / "data", n_source=8, n_target=3, seconds=3.0,
                              machines=("fan",))
    run = root / "run"
    assert main(["train", "--data", str(data), "--machines", "fan", "--out", str(run),
                 "--epochs", "2", "--batch-size", "16", "--threads", "2"]) == 0
    models = root / "models"
    # the script form, as the design names it
    result = subprocess.run([sys.executable, "export/to_onnx.py", "--run", str(run),
                             "--machine", "fan", "--data", str(data), "--out", str(models)],
                            cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "parity on" in result.stdout
    return data, run, models


def test_onnx_model_has_named_dynamic_io_and_weights_inside(exported) -> None:
    _, _, models = exported
    path = models / "fan" / "model.onnx"
    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    assert [i.name for i in model.graph.input] == ["spectrogram"]
    assert [o.name for o in model.graph.output] == ["section_embedding", "attribute_embedding"]
    batch = model.graph.input[0].type.tensor_type.shape.dim[0]
    assert batch.dim_param and not batch.dim_value  # dynamic batch axis
    assert model.opset_import[0].version >= 18
    assert not list(path.parent.glob("*.data"))  # no external weight files


def test_bundle_scores_equal_the_checkpoint_scores(exported) -> None:
    """The deployed path (ORT + edge front end + bundle scorer) vs the PyTorch run."""
    from training.infer import load_run

    data, run, models = exported
    bundle = load_bundle(models, "fan", device="cpu")
    manifest = bundle.manifest
    assert manifest.model is not None and manifest.model.parity["max_abs_diff"] <= 1e-4
    system = bundle.system
    torch_run = load_run(run)
    clips = scan(data).select(machine="fan", split="test")
    assert clips
    _assert_scores_like_the_checkpoint(system, torch_run, clips)


def _assert_scores_like_the_checkpoint(system, torch_run, clips) -> None:
    """Each clip scored by the bundle (ORT) and with the run's PyTorch model in its place."""
    for clip in clips:
        wave = read_audio(clip.path)
        deployed = system.score_clip(wave, clip.section)[0]
        system.embedder, onnx_embedder = torch_run, system.embedder
        try:
            reference = system.score_clip(wave, clip.section)[0]
        finally:
            system.embedder = onnx_embedder
        assert deployed == pytest.approx(reference, abs=1e-4)


def test_verify_and_refusals(exported, tmp_path, capsys) -> None:
    _, _, models = exported
    assert main(["bundle", "verify", str(models / "fan")]) == 0
    out = capsys.readouterr().out
    assert "OK" in out and "CPUExecutionProvider" in out
    broken = tmp_path / "fan"
    shutil.copytree(models / "fan", broken)
    onnx_path = broken / "model.onnx"
    onnx_path.write_bytes(onnx_path.read_bytes()[:-100])
    assert main(["bundle", "verify", str(broken)]) == 2
    assert "model.onnx: sha256 does not match" in capsys.readouterr().err
    # a manifest that lies about the shapes (hashes rewritten to match)
    shutil.rmtree(broken)
    shutil.copytree(models / "fan", broken)
    manifest = json.loads((broken / "bundle.json").read_text())
    manifest["model"]["outputs"]["section_embedding"] = ["batch", 7]
    assert main(["bundle", "verify", str(broken)]) == 0  # (before the edit is written)
    (broken / "bundle.json").write_text(json.dumps(manifest))
    assert main(["bundle", "verify", str(broken)]) == 2  # an edited manifest is refused ...
    assert "does not match its content_sha256" in capsys.readouterr().err
    manifest["content_sha256"] = content_digest(manifest)  # ... unless its digest is forged
    (broken / "bundle.json").write_text(json.dumps(manifest))
    assert main(["bundle", "verify", str(broken)]) == 2
    assert "section_embedding has shape" in capsys.readouterr().err


def test_export_refuses_a_machine_the_run_never_saw(exported, tmp_path, capsys) -> None:
    data, run, _ = exported
    assert main(["export", "--run", str(run), "--machine", "gearbox", "--data", str(data),
                 "--out", str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err
    assert "trained on fan" in err
    assert not (tmp_path / "m").exists()  # nothing written


def test_cuda_is_refused_and_auto_runs_on_cpu(exported, capsys) -> None:
    _, _, models = exported
    assert main(["bundle", "verify", str(models / "fan"), "--device", "cuda"]) == 2
    err = capsys.readouterr().err
    assert "--device cuda" in err and "no CUDA provider" in err
    bundle = load_bundle(models, "fan", device="auto")
    assert bundle.provider == "CPUExecutionProvider"
    section, attribute = bundle.system.embedder.embed(
        np.zeros((3, bundle.system.front_end.n_bins, 64), np.float32))
    assert section.shape[0] == attribute.shape[0] == 3


def test_a_spectrum_branch_run_exports_with_parity_and_scores_like_its_checkpoint(
        exported, tmp_path) -> None:
    """``train --spectrum-branch``: its two-branch network goes through ONNX with parity, and
    the deployed path (the edge front end's 513 bins, ORT) scores as the checkpoint does."""
    from training.infer import load_run

    data, _, _ = exported
    run, models = tmp_path / "run", tmp_path / "models"
    assert main(["train", "--data", str(data), "--machines", "fan", "--out", str(run),
                 "--epochs", "2", "--batch-size", "16", "--threads", "2",
                 "--spectrum-branch"]) == 0
    assert main(["export", "--run", str(run), "--machine", "fan", "--data", str(data),
                 "--out", str(models)]) == 0
    bundle = load_bundle(models, "fan", device="cpu")
    assert bundle.manifest.model.parity["max_abs_diff"] <= 1e-4
    assert bundle.system.front_end.n_bins == 513
    _assert_scores_like_the_checkpoint(bundle.system, load_run(run),
                                       scan(data).select(machine="fan", split="test")[:6])
