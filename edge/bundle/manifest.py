"""``bundle.json``: the versioned manifest of a model bundle, its hashes, and their checks.

A bundle is a folder ``<models>/<machine>/`` holding ``bundle.json`` and the files it names
(``model.onnx``, index files, ``.npz`` arrays, JSON). ``bundle.json`` is read and written
through one pydantic model, ``BundleManifest``: unknown keys are refused, every number the
daemon acts on (thresholds, clear levels, ensemble weights and standardisation) must be finite,
and the members of the scoring system are a union discriminated by ``kind``, each member model
owning its parts and loading its runtime member (``load``). ``read_manifest`` refuses a bundle
whose format, version, machine, fields, files or hashes do not match, with a one-line message
that names the file, the field and the fix. No pickle anywhere.

``asd-edge bundle schema`` (``edge.bundle.schema``) writes the model's JSON schema to
``docs/bundle.schema.json`` and its tables into ``docs/BUNDLE.md``; a test fails when those
drift from the model.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Annotated, Any, ClassVar, Final, Literal

import numpy as np
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    TypeAdapter,
    ValidationError,
    model_validator,
)

from edge.alarms.rule import AlarmRuleConfig
from edge.bundle.calibrate import AlarmBudget
from edge.bundle.system import (
    AnpMember,
    DirectScorer,
    EmbeddingMember,
    Member,
    SectionThreshold,
    SpectralMember,
)
from edge.errors import BadInput, RuntimeFailure
from edge.features import FrontEnd, Patching
from edge.scoring.scorer import Pooling, ScorerConfig, SectionScorer, Variant
from edge.scoring.spectral import SpectralFeatures

FORMAT: Final = "asd-edge-bundle"
# Raised only for a change an older reader would misread. Additive keys that an older reader
# may ignore without scoring differently from before keep it (per-domain thresholds:
# ``sections.SS.domains``; the scorer's ``reference_domains``), and a reader treats their
# absence as the behaviour before them (pooled thresholds).
FORMAT_VERSION: Final = 1
MANIFEST = "bundle.json"
REEXPORT = ("re-export it: 'asd-edge export --run RUN --machine M --data DIR --out MODELS' "
            "(or 'asd-edge enroll' for a bundle without a network)")


class Strict(BaseModel):
    """A part of bundle.json: unknown keys refused, no NaN or infinite number accepted."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


SectionKey = Annotated[str, StringConstraints(pattern=r"^\d{2,}$")]
Domain = Literal["source", "target"]
Shape = list[int | str | None]
Sha256 = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
MemberName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")]


class Tensor(Strict):
    """An ONNX input or output: its name and shape (a dynamic axis is a name or null)."""

    name: str = Field(description="e.g. spectrogram")
    shape: Shape = Field(description="e.g. [batch, F, T]")


class MemberSpec(Strict):
    """What every member of the scoring system records in bundle.json."""

    name: MemberName = Field(description="member name; also its folder in the bundle")
    weight: float = Field(1.0, description="ensemble weight of its standardised score")
    scorer: str = Field(description="folder of its scorer (scorer.json, references, index)")
    scorer_config: ScorerConfig = Field(
        default_factory=ScorerConfig,
        description="backend (knn/gmm: metric, k, hnswlib M, ef_construction, ef, "
                    "exact_below) and standardisation; unused by an anp member")
    norm: dict[SectionKey, tuple[float, Annotated[float, Field(gt=0)]]] = Field(
        default_factory=dict,
        description="per section: mean and std (> 0) of the member's out-of-sample normal "
                    "scores, standardising it in an ensemble")

    member_type: ClassVar[type[Member]]

    def load(self, bundle_dir: Path, front_end: FrontEnd, patching: Patching,
             device: str = "auto", threads: int | None = None) -> Member:
        """The runtime member (``edge.bundle.system``) with its fitted scorer."""
        return self.member_type(name=self.name, weight=self.weight, norm=self._norm(),
                                scorer=SectionScorer.load(bundle_dir / self.scorer),
                                **self._member_fields())

    def _norm(self) -> dict[int, tuple[float, float]]:
        return {int(s): (float(v[0]), float(v[1])) for s, v in self.norm.items()}

    def _member_fields(self) -> dict[str, Any]:
        return {}


