"""Operator feedback: "that was not a fault". One function, used by the CLI, the daemon's MQTT
command and the web page alike.

``not_a_fault(episode, state_dir, models)`` finds the episode's raise (and clear) in the
journal (``<state_dir>/journal.jsonl``), reads its evidence clip, enrolls that audio as normal
sound of the episode's machine and section (``edge.bundle.enroll.enroll``: references added,
scorers and thresholds refitted, the bundle rewritten atomically) and appends a ``feedback``
record to the journal. It refuses (``BadInput``, one line):

- an episode the journal does not hold (naming the journal it read),
- an episode still open (no clear yet) unless ``even_if_open``: the clip of an episode that
  goes on may hold a fault that is only starting,
- an episode without a clip (evidence off) or whose clip is gone (evidence retention),
- an episode already enrolled (a command delivered twice enrolls once; the journal's records
  and the references' file names, ``<clip>#NNNN``, are both checked).

One writer at a time per bundle: an exclusive lock on ``<models>/.<machine>.lock`` is held
from the check for an earlier feedback to the journal record.

The clip's audio joins the domain its hops were compared in (the raise's nearest reference's
domain; when the event names none, the section's only domain, else ``target``) and keeps the
bundle's calibration: a bundle calibrated to a false-alarm budget is recalibrated for the same
budget, one with clip-quantile thresholds keeps clip quantiles.
"""

from __future__ import annotations

import fcntl
import json
import logging
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from edge.audio import SAMPLE_RATE, read_audio
from edge.bundle.enroll import cut_clips, enroll
from edge.bundle.manifest import MANIFEST, read_manifest
from edge.errors import BadInput
from edge.evidence import CLIP_PATTERN
from edge.outputs.events import AlarmEvent, UtcTime
from edge.outputs.journal import append_record, read_journal, read_records

logger = logging.getLogger(__name__)

Via = Literal["cli", "mqtt", "web"]  # where a "not a fault" came from

JOURNAL_FILE = "journal.jsonl"
CLIPS_DIR = "clips"


