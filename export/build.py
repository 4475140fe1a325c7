"""The bundle of one machine type from an exported model: members, references, thresholds.

The system shipped is the one machine-specific selection chose for the machine type
(``selection.json`` of ``python -m training.evaluate.select``: ``--selection FILE``, by default
``RUN/selection.json`` when present), unless ``--system`` names another. Selected systems map
to bundle members: ``stats`` and ``bandenergy`` -> the model-free spectral members of that name;
``<label>:<variant>`` (a variant of the run ``--run label=RUN`` of the selection; ``concat``,
``attributes``, ``sections``, ``weighted@<w>``) -> an embedding member ``embedding-<variant>``
of the exported network; ``<label>:anp`` (an attentive neural process run) -> the member
``anp``, its own ONNX model (export/anp_onnx.py) from the run the selection scored (recorded in
its settings; ``--anp-run RUN`` overrides), with the selection's partitions and seed. Several
variants of the run may be members at once; the ensemble weights are the selection's.
``--system embedding|stats|bandenergy|anp|a+b`` overrides it (members ``embedding`` etc., equal
weights; ``anp`` needs ``--anp-run``); with neither, the network alone (concat, mean).
"""

from __future__ import annotations

import json
import logging
import re
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, ClassVar

from edge.audio import read_audio
from edge.bundle.calibrate import DEFAULT_FALSE_ALARMS_PER_DAY, AlarmBudget
from edge.bundle.fit import References, fit_system, placeholder_member, write_bundle
from edge.bundle.system import AnpMember, EmbeddingMember, Member, ScoringSystem, SpectralMember
from edge.errors import BadInput
from edge.progress import track
from edge.scoring.backends import GmmConfig, KnnConfig
from edge.scoring.scorer import ScorerConfig, variant_parts
from edge.scoring.spectral import SPECTRAL_SYSTEMS, spectral_scorer_config
from edge.scoring.thresholds import ThresholdConfig
from export.onnx_models import ANP_MAX_ABS_DIFF, MAX_ABS_DIFF, MIN_COSINE, OPSET

logger = logging.getLogger(__name__)

SELECTION_FILE = "selection.json"
SELECTION_VERSION = 1
VARIANTS = ("concat", "attributes", "sections", "weighted")
ANP_PARTITIONS = 8  # evaluate's default
ANP_MEMBER = "anp"


@dataclass(frozen=True)
class ExportOptions:
    """What to export and ship (``asd-edge export``'s flags): the run ``run`` of ``machine``,
    the references from ``data``, the bundle in ``out/<machine>``."""

    run: str
    machine: str
    data: str
    out: str
    weights: str = "averaged"                # "averaged" or "last" weights of the run(s)
    selection: str | None = None             # selection.json (or its folder); None: RUN's
    system: str | None = None                # --system: overrides the selection
    anp_run: str | None = None               # the ANP member's run; None: the selection's
    variant: str | None = None               # with system: concat|weighted|sections|...
    backend: str | None = None               # knn|gmm; None: the selection's, else knn
    pooling: str | None = None               # with system: mean|std|meanstd
    threshold_quantile: float = 0.9
    # alarm thresholds for this rate (AlarmBudget); None: the DCASE clip-quantile thresholds
    false_alarms_per_day: float | None = DEFAULT_FALSE_ALARMS_PER_DAY
    opset: int = OPSET
    max_abs_diff: float = MAX_ABS_DIFF         # embedding parity limits
    min_cosine: float = MIN_COSINE
    anp_max_abs_diff: float = ANP_MAX_ABS_DIFF  # ANP parity limit, nats


@dataclass(kw_only=True)
class MemberChoice(ABC):
    """One member to ship: what the selection (or ``--system``) named and how to build it;
    a subclass per member kind."""

    name: str                 # member name in the bundle (also its folder: filesystem-safe)
    system: str               # the selected system's name, e.g. "tone:weighted@0.25", "stats"
    weight: float = 1.0
    scorer: ScorerConfig | None = None  # None: the default of the member's kind

    kind: ClassVar[str]

    @abstractmethod
    def build(self, loaded: Any, backend: str | None, anp: Any, from_selection: bool
              ) -> tuple[Member, ScorerConfig, list[float]]:
        """The unfitted member, its scorer config and part weights (see ``system_for``)."""