class EmbeddingMemberSpec(MemberSpec):
    """The exported network's embeddings, pooled over the window, scored by a knn/gmm."""

    kind: Literal["embedding"] = "embedding"
    pooling: Pooling = Field("mean", description="pooling of the window's patch embeddings")
    variant: Variant = Field("concat", description="which embedding(s) are scored")
    variant_weight: float = Field(0.5, ge=0.0, le=1.0,
                                  description="w of the weighted variant (w d_S + (1-w) d_A)")
    member_type: ClassVar[type[Member]] = EmbeddingMember

    def _member_fields(self) -> dict[str, Any]:
        return {"pooling": self.pooling, "variant": self.variant,
                "variant_weight": self.variant_weight}


class SpectralMemberSpec(MemberSpec):
    """A model-free detector on clip statistics of its own front end."""

    kind: Literal["spectral"] = "spectral"
    features: SpectralFeatures = Field(description="front end and statistics")
    member_type: ClassVar[type[Member]] = SpectralMember

    def _member_fields(self) -> dict[str, Any]:
        return {"features": self.features}


class AnpModel(Strict):
    """The ANP member's own ONNX model (ANP-Boot partitions baked in at export)."""

    file: str = Field(description="ONNX file in the member's folder")
    opset: int | None = None
    objective: Literal["anp"] = "anp"
    weights: str | None = Field(None, description="averaged or last weights of the run")
    partitions: int = Field(ge=1, description="ANP-Boot partitions R (the output's width)")
    seed: int = Field(0, description="seed the partitions were drawn from")
    input: Tensor | None = None
    output: Tensor | None = None
    parity: dict[str, Any] = Field(default_factory=dict,
                                   description="max abs NLL difference vs PyTorch, and limit")
    run: str | None = Field(None, description="the ANP run exported")


class AnpMemberSpec(MemberSpec):
    """The attentive neural process: its per-patch NLL already is an anomaly score."""

    kind: Literal["anp"] = "anp"
    model: AnpModel
    member_type: ClassVar[type[Member]] = AnpMember

    def load(self, bundle_dir: Path, front_end: FrontEnd, patching: Patching,
             device: str = "auto", threads: int | None = None) -> Member:
        from edge.inference.anp import OnnxAnp  # onnxruntime: only for a bundle that needs it

        model_path = bundle_dir / self.scorer / self.model.file
        return AnpMember(name=self.name, weight=self.weight, norm=self._norm(),
                         scorer=DirectScorer.load(bundle_dir / self.scorer),
                         model=self.model.model_dump(mode="json", exclude_none=True),
                         model_path=model_path,
                         patch_model=OnnxAnp(model_path, front_end, patching,
                                             self.model.partitions, device=device,
                                             threads=threads))


AnyMemberSpec = Annotated[EmbeddingMemberSpec | SpectralMemberSpec | AnpMemberSpec,
                          Field(discriminator="kind")]
MEMBER_SPEC: TypeAdapter[AnyMemberSpec] = TypeAdapter(AnyMemberSpec)


class OnnxModel(Strict):
    """The exported network (``model.onnx``): its file, names and shapes, parity."""

    file: str = "model.onnx"
    opset: int | None = None
    objective: str = Field(description="training objective (disentangled, mtl, ...)")
    weights: str | None = Field(None, description="averaged or last weights of the run")
    input: Tensor = Field(description="spectrogram [batch, F, T]")
    outputs: dict[str, Shape] = Field(
        description="section_embedding [batch, D_S], attribute_embedding [batch, D_A]; "
                    "checked against the ONNX session at load")
    parity: dict[str, Any] = Field(default_factory=dict,
                                   description="max abs diff and min cosine vs PyTorch, limits")

    def embedder(self, bundle_dir: Path, front_end: FrontEnd, patching: Patching,
                 device: str = "auto", threads: int | None = None) -> Any:
        """The ONNX Runtime session (``OnnxEmbedder``), its output shapes checked."""
        from edge.inference.onnx_runtime import OnnxEmbedder

        path = bundle_dir / self.file
        embedder = OnnxEmbedder(path, front_end, patching, device=device, threads=threads)
        for name, shape in self.outputs.items():
            got = [o.shape for o in embedder.session.get_outputs() if o.name == name]
            if not got or got[0][1:] != shape[1:]:
                raise BadInput(f"{path}: output {name} has shape {got[0] if got else None}, "
                               f"bundle.json says {shape}; re-export the bundle")
        return embedder