class FeedbackRecord(BaseModel):
    """One "not a fault" as the journal keeps it (one JSON line, ``"record": "feedback"``).

    ``threshold_before``/``threshold_after``: the section's pooled threshold in the bundle;
    ``domain_thresholds``: the new per-domain ones; ``references``: the section's normal
    clips after the change; ``via``: ``cli``, ``mqtt`` or ``web``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    record: Literal["feedback"] = "feedback"
    schema_version: Literal[1] = 1
    action: Literal["not_a_fault"] = "not_a_fault"
    id: str
    episode: str
    time: UtcTime
    node: str
    machine: str
    section: str
    clip: str
    domain: Literal["source", "target"]
    clips_added: int
    audio_seconds: float
    references: int
    threshold_before: float
    threshold_after: float
    domain_thresholds: dict[str, float]
    via: Via
    request_id: str | None = None
    even_if_open: bool = False

    def to_json(self) -> bytes:
        return self.model_dump_json().encode()


def journal_feedback(journal: Path) -> list[FeedbackRecord]:
    """The feedback records of a journal (oldest first); malformed ones are skipped."""
    records = []
    for raw in read_records(journal, "feedback"):
        try:
            records.append(FeedbackRecord.model_validate(raw))
        except ValueError:
            logger.warning("%s: a feedback record that does not parse was skipped", journal)
    return records


def find_episode(journal: Path, episode: str) -> tuple[AlarmEvent, AlarmEvent | None]:
    """The raise of ``episode`` in ``journal`` and its clear (None: still open)."""
    if not journal.is_file():
        raise BadInput(f"episode {episode}: no journal at {journal}; give the daemon's "
                       "--state-dir (its state_dir)")
    events = [e for e in read_journal(journal) if e.id == episode]
    raised = next((e for e in events if e.type == "raise"), None)
    if raised is None:
        raise BadInput(f"episode {episode} is not in {journal} ({len(read_journal(journal))} "
                       "alarm events there): check the id, or give the --state-dir of the "
                       "daemon that raised it")
    cleared = next((e for e in events if e.type == "clear"), None)
    return raised, cleared


def clip_of(raised: AlarmEvent, clips_dir: Path | None) -> Path:
    """The evidence clip of ``raised``: the path the event names, else the same file name in
    ``clips_dir`` (a daemon started from another working folder). ``BadInput`` when the event
    has none or the file is gone."""
    if raised.clip is None:
        raise BadInput(f"episode {raised.id} has no evidence clip (evidence was off when it "
                       "was raised): there is no audio to enroll; record normal sound with "
                       "'asd-edge enroll --mic' instead")
    named = Path(raised.clip)
    candidates = [named]
    if clips_dir is not None:
        candidates.append(Path(clips_dir) / named.name)
    for path in candidates:
        if path.is_file():
            return path
    why = ("removed by evidence retention (evidence.max_clips, max_age_days, max_megabytes)"
           if CLIP_PATTERN.match(named.name) else "missing")
    raise BadInput(f"episode {raised.id}: its evidence clip {named.name} is gone (looked at "
                   f"{', '.join(str(p) for p in candidates)}): {why}; nothing was enrolled")


@contextmanager
def bundle_lock(models: Path, machine: str) -> Iterator[None]:
    """An exclusive lock for changing ``<models>/<machine>`` (waits for another writer)."""
    models.mkdir(parents=True, exist_ok=True)
    with (models / f".{machine}.lock").open("a") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _section_thresholds(models: Path, machine: str, section: int) -> tuple[float, dict[str,
                                                                                       float]]:
    """(pooled threshold, {domain: threshold}) of a section in the bundle on disk."""
    manifest = read_manifest(models / machine, machine, check_hashes=False)
    levels = manifest.sections[f"{section:02d}"].levels()
    return levels.threshold, {d: t.threshold for d, t in levels.domains.items()}


def _domain_of(raised: AlarmEvent, models: Path, section: int) -> Literal["source", "target"]:
    """The domain the episode's clip joins: the one its hops were compared in (the raise's
    nearest reference's); without one named (a bundle without a network), the section's only
    domain when its references have one (so no second domain too small to calibrate is
    started); else ``target`` (a site's own unit, as ``asd-edge enroll``)."""
    nearest = raised.explanation.get("nearest")
    named = nearest.get("domain") if isinstance(nearest, dict) else None
    if named == "source" or named == "target":
        return named
    references = read_manifest(models / raised.machine, raised.machine,
                               check_hashes=False).references
    domains = {r.domain or "source" for r in references if r.section == section}
    return "source" if domains == {"source"} else "target"


def not_a_fault(episode: str, state_dir: str | Path, models: str | Path, *,
                clips_dir: str | Path | None = None, even_if_open: bool = False,
                via: Via = "cli", request_id: str | None = None,
                device: str = "auto", domain: Literal["source", "target"] | None = None
                ) -> FeedbackRecord:
    """Enroll the evidence clip of ``episode`` as normal sound and journal it (see the module
    docstring). ``clips_dir``: where the clips are (default ``<state_dir>/clips``);
    ``domain``: default the raise's nearest reference's domain. Returns the journal record."""
    state_dir, models = Path(state_dir), Path(models)
    journal = state_dir / JOURNAL_FILE
    raised, cleared = find_episode(journal, episode)
    if cleared is None and not even_if_open:
        raise BadInput(f"episode {episode} ({raised.machine} section {raised.section}, raised "
                       f"{raised.time.isoformat()}) is still open (no clear in {journal}): "
                       "wait until it clears, or pass --even-if-open if the sound is normal")
    clip = clip_of(raised, Path(clips_dir) if clips_dir else state_dir / CLIPS_DIR)
    machine, section = raised.machine, int(raised.section)
    if not (models / machine / MANIFEST).is_file():
        raise BadInput(f"episode {episode}: no bundle {models / machine / MANIFEST}; give the "
                       "--models folder the daemon ran with")
    if domain is None:
        domain = _domain_of(raised, models, section)
    clips = cut_clips(read_audio(clip), SAMPLE_RATE)
    with bundle_lock(models, machine):
        earlier = [r for r in journal_feedback(journal) if r.episode == episode]
        if earlier:
            raise BadInput(f"episode {episode} was already enrolled as normal at "
                           f"{earlier[0].time.isoformat()} (via {earlier[0].via}); nothing "
                           "changed")
        current = read_manifest(models / machine, machine, check_hashes=False)
        if any(r.file.startswith(f"{clip.name}#") for r in current.references):
            # a run cut short between the bundle and the journal record
            raise BadInput(f"episode {episode}: its clip {clip.name} is already among the "
                           f"references of {models / machine} (the journal has no record of "
                           "it: an earlier run stopped before writing one); nothing changed")
        before, _ = _section_thresholds(models, machine, section)
        calibrated = current.alarm_calibration is not None
        # keep the bundle's method: clip-quantile thresholds stay clip quantiles
        enrolled = enroll(models, machine, section, clips, str(clip), domain, device,
                          clip_quantile=not calibrated)
        after, by_domain = _section_thresholds(models, machine, section)
        manifest = read_manifest(models / machine, machine, check_hashes=False)
        references = sum(1 for r in manifest.references if r.section == section)
        record = FeedbackRecord(
            id=str(uuid.uuid4()), episode=episode, time=datetime.now(UTC), node=raised.node,
            machine=machine, section=raised.section, clip=str(clip), domain=domain,
            clips_added=enrolled.added,
            audio_seconds=round(sum(c.shape[0] for c in clips) / SAMPLE_RATE, 3),
            references=references, threshold_before=before, threshold_after=after,
            domain_thresholds=by_domain, via=via, request_id=request_id,
            even_if_open=cleared is None)
        append_record(journal, record.to_json())
    logger.info("episode %s is not a fault (via %s): %d clip(s) of %s enrolled into %s section "
                "%s; threshold %.4g -> %.4g", episode, via, enrolled.added, clip.name, machine,
                raised.section, before, after)
    return record


# -- the MQTT command and its acknowledgement (docs/EDGE.md "Operator feedback") ---------------

class NotAFaultCommand(BaseModel):
    """The payload of ``<prefix>/<node>/cmd/not_a_fault``: JSON, no other keys."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    episode: str = Field(pattern=r"^[A-Za-z0-9-]{1,64}$", description="the episode's id")
    request_id: str | None = Field(None, max_length=128,
                                   description="echoed in the acknowledgement")
    even_if_open: bool = Field(False, description="enroll an episode that has not cleared")


class FeedbackAck(BaseModel):
    """The payload of ``<prefix>/<node>/cmd/ack`` (QoS 1): the outcome of one command.

    ``ok`` true: ``threshold`` is the stream's threshold now in effect (``threshold_before``
    before), ``domain_thresholds`` the section's per-domain ones, ``clips_added`` and
    ``references`` as in the journal record ``feedback_id``. ``ok`` false: ``error`` says why
    in one line; nothing changed."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: Literal[1] = 1
    command: Literal["not_a_fault"] = "not_a_fault"
    request_id: str | None = None
    episode: str | None = None
    ok: bool
    error: str | None = None
    time: UtcTime
    node: str
    machine: str | None = None
    section: str | None = None
    threshold: float | None = None
    threshold_before: float | None = None
    domain_thresholds: dict[str, float] | None = None
    clips_added: int | None = None
    references: int | None = None
    feedback_id: str | None = None

    def to_json(self) -> bytes:
        return self.model_dump_json().encode()


def parse_command(payload: bytes) -> NotAFaultCommand | str:
    """The command in ``payload``, or a one-line reason it is not one (never raises)."""
    try:
        return NotAFaultCommand.model_validate_json(payload)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ())) or "payload"
        return (f"bad not_a_fault payload: {where}: {first.get('msg', 'invalid')} (send JSON "
                '{"episode": "<id>", "request_id": "<yours>"})')


def request_id_of(payload: bytes) -> str | None:
    """The ``request_id`` of a payload that is not a valid command, when one can be read (so
    the error acknowledgement can name it)."""
    try:
        value = json.loads(payload)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    request = value.get("request_id") if isinstance(value, dict) else None
    return request[:128] if isinstance(request, str) else None