@dataclass(kw_only=True)
class EmbeddingChoice(MemberChoice):
    """A variant of the exported network's embeddings."""

    variant: str = "concat"
    variant_weight: float = 0.5
    pooling: str = "mean"

    kind: ClassVar[str] = EmbeddingMember.kind

    def build(self, loaded: Any, backend: str | None, anp: Any, from_selection: bool
              ) -> tuple[Member, ScorerConfig, list[float]]:
        variant = self.variant
        if loaded.attribute_dim == 0 and variant != "sections":
            if from_selection:
                raise BadInput(f"{self.system}: the selection scored an attribute embedding, "
                               f"but run objective {loaded.objective} has one embedding; pass "
                               "the run the selection was made with")
            logger.info("objective %s has one embedding: scoring its sections variant",
                        loaded.objective)
            variant = "sections"
        member = placeholder_member(self.name, self.kind, weight=self.weight,
                                    pooling=self.pooling, variant=variant,
                                    variant_weight=self.variant_weight)
        config = self.scorer or ScorerConfig(backend=KnnConfig(metric="cosine"))
        if backend:
            config = config.model_copy(update={"backend": KnnConfig(metric="cosine")
                                               if backend == "knn" else GmmConfig()})
        return member, config, variant_parts([[0.0]], [[0.0]], variant,
                                             self.variant_weight)[1]


@dataclass(kw_only=True)
class SpectralChoice(MemberChoice):
    """A model-free spectral detector (``stats``, ``bandenergy``)."""

    kind: ClassVar[str] = SpectralMember.kind

    def build(self, loaded: Any, backend: str | None, anp: Any, from_selection: bool
              ) -> tuple[Member, ScorerConfig, list[float]]:
        member = placeholder_member(self.name, self.kind, weight=self.weight,
                                    features=SPECTRAL_SYSTEMS[self.name])
        return member, self.scorer or spectral_scorer_config(), [1.0]


@dataclass(kw_only=True)
class AnpChoice(MemberChoice):
    """The attentive neural process of ``run``, its ANP-Boot partitions drawn from ``seed``."""

    run: str | None = None
    partitions: int = ANP_PARTITIONS
    seed: int = 0

    kind: ClassVar[str] = AnpMember.kind

    def build(self, loaded: Any, backend: str | None, anp: Any, from_selection: bool
              ) -> tuple[Member, ScorerConfig, list[float]]:
        if anp is None:
            raise ValueError("an anp member needs its exported model")
        member = placeholder_member(self.name, self.kind, weight=self.weight,
                                    patch_model=anp.session, model=anp.manifest,
                                    model_path=anp.path)
        return member, ScorerConfig(), [1.0]  # the config is unused: it scores directly




@dataclass
class Choice:
    members: list[MemberChoice]
    chosen_by: str
    from_selection: bool = False
    record: dict[str, Any] = field(default_factory=dict)  # what bundle.json keeps of the choice


def selection_file(run_dir: Path, selection: str | None) -> Path | None:
    """``--selection`` (a file, or a folder holding selection.json), else RUN/selection.json
    when present, else None."""
    if selection is None:
        default = Path(run_dir) / SELECTION_FILE
        return default if default.is_file() else None
    path = Path(selection)
    path = path / SELECTION_FILE if path.is_dir() else path
    if not path.is_file():
        raise BadInput(f"--selection {selection}: no such file; give the selection.json "
                       "written by 'python -m training.evaluate.select --out DIR'")
    return path


def read_selection(path: Path, machine: str) -> dict[str, Any]:
    """The selection entry of ``machine`` in ``path``; BadInput when unusable."""
    try:
        selection = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise BadInput(f"{path}: not readable JSON ({err}); re-run the selection") from err
    if not isinstance(selection, dict) or selection.get("version") != SELECTION_VERSION:
        version = selection.get("version") if isinstance(selection, dict) else None
        raise BadInput(f"{path}: selection format version {version!r}, this export reads "
                       f"{SELECTION_VERSION}; re-run 'python -m training.evaluate.select'")
    entry = selection.get("machines", {}).get(machine)
    if not entry:
        have = ", ".join(selection.get("machines", {})) or "none"
        raise BadInput(f"{path}: no choice for {machine} (it has: {have}); run the selection "
                       f"on {machine}'s data or pass --system embedding (or stats, ...)")
    return entry


