"""Event-level evaluation of labelled recordings, on the daemon's own path.

A plant judges a monitor by how often it cries wolf on a healthy machine and by how soon it
speaks up when the machine goes wrong. ``replay_streams`` plays recordings through the real
``edge.daemon.Daemon`` (file sources at ``speed: max``: the same capture blocks, streaming
front end, ONNX Runtime, scorer and alarm rule as ``asd-edge run``) and collects every hop's
score and every alarm event it publishes; ``stream_metrics`` turns one recording's trace and
its labels into event-level figures:

- false alarms per hour of normal audio: raises outside every fault's scoring span;
- faults detected / missed, and the detection delay from the fault's onset to the raise;
- the fraction of normal time spent in alarm.

Labels are the JSON sidecar beside each recording (``rec.wav`` -> ``rec.json``), as
``asd-edge synth --stream`` writes it (docs/ALARMS.md, "Stream labels"): ``machine``,
``section`` and ``faults`` (a list of ``{start_s, end_s, ...}``; ``[]`` for a healthy
recording). The older single ``fault`` object is read too.

A fault's *scoring span* is ``[start_s, end_s + window_seconds + hold_seconds + grace)``: a
window still holds fault audio up to one window after the fault ends and the alarm then needs
its hold time to clear, so a raise or an open alarm there is neither a false alarm nor normal
time in alarm. A raise inside ``[start_s, end_s + window_seconds)`` detects the fault.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from edge.alarms.rule import StreamKey
from edge.errors import BadInput
from edge.outputs.events import AlarmEvent, ScoreMessage, SignalState, StreamState

if TYPE_CHECKING:
    from edge.config import StreamConfig

logger = logging.getLogger(__name__)

GRACE_SECONDS = 5.0  # after a fault's window has left it and the hold has run out


class FaultLabel(BaseModel):
    model_config = ConfigDict(extra="allow")

    start_s: float = Field(ge=0)
    end_s: float = Field(ge=0)
    kind: str | None = None
    severity: float | None = None
    onset: str | None = None


class StreamLabels(BaseModel):
    """What the sidecar of a recording says (extra keys are kept, not needed here)."""

    model_config = ConfigDict(extra="allow")

    machine: str
    section: int = 0
    seconds: float | None = None
    faults: list[FaultLabel] = Field(default_factory=list)


def labels_path(wav: Path) -> Path:
    return wav.with_suffix(".json")


def read_labels(wav: str | Path) -> StreamLabels:
    """The labels of ``wav`` from its sidecar; ``BadInput`` naming the file and the fix."""
    path = labels_path(Path(wav))
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError as err:
        raise BadInput(f"{wav}: no label file {path.name} beside it; write one with machine, "
                       "section and faults (docs/ALARMS.md, 'Stream labels')") from err
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as err:
        raise BadInput(f"{path}: not readable JSON ({err}); fix or rewrite it") from err
    if not isinstance(data, dict):
        raise BadInput(f"{path}: expected a JSON object with machine, section and faults")
    if "faults" not in data:  # version 1: one optional "fault"
        data = {**data, "faults": [data["fault"]] if data.get("fault") else []}
    try:
        labels = StreamLabels.model_validate(data)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise BadInput(f"{path}: {where}: {first['msg']}") from err
    for fault in labels.faults:
        if fault.end_s <= fault.start_s:
            raise BadInput(f"{path}: a fault ends ({fault.end_s}) before it starts "
                           f"({fault.start_s}); give end_s > start_s")
    return labels


def find_streams(folder: str | Path) -> list[Path]:
    """Every ``.wav``/``.flac`` under ``folder`` (sorted); each must have a sidecar."""
    folder = Path(folder)
    if not folder.is_dir():
        raise BadInput(f"--streams {folder}: not a folder; give the folder of recordings "
                       "(e.g. one written by 'asd-edge synth OUT --stream-set')")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in (".wav", ".flac"))
    if not files:
        raise BadInput(f"--streams {folder}: no .wav or .flac recordings in it")
    return files


@dataclass
class StreamTrace:
    """What the daemon published for one recording: hop scores and alarm events."""

    name: str
    times: list[float] = field(default_factory=list)  # window end, seconds into the file
    scores: list[float] = field(default_factory=list)
    thresholds: list[float] = field(default_factory=list)
    events: list[AlarmEvent] = field(default_factory=list)
    # a simulated operator's "not a fault" answers (``edge.evaluation.operator``)
    answers: list[dict[str, Any]] = field(default_factory=list)

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        order = np.argsort(self.times, kind="stable")
        return (np.asarray(self.times)[order], np.asarray(self.scores)[order],
                np.asarray(self.thresholds)[order])


class TraceCollector:
    """An ``edge.outputs.Output`` that keeps every score and event, by stream."""

    def __init__(self, names: dict[tuple[str, str], str]) -> None:
        self._names = names  # (machine, section) -> stream name
        self.traces = {name: StreamTrace(name) for name in names.values()}
        self._lock = threading.Lock()

    def _trace(self, machine: str, section: str) -> StreamTrace:
        return self.traces[self._names[(machine, section)]]

    def publish_event(self, event: AlarmEvent) -> None:
        with self._lock:
            self._trace(event.machine, event.section).events.append(event)

    def publish_state(self, state: StreamState) -> None:
        pass

    def publish_signal(self, signal: SignalState) -> None:
        pass

    def publish_clip(self, stream: StreamKey, clip: Path) -> None:
        pass

    def publish_score(self, message: ScoreMessage) -> None:
        with self._lock:
            trace = self._trace(message.machine, message.section)
            trace.times.append(message.stream_s)
            trace.scores.append(message.score)
            trace.thresholds.append(message.threshold)

    def close(self, timeout_s: float = 5.0) -> None:
        pass


def stream_template(stream_settings: dict[str, Any] | None) -> StreamConfig:
    """The stream keys given to every replayed recording, validated (defaults filled)."""
    from edge.config import StreamConfig

    return StreamConfig.model_validate({**(stream_settings or {}), "machine": "x",
                                        "source": {"type": "file", "path": "x.wav"}})


def fault_spans(labels: StreamLabels, window_seconds: float, hold_seconds: float
                ) -> list[tuple[float, float]]:
    """Each labelled fault's scoring span ``[start_s, end_s + window + hold + grace)``."""
    return [(f.start_s, f.end_s + window_seconds + hold_seconds + GRACE_SECONDS)
            for f in labels.faults]


