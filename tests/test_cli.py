"""The ``asd-edge`` command line as a user meets it: global flags anywhere, --version, --json
for scripts, and one-line errors with exit code 2 for bad input."""

from __future__ import annotations

import json
import logging
from importlib.metadata import version
from pathlib import Path

import pytest

import edge
from edge.bundle.enroll import UNSEEN_SYSTEM
from edge.cli import main
from edge.errors import BadInput

EXAMPLE = Path(__file__).resolve().parents[1] / "deploy" / "edge.yaml"


@pytest.fixture
def log_levels(monkeypatch) -> list[int]:
    """The level each main() call configures logging with (pytest owns the root logger)."""
    levels: list[int] = []
    monkeypatch.setattr(logging, "basicConfig", lambda **kw: levels.append(kw["level"]))
    return levels


def _one_line_error(capsys, command: str) -> str:
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"asd-edge {command}: error: ")
    return lines[0]


def test_global_flags_work_after_the_command(log_levels, capsys) -> None:
    assert main(["devices", "-v"]) == 0
    assert main(["devices", "--verbose"]) == 0
    assert main(["-v", "devices"]) == 0
    assert main(["devices"]) == 0
    assert log_levels == [logging.DEBUG, logging.DEBUG, logging.DEBUG, logging.INFO]


def test_debug_after_the_command_shows_the_traceback(tmp_path, capsys) -> None:
    missing = str(tmp_path / "nothing")
    assert main(["data", missing]) == 2
    _one_line_error(capsys, "data")
    with pytest.raises(BadInput, match="no such folder"):
        main(["data", missing, "--debug"])
    with pytest.raises(BadInput, match="no such folder"):
        main(["--debug", "data", missing])


def test_version_is_the_installed_package_version(capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip() == f"asd-edge {version('asd-edge')}"
    assert edge.__version__ == version("asd-edge")


def test_data_json_parses_and_holds_the_facts(sample_dir, capsys) -> None:
    assert main(["data", str(sample_dir), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["clips"] == 28 and len(summary["machines"]) == 7
    assert summary["machines"]["valve"]["sections"] == ["section_00"]
    assert isinstance(summary["problems"], list)


def test_check_config_json_parses_and_holds_the_facts(capsys) -> None:
    assert main(["check-config", str(EXAMPLE), "--json", "--syntax-only"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is True and report["errors"] == [] and report["checked"] == "form"
    assert report["summary"][0].startswith("node press-hall-1: 3 stream(s)")
    assert [s["name"] for s in report["settings"]["streams"]] == [
        "gearbox-line-a", "fan-roof", "replay-check"]


def test_check_config_json_lists_each_error_with_its_line_and_exit_2(tmp_path, capsys) -> None:
    bad = tmp_path / "edge.yaml"
    bad.write_text("streams: 3\nunknown_key: 1\n")
    assert main(["check-config", str(bad)]) == 2
    text = capsys.readouterr()
    assert main(["check-config", str(bad), "--json"]) == 2
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is False
    assert [(e["line"], e["where"]) for e in report["errors"]] == [
        (1, "streams"), (2, "unknown_key")]
    assert all(line in text.err for line in report["lines"])  # the same facts as the text


def test_bundle_verify_json_parses_and_holds_the_facts(sample_dir, tmp_path, capsys) -> None:
    models = tmp_path / "models"
    assert main(["enroll", "--dir", str(sample_dir / "gearbox" / "train"), "--machine",
                 "gearbox", "--section", "0", "--models", str(models),
                 "--domain", "source"]) == 0
    capsys.readouterr()
    assert main(["bundle", "verify", str(models / "gearbox"), "--device", "cpu"]) == 0
    text = capsys.readouterr().out
    assert main(["bundle", "verify", str(models / "gearbox"), "--device", "cpu", "--json"]) == 0
    facts = json.loads(capsys.readouterr().out)
    assert facts["ok"] is True and facts["machine"] == "gearbox"
    assert [m["name"] for m in facts["members"]] == [UNSEEN_SYSTEM]
    assert facts["references"] == 2 and facts["files"] >= 1 and facts["sha256_checked"]
    section = facts["sections"]["section_00"]
    assert section["threshold"] > 0 and section["clear_threshold"] <= section["threshold"]
    assert section["promises"] == {"pooled": None}  # enrolled without a false-alarm budget
    assert "alarm promise: none" in text
    assert f"test score {section['test_score']:.4g}" in text
    assert f"threshold {section['threshold']:.4g}" in text
    assert f"references: {facts['references']} normal clips" in text


@pytest.mark.parametrize("argv, command", [
    (["check-config", "{tmp}/missing.yaml", "--json"], "check-config"),
    (["data", "{tmp}/missing", "--json"], "data"),
    (["bundle", "verify", "{tmp}/missing", "--json"], "bundle"),
    (["devices", "--find", "no-such-microphone-xyz"], "devices"),
])
def test_bad_input_is_one_line_and_exit_2(argv, command, tmp_path, capsys) -> None:
    argv = [a.format(tmp=tmp_path) for a in argv]
    assert main(argv) == 2
    _one_line_error(capsys, command)


def test_bad_usage_exits_2(capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["bundle", "check", "x"])  # argparse: not a known action
    assert exit_.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


def test_enroll_system_picks_the_detectors_of_a_new_bundle_only(sample_dir, tmp_path,
                                                               capsys) -> None:
    models, train = tmp_path / "models", str(sample_dir / "fan" / "train")
    unit = ["--machine", "fan", "--section", "0", "--models", str(models), "--domain", "source"]
    assert main(["enroll", "--dir", train, *unit, "--system", "stats+pitch"]) == 2
    assert "stats+pitch" in _one_line_error(capsys, "enroll") and not models.exists()
    assert main(["enroll", "--dir", train, *unit, "--system", "stats+modulation"]) == 0
    capsys.readouterr()
    assert main(["bundle", "verify", str(models / "fan"), "--device", "cpu", "--json"]) == 0
    facts = json.loads(capsys.readouterr().out)
    assert [m["name"] for m in facts["members"]] == ["stats", "modulation"]
    assert main(["enroll", "--dir", train, *unit, "--system", "modulation"]) == 2
    assert "keeps its system" in _one_line_error(capsys, "enroll")