def choice_from_selection(entry: dict[str, Any], path: Path, machine: str,
                          anp_run: str | None = None) -> Choice:
    """Map a selection entry's chosen systems and weights to bundle members; an ANP member's
    run is ``anp_run`` (``--anp-run``) when given, else the one the selection scored."""
    chosen = entry.get("chosen", {})
    systems, weights = list(chosen.get("systems", [])), list(chosen.get("weights", []))
    where = f"{path} ({machine})"
    if not systems or len(systems) != len(weights):
        raise BadInput(f"{where}: {len(systems)} chosen systems and {len(weights)} weights; "
                       "re-run the selection")
    settings = entry.get("settings", {})
    anp = [n for n in systems
           if n.endswith(":anp") or settings.get(n, {}).get("objective") == "anp"]
    if len(anp) > 1:
        raise BadInput(f"{where}: the chosen system combines the attentive neural processes "
                       f"{', '.join(anp)}, but a bundle holds one; re-run the selection with one "
                       "ANP run or pass --system")
    if "autoencoder" in systems:
        raise BadInput(f"{where}: the chosen system {' + '.join(systems)} includes the "
                       "autoencoder, which a bundle cannot ship (the edge has no autoencoder); "
                       "re-run the selection without it (--systems stats,bandenergy,modulation) "
                       "or pass --system embedding|stats|modulation|bandenergy|a+b")
    labels = sorted({name.split(":", 1)[0] for name in systems if ":" in name
                     and name not in anp})
    if len(labels) > 1:
        raise BadInput(f"{where}: the chosen system combines the runs {', '.join(labels)}, but "
                       "a bundle holds one network; re-run the selection with one --run or "
                       "pass --system")
    members = []
    for name, weight in zip(systems, weights, strict=True):
        scorer = settings.get(name, {}).get("scorer")
        scorer = ScorerConfig.model_validate(scorer) if scorer else None
        if name in SPECTRAL_SYSTEMS:
            members.append(SpectralChoice(name=name, system=name, weight=float(weight),
                                          scorer=scorer))
            continue
        if name in anp:
            anp_settings = settings.get(name, {})
            members.append(AnpChoice(
                name=ANP_MEMBER, system=name, weight=float(weight), run=anp_settings.get("run"),
                partitions=int(anp_settings.get("partitions", ANP_PARTITIONS)),
                seed=int(anp_settings.get("seed", 0))))
            continue
        if ":" not in name:
            raise BadInput(f"{where}: chosen system {name!r} unknown; a bundle ships "
                           f"{', '.join(SPECTRAL_SYSTEMS)} and '<label>:<variant>' of a run")
        variant_label = name.split(":", 1)[1]
        variant, _, w = variant_label.partition("@")
        if variant not in VARIANTS or (variant == "weighted") != bool(w):
            raise BadInput(f"{where}: chosen system {name!r} has an unknown variant; expected "
                           f"one of concat, attributes, sections, weighted@<w>")
        try:
            variant_weight = float(w) if w else float(settings.get(name, {}).get("weight", 0.5))
        except ValueError as err:
            raise BadInput(f"{where}: {name!r}: weight {w!r} is not a number") from err
        member = "embedding-" + re.sub(r"[^A-Za-z0-9._-]", "-", variant_label)
        members.append(EmbeddingChoice(
            name=member, system=name, weight=float(weight), variant=variant,
            variant_weight=variant_weight,
            pooling=settings.get(name, {}).get("pooling", "mean"), scorer=scorer))
    record = {"selection": str(path), "systems": systems, "weights": weights,
              "members": {m.name: m.system for m in members},
              "dev": entry.get("dev"), "heldout": entry.get("heldout")}
    return with_anp_run(Choice(members, f"{path} (development split)", True, record), anp_run)


def with_anp_run(choice: Choice, anp_run: str | None) -> Choice:
    """Give the choice's ANP member its run (``anp_run`` first); BadInput when it has none,
    or when ``anp_run`` is given for a choice without an ANP."""
    anp = [m for m in choice.members if isinstance(m, AnpChoice)]
    if anp_run and not anp:
        raise BadInput(f"--anp-run {anp_run}: the system shipped "
                       f"({' + '.join(m.system for m in choice.members)}) has no ANP member; "
                       "drop --anp-run or pass --system with anp in it")
    for member in anp:
        member.run = anp_run or member.run
        if not member.run:
            raise BadInput(f"{choice.chosen_by}: the system includes the attentive neural "
                           f"process {member.system!r} but names no run for it; pass "
                           "--anp-run RUN (or re-run the selection with --run "
                           f"{member.system.split(':', 1)[0]}=RUN), or another --system")
    return choice


def choice_from_system(system: str, variant: str, pooling: str) -> Choice:
    """``--system embedding|stats|bandenergy|anp|a+b``: those members, equal weights."""
    names = system.split("+")
    unknown = [m for m in names if m not in ("embedding", ANP_MEMBER)
               and m not in SPECTRAL_SYSTEMS]
    if unknown or len(set(names)) != len(names):
        raise BadInput(f"--system {system}: unknown or repeated member(s) "
                       f"{', '.join(unknown) or system}; use embedding, "
                       f"{', '.join(SPECTRAL_SYSTEMS)}, {ANP_MEMBER} or a '+' ensemble of "
                       "different ones")
    members: list[MemberChoice] = [
        EmbeddingChoice(name=n, system=n, variant=variant, pooling=pooling) if n == "embedding"
        else AnpChoice(name=n, system=n) if n == ANP_MEMBER else SpectralChoice(name=n, system=n)
        for n in names]
    return Choice(members, "--system")


