"""Training: it learns, it saves a self-describing checkpoint, it refuses bad input.

Small on purpose (4 sections x 13 clips of 3 s, a few epochs, 2 threads): the whole file runs
in about a minute on two shared cores (one torch thread: faster than two when the
cores are busy). The data are tones (tests/_training_data.py) so that a few
optimiser steps suffice; the code paths are the ones a user runs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from _training_data import write_tone_dataset

from edge.audio import read_audio
from edge.cli import main
from edge.errors import BadInput
from edge.features import DEFAULT_FRONT_END, DEFAULT_PATCHING
from training.infer import load_run
from training.losses import IGNORE, masked_cross_entropy

pytestmark = pytest.mark.slow  # trains models

REPO = Path(__file__).resolve().parents[1]
# the tone set puts its attribute tones 700-900 Hz apart at 2.5-7.2 kHz: linear bins keep them
# apart at this size (log-mel, the default, reaches 0.70 attribute accuracy in 4 epochs)
FAST = ["--batch-size", "16", "--lr", "3e-3", "--val-fraction", "0.2", "--threads", "1",
        "--no-progress", "--front-end", "log-linear"]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    return write_tone_dataset(tmp_path_factory.mktemp("tones"), n_source=8, n_target=5)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


def _train(data_dir: Path, cache_dir: Path, out: Path, *extra: str) -> int:
    return main(["train", "--data", str(data_dir), "--out", str(out), "--cache-dir",
                 str(cache_dir), *FAST, *extra])


@pytest.fixture(scope="module")
def pretrained(data_dir, cache_dir, tmp_path_factory) -> Path:
    """Both machine types (--machines all), 4 epochs, the weights of the last 2 averaged."""
    out = tmp_path_factory.mktemp("runs") / "all"
    assert _train(data_dir, cache_dir, out, "--machines", "all", "--epochs", "4",
                  "--average-last", "2") == 0
    return out


def _metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_training_lowers_the_loss_and_learns_sections_and_attributes(pretrained):
    metrics = _metrics(pretrained)
    assert [m["epoch"] for m in metrics] == [1, 2, 3, 4]
    assert metrics[-1]["train_loss"] < 0.7 * metrics[0]["train_loss"]
    # held-out normal clips: 4 sections (chance 0.25), attributes of 2-3 values (chance < 0.5)
    assert metrics[-1]["val_section_accuracy"] >= 0.8
    assert metrics[-1]["val_attribute_accuracy"] >= 0.75
    assert metrics[-1]["val_averaged_section_accuracy"] >= 0.8
    assert (pretrained / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_checkpoint_describes_itself_and_loads_with_weights_only(pretrained):
    payload = torch.load(pretrained / "checkpoint.pt", map_location="cpu", weights_only=True)
    assert payload["objective"] == "disentangled"
    assert payload["front_end"] == DEFAULT_FRONT_END.model_dump()
    assert payload["patching"] == DEFAULT_PATCHING.model_dump()
    assert payload["section_labels"] == ["fan/section_00", "fan/section_01",
                                         "valve/section_00", "valve/section_01"]
    # target-only values are classes too; "load" exists only on valve section 00
    assert payload["attribute_labels"] == {"fan/speed": ["1", "2", "3"],
                                           "valve/load": ["hi", "lo", "mid"],
                                           "valve/speed": ["1", "2", "3"]}
    assert payload["epoch"] == 4 and payload["averaged_epochs"] == [3, 4]
    assert payload["model_args"]["n_bins"] == DEFAULT_FRONT_END.n_bins
    assert payload["data"]["groups"]["valve/section_00/target"] == 5
    assert payload["model_summary"]["parameters"] < 600_000
    assert isinstance(payload["git_revision"], str) and payload["config"]["epochs"] == 4


def test_inference_uses_the_averaged_weights_which_differ_from_the_last(pretrained, data_dir):
    payload = torch.load(pretrained / "checkpoint.pt", map_location="cpu", weights_only=True)
    name = "backbone.2.conv.weight"
    assert not torch.equal(payload["averaged"][name], payload["model"][name])
    averaged, last = load_run(pretrained), load_run(pretrained, weights="last")
    assert torch.equal(averaged.model.state_dict()[name], payload["averaged"][name])
    assert torch.equal(last.model.state_dict()[name], payload["model"][name])

    clip = next((data_dir / "valve" / "test").glob("section_00_source_*.wav"))
    section_embedding, attribute_embedding = averaged.embed_clip(read_audio(clip))
    assert section_embedding.shape == (2, 64) and attribute_embedding.shape == (2, 64)
    assert section_embedding.dtype == np.float32
    assert not np.allclose(section_embedding, last.embed_clip(read_audio(clip))[0])
    # the averaged model classifies the unseen test clip's section
    logits = averaged.model.section_classifier(torch.from_numpy(section_embedding))
    assert averaged.section_labels[int(logits.mean(0).argmax())] == "valve/section_00"


def test_resume_continues_the_run(pretrained, data_dir, cache_dir, tmp_path):
    run = tmp_path / "resumed"
    run.mkdir()
    for name in ("checkpoint.pt", "metrics.jsonl"):
        (run / name).write_bytes((pretrained / name).read_bytes())
    assert _train(data_dir, cache_dir, run, "--machines", "all", "--epochs", "5", "--resume",
                  "--average-last", "2") == 0
    assert [m["epoch"] for m in _metrics(run)] == [1, 2, 3, 4, 5]
    payload = torch.load(run / "checkpoint.pt", map_location="cpu", weights_only=True)
    assert payload["epoch"] == 5 and payload["averaged_epochs"] == [4, 5]


def test_fine_tuning_one_machine_from_the_all_machine_run(pretrained, data_dir, cache_dir,
                                                          tmp_path):
    out = tmp_path / "fan"
    assert _train(data_dir, cache_dir, out, "--machines", "fan", "--epochs", "1",
                  "--init", str(pretrained)) == 0
    tuned = torch.load(out / "checkpoint.pt", map_location="cpu", weights_only=True)
    base = torch.load(pretrained / "checkpoint.pt", map_location="cpu", weights_only=True)
    assert tuned["section_labels"] == ["fan/section_00", "fan/section_01"]
    assert list(tuned["attribute_labels"]) == ["fan/speed"]
    # the input statistics come with the pre-trained backbone (training never changes them)
    assert torch.equal(tuned["model"]["input_mean"], base["averaged"]["input_mean"])
    assert _metrics(out)[0]["val_section_accuracy"] >= 0.75


@pytest.mark.parametrize("objective", ["mtl", "arcface", "sections"])
def test_each_baseline_objective_saves_the_same_checkpoint_format(objective, pretrained,
                                                                  data_dir, cache_dir, tmp_path):
    out = tmp_path / objective
    assert _train(data_dir, cache_dir, out, "--machines", "fan", "--epochs", "1",
                  "--objective", objective) == 0
    payload = torch.load(out / "checkpoint.pt", map_location="cpu", weights_only=True)
    reference = torch.load(pretrained / "checkpoint.pt", map_location="cpu", weights_only=True)
    assert set(payload) == set(reference)
    assert payload["objective"] == objective
    run = load_run(out)
    assert run.attribute_dim == 0 and run.section_dim == 64
    clip = next((data_dir / "fan" / "test").glob("*.wav"))
    section_embedding, attribute_embedding = run.embed_clip(read_audio(clip))
    assert section_embedding.shape == (2, 64) and attribute_embedding.shape == (2, 0)
    has_attribute_classifiers = any(k.startswith("attribute_classifiers.")
                                    for k in payload["model"])
    assert has_attribute_classifiers == (objective == "mtl")


def test_attribute_loss_is_masked_not_zero_filled():
    logits = torch.tensor([[2.0, 0.0], [0.0, 5.0], [1.0, 1.0]])
    labels = torch.tensor([0, IGNORE, 1])
    expected = torch.nn.functional.cross_entropy(logits[[0, 2]], labels[[0, 2]])
    assert torch.allclose(masked_cross_entropy(logits, labels), expected)
    assert float(masked_cross_entropy(logits, torch.full((3,), IGNORE))) == 0.0


def test_ddp_with_two_gloo_processes(data_dir, cache_dir, tmp_path):
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "-m", "training.train", "--data", str(data_dir), "--machines", "fan", "--out",
         str(out), "--cache-dir", str(cache_dir), "--epochs", "1", "--batch-size", "4",
         "--val-fraction", "0.2", "--no-progress"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]
    payload = torch.load(out / "checkpoint.pt", map_location="cpu", weights_only=True)
    assert payload["world_size"] == 2 and payload["epoch"] == 1
    assert load_run(out).section_labels == ["fan/section_00", "fan/section_01"]


def _refused(capsys, argv: list[str], words: list[str]) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    for word in words:
        assert word in err, err


def test_bad_input_exits_2_with_one_line(pretrained, data_dir, cache_dir, tmp_path, capsys):
    base = ["train", "--cache-dir", str(cache_dir), "--epochs", "1", "--no-progress"]
    _refused(capsys, base + ["--data", str(tmp_path / "nowhere"), "--machines", "fan",
                             "--out", str(tmp_path / "a")], ["nowhere"])
    _refused(capsys, base + ["--data", str(data_dir), "--machines", "pump",
                             "--out", str(tmp_path / "a")], ["pump", "fan, valve"])
    no_target = write_tone_dataset(tmp_path / "no_target", n_source=6, n_target=0,
                                   machines=("fan",))
    _refused(capsys, base + ["--data", str(no_target), "--machines", "fan",
                             "--out", str(tmp_path / "a")], ["target", "--allow-no-target"])
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "checkpoint.pt").write_bytes(b"not a checkpoint")
    _refused(capsys, base + ["--data", str(data_dir), "--machines", "fan",
                             "--out", str(tmp_path / "a"), "--init", str(broken)], ["broken"])
    _refused(capsys, base + ["--data", str(data_dir), "--machines", "fan", "--out",
                             str(tmp_path / "a"), "--init", str(pretrained), "--objective",
                             "arcface"], ["'disentangled'", "--objective"])
    _refused(capsys, base + ["--data", str(data_dir), "--machines", "fan", "--out",
                             str(tmp_path / "a"), "--init", str(pretrained), "--front-end",
                             "log-mel"], ["front end"])
    _refused(capsys, base + ["--data", str(data_dir), "--machines", "all",
                             "--out", str(pretrained)], ["--resume"])
    _refused(capsys, base + ["--data", str(data_dir), "--machines", "all",
                             "--out", str(tmp_path / "fresh"), "--resume"], ["no checkpoint"])
    _refused(capsys, base + ["--data", str(data_dir), "--machines", "fan", "--out",
                             str(tmp_path / "a"), "--spectrum-branch", "--front-end",
                             "log-linear"], ["--spectrum-branch", "--front-end"])
    _refused(capsys, base + ["--data", str(data_dir), "--machines", "fan", "--out",
                             str(tmp_path / "a"), "--spectrum-branch", "--objective", "anp"],
             ["--spectrum-branch", "ANP"])
    _refused(capsys, base + ["--data", str(data_dir), "--machines", "fan", "--out",
                             str(tmp_path / "a"), "--subclusters", "4", "--objective",
                             "arcface"], ["--subclusters 4", "arcface"])
    with pytest.raises(BadInput, match="not a readable checkpoint"):
        load_run(broken)
    assert not (tmp_path / "a").exists()


def test_patch_length_is_a_training_choice_the_run_carries(data_dir, cache_dir, tmp_path, capsys):
    out = tmp_path / "short"
    assert _train(data_dir, cache_dir, out, "--machines", "fan", "--epochs", "1",
                  "--patch-frames", "32") == 0
    run = load_run(out)
    assert run.patching.patch_frames == 32 and run.patching.patch_hop == 16
    clip = next((data_dir / "fan" / "test").glob("*.wav"))  # 3 s: 92 frames
    section_embedding, _ = run.embed_clip(read_audio(clip))
    assert section_embedding.shape[0] == (92 - 32) // 16 + 1  # 4 patches (2 at 64 frames)
    capsys.readouterr()
    assert _train(data_dir, cache_dir, tmp_path / "bad", "--machines", "fan", "--epochs", "1",
                  "--patch-frames", "8") == 2
    err = capsys.readouterr().err.strip()
    assert "--patch-frames 8" in err and "32" in err and len(err.splitlines()) == 1


def test_spectrum_branch_reads_the_log_mel_of_the_same_fft_and_a_fine_spectrum(
        data_dir, cache_dir, tmp_path):
    """--spectrum-branch: the model takes the FFT's 513 linear bins; its 2-D branch sees the
    log-mel front end's bands (computed inside the model), its second branch the patch's
    high-resolution spectrum, and both change the embedding."""
    from edge.features import LOG_MEL_FRONT_END, spectrogram
    from training.loop import SPECTRUM_FRONT_END

    out = tmp_path / "spectrum"
    assert main(["train", "--data", str(data_dir), "--out", str(out), "--cache-dir",
                 str(cache_dir), "--machines", "fan", "--epochs", "2", "--batch-size", "16",
                 "--threads", "1", "--no-progress", "--spectrum-branch"]) == 0
    run = load_run(out)
    assert run.front_end == SPECTRUM_FRONT_END and run.front_end.n_bins == 513
    assert run.model.args.mel_bands == LOG_MEL_FRONT_END.n_mels
    wave = read_audio(next((data_dir / "fan" / "test").glob("*.wav")))
    linear = torch.from_numpy(spectrogram(wave, SPECTRUM_FRONT_END))[None]   # (1, 513, T)
    expected = spectrogram(wave, LOG_MEL_FRONT_END)                          # (128, T)
    with torch.no_grad():
        got = run.model.log_mel(linear)[0].numpy()
    audible = expected > np.log(LOG_MEL_FRONT_END.log_floor) + 1.0  # bands above the floor
    assert audible.mean() > 0.5
    # (bins under the floor add at most 1e-5 each: 0.4 % of a band 4 above the floor)
    np.testing.assert_allclose(got[audible], expected[audible], atol=1e-2)
    # the second branch is live: a tone added in one 15.6 Hz bin's neighbourhood, too narrow
    # for its mel band to change much, moves the embedding
    patch = linear[..., :64].clone()
    louder = patch.clone()
    louder[0, 300] += 1.0                                   # one bin (4.7 kHz) up by e
    with torch.no_grad():
        model = run.model.eval()
        base_s, base_a = model.embed(patch)
        moved_s, moved_a = model.embed(louder)
        branch = model.spectrum_branch(
            ((louder - model.input_mean[:, None]) / model.input_std[:, None]).mean(2))
        plain = model.spectrum_branch(
            ((patch - model.input_mean[:, None]) / model.input_std[:, None]).mean(2))
    assert not torch.allclose(branch, plain)
    assert not torch.allclose(torch.cat([base_s, base_a], 1), torch.cat([moved_s, moved_a], 1))


def test_subcluster_adacos_learns_with_fixed_centres_and_keeps_the_embeddings(
        data_dir, cache_dir, tmp_path):
    """--subclusters K: the classifiers give class log-probabilities over K fixed centres per
    class; training learns the sections through them and never moves the centres; the
    exported embeddings have the usual shapes."""
    from training.model import ModelArgs, SubclusterAdaCos, SurrogateTaskModel

    out = tmp_path / "adacos"
    assert _train(data_dir, cache_dir, out, "--machines", "all", "--epochs", "4",
                  "--subclusters", "4", "--seed", "3") == 0
    metrics = _metrics(out)
    assert metrics[-1]["train_loss"] < 0.7 * metrics[0]["train_loss"]
    assert metrics[-1]["val_section_accuracy"] >= 0.8      # 4 sections: chance 0.25
    run = load_run(out)
    classifier = run.model.section_classifier
    assert isinstance(classifier, SubclusterAdaCos) and classifier.subclusters == 4
    torch.manual_seed(3)  # the fresh model the run started from (the loop seeds before build)
    fresh = SurrogateTaskModel(ModelArgs.from_dict(run.model.args.to_dict()))
    assert torch.equal(fresh.section_classifier.centres, classifier.centres)
    with torch.no_grad():
        log_probs = classifier(torch.randn(5, run.section_dim))
    np.testing.assert_allclose(log_probs.exp().sum(1).numpy(), 1.0, rtol=1e-5)
    clip = next((data_dir / "fan" / "test").glob("*.wav"))
    section_embedding, attribute_embedding = run.embed_clip(read_audio(clip))
    assert section_embedding.shape == (2, 64) and attribute_embedding.shape == (2, 64)
