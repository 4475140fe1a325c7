"""bundle.json through its one model: what export and enrollment write loads back, a hand-edited
bad manifest is refused naming the field, an old one says how to re-export, the docs agree."""

from __future__ import annotations

import json
import math
import shutil
import stat
from pathlib import Path

import pytest

from edge.bundle.load import load_bundle
from edge.bundle.manifest import MANIFEST, BundleManifest, read_manifest, write_manifest
from edge.bundle.schema import BEGIN, schema_drift, write_schema_docs
from edge.bundle.system import SpectralMember
from edge.cli import main
from edge.errors import BadInput, RuntimeFailure
from edge.synth import synthesize_dataset

ROOT = Path(__file__).resolve().parents[1]
MACHINE = "fan"


@pytest.fixture(scope="module")
def enrolled(tmp_path_factory) -> Path:
    """A statistics-only bundle enrolled from 6 synthetic normal clips (as a site makes one),
    its thresholds set for a false-alarm budget."""
    root = tmp_path_factory.mktemp("manifest")
    data = synthesize_dataset(root / "data", [MACHINE], sections=1, n_train=6,
                              n_target_train=0, n_test=1, seed=5)
    models = root / "models"
    assert main(["enroll", "--dir", str(data / MACHINE / "train"), "--machine", MACHINE,
                 "--section", "0", "--models", str(models), "--domain", "source",
                 "--false-alarms-per-day", "1"]) == 0
    return models / MACHINE


def _edited(enrolled: Path, tmp_path: Path, edit) -> Path:
    bundle = tmp_path / MACHINE
    shutil.copytree(enrolled, bundle)
    manifest = json.loads((bundle / MANIFEST).read_text())
    edit(manifest)
    (bundle / MANIFEST).write_text(json.dumps(manifest))  # NaN/Infinity as Python writes them
    return bundle


