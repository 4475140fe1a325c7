"""The DCASE 2022/2023 Task 2 data layout: file-name grammar, attributes, enumeration.

Development layout (labels in the name)::

    <root>/<machine>/{train,test}/section_<SS>_<source|target>_<train|test>_<normal|anomaly>_<NNNN>[_<k1>_<v1>...].wav
    <root>/<machine>/attributes_<SS>.csv        file_name,d1p,d1v,d2p,d2v,...   (optional)

Evaluation layout (no labels in the name; labels from ground-truth files)::

    <root>/<machine>/test/section_<SS>_<NNNN>.wav
    ground_truth_<machine>_section_<SS>_test.csv          name,0|1      (anomaly label)
    ground_truth_domain/.../ground_truth_<machine>_section_<SS>_test.csv   name,0|1 (1 = target)

Attribute values are kept as strings: they are categories, not numbers. Training and the edge
both read data through this module, so the grammar is written once.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from edge.errors import BadInput

MACHINE_TYPES = ("ToyCar", "ToyTrain", "fan", "gearbox", "bearing", "slider", "valve")
AUDIO_SUFFIXES = (".wav", ".flac")
DOMAINS = ("source", "target")
SPLITS = ("train", "test")
LABELS = ("normal", "anomaly")
NO_ATTRIBUTE = "noAttribute"

_DEV_NAME = re.compile(
    r"^section_(?P<section>\d{2})_(?P<domain>source|target)_(?P<split>train|test)_"
    r"(?P<label>normal|anomaly)_(?P<index>\d{4})(?:_(?P<attrs>.+))?$"
)
_EVAL_NAME = re.compile(r"^section_(?P<section>\d{2})_(?P<index>\d{4})$")
_GROUND_TRUTH = re.compile(r"^ground_truth_(?P<machine>.+)_section_(?P<section>\d{2})_test\.csv$")

Attributes = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Clip:
    """One audio file of a data set and what its name (or ground truth) says about it.

    ``domain`` and ``label`` are ``None`` for an evaluation-layout clip without ground truth.
    ``attributes`` are ordered (key, value) string pairs; empty when the clip has none.
    """

    path: Path
    machine: str
    section: int
    split: str
    index: str
    domain: str | None = None
    label: str | None = None
    attributes: Attributes = ()

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def section_name(self) -> str:
        return f"section_{self.section:02d}"

    @property
    def is_anomaly(self) -> bool | None:
        return None if self.label is None else self.label == "anomaly"

    def attribute_dict(self) -> dict[str, str]:
        return dict(self.attributes)


def parse_attributes(text: str | None, where: str) -> Attributes:
    """Split ``k1_v1_k2_v2`` into ((k1, v1), (k2, v2)). ``noAttribute`` or nothing gives ()."""
    if not text or text == NO_ATTRIBUTE:
        return ()
    tokens = text.split("_")
    if len(tokens) % 2:
        raise BadInput(
            f"{where}: attribute part {text!r} has an odd number of '_'-separated fields; "
            "expected key_value pairs (k1_v1_k2_v2) or an attributes_XX.csv beside the data"
        )
    return tuple((tokens[i], tokens[i + 1]) for i in range(0, len(tokens), 2))


def parse_clip_name(path: str | Path, machine: str | None = None) -> Clip:
    """Parse a DCASE file name (development or evaluation layout) into a ``Clip``.

    ``machine`` defaults to the name of the folder above ``train``/``test``.
    Raises ``BadInput`` naming the file when the name follows neither grammar.
    """
    path = Path(path)
    if machine is None:
        machine = path.parent.parent.name or "unknown"
    stem = path.stem
    match = _DEV_NAME.match(stem)
    if match:
        return Clip(
            path=path,
            machine=machine,
            section=int(match["section"]),
            split=match["split"],
            index=match["index"],
            domain=match["domain"],
            label=match["label"],
            attributes=parse_attributes(match["attrs"], str(path)),
        )
    match = _EVAL_NAME.match(stem)
    if match:
        split = path.parent.name if path.parent.name in SPLITS else "test"
        return Clip(path=path, machine=machine, section=int(match["section"]), split=split,
                    index=match["index"])
    raise BadInput(
        f"{path}: file name does not follow the DCASE grammar "
        "section_<SS>_<source|target>_<train|test>_<normal|anomaly>_<NNNN>[_<key>_<value>...].wav "
        "(or section_<SS>_<NNNN>.wav for evaluation data); rename it or move it out of the data set"
    )


def format_clip_name(section: int, domain: str, split: str, label: str, index: int,
                     attributes: Iterable[tuple[str, str]] = (), suffix: str = ".wav") -> str:
    """The development-layout file name; the inverse of ``parse_clip_name``.

    Keys and values must not contain '_' (the grammar's separator).
    """
    if domain not in DOMAINS or split not in SPLITS or label not in LABELS:
        raise ValueError(f"bad domain/split/label: {domain!r}, {split!r}, {label!r}")
    parts = [f"section_{section:02d}", domain, split, label, f"{index:04d}"]
    pairs = list(attributes)
    for key, value in pairs:
        if "_" in key or "_" in value or not key or not value:
            raise ValueError(f"attribute {key!r}={value!r}: keys and values must be non-empty "
                             "and contain no '_'")
        parts += [key, value]
    if not pairs:
        parts.append(NO_ATTRIBUTE)
    return "_".join(parts) + suffix


def read_attributes_csv(path: Path) -> dict[str, Attributes]:
    """Read ``attributes_<SS>.csv``: basename -> ((key, value), ...).

    Rows are ``file_name,d1p,d1v,d2p,d2v,...``; empty trailing pairs are dropped. The file
    name column may hold a relative path; it is matched by basename.
    """
    table: dict[str, Attributes] = {}
    try:
        with path.open(newline="") as handle:
            rows = list(csv.reader(handle))
    except (OSError, UnicodeDecodeError) as err:
        raise BadInput(f"{path}: cannot read attributes CSV ({err}); fix or remove it") from err
    if not rows or not rows[0] or rows[0][0].strip() != "file_name":
        raise BadInput(f"{path}: expected a header starting with 'file_name' "
                       "(file_name,d1p,d1v,...); fix or remove the file")
    for row in rows[1:]:
        if not row:
            continue
        values = [cell.strip() for cell in row[1:]]
        if len(values) % 2:
            values.append("")
        pairs = tuple((values[i], values[i + 1]) for i in range(0, len(values), 2)
                      if values[i] and values[i + 1] != "")
        table[Path(row[0].strip()).name] = pairs
    return table


def read_ground_truth(root: Path, machine: str) -> tuple[dict[str, bool], dict[str, str]]:
    """Find evaluation ground truth under ``root``: (name -> is_anomaly, name -> domain).

    Files named ``ground_truth_<machine>_section_<SS>_test.csv`` give the label; the same
    names inside a folder whose name contains ``domain`` give the domain (0 source, 1 target).
    """
    labels: dict[str, bool] = {}
    domains: dict[str, str] = {}
    for path in sorted(root.rglob("ground_truth_*_section_*_test.csv")):
        match = _GROUND_TRUTH.match(path.name)
        if not match or match["machine"] != machine:
            continue
        is_domain = any("domain" in part for part in path.parent.parts[len(root.parts):])
        with path.open(newline="") as handle:
            for row in csv.reader(handle):
                if len(row) < 2 or row[1].strip() not in ("0", "1"):
                    continue
                name = Path(row[0].strip()).name
                if is_domain:
                    domains[name] = "target" if row[1].strip() == "1" else "source"
                else:
                    labels[name] = row[1].strip() == "1"
    return labels, domains


@dataclass
class Dataset:
    """All clips of a data-set folder, with selection helpers."""

    root: Path
    clips: list[Clip] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def machines(self) -> list[str]:
        return sorted({clip.machine for clip in self.clips})

    def sections(self, machine: str) -> list[int]:
        return sorted({clip.section for clip in self.clips if clip.machine == machine})

    def select(self, machine: str | Iterable[str] | None = None, section: int | None = None,
               domain: str | None = None, split: str | None = None,
               label: str | None = None) -> list[Clip]:
        """Clips matching every given field, in a stable order (machine, section, name)."""
        machines = {machine} if isinstance(machine, str) else (
            set(machine) if machine is not None else None)
        return [
            clip for clip in self.clips
            if (machines is None or clip.machine in machines)
            and (section is None or clip.section == section)
            and (domain is None or clip.domain == domain)
            and (split is None or clip.split == split)
            and (label is None or clip.label == label)
        ]

    def require_machines(self, machines: Iterable[str]) -> list[str]:
        """Check that every named machine type is present; ``all`` means every one here."""
        wanted = list(machines)
        if wanted == ["all"]:
            return self.machines
        missing = [m for m in wanted if m not in self.machines]
        if missing:
            raise BadInput(f"machine type(s) {', '.join(missing)} not in {self.root} "
                           f"(it holds: {', '.join(self.machines) or 'none'}); "
                           "pick from those or point --data at another data set")
        return wanted


def _machine_dirs(root: Path) -> Iterator[Path]:
    if any((root / split).is_dir() for split in SPLITS):
        yield root  # a single machine's folder
        return
    for child in sorted(root.iterdir()):
        if child.is_dir() and any((child / split).is_dir() for split in SPLITS):
            yield child


def scan(root: str | Path) -> Dataset:
    """Enumerate a data set in the DCASE layout.

    ``root`` holds ``<machine>/{train,test}/`` folders, or is one machine's folder.
    Raises ``BadInput`` when nothing in the layout is found or a file name does not parse.
    """
    root = Path(root)
    if not root.is_dir():
        raise BadInput(f"{root}: no such folder; give the folder that holds <machine>/train "
                       "and <machine>/test (e.g. one written by 'asd-edge synth')")
    dataset = Dataset(root=root)
    for machine_dir in _machine_dirs(root):
        machine = machine_dir.name
        attributes: dict[str, Attributes] = {}
        for csv_path in sorted(machine_dir.glob("attributes_*.csv")):
            attributes.update(read_attributes_csv(csv_path))
        labels, domains = read_ground_truth(root, machine)
        if machine_dir != root:
            more_labels, more_domains = read_ground_truth(machine_dir, machine)
            labels.update(more_labels)
            domains.update(more_domains)
        for split in SPLITS:
            folder = machine_dir / split
            if not folder.is_dir():
                continue
            for path in sorted(folder.iterdir()):
                if path.suffix.lower() not in AUDIO_SUFFIXES:
                    if path.is_file() and not path.name.startswith("."):
                        dataset.problems.append(f"{path}: not an audio file (ignored)")
                    continue
                clip = parse_clip_name(path, machine)
                updates: dict[str, object] = {}
                if clip.name in attributes and attributes[clip.name]:
                    updates["attributes"] = attributes[clip.name]
                if clip.label is None and clip.name in labels:
                    updates["label"] = "anomaly" if labels[clip.name] else "normal"
                if clip.domain is None and clip.name in domains:
                    updates["domain"] = domains[clip.name]
                if updates:
                    clip = Clip(**{**clip.__dict__, **updates})
                dataset.clips.append(clip)
    if not dataset.clips:
        raise BadInput(
            f"{root}: not a DCASE layout (no <machine>/train or <machine>/test folder with "
            "section_<SS>_... audio files); point at the data-set root, e.g. one written by "
            "'asd-edge synth OUT'"
        )
    dataset.clips.sort(key=lambda c: (c.machine, c.section, c.split, c.name))
    return dataset