class System(Strict):
    """The scoring system shipped: its members and where the choice came from."""

    chosen_by: str = Field(description="selection.json, --system, default or enrollment")
    members: list[AnyMemberSpec] = Field(min_length=1)
    selection: str | None = Field(None, description="the selection.json the choice came from")
    systems: list[str] | None = Field(None, description="the selection's chosen systems")
    weights: list[float] | None = Field(None, description="the selection's ensemble weights")
    dev: Any = Field(None, description="the selection's development-split figures")
    heldout: Any = Field(None, description="the selection's held-out figures")


class DomainLevels(Strict):
    """One domain's own thresholds within a section."""

    threshold: float = Field(description="alarm threshold of windows nearest this domain")
    clear_threshold: float = Field(description="an alarm clears below this")
    normal_clips: int | None = Field(None, description="its out-of-sample normal clips")
    calibration: dict[str, Any] = Field(default_factory=dict, description="as the section's")

    def levels(self) -> SectionThreshold:
        return SectionThreshold(self.threshold, self.clear_threshold,
                                self.calibration or {"normal_clips": self.normal_clips})


class SectionLevels(Strict):
    """A section's alarm threshold and clear level, pooled over its references, and per
    domain where enough references of it exist (a missing domain uses the pooled ones)."""

    threshold: float = Field(description="alarm threshold (pooled over the domains)")
    clear_threshold: float = Field(description="an alarm clears below this")
    calibration: dict[str, Any] = Field(
        default_factory=dict,
        description="how they were set: method, quantile, normal clips; with a false-alarm "
                    "budget its promise (budget) and the DCASE decision threshold (decision)")
    domains: dict[Domain, DomainLevels] = Field(default_factory=dict)

    def levels(self) -> SectionThreshold:
        return SectionThreshold(self.threshold, self.clear_threshold, dict(self.calibration),
                                {d: own.levels() for d, own in self.domains.items()})


class AlarmCalibration(AlarmBudget):
    """``alarm_calibration``: the false-alarm promise the thresholds keep and what it rests
    on (written by ``edge.bundle.fit``). A new field of the promise is one line here (or in
    ``AlarmBudget``, which this extends)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    file: str = Field(description="the out-of-sample hop scores (calibration.npz)")
    rule: AlarmRuleConfig = Field(description="the alarm rule the thresholds were set for "
                                              "(its numbers finite: AlarmRuleConfig refuses "
                                              "NaN and infinities)")

    def budget(self) -> AlarmBudget:
        return AlarmBudget(**self.model_dump(include=set(AlarmBudget.model_fields)))


class Labels(Strict):
    """The trained model's label maps."""

    sections: list[str] = Field(description="e.g. fan/section_00")
    attributes: dict[str, list[str]] = Field(description="e.g. {fan/m-n: [V, W, ...]}")


class ReferenceClip(Strict):
    """One normal reference clip the bundle scores against."""

    file: str = Field(description="the clip's file name (or enrolled source#index)")
    section: int = Field(ge=0, description="its section (machine unit)")
    domain: Domain | None = Field(None, description="source or target (null: source)")
    attributes: dict[str, Any] = Field(default_factory=dict,
                                       description="its operating conditions")
    enrolled: bool | None = Field(None, description="true for enrolled audio")