def replay_streams(labels: dict[Path, StreamLabels], models: str | Path,
                   stream_settings: dict[str, Any] | None = None, device: str = "auto",
                   threads: int | None = None, batch: int = 8,
                   progress: Any = None, operator: bool = False) -> dict[Path, StreamTrace]:
    """Play the recordings ``labels`` names through the daemon; every hop's score and every
    event, per recording.

    ``stream_settings``: the stream keys of ``edge.config.StreamConfig`` applied to every
    recording (``alarm``, ``window_seconds``, ``hop_seconds``, ``domain``). Up to ``batch``
    recordings run in one daemon (it batches patches across its streams), as long as no two
    of them watch the same (machine, section): the collector tells streams apart by those.
    ``progress`` is called with the number of recordings done after each batch.

    ``operator``: a simulated operator answers "not a fault" to every false alarm
    (``edge.evaluation.operator``); what it teaches carries over to the later recordings of
    the same machine type, in file order. The answers change a copy of the bundles, never
    those under ``models``; each trace lists its answers.
    """
    from edge.bundle.load import load_bundle
    from edge.config import EdgeConfig
    from edge.daemon import Daemon
    from edge.evaluation.operator import Operator
    from edge.feedback import JOURNAL_FILE
    from edge.outputs import FanOut, Output
    from edge.outputs.journal import Journal

    files = list(labels)
    settings = dict(stream_settings or {})
    template = stream_template(settings)
    traces: dict[Path, StreamTrace] = {}
    bundles: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="asd-replay-") as state:
        if operator:
            copy = Path(state) / "models"
            for machine in sorted({labels[wav].machine for wav in files}):
                load_bundle(models, machine, device, threads)  # a bad one: its own message
                shutil.copytree(Path(models) / machine, copy / machine,
                                ignore=shutil.ignore_patterns(".*.lock"))
            models = copy
        for begin in range(0, len(files), batch):
            chunk = list(files[begin:begin + batch])
            streams, names = [], {}
            for index, wav in enumerate(chunk):
                name = f"r{begin + index:05d}"
                streams.append({**settings, "name": name, "machine": labels[wav].machine,
                                "section": labels[wav].section,
                                "source": {"type": "file", "path": str(wav), "speed": "max"},
                                "score_messages": True})
                names[name] = wav
            for stream in streams:
                if stream["machine"] not in bundles:
                    bundles[stream["machine"]] = load_bundle(models, stream["machine"], device,
                                                             threads)
            chunk_traces: dict[str, StreamTrace] = {}
            # recordings of the same (machine, section) run in daemons one after the other
            for number, group in enumerate(_distinct_keys(streams)):
                # with an operator each daemon gets a journal and clips of its own
                group_state = Path(state) / f"run{begin + number:05d}" if operator else state
                config = EdgeConfig.model_validate({
                    "node": "replay", "models_dir": str(models), "device": device,
                    "threads": threads, "state_dir": str(group_state), "streams": group,
                    "evidence": {"enabled": operator}, "metrics": {"enabled": False}})
                keys = {(s["machine"], f"{int(s['section']):02d}"): s["name"] for s in group}
                collector = TraceCollector(keys)
                daemon = Daemon(config, stop=threading.Event(),
                                bundles={m: bundles[m] for m in {s["machine"] for s in group}})
                outputs: Output = collector
                answerer = None
                if operator:
                    answerer = Operator(keys, {s["name"]: _false_alarm_test(
                        labels[names[s["name"]]], template.window_seconds,
                        template.alarm.hold_seconds) for s in group})
                    answerer.daemon = daemon
                    # the journal first: an answer reads the clear from it
                    outputs = FanOut([Journal(Path(group_state) / JOURNAL_FILE), collector,
                                      answerer])
                daemon.run(outputs)
                outputs.close()
                bundles.update(daemon.bundles)  # what the operator taught, for what follows
                if answerer is not None:
                    for name, answers in answerer.answers.items():
                        collector.traces[name].answers = answers
                chunk_traces.update(collector.traces)
            for name, wav in names.items():
                trace = chunk_traces[name]
                trace.name = wav.stem
                traces[wav] = trace
            if progress is not None:
                progress(min(begin + batch, len(files)))
    return traces


