"""What a valid config refers to, checked on this box before the daemon runs.

``load_config`` checks a config's form; ``preflight`` checks that what it names is here: each
file source readable audio, each microphone an input device, each machine type a bundle that
loads, each section in its bundle, the broker's password and TLS files readable, the state
folders writable. ``asd-edge check-config`` runs both (``--syntax-only``: the form alone, for
a file checked away from its box).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from edge.audio import audio_info, check_rate
from edge.config import EdgeConfig
from edge.errors import AsdEdgeError


@dataclass(frozen=True)
class Finding:
    """One thing a config names that is not right here: ``where`` (dotted, as the config's
    own errors name it) and ``message`` (what is wrong and the fix)."""

    where: str
    message: str

    def line(self, path: str) -> str:
        return f"{path}: {self.where}: {self.message}"


def preflight(config: EdgeConfig) -> list[Finding]:
    """Every problem with what ``config`` refers to on this machine ([] when all is here)."""
    found: list[Finding] = []
    bundles: dict[str, object] = {}
    for i, stream in enumerate(config.streams):
        where = f"streams[{i}]"
        source = stream.source
        if source.type == "file":
            try:
                info = audio_info(source.path)
                check_rate(info.sample_rate, str(source.path))
            except AsdEdgeError as err:
                found.append(Finding(f"{where}.source.path", str(err)))
        else:
            found += _check_device(where, source.device)
        found += _check_bundle(where, config, stream.machine, stream.section, bundles)
    if config.mqtt is not None:
        for name, path in (("mqtt.password_file", config.mqtt.password_file),
                           *(((f"mqtt.tls.{k}", getattr(config.mqtt.tls, k))
                              for k in ("ca", "cert", "key")) if config.mqtt.tls else ())):
            if path is not None and not _readable(path):
                found.append(Finding(name, f"{path} is not a readable file; create it or fix "
                                           "the path (relative paths follow the config file)"))
    folders = [("state_dir", config.state_dir), ("outbox.path", config.outbox_path.parent)]
    if config.evidence.enabled:
        folders.append(("evidence.dir", config.evidence_dir))
    for name, folder in folders:
        if not _writable(folder):
            found.append(Finding(name, f"{folder} cannot be created or written here; give the "
                                       "service user a folder it owns"))
    return found


def _check_device(where: str, device: int | str) -> list[Finding]:
    from edge.capture.devices import find_input_device, list_input_devices

    try:
        find_input_device(device, list_input_devices())
    except AsdEdgeError as err:
        return [Finding(f"{where}.source.device", str(err))]
    except OSError as err:  # PortAudio missing
        return [Finding(f"{where}.source.device", f"cannot list the inputs ({err}); install "
                                                  "libportaudio2")]
    return []


def _check_bundle(where: str, config: EdgeConfig, machine: str, section: int,
                  bundles: dict[str, object]) -> list[Finding]:
    from edge.bundle.load import load_bundle

    if machine not in bundles:
        try:
            bundles[machine] = load_bundle(config.models_dir, machine, device="cpu", threads=1)
        except AsdEdgeError as err:
            bundles[machine] = err
    bundle = bundles[machine]
    if isinstance(bundle, AsdEdgeError):
        return [Finding(f"{where}.machine", str(bundle))]
    sections = sorted(bundle.system.thresholds)  # type: ignore[attr-defined]
    if section not in sections:
        names = ", ".join(f"section_{s:02d}" for s in sections)
        return [Finding(f"{where}.section", f"the {machine} bundle has no section_{section:02d} "
                                            f"(it has {names}); enroll the unit: asd-edge "
                                            f"enroll --machine {machine} --section {section}")]
    return []


def _readable(path: Path) -> bool:
    return Path(path).is_file() and os.access(path, os.R_OK)


def _writable(folder: Path) -> bool:
    """``folder`` exists and is writable, or its nearest existing parent is (the daemon
    creates it)."""
    folder = Path(folder)
    while not folder.exists():
        if folder.parent == folder:
            return False
        folder = folder.parent
    return folder.is_dir() and os.access(folder, os.W_OK | os.X_OK)
