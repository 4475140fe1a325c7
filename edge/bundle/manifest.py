"""``bundle.json``: the versioned manifest of a model bundle, its hashes, and their checks.

A bundle is a folder ``<models>/<machine>/`` holding ``bundle.json`` and the files it names
(``model.onnx``, index files, ``.npz`` arrays, JSON). ``bundle.json`` records the sha256 of every
other file; ``read_manifest`` refuses a bundle whose format, version, machine, files or hashes
do not match, with a message that names the file and the fix. No pickle anywhere.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from edge.errors import BadInput

FORMAT = "asd-edge-bundle"
# Raised only for a change an older reader would misread. Additive keys that an older reader
# may ignore without scoring differently from before keep it (per-domain thresholds:
# ``sections.SS.domains``; the scorer's ``reference_domains``), and a reader treats their
# absence as the behaviour before them (pooled thresholds).
FORMAT_VERSION = 1
MANIFEST = "bundle.json"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so that a reader sees the old or the new file, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_manifest(bundle_dir: Path, manifest: dict[str, Any]) -> dict[str, Any]:
    """Hash every file under ``bundle_dir`` (except bundle.json) into ``manifest['files']``, then
    write bundle.json atomically. Returns the manifest written."""
    files = {
        path.relative_to(bundle_dir).as_posix(): sha256_file(path)
        for path in sorted(bundle_dir.rglob("*"))
        if path.is_file() and path.name != MANIFEST and not path.name.startswith(".")
    }
    manifest = {"format": FORMAT, "format_version": FORMAT_VERSION, **manifest, "files": files}
    atomic_write_text(bundle_dir / MANIFEST, json.dumps(manifest, indent=2, sort_keys=False))
    return manifest


def bundle_dir_for(models: str | Path, machine: str) -> Path:
    """``<models>/<machine>``, or ``models`` itself when it already is a bundle folder."""
    models = Path(models)
    if (models / MANIFEST).is_file():
        return models
    return models / machine


def read_manifest(bundle_dir: str | Path, machine: str | None = None,
                  check_hashes: bool = True) -> dict[str, Any]:
    """Load and check ``bundle.json``: format, version, machine type, files present, hashes."""
    bundle_dir = Path(bundle_dir)
    path = bundle_dir / MANIFEST
    if not path.is_file():
        raise BadInput(f"{path}: no bundle here; export one with 'asd-edge export --run RUN "
                       "--machine M --data DIR --out MODELS' or point --models at the folder "
                       "that holds <machine>/bundle.json")
    try:
        manifest = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise BadInput(f"{path}: not valid JSON ({err}); re-export the bundle") from err
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BadInput(f"{path}: not an asd-edge bundle manifest (format "
                       f"{manifest.get('format') if isinstance(manifest, dict) else None!r}); "
                       "re-export the bundle")
    version = manifest.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise BadInput(f"{path}: bundle format version {version!r} is newer than this asd-edge "
                       f"reads ({FORMAT_VERSION}); upgrade asd-edge on this box or export with "
                       "the matching version")
    if version < FORMAT_VERSION:
        raise BadInput(f"{path}: bundle format version {version} is older than {FORMAT_VERSION}; "
                       "re-export the bundle with this asd-edge")
    if machine is not None and manifest.get("machine") != machine:
        raise BadInput(f"{path}: this bundle is for machine type {manifest.get('machine')!r}, "
                       f"not {machine!r}; use --machine {manifest.get('machine')} or the "
                       f"bundle folder of {machine}")
    files = manifest.get("files")
    if not isinstance(files, dict) or not files:
        raise BadInput(f"{path}: lists no files and hashes; re-export the bundle")
    for name, expected in files.items():
        file_path = bundle_dir / name
        if Path(name).is_absolute() or ".." in Path(name).parts:
            raise BadInput(f"{path}: file entry {name!r} points outside the bundle; re-export")
        if not file_path.is_file():
            raise BadInput(f"{file_path}: missing from the bundle; copy the whole bundle folder "
                           "again or re-export it")
        if check_hashes and sha256_file(file_path) != expected:
            raise BadInput(f"{file_path}: sha256 does not match bundle.json (changed or "
                           "corrupted after export); copy the bundle again or re-export it")
    return manifest