def _false_alarm_test(labels: StreamLabels, window_seconds: float, hold_seconds: float
                      ) -> Callable[[float], bool]:
    """Whether a raise at ``t`` seconds into the recording is a false alarm: outside every
    fault's scoring span."""
    spans = fault_spans(labels, window_seconds, hold_seconds)
    return lambda t: not any(a <= t < b for a, b in spans)


def _distinct_keys(streams: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """Split streams into groups in which no two share (machine, section)."""
    groups: list[list[dict[str, Any]]] = []
    for stream in streams:
        key = (stream["machine"], int(stream["section"]))
        for group in groups:
            if all((s["machine"], int(s["section"])) != key for s in group):
                group.append(stream)
                break
        else:
            groups.append([stream])
    return groups


def stream_metrics(trace: StreamTrace, labels: StreamLabels, window_seconds: float,
                   hold_seconds: float) -> dict[str, Any]:
    """Event-level figures of one recording (see the module docstring)."""
    times, _scores, _thresholds = trace.arrays()
    hop = float(np.median(np.diff(times))) if times.size > 1 else 0.5
    is_false_alarm = _false_alarm_test(labels, window_seconds, hold_seconds)

    def in_fault(t: float) -> bool:
        return not is_false_alarm(t)

    raises = [e for e in trace.events if e.type == "raise"]
    clears = {e.id: e for e in trace.events if e.type == "clear"}
    false_raises = [e for e in raises if not in_fault(_when(e))]
    # alarm state per hop, from the events (raise at its hop, clear at its hop)
    active = np.zeros(times.size, dtype=bool)
    for event in raises:
        start = _when(event)
        clear = clears.get(event.id)
        end = _when(clear) if clear is not None else np.inf
        active |= (times >= start) & (times < end)
    normal = np.array([not in_fault(t) for t in times], dtype=bool)
    normal_hours = float(normal.sum()) * hop / 3600.0
    faults = []
    for fault in labels.faults:
        hits = [_when(e) for e in raises if fault.start_s <= _when(e) < fault.end_s
                + window_seconds]
        already = any(_when(e) < fault.start_s and (clears.get(e.id) is None
                                                    or _when(clears[e.id]) > fault.start_s)
                      for e in raises)
        delay = (min(hits) - fault.start_s) if hits else (0.0 if already else None)
        faults.append({"start_s": fault.start_s, "end_s": fault.end_s, "kind": fault.kind,
                       "severity": fault.severity, "onset": fault.onset,
                       "detected": bool(hits) or already, "delay_s": delay,
                       "already_in_alarm": already and not hits})
    causes = [false_alarm_cause(labels, _when(e), window_seconds) for e in false_raises]
    return {
        "stream": trace.name, "machine": labels.machine, "section": labels.section,
        "false_alarm_causes": causes,
        "seconds": float(times[-1]) if times.size else 0.0, "hops": int(times.size),
        "normal_hours": normal_hours,
        "false_alarms": len(false_raises),
        "false_alarms_per_hour": len(false_raises) / normal_hours if normal_hours else None,
        "false_alarm_times_s": [round(_when(e), 2) for e in false_raises],
        "normal_time_in_alarm": float(active[normal].mean()) if normal.any() else None,
        "faults": faults,
        "max_score": float(np.max(_scores)) if _scores.size else None,
        "operator_answers": trace.answers,
    }


def false_alarm_cause(labels: StreamLabels, when_s: float, window_seconds: float) -> str:
    """What the labels say was going on in the window of a false alarm raised at ``when_s``:
    the labelled events (``events``: impact, speech, other_machine, ...) and changes of
    operating state (``states``: "state change") that overlap the window, joined by "+", or
    "nothing labelled". Recordings without such labels give "nothing labelled"."""
    start = when_s - window_seconds - 2.0  # the window, and the hops the rule looked back at
    kinds = {str(e.get("kind")) for e in getattr(labels, "events", None) or []
             if e.get("start_s", 0) < when_s and e.get("end_s", 0) > start}
    if any(0 < s.get("start_s", 0) <= when_s and s.get("start_s", 0) + s.get("transition_s", 0)
           > start for s in getattr(labels, "states", None) or []):
        kinds.add("state change")
    return "+".join(sorted(kinds)) or "nothing labelled"


def _when(event: AlarmEvent) -> float:
    """Seconds into the recording at which the event was decided (its window's end)."""
    assert event.window.end_s is not None
    return float(event.window.end_s)


def summarise(results: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Totals over recordings (and the same per machine type)."""
    def total(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
        hours = sum(r["normal_hours"] for r in rows)
        false = sum(r["false_alarms"] for r in rows)
        faults = [f for r in rows for f in r["faults"]]
        delays = [f["delay_s"] for f in faults if f["detected"] and f["delay_s"] is not None]
        in_alarm = [(r["normal_time_in_alarm"], r["normal_hours"]) for r in rows
                    if r["normal_time_in_alarm"] is not None]
        return {
            "recordings": len(rows), "normal_hours": hours, "false_alarms": false,
            "false_alarms_per_hour": false / hours if hours else None,
            "false_alarms_per_day": 24 * false / hours if hours else None,
            "normal_time_in_alarm": (sum(a * h for a, h in in_alarm)
                                     / sum(h for _, h in in_alarm)) if in_alarm else None,
            "faults": len(faults), "detected": sum(f["detected"] for f in faults),
            "missed": sum(not f["detected"] for f in faults),
            "detection_rate": (sum(f["detected"] for f in faults) / len(faults))
            if faults else None,
            "delay_median_s": float(np.median(delays)) if delays else None,
            "delay_worst_s": float(np.max(delays)) if delays else None,
            "false_alarm_causes": dict(Counter(
                c for r in rows for c in r.get("false_alarm_causes", [])).most_common()),
            "operator_answers": sum(a["ok"] for r in rows for a in r.get("operator_answers", [])),
        }

    machines = sorted({r["machine"] for r in results})
    return {"total": total(results),
            "machines": {m: total([r for r in results if r["machine"] == m]) for m in machines}}


def _fmt(value: Any, spec: str = ".2f") -> str:
    return "-" if value is None else format(value, spec)


def markdown(summary: dict[str, Any], results: Sequence[dict[str, Any]], title: str) -> str:
    """The report as Markdown: totals per machine type, then every recording."""
    lines = [f"# {title}", "",
             "| machine | recordings | normal h | false alarms | per day | normal time in "
             "alarm | faults detected | delay median s | delay worst s |",
             "|---|---|---|---|---|---|---|---|---|"]
    rows = [*summary["machines"].items(), ("**all**", summary["total"])]
    for machine, t in rows:
        lines.append(f"| {machine} | {t['recordings']} | {t['normal_hours']:.2f} | "
                     f"{t['false_alarms']} | {_fmt(t['false_alarms_per_day'])} | "
                     f"{_fmt(t['normal_time_in_alarm'], '.1%')} | {t['detected']}/{t['faults']} "
                     f"| {_fmt(t['delay_median_s'], '.1f')} | {_fmt(t['delay_worst_s'], '.1f')} |")
    causes = summary["total"].get("false_alarm_causes") or {}
    if causes:
        lines += ["", "False alarms by what the labels say overlapped their window: "
                  + ", ".join(f"{cause} {count}" for cause, count in causes.items()) + "."]
    answers = [a for r in results for a in r.get("operator_answers", []) if a["ok"]]
    if answers:
        lines += ["", f"A simulated operator answered \"not a fault\" to {len(answers)} false "
                  "alarm(s): each episode's clip enrolled and the thresholds recalibrated, for "
                  "the rest of that machine's recordings (threshold "
                  f"{_fmt(answers[0]['threshold_before'], '.4g')} before the first, "
                  f"{_fmt(answers[-1]['threshold'], '.4g')} after the last; "
                  f"{answers[-1]['references']} references)."]
    lines += ["", "| recording | machine | section | normal h | false alarms | in alarm | "
              "faults (delay s) |", "|---|---|---|---|---|---|---|"]
    for r in results:
        faults = ", ".join(
            f"{f['kind']}@{f['start_s']:.0f}s: "
            + (f"{f['delay_s']:.1f}" if f["detected"] else "missed") for f in r["faults"]) or "-"
        lines.append(f"| {r['stream']} | {r['machine']} | {r['section']:02d} | "
                     f"{r['normal_hours']:.3f} | {r['false_alarms']} | "
                     f"{_fmt(r['normal_time_in_alarm'], '.1%')} | {faults} |")
    return "\n".join(lines) + "\n"


def plot_timeline(trace: StreamTrace, labels: StreamLabels, path: Path) -> Path | None:
    """Score, thresholds, fault intervals (shaded) and raise/clear marks as a PNG; None when
    matplotlib is not installed (the edge extra does not need it)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    times, scores, thresholds = trace.arrays()
    fig, ax = plt.subplots(figsize=(12, 3.2))
    for fault in labels.faults:
        ax.axvspan(fault.start_s, fault.end_s, color="tab:red", alpha=0.15,
                   label=f"fault ({fault.kind})")
    ax.plot(times, scores, lw=0.7, color="tab:blue", label="score")
    ax.plot(times, thresholds, lw=0.9, color="black", ls="--", label="threshold")
    for event in trace.events:
        colour = "tab:red" if event.type == "raise" else "tab:green"
        ax.axvline(_when(event), color=colour, lw=1.0)
    ax.set_xlabel("seconds into the recording")
    ax.set_ylabel("score")
    ax.set_title(f"{trace.name}: {labels.machine} section {labels.section:02d} "
                 "(red lines raise, green clear)")
    handles, names = ax.get_legend_handles_labels()
    unique = dict(zip(names, handles, strict=False))
    ax.legend(unique.values(), unique.keys(), loc="upper left", fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def evaluate_streams(folder: str | Path, models: str | Path, out: str | Path,
                     stream_settings: dict[str, Any] | None = None, device: str = "auto",
                     threads: int | None = None, plots: bool = True,
                     progress: Any = None, save_scores: bool = False,
                     operator: bool = False) -> dict[str, Any]:
    """Replay every labelled recording under ``folder``; write results.json, results.md and a
    timeline PNG per recording to ``out`` (and with ``save_scores`` every hop's time, score
    and threshold as ``scores/<recording>.npz``); return the results. ``operator``: a
    simulated operator answers every false alarm (``replay_streams``)."""
    files = find_streams(folder)
    labels = {wav: read_labels(wav) for wav in files}
    settings = dict(stream_settings or {})
    template = stream_template(settings)
    traces = replay_streams(labels, models, settings, device, threads, progress=progress,
                            operator=operator)
    results = [stream_metrics(traces[wav], labels[wav], template.window_seconds,
                              template.alarm.hold_seconds) for wav in files]
    summary = summarise(results)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    report = {"streams": str(folder), "models": str(models), "operator": operator,
              "stream_settings": template.model_dump(mode="json",
                                                     exclude={"name", "source", "machine"}),
              "summary": summary, "recordings": results}
    (out / "results.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "results.md").write_text(markdown(summary, results,
                                             f"Streams of {folder} with {models}"))
    if plots:
        for wav in files:
            plot_timeline(traces[wav], labels[wav], out / "timelines" / f"{wav.stem}.png")
    if save_scores:  # every hop, for studies of other rules without replaying the audio
        (out / "scores").mkdir(exist_ok=True)
        for wav in files:
            times, scores, thresholds = traces[wav].arrays()
            np.savez(out / "scores" / f"{wav.stem}.npz", times=times, scores=scores,
                     thresholds=thresholds)
    return report
