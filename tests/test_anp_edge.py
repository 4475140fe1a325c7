"""The attentive neural process at the edge: ONNX parity on real clips, a bundle with an
embedding + ANP ensemble that scores like the PyTorch runs, streamed windows that score like
the same audio offline, and the daemon replaying a recording through it."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from _training_data import write_tone_dataset

from edge.audio import read_audio, write_audio
from edge.bundle.load import load_bundle
from edge.cli import main
from edge.dataset import scan
from edge.inference.anp import ANP_OUTPUT, OnnxAnp

pytestmark = pytest.mark.slow  # trains and exports ANP runs

PARTITIONS, SEED = 8, 0  # export's defaults for --system ...+anp


@pytest.fixture(scope="module")
def shipped(tmp_path_factory):
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("anp_edge")
    data = write_tone_dataset(root / "data", n_source=8, n_target=3, seconds=3.0,
                              machines=("fan",))
    embedding_run, anp_run, models = root / "embedding", root / "anp", root / "models"
    common = ["--data", str(data), "--machines", "fan", "--threads", "1", "--no-progress"]
    assert main(["train", *common, "--out", str(embedding_run), "--epochs", "2",
                 "--batch-size", "16"]) == 0
    assert main(["train", *common, "--out", str(anp_run), "--objective", "anp", "--epochs",
                 "2", "--batch-size", "32"]) == 0
    assert main(["export", "--run", str(embedding_run), "--machine", "fan", "--data",
                 str(data), "--out", str(models), "--system", "embedding+anp",
                 "--anp-run", str(anp_run)]) == 0
    return data, embedding_run, anp_run, models


class TorchAnp:
    """The PyTorch ANP-Boot as a per-patch model (the oracle for the ONNX one)."""

    def __init__(self, run) -> None:
        self.run = run

    def score_patches(self, patches: np.ndarray) -> np.ndarray:
        from training.anp import boot_nll

        return boot_nll(self.run.model, patches, PARTITIONS, SEED)


def test_anp_onnx_matches_pytorch_on_real_clips(shipped, sample_dir, tmp_path) -> None:
    from export.anp_onnx import check_anp_parity, export_anp
    from training.anp import load_anp_run

    _, _, anp_run, models = shipped
    loaded = load_anp_run(anp_run)
    path = export_anp(loaded, tmp_path / "anp.onnx", PARTITIONS, SEED)
    session = OnnxAnp(path, loaded.front_end, loaded.patching, PARTITIONS, device="cpu",
                      threads=1)
    real = np.concatenate([loaded.patches(read_audio(p))[:3]
                           for p in sorted(sample_dir.rglob("*.wav"))[:4]])
    parity = check_anp_parity(loaded, session, real, PARTITIONS, SEED)
    assert parity.patches == 12 and parity.max_abs_diff < 1e-4, parity
    one = session.score_patches(real[:1])  # the dynamic batch: one patch per hop
    assert one.shape == (1, PARTITIONS)
    np.testing.assert_allclose(one[0], session.score_patches(real)[0], atol=1e-5)
    # what the bundle recorded of its own ANP export
    manifest = json.loads((models / "fan" / "bundle.json").read_text())
    entry = next(m for m in manifest["system"]["members"] if m["kind"] == "anp")
    assert entry["model"]["partitions"] == PARTITIONS and entry["model"]["seed"] == SEED
    assert entry["model"]["output"] == {"name": ANP_OUTPUT, "shape": ["batch", PARTITIONS]}
    assert entry["model"]["parity"]["max_abs_diff"] <= 1e-3
    assert "anp/anp.onnx" in manifest["files"]


def test_ensemble_bundle_verifies_and_scores_like_the_pytorch_runs(shipped, capsys) -> None:
    from training.anp import load_anp_run
    from training.infer import load_run

    data, embedding_run, anp_run, models = shipped
    assert main(["bundle", "verify", str(models / "fan")]) == 0
    assert "embedding (x1), anp (x1)" in capsys.readouterr().out
    system = load_bundle(models, "fan", device="cpu").system
    assert [m.kind for m in system.members] == ["embedding", "anp"]
    anp_member = system.members[1]
    torch_anp = load_anp_run(anp_run)
    torch_members = (load_run(embedding_run), TorchAnp(torch_anp))
    onnx_members = (system.embedder, anp_member.patch_model)
    for clip in scan(data).select(machine="fan", split="test"):
        wave = read_audio(clip.path)
        deployed, members = system.score_clip(wave, clip.section)
        # the ANP member's score is ANP-Boot: mean NLL over the clip's patches and partitions
        assert members["anp"] == pytest.approx(
            torch_anp.boot_clip(wave, PARTITIONS, SEED).mean(), abs=1e-4)
        system.embedder, anp_member.patch_model = torch_members
        try:
            reference = system.score_clip(wave, clip.section)[0]
        finally:
            system.embedder, anp_member.patch_model = onnx_members
        assert deployed == pytest.approx(reference, abs=1e-3)
        assert np.isfinite(deployed)


def test_streamed_windows_score_as_the_same_audio_offline(shipped) -> None:
    data, _, _, models = shipped
    system = load_bundle(models, "fan", device="cpu").system
    clips = scan(data).select(machine="fan", split="train", label="normal", section=0)
    wave = np.concatenate([read_audio(c.path) for c in clips[:4]])
    stream = system.stream(window_patches=4, hop_patches=2)
    anp = system.patch_models["anp"]
    checked = 0
    for start in range(0, wave.size, 7000):
        new = stream.push(wave[start:start + 7000])
        if not new.shape[0]:
            continue
        section, attribute = system.embedder.embed(new)  # only the new patches, as the daemon
        for window in stream.accept(section, attribute, {"anp": anp.score_patches(new)}):
            assert window.patch_outputs["anp"].shape == (4, PARTITIONS)
            streamed, streamed_members = system.score_window(window, 0)
            offline, offline_members = system.score_clip(
                wave[window.start_sample:window.end_sample], 0)
            assert streamed_members["anp"] == pytest.approx(offline_members["anp"], abs=1e-5)
            assert streamed == pytest.approx(offline, rel=1e-5, abs=1e-5)
            checked += 1
    assert checked > 5


def test_daemon_replays_a_recording_through_the_ensemble(shipped, tmp_path, capsys) -> None:
    data, _, _, models = shipped
    clips = scan(data).select(machine="fan", split="train", label="normal", section=0)
    recording = tmp_path / "fan.wav"
    write_audio(recording, np.concatenate([read_audio(c.path) for c in clips[:6]]))  # 18 s
    assert main(["run", "--file", str(recording), "--machine", "fan", "--models", str(models),
                 "--speed", "max", "--state-dir", str(tmp_path / "state"), "--no-metrics",
                 "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    scored = int(out.split("asd-edge run: ")[1].split(" windows scored")[0])
    assert scored >= 10  # 18 s at a 10 s window and 0.5 s hop


def test_a_selection_with_the_anp_maps_to_an_anp_member_with_its_run(tmp_path) -> None:
    from export.build import choice_from_selection

    entry = {"chosen": {"systems": ["tone:concat", "anp:anp"], "weights": [0.75, 0.25]},
             "settings": {"anp:anp": {"objective": "anp", "run": "/runs/anp", "partitions": 6,
                                      "seed": 2}}}
    choice = choice_from_selection(entry, tmp_path / "selection.json", "fan")
    assert [(m.name, m.kind, m.weight) for m in choice.members] == [
        ("embedding-concat", "embedding", 0.75), ("anp", "anp", 0.25)]
    anp = choice.members[1]
    assert (anp.run, anp.partitions, anp.seed) == ("/runs/anp", 6, 2)
    moved = choice_from_selection(entry, tmp_path / "selection.json", "fan", "/elsewhere/anp")
    assert moved.members[1].run == "/elsewhere/anp"  # --anp-run wins


def test_a_failing_anp_parity_writes_nothing(shipped, tmp_path, capsys) -> None:
    data, embedding_run, anp_run, _ = shipped
    out = tmp_path / "models"
    assert main(["export", "--run", str(embedding_run), "--machine", "fan", "--data",
                 str(data), "--out", str(out), "--system", "embedding+anp", "--anp-run",
                 str(anp_run), "--anp-max-abs-diff", "-1"]) == 1
    assert "ANP ONNX parity failed" in capsys.readouterr().err
    assert not out.exists()