def _verify_refuses(bundle: Path, capsys, *fragments: str) -> str:
    assert main(["bundle", "verify", str(bundle)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in err, err
    return err


def test_an_enrolled_bundle_loads_through_the_model_and_reads_as_written(enrolled) -> None:
    manifest = read_manifest(enrolled, MACHINE)
    assert isinstance(manifest, BundleManifest)
    assert [m.kind for m in manifest.system.members] == ["spectral"]
    assert manifest.sections["00"].threshold > manifest.sections["00"].clear_threshold > 0
    calibration = manifest.alarm_calibration
    assert calibration is not None and calibration.false_alarms_per_day == 1.0
    assert calibration.rule.clear_fraction is None
    # written through the same model: reading and writing it again changes nothing
    assert manifest.to_json() == (enrolled / MANIFEST).read_text()
    bundle = load_bundle(enrolled.parent, MACHINE)
    assert isinstance(bundle.system.members[0], SpectralMember)
    assert bundle.system.sections == [0]
    # a service user other than the exporter can read it (issue 13: it was 0600)
    assert stat.S_IMODE((enrolled / MANIFEST).stat().st_mode) == 0o644


def _set(path: tuple, value):
    def edit(manifest: dict) -> None:
        node = manifest
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value
    return edit


def _delete(path: tuple):
    def edit(manifest: dict) -> None:
        node = manifest
        for key in path[:-1]:
            node = node[key]
        del node[path[-1]]
    return edit


@pytest.mark.parametrize("edit, fragments", [
    (_set(("system", "members", 0, "kind"), "wavelet"),
     ("system.members.0", "'wavelet'", "'embedding', 'spectral', 'anp'")),
    (_set(("sections", "00", "threshold"), math.nan),
     ("sections.00.threshold", "finite number")),
    (_set(("sections", "00", "domains", "source", "clear_threshold"), math.inf),
     ("sections.00.domains.source.clear_threshold", "finite number")),
    (_set(("alarm_calibration", "rule", "clear_threshold"), math.nan),
     ("alarm_calibration.rule.clear_threshold", "finite number")),
    (_set(("alarm_calibration", "false_alarms_per_day"), math.inf),
     ("alarm_calibration.false_alarms_per_day", "finite number")),
    (_set(("system", "members", 0, "norm", "00"), [1.0, 0.0]),
     ("system.members.0.spectral.norm.00.1", "greater than 0")),
    (_delete(("sections", "00", "threshold")),
     ("sections.00.threshold: required, but missing",)),
    (_delete(("machine",)), ("machine: required, but missing",)),
    (_set(("system", "members", 0, "weight"), "heavy"),
     ("system.members.0.spectral.weight", "'heavy'")),
    (_set(("sections", "00", "thresold"), 1.0), ("sections.00.thresold: unknown key",)),
    (_set(("front_end", "n_fft"), 10 ** 9),
     ("front_end.n_fft", "less than or equal to 262144")),
], ids=["unknown-kind", "nan-threshold", "infinite-clear", "nan-rule-clear",
        "infinite-budget", "zero-std", "missing-threshold",
        "missing-machine", "string-weight", "typo-key", "absurd-n_fft"])
def test_a_hand_edited_bad_manifest_is_refused_naming_the_field(enrolled, tmp_path, capsys,
                                                                edit, fragments) -> None:
    bundle = _edited(enrolled, tmp_path, edit)
    _verify_refuses(bundle, capsys, "bundle.json: ", *fragments, "re-export")
    with pytest.raises(BadInput, match=fragments[0].split(":")[0].replace(".", r"\.")):
        load_bundle(bundle)  # the daemon's load refuses it the same way


def test_an_edited_threshold_is_refused_as_the_files_are(enrolled, tmp_path, capsys) -> None:
    """Issue 13: every number the daemon acts on is covered by the bundle's hashes. A valid
    but changed threshold (10x higher: alarms silently rarer) no longer loads; the same
    manifest re-indented does."""
    threshold = json.loads((enrolled / MANIFEST).read_text())["sections"]["00"]["threshold"]
    bundle = _edited(enrolled, tmp_path, _set(("sections", "00", "threshold"), 10 * threshold))
    _verify_refuses(bundle, capsys, "does not match its content_sha256",
                    "alarm.threshold")
    with pytest.raises(BadInput, match="content_sha256"):
        load_bundle(bundle)
    same = tmp_path / "same"
    shutil.copytree(enrolled, same / MACHINE)
    manifest = json.loads((same / MACHINE / MANIFEST).read_text())
    (same / MACHINE / MANIFEST).write_text(json.dumps(manifest, indent=7))
    assert main(["bundle", "verify", str(same / MACHINE)]) == 0


def test_an_old_manifest_version_says_how_to_re_export(enrolled, tmp_path, capsys) -> None:
    bundle = _edited(enrolled, tmp_path, _set(("format_version",), 0))
    _verify_refuses(bundle, capsys, "format version 0 is older than 1",
                    "asd-edge export --run RUN --machine M --data DIR --out MODELS")


@pytest.mark.parametrize("text, fragment", [
    ('{"format": "asd-edge-bundle", "format_version": ' + "9" * 5000 + "}", "not valid JSON"),
    ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
    ("\x00\x01binary", "not valid JSON"),
], ids=["5000-digit-number", "deep-nesting", "binary"])
def test_absurd_manifests_give_one_line(enrolled, tmp_path, capsys, text, fragment) -> None:
    bundle = tmp_path / MACHINE
    shutil.copytree(enrolled, bundle)
    (bundle / MANIFEST).write_text(text)
    _verify_refuses(bundle, capsys, fragment, "re-export")


def test_a_nan_threshold_is_never_written(enrolled, tmp_path) -> None:
    bundle = tmp_path / MACHINE
    shutil.copytree(enrolled, bundle)
    before = (bundle / MANIFEST).read_text()
    manifest = json.loads(before)
    manifest["sections"]["00"]["clear_threshold"] = math.nan
    with pytest.raises(RuntimeFailure, match=r"sections\.00\.clear_threshold.*nothing was "
                                             "written"):
        write_manifest(bundle, {k: v for k, v in manifest.items() if k != "files"})
    assert (bundle / MANIFEST).read_text() == before


def test_the_docs_hold_the_schema_of_the_model(tmp_path, capsys) -> None:
    """docs/bundle.schema.json and the generated tables of docs/BUNDLE.md are the model's
    (regenerate with 'asd-edge bundle schema'); a changed default shows as drift."""
    docs = ROOT / "docs"
    assert schema_drift(docs) == [], "run 'asd-edge bundle schema' and commit docs/"
    assert main(["bundle", "schema", "--check", str(docs)]) == 0
    text = (docs / "BUNDLE.md").read_text()
    assert text.count(BEGIN) == 1
    assert "| `exact_below` | integer (>= 0) | `10000` |" in text
    assert "20 000" not in text
    copy = tmp_path / "docs"
    shutil.copytree(docs, copy)
    (copy / "BUNDLE.md").write_text(text.replace("`10000`", "`20000`"))
    assert schema_drift(copy) == [copy / "BUNDLE.md"]
    assert main(["bundle", "schema", "--check", str(copy)]) == 1
    assert "asd-edge bundle schema" in capsys.readouterr().err
    assert write_schema_docs(copy) == [copy / "BUNDLE.md"]
    assert schema_drift(copy) == []