class BundleManifest(Strict):
    """``bundle.json``. Written by ``asd-edge export`` and ``asd-edge enroll``."""

    format: Literal["asd-edge-bundle"] = FORMAT
    format_version: Literal[1] = Field(
        FORMAT_VERSION, description="a newer one is refused (upgrade asd-edge), an older "
                                    "one too (re-export)")
    machine: str = Field(description="machine type; the daemon refuses another")
    created_utc: str = Field(description="when it was written (ISO 8601)")
    asd_edge_version: str = Field(description="the asd-edge that wrote it")
    front_end: FrontEnd = Field(description="the model's spectrogram parameters")
    patching: Patching = Field(description="patch length and hop, frames")
    model: OnnxModel | None = Field(None, description="the exported network (absent for a "
                                                      "bundle without an embedding member)")
    system: System = Field(description="the scoring system: members and their choice")
    sections: dict[SectionKey, SectionLevels] = Field(
        min_length=1, description="per section (\"00\", ...): thresholds and clear levels")
    labels: Labels | None = Field(None, description="the trained model's label maps")
    references: list[ReferenceClip] = Field(min_length=1,
                                            description="every normal reference clip")
    provenance: dict[str, Any] = Field(
        default_factory=dict, description="run, data, machine types trained, checkpoint, "
                                          "enrollment history")
    alarm_calibration: AlarmCalibration | None = Field(
        None, description="the false-alarm promise (absent: clip-quantile thresholds)")
    files: dict[str, Sha256] = Field(description="sha256 of every other file")
    content_sha256: Sha256 | None = Field(
        None, description="sha256 of this manifest's own content (every key but this one, as "
                          "canonical JSON): thresholds, calibration and every number the "
                          "daemon acts on are covered like the files (absent in bundles "
                          "written before it existed: not checked)")

    @model_validator(mode="after")
    def _network_when_needed(self) -> BundleManifest:
        if self.model is None and any(m.member_type.embeds for m in self.system.members):
            raise ValueError("an embedding member needs the 'model' entry (model.onnx)")
        return self

    def to_json(self) -> str:
        """bundle.json's text: the keys the writer gave (a null it gave stays null, e.g.
        ``alarm_calibration.rule.clear_fraction``), none it left to the defaults."""
        return json.dumps(self.model_dump(mode="json", exclude_unset=True), indent=2)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def atomic_write_text(path: Path, text: str, mode: int | None = None) -> None:
    """Write ``text`` to ``path`` so that a reader sees the old or the new file, never half;
    ``mode`` (e.g. 0o644): its permissions (default: mkstemp's 0600)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        if mode is not None:
            os.fchmod(fd, mode)
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def validation_error(where: Path, err: ValidationError, fix: str) -> str:
    """One line naming each bad field of ``err`` (up to three) and ``fix``."""
    problems = []
    for error in err.errors()[:3]:
        field = ".".join(str(part) for part in error["loc"]) or "(top level)"
        message = {"missing": "required, but missing",
                   "extra_forbidden": "unknown key"}.get(error["type"], error["msg"])
        message = message.removeprefix("Value error, ")
        value = error.get("input")
        if error["type"] not in ("missing", "value_error") \
                and not isinstance(value, dict | list):
            message += f" (got {value!r:.60})"
        problems.append(f"{field}: {message}")
    more = f" (and {len(err.errors()) - 3} more)" if len(err.errors()) > 3 else ""
    return f"{where}: {'; '.join(problems)}{more}; {fix}"


def content_digest(manifest: dict[str, Any]) -> str:
    """sha256 of a parsed bundle.json without its ``content_sha256``: canonical JSON (sorted
    keys, no spaces), so the digest survives re-indenting but not a changed number."""
    body = {key: value for key, value in manifest.items() if key != "content_sha256"}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


def write_manifest(bundle_dir: Path, manifest: dict[str, Any]) -> BundleManifest:
    """Hash every file under ``bundle_dir`` (except bundle.json) into ``files``, check the
    whole through ``BundleManifest`` and write bundle.json atomically (mode 0644, so a
    service user can read a copied bundle). Returns the manifest written; ``RuntimeFailure``
    (nothing written) when it would not load again, e.g. a NaN threshold."""
    files = {
        path.relative_to(bundle_dir).as_posix(): sha256_file(path)
        for path in sorted(bundle_dir.rglob("*"))
        if path.is_file() and path.name != MANIFEST and not path.name.startswith(".")
    }
    entry = {"format": FORMAT, "format_version": FORMAT_VERSION, **manifest, "files": files}
    entry.pop("content_sha256", None)
    try:
        checked = BundleManifest.model_validate(json.loads(json.dumps(entry, default=_plain)))
        written = json.loads(checked.to_json())
        checked = BundleManifest.model_validate(
            {**written, "content_sha256": content_digest(written)})
    except ValidationError as err:
        raise RuntimeFailure(validation_error(bundle_dir / MANIFEST, err,
                                              "nothing was written (a bug: please report it)")
                             ) from err
    atomic_write_text(bundle_dir / MANIFEST, checked.to_json(), mode=0o644)
    return checked


def _plain(value: Any) -> Any:
    """numpy scalars and arrays as JSON numbers and lists."""
    if isinstance(value, np.generic | np.ndarray):
        return value.tolist()
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    raise TypeError(f"{type(value).__name__} is not JSON-able")


def bundle_dir_for(models: str | Path, machine: str) -> Path:
    """``<models>/<machine>``, or ``models`` itself when it already is a bundle folder."""
    models = Path(models)
    if (models / MANIFEST).is_file():
        return models
    return models / machine


def read_manifest(bundle_dir: str | Path, machine: str | None = None,
                  check_hashes: bool = True) -> BundleManifest:
    """Load and check ``bundle.json``: format, version, machine type, every field (through
    ``BundleManifest``), files present, hashes. ``BadInput`` naming the file, field and fix."""
    bundle_dir = Path(bundle_dir)
    path = bundle_dir / MANIFEST
    if not path.is_file():
        raise BadInput(f"{path}: no bundle here; export one with 'asd-edge export --run RUN "
                       "--machine M --data DIR --out MODELS' or point --models at the folder "
                       "that holds <machine>/bundle.json")
    try:
        raw = json.loads(path.read_text())
    except PermissionError as err:
        raise BadInput(f"{path}: not readable by this user ({err.strerror}); make the bundle "
                       "readable (chmod -R a+rX) or run as its owner") from err
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as err:
        # ValueError: invalid JSON or a number of thousands of digits; RecursionError: deep
        # nesting. Neither is a bundle export writes.
        reason = "nested too deeply" if isinstance(err, RecursionError) else str(err)[:120]
        raise BadInput(f"{path}: not valid JSON ({reason}); {REEXPORT}") from err
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise BadInput(f"{path}: not an asd-edge bundle manifest (format "
                       f"{raw.get('format') if isinstance(raw, dict) else None!r:.60}); "
                       f"{REEXPORT}")
    version = raw.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise BadInput(f"{path}: format_version {version!r:.60} is not a version number; "
                       f"{REEXPORT}")
    if version > FORMAT_VERSION:
        raise BadInput(f"{path}: bundle format version {version!r} is newer than this asd-edge "
                       f"reads ({FORMAT_VERSION}); upgrade asd-edge on this box or export with "
                       "the matching version")
    if version < FORMAT_VERSION:
        raise BadInput(f"{path}: bundle format version {version} is older than {FORMAT_VERSION}, "
                       f"which this asd-edge reads; {REEXPORT}")
    if machine is not None and raw.get("machine") != machine:
        raise BadInput(f"{path}: this bundle is for machine type {raw.get('machine')!r:.60}, "
                       f"not {machine!r}; use --machine {raw.get('machine')!s:.60} or the "
                       f"bundle folder of {machine}")
    try:
        manifest = BundleManifest.model_validate(raw)
    except ValidationError as err:
        raise BadInput(validation_error(path, err, f"fix that field or {REEXPORT}")) from err
    if check_hashes and manifest.content_sha256 is not None \
            and content_digest(raw) != manifest.content_sha256:
        raise BadInput(f"{path}: its content does not match its content_sha256 (edited or "
                       "corrupted after it was written: thresholds and settings are covered "
                       "like the files); copy the bundle again or re-export it, and set "
                       "threshold overrides in the daemon's config (alarm.threshold), not here")
    for name, expected in manifest.files.items():
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