def read_choice(options: ExportOptions) -> Choice:
    """What to ship for ``options.machine``: ``--system``, else the selection, else embedding;
    an ``anp`` member's run is ``--anp-run`` when given, else the selection's."""
    anp_run = options.anp_run
    if options.system:
        return with_anp_run(choice_from_system(options.system, options.variant or "concat",
                                               options.pooling or "mean"), anp_run)
    path = selection_file(Path(options.run), options.selection)
    if path is None:
        choice = choice_from_system("embedding", options.variant or "concat",
                                    options.pooling or "mean")
        choice.chosen_by = "default (no selection.json)"
        return with_anp_run(choice, anp_run)
    if options.variant or options.pooling:
        raise BadInput(f"--variant/--pooling apply with --system; {path} fixes them for "
                       f"{options.machine}: pass --system embedding with them to override")
    choice = choice_from_selection(read_selection(path, options.machine), path, options.machine,
                                   anp_run)
    logger.info("shipping %s for %s, chosen by %s", " + ".join(
        f"{m.weight:g} {m.system}" for m in choice.members), options.machine, path)
    return choice


def system_for(choice: Choice, loaded, embedder, backend: str | None, anp=None
               ) -> tuple[ScoringSystem, dict[str, ScorerConfig], dict[str, list[float]]]:
    """Unfitted members of the chosen system, with their scorer configs and part weights.

    ``backend`` (knn|gmm), when given, replaces the embedding members' backend; ``anp`` (an
    ``export.anp_onnx.AnpExport``) is the exported ANP of an ``anp`` member."""
    members, configs, part_weights = [], {}, {}
    for spec in choice.members:
        member, configs[spec.name], part_weights[spec.name] = spec.build(
            loaded, backend, anp, choice.from_selection)
        members.append(member)
    system = ScoringSystem(loaded.front_end, loaded.patching, members, embedder=embedder)
    return system, configs, part_weights


def build_bundle(loaded, options: ExportOptions, dataset, onnx_path: Path, embedder, parity,
                 choice: Choice, anp=None) -> Path:
    """Fit and write ``options.out/<machine>`` for ``choice`` (``read_choice``); returns it.
    ``anp``: the exported ANP (``export.anp_onnx.AnpExport``) when the choice has one."""
    system, configs, part_weights = system_for(choice, loaded, embedder, options.backend, anp)
    references = References()
    clips = dataset.select(machine=options.machine, split="train", label="normal")
    for clip in track(clips, f"export {options.machine}: reference clips"):
        references.add(system, read_audio(clip.path), {
            "file": clip.name, "section": clip.section, "domain": clip.domain,
            "attributes": clip.attribute_dict()}, audio=partial(read_audio, clip.path))
    if options.false_alarms_per_day is not None and not 0 < options.false_alarms_per_day <= 1000:
        raise BadInput(f"--false-alarms-per-day {options.false_alarms_per_day}: give a rate above "
                       "0 and at most 1000 (e.g. 0.0333 for one a month)")
    fit_system(system, references, configs, part_weights,
               ThresholdConfig(quantile=options.threshold_quantile),
               budget=None if options.false_alarms_per_day is None
               else AlarmBudget(false_alarms_per_day=options.false_alarms_per_day))
    session = embedder.session
    shapes = {o.name: o.shape for o in session.get_outputs()}
    extra = {
        "model": {
            "file": "model.onnx", "opset": options.opset, "objective": loaded.objective,
            "weights": options.weights,
            "input": {"name": "spectrogram", "shape": session.get_inputs()[0].shape},
            "outputs": shapes,
            "parity": parity.as_dict(),
        },
        "system": {"chosen_by": choice.chosen_by, **choice.record},
        "labels": {"sections": list(loaded.section_labels),
                   "attributes": {k: list(v) for k, v in loaded.attribute_labels.items()}},
        "provenance": {"run": str(Path(options.run).resolve()), "data": str(Path(options.data)),
                       "machines_trained": list(loaded.machines),
                       "checkpoint": getattr(loaded, "provenance", {}),
                       **({"anp_run": anp.manifest["run"]} if anp is not None else {})},
    }
    uses_model = system.embeds
    return write_bundle(Path(options.out) / options.machine, options.machine, system, references,
                        configs, extra if uses_model else {k: v for k, v in extra.items()
                                                           if k != "model"},
                        model_file=onnx_path if uses_model else None)
