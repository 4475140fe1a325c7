"""The edge daemon: sources -> windows -> ONNX Runtime (batched) -> scores -> alarms -> outputs.

    capture threads (one per stream)           main thread
    source -> AudioBlock -> queue  --------->  SignalCheck (edge.signal): silence, NaN, stuck,
                                                   frozen audio or a lost device: "no signal",
                                                   dropped, never scored
                                               StreamRunner.feed: frames, new patches, evidence
                                               Daemon._embed: one ORT call per bundle for the
                                                   new patches of all its streams
                                               StreamRunner.windows_ready -> score_window
                                               AlarmRule -> AlarmEvent -> outputs (outbox first)

Operator feedback ("not a fault", ``edge.feedback``) runs on a worker thread of its own (the
enrollment and the reload of the bundle take a while, scoring goes on meanwhile); the main
thread then swaps the new bundle and the streams' new thresholds in between two batches, keeping
each stream's alarm state, and answers the request.

The capture threads only move blocks; a slow scorer makes the bounded queue fill, which a
microphone source counts as dropped blocks (a gap, after which the stream's frame grid
restarts) and a file source simply waits for. ``stop`` ends everything: capture stops, pending
clips are written, outputs flush as far as the broker allows, the status goes offline.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager as ContextManager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

import numpy as np
from threadpoolctl import threadpool_limits

from edge.alarms.rule import AlarmRule, AlarmRuleConfig, StreamKey, Transition
from edge.audio import SAMPLE_RATE
from edge.bundle.calibrate import budget_thresholds
from edge.bundle.load import Bundle, load_bundle
from edge.bundle.system import PatchOutputs, SectionThreshold
from edge.capture import open_source
from edge.capture.base import AudioBlock, AudioSource
from edge.config import AlarmConfig, EdgeConfig, StreamConfig
from edge.errors import AsdEdgeError
from edge.evidence import EvidenceRecorder
from edge.explain import explain_window
from edge.feedback import (
    FeedbackAck,
    FeedbackRecord,
    NotAFaultCommand,
    Via,
    not_a_fault,
    parse_command,
    request_id_of,
)
from edge.health import Health
from edge.inference.onnx_runtime import resolve_providers
from edge.outputs import FanOut, Output
from edge.outputs.events import (
    AlarmEvent,
    ClipLinks,
    EventWindow,
    ScoreMessage,
    SignalState,
    StreamState,
    make_event,
)
from edge.signal import SignalChange, SignalCheck
from edge.streaming import StreamingWindows, Window, hop_patches_for, window_patches_for

logger = logging.getLogger(__name__)

QUEUE_BLOCKS = 64
HEALTH_SECONDS = 0.5  # capture counters and output state copied to the metrics this often
FEEDBACK_QUEUE = 8  # feedback requests waiting for the worker; more are answered "busy"

FeedbackReply = Callable[[FeedbackAck], None]


@dataclass
class StreamRunner:
    """One stream's state: its windower, alarm rule, evidence recorder and clocks."""

    config: StreamConfig
    key: StreamKey
    bundle: Bundle
    rule: AlarmRule
    evidence: EvidenceRecorder | None
    windows: StreamingWindows = field(init=False)
    origin_utc: float = 0.0  # wall-clock time of sample 0 of the current windower
    origin_offset_s: float | None = None  # file offset of sample 0 (None: a microphone)
    origin_stream_s: float = 0.0  # stream seconds of sample 0
    samples_in: int = 0  # samples pushed into the current windower
    stream_samples: int = 0  # samples since the stream started
    scored: int = 0  # windows scored
    new_patches: np.ndarray | None = None
    signal: SignalCheck = field(init=False)
    score_sent_s: float | None = None  # stream seconds of the latest score message

    def __post_init__(self) -> None:
        self.windows = self._windower()
        check = self.config.signal
        self.signal = SignalCheck(self.name, check.silence_dbfs, check.no_signal_seconds,
                                  check.ok_seconds, check.log_interval_minutes * 60.0)

    @property
    def name(self) -> str:
        assert self.config.name is not None
        return self.config.name

    def _windower(self) -> StreamingWindows:
        system = self.bundle.system
        return system.stream(
            window_patches_for(self.config.window_seconds, system.front_end, system.patching),
            hop_patches_for(self.config.hop_seconds, system.front_end, system.patching))

    def feed(self, block: AudioBlock) -> None:
        """Take a block: restart the frame grid after a gap, push, remember new patches."""
        if block.discontinuity or self.samples_in == 0:
            if block.discontinuity and self.samples_in:
                logger.warning("%s: audio lost before %.2f s; the window restarts",
                               self.name, self.stream_samples / SAMPLE_RATE)
            self.windows = self._windower()
            self.new_patches = None  # the old windower's, not yet embedded: nothing scores them
            self.samples_in = 0
            self.origin_utc = block.start_time
            self.origin_offset_s = block.offset_s
            self.origin_stream_s = self.stream_samples / SAMPLE_RATE
        new = self.windows.push(block.samples)
        self.new_patches = new if self.new_patches is None else np.concatenate(
            [self.new_patches, new])
        self.samples_in += block.samples.shape[0]
        self.stream_samples += block.samples.shape[0]
        if self.evidence is not None:
            self.evidence.push(block.samples, discontinuity=block.discontinuity)

    def skip(self, block: AudioBlock) -> None:
        """A block of bad audio (``edge.signal``): it counts in stream time and is never
        scored; the frame grid restarts at the next block fed, so no window holds it."""
        self.stream_samples += block.samples.shape[0]
        self.samples_in = 0
        if self.evidence is not None:  # a later clip's pre-roll starts after it
            self.evidence.push(block.samples[:0], discontinuity=True)

    def take_patches(self) -> np.ndarray | None:
        patches, self.new_patches = self.new_patches, None
        return patches

    def event_window(self, window: Window) -> EventWindow:
        start_s, end_s = window.start_sample / SAMPLE_RATE, window.end_sample / SAMPLE_RATE
        offset = self.origin_offset_s
        return EventWindow(
            start_utc=datetime.fromtimestamp(self.origin_utc + start_s, UTC),
            end_utc=datetime.fromtimestamp(self.origin_utc + end_s, UTC),
            start_s=None if offset is None else round(offset + start_s, 4),
            end_s=None if offset is None else round(offset + end_s, 4))

    def stream_seconds(self, window: Window) -> float:
        """Seconds of the window's end: file offset for a file, stream time for a microphone."""
        base = self.origin_offset_s if self.origin_offset_s is not None else self.origin_stream_s
        return base + window.end_sample / SAMPLE_RATE


def blas_single_threaded() -> ContextManager[object]:
    """A context in which numpy's BLAS uses one thread (process-wide, restored on exit).

    The daemon's matrix products are small (one window's query against at most
    ``exact_below`` references, a window's statistics): OpenBLAS splits them over every core
    all the same, and on a box whose cores are busy with capture threads, ONNX Runtime and
    other processes its threads wait for each other: one query against 5 000 references took
    5.8 ms instead of 0.09 ms, a whole hop of a stream 7.7 ms instead of 1.7 ms
    (docs/BENCHMARKS.md)."""
    return threadpool_limits(limits=1, user_api="blas")


def alarm_rule_for(config: StreamConfig, key: StreamKey, bundle: Bundle) -> AlarmRule:
    """The stream's rule: its thresholds from the bundle unless the config overrides them.

    The stream's ``domain`` picks the calibrated thresholds: ``source``/``target`` that
    domain's, ``pooled`` the section's pooled ones, ``auto`` the pooled ones plus every
    calibrated domain's, so that each hop is compared with the thresholds of the domain of its
    nearest reference (``ScoringSystem.assess_window``). A domain the bundle has no thresholds
    of (a bundle written before them, too few references of it) uses the pooled ones. A
    threshold override in the alarm config applies to every hop.

    Clear levels: the config's ``clear_threshold``, else its ``clear_fraction`` x each
    threshold; with neither set (None) the calibrated clear thresholds, or, under a threshold
    override, the rule's fallback of 0.9 x the override.
    """
    bundle.system.check_section(config.section)
    calibrated = calibrated_levels(config, bundle)
    alarm = config.alarm
    settings = alarm.model_dump(exclude={"threshold", "false_alarms_per_day"})
    if alarm.threshold is not None:
        return AlarmRule(key, alarm.threshold, AlarmRuleConfig(**settings))
    pinned = None if config.domain == "auto" else config.domain
    if pinned in ("source", "target") and pinned not in calibrated.domains:
        logger.warning("%s: the bundle has no %s-domain thresholds for section %02d; using "
                       "the pooled ones", config.name, pinned, config.section)
    base = calibrated.for_domain(pinned)
    by_domain = {}
    if config.domain == "auto":
        by_domain = {domain: _levels(alarm, levels)
                     for domain, levels in calibrated.domains.items()}
    if alarm.clear_threshold is None and alarm.clear_fraction is None:
        settings["clear_threshold"] = base.clear_threshold
    return AlarmRule(key, base.threshold, AlarmRuleConfig(**settings), by_domain)


def calibrated_levels(config: StreamConfig, bundle: Bundle) -> SectionThreshold:
    """The section's calibrated thresholds for this stream.

    A bundle calibrated to a false-alarm budget keeps its out-of-sample hop scores; when the
    stream asks for another budget (``alarm.false_alarms_per_day``) or trips by another rule
    (``trip_hops``/``window_hops``) than the bundle was calibrated for, the thresholds are
    recalibrated for the stream from them (``edge.bundle.calibrate``), so the promise holds
    for the rule that runs. A window or hop other than the calibration's, or a budget asked of
    a bundle without stored scores, keeps the bundle's thresholds, with a warning that the
    promise does not apply."""
    stored = bundle.system.thresholds[config.section]
    alarm = config.alarm
    calibration = bundle.alarm_calibration
    if calibration is None:
        if alarm.false_alarms_per_day is not None:
            logger.warning("%s: alarm.false_alarms_per_day is set but the bundle %s has no "
                           "stored calibration scores; its thresholds promise nothing: export "
                           "or enroll with --false-alarms-per-day", config.name, bundle.path)
        return stored
    budget, rule = calibration
    same_rule = (alarm.trip_hops, alarm.window_hops) == (rule.trip_hops, rule.window_hops)
    if (config.window_seconds, config.hop_seconds) != (budget.window_seconds,
                                                       budget.hop_seconds):
        logger.warning("%s: window %.3g s / hop %.3g s differ from the bundle's calibration "
                       "(%.3g s / %.3g s): its false-alarm promise does not apply",
                       config.name, config.window_seconds, config.hop_seconds,
                       budget.window_seconds, budget.hop_seconds)
        return stored
    if same_rule and alarm.false_alarms_per_day in (None, budget.false_alarms_per_day):
        return stored
    traces = bundle.traces
    if traces is None:
        return stored
    if alarm.false_alarms_per_day is not None:
        budget = budget.model_copy(update={"false_alarms_per_day": alarm.false_alarms_per_day})
    levels = budget_thresholds(bundle.system, traces,
                               AlarmRuleConfig(trip_hops=alarm.trip_hops,
                                               window_hops=alarm.window_hops),
                               budget).get(config.section)
    if levels is None:
        return stored
    logger.info("%s: thresholds recalibrated for %.3g false alarms a day under %d of %d hops: "
                "%.4g (bundle: %.4g)", config.name, budget.false_alarms_per_day,
                alarm.trip_hops, alarm.window_hops, levels.threshold, stored.threshold)
    return levels


def open_episodes(events: Iterable[AlarmEvent]) -> list[AlarmEvent]:
    """The raises of ``events`` whose episode has no clear (in time order)."""
    raised: dict[str, AlarmEvent] = {}
    cleared: set[str] = set()
    for event in sorted(events, key=lambda e: e.time):
        if event.type == "raise":
            raised.setdefault(event.id, event)
        else:
            cleared.add(event.id)
    return [event for episode, event in raised.items() if episode not in cleared]


def _levels(alarm: AlarmConfig, calibrated: SectionThreshold) -> tuple[float, float]:
    """(threshold, clear threshold) of one calibrated domain under the stream's alarm config:
    its absolute clear_threshold, else its clear_fraction when set (not None), else the
    calibrated one."""
    if alarm.clear_threshold is not None:
        return calibrated.threshold, alarm.clear_threshold
    if alarm.clear_fraction is not None:
        return calibrated.threshold, alarm.clear_fraction * calibrated.threshold
    return calibrated.threshold, calibrated.clear_threshold


class Daemon:
    """Runs every stream of a config until its sources end (files) or ``stop`` is set."""

    def __init__(self, config: EdgeConfig, health: Health | None = None,
                 stop: threading.Event | None = None,
                 bundles: dict[str, Bundle] | None = None,
                 max_seconds: float | None = None) -> None:
        self.config = config
        self.max_samples = None if max_seconds is None else int(max_seconds * SAMPLE_RATE)
        self.outputs: Output = FanOut([])  # set by run(); loading bundles needs no outputs
        self.health = health or Health(config.node, mqtt_configured=config.mqtt is not None)
        self.stop = stop or threading.Event()
        self.bundles = bundles if bundles is not None else {}
        resolve_providers(config.device)  # --device cuda without CUDA: say so before anything
        for machine in sorted({s.machine for s in config.streams} - set(self.bundles)):
            self.bundles[machine] = load_bundle(config.models_dir, machine, config.device,
                                                config.threads)
        self.runners = [self._runner(stream) for stream in config.streams]
        providers = {b.provider for b in self.bundles.values()}
        self.provider = ", ".join(sorted(providers))
        self.health.set_provider(self.provider, config.device)
        self._queue: queue.Queue[tuple[int, AudioBlock | None]] = queue.Queue(QUEUE_BLOCKS)
        self._threads: list[threading.Thread] = []
        self._sources: list[AudioSource] = []
        self.events_sent = 0
        self.windows_scored = 0
        self._health_due = 0.0
        # every hop's score, whether or not MQTT gets it (the web page's timeline)
        self.score_listener: Callable[[ScoreMessage], None] | None = None
        # the web page's URLs of an episode's clip and spectrogram, for the alarm event
        self.clip_links: ClipLinks | None = None
        # each applied "not a fault" (the web page marks the episode)
        self.feedback_listener: Callable[[FeedbackRecord], None] | None = None
        self._feedback_requests: queue.Queue[tuple[NotAFaultCommand, Via, FeedbackReply]] = \
            queue.Queue(FEEDBACK_QUEUE)
        self._feedback_done: queue.Queue[tuple[FeedbackRecord, Bundle | None, str | None,
                                               FeedbackReply]] = queue.Queue()
        self._feedback_worker: threading.Thread | None = None

    def _runner(self, stream: StreamConfig) -> StreamRunner:
        key = StreamKey(node=self.config.node, machine=stream.machine,
                        section=f"{stream.section:02d}")
        bundle = self.bundles[stream.machine]
        evidence = None
        if self.config.evidence.enabled:
            e = self.config.evidence
            evidence = EvidenceRecorder(self.config.evidence_dir, stream.machine, stream.section,
                                        e.pre_roll_seconds, e.post_roll_seconds, e.max_clips,
                                        e.max_age_days, e.max_megabytes,
                                        on_written=lambda clip: self.outputs.publish_clip(key,
                                                                                          clip),
                                        # feeding runs at most one queue ahead of scoring
                                        lag_seconds=QUEUE_BLOCKS * stream.source.block_seconds)
        self.health.add_stream(stream.name or key.machine)
        return StreamRunner(stream, key, bundle, alarm_rule_for(stream, key, bundle), evidence)

    # -- capture -------------------------------------------------------------------------------

    def _capture(self, index: int, source: AudioSource) -> None:
        taken = 0
        try:
            for block in source:
                if self.max_samples is not None:  # stop a stream after max_seconds of audio
                    if taken >= self.max_samples:
                        break
                    block = replace(block, samples=block.samples[:self.max_samples - taken])
                    taken += block.samples.shape[0]
                while not self.stop.is_set():
                    try:
                        self._queue.put((index, block), timeout=0.2)
                        break
                    except queue.Full:
                        continue
                if self.stop.is_set():
                    break
        except AsdEdgeError as err:
            logger.error("%s: %s", self.runners[index].name, err)
        except Exception:
            logger.exception("%s: capture failed", self.runners[index].name)
        finally:
            self._put_end(index)

    def _put_end(self, index: int) -> None:
        while True:
            try:
                self._queue.put((index, None), timeout=0.2)
                return
            except queue.Full:
                if self.stop.is_set():
                    return

    def start(self, outputs: Output) -> None:
        self.outputs = outputs
        self._clear_open_episodes()
        now = datetime.now(UTC)
        for runner in self.runners:
            self.outputs.publish_state(StreamState(
                node=runner.key.node, machine=runner.key.machine, section=runner.key.section,
                state="ok", id=None, time=now, score=None, threshold=runner.rule.threshold))
            self.outputs.publish_signal(self._signal_state(runner, now.timestamp()))
        for index, runner in enumerate(self.runners):
            source = open_source(runner.config.source, self.stop)
            self._sources.append(source)
            thread = threading.Thread(target=self._capture, args=(index, source),
                                      name=f"capture-{runner.name}", daemon=True)
            thread.start()
            self._threads.append(thread)
        self._feedback_worker = threading.Thread(target=self._feedback_loop, name="feedback",
                                                 daemon=True)
        self._feedback_worker.start()
        logger.info("listening: %s; inference on %s", ", ".join(r.name for r in self.runners),
                    self.provider)

    def _clear_open_episodes(self) -> None:
        """Clear the episodes an earlier run left open (killed, power cut), reason "restart".

        The events of earlier runs are what the outputs hold: the journal's lines and the
        outbox's unsent rows (the outbox is written first, so a kill between the two leaves an
        event in the outbox only; it is journaled now). An episode whose last event is a raise
        gets its clear now, before this run's first state: the rule starts with no alarm, and
        a fault still there raises a new episode within ``trip_hops`` hops."""
        outputs = getattr(self.outputs, "outputs", [self.outputs])
        recorded: dict[str, AlarmEvent] = {}
        for output in outputs:
            if hasattr(output, "recorded_events"):
                recorded.update((e.event_id, e) for e in output.recorded_events())
            if hasattr(output, "pending_events"):
                recorded.update((e.event_id, e) for e in output.pending_events())
        for output in outputs:
            if hasattr(output, "add_missing"):
                added = output.add_missing(sorted(recorded.values(), key=lambda e: e.time))
                if added:
                    logger.info("journaled %d event(s) an earlier run left in the outbox only",
                                added)
        for raised in open_episodes(recorded.values()):
            now = datetime.now(UTC)
            logger.warning("%s/%s/%s: episode %s (raised %s) was open when the daemon last "
                           "stopped; cleared with reason 'restart'", raised.node,
                           raised.machine, raised.section, raised.id, raised.time.isoformat())
            self.outputs.publish_event(raised.model_copy(update={
                "event_id": str(uuid.uuid4()), "type": "clear", "time": now,
                "explanation": {"reason": "restart", "raised": raised.event_id},
                "clip": None}))
            self.events_sent += 1

    # -- scoring -------------------------------------------------------------------------------

    def run(self, outputs: Output) -> int:
        """Start, score until the sources end or ``stop`` is set, shut down. Returns 0.

        ``outputs`` get every state, score and event; closing them is the caller's. numpy's
        BLAS runs on one thread meanwhile (``blas_single_threaded``)."""
        with blas_single_threaded():
            return self._run(outputs)

    def _run(self, outputs: Output) -> int:
        self.start(outputs)
        live = set(range(len(self.runners)))
        try:
            while live and not self.stop.is_set():
                self._apply_feedback()
                try:
                    items = [self._queue.get(timeout=0.2)]
                except queue.Empty:
                    self._refresh_health()
                    continue
                while len(items) < QUEUE_BLOCKS:  # take what is waiting: one batch
                    try:
                        items.append(self._queue.get_nowait())
                    except queue.Empty:
                        break
                fed: dict[int, StreamRunner] = {}
                for index, block in items:
                    if block is None:
                        live.discard(index)
                        self._ended(self.runners[index])
                    else:
                        self._take(self.runners[index], block)
                        fed[index] = self.runners[index]
                self._score_pending(list(fed.values()))
                self._refresh_health()
            self._update_health()
        finally:
            self.shutdown()
        return 0

    def _take(self, runner: StreamRunner, block: AudioBlock) -> None:
        """A block in: checked for signal (``edge.signal``), fed when it is sound."""
        good, change = runner.signal.block(block.samples, block.start_time, block.repeated)
        if change is not None:
            self._signal_changed(runner, change)
        if good:
            runner.feed(block)
        else:
            runner.skip(block)
            self.health.audio_dropped(runner.name, block.duration)

    def _signal_changed(self, runner: StreamRunner, change: SignalChange) -> None:
        """No signal: the alarm rule forgets its recent hops (an open episode stays open,
        see ``AlarmRule.interrupt``); every output and the metrics hear of it."""
        if change.state == "no_signal":
            runner.rule.interrupt()
        self.health.set_signal(runner.name, change.state == "ok", change.reason)
        self.outputs.publish_signal(self._signal_state(runner, change.since))

    @staticmethod
    def _signal_state(runner: StreamRunner, since: float) -> SignalState:
        return SignalState(node=runner.key.node, machine=runner.key.machine,
                           section=runner.key.section, state=runner.signal.state,
                           reason=runner.signal.reason,
                           since=datetime.fromtimestamp(since, UTC), time=datetime.now(UTC))

    def _ended(self, runner: StreamRunner) -> None:
        """A source ended: say so when it held too little audio for a single window."""
        if runner.scored == 0 and not self.stop.is_set():
            logger.warning("%s: the audio ended after %.1f s, shorter than one window (%g s): "
                           "nothing was scored; give at least %g s", runner.name,
                           runner.stream_samples / SAMPLE_RATE, runner.config.window_seconds,
                           runner.config.window_seconds)

    def _score_pending(self, fed: list[StreamRunner] | None = None) -> None:
        """Embed the new patches of the streams ``fed`` (default: all), one batch per bundle,
        and score the windows they complete. Only the streams of this batch are visited: a
        walk over every stream per batch cost as much as the scoring at hundreds of streams."""
        candidates = self.runners if fed is None else fed
        for bundle in self.bundles.values():
            runners = [r for r in candidates if r.bundle is bundle]
            pending = [(r, p) for r in runners
                       if (p := r.take_patches()) is not None and p.shape[0]]
            if not pending:
                continue
            system = bundle.system
            ran = PatchOutputs(None, None, {})
            if system.runs_patch_models:  # one batch across the streams of this bundle
                started = time.perf_counter()
                ran = system.run_patch_models(np.concatenate([p for _, p in pending]))
                self.health.inference(time.perf_counter() - started)
            row = 0
            for runner, patches in pending:
                rows = slice(row, row + patches.shape[0])
                row += patches.shape[0]
                windows = runner.windows.accept(*ran.rows(rows))
                for window in windows:
                    self._score(runner, window)

    def _score(self, runner: StreamRunner, window: Window) -> None:
        section = runner.config.section
        assessed = runner.bundle.system.assess_window(window, section)
        score, members = assessed.score, assessed.members
        # the hop's domain picks its thresholds (auto); a pinned domain is the rule's own
        domain = assessed.domain if runner.config.domain == "auto" else None
        self.windows_scored += 1
        runner.scored += 1
        self.health.hop_scored(runner.name, score)
        event_window = runner.event_window(window)
        stream_s = runner.stream_seconds(window)
        interval = runner.config.score_interval_seconds
        publish = runner.config.score_messages or (interval > 0 and (
            runner.score_sent_s is None or stream_s - runner.score_sent_s >= interval))
        if publish or self.score_listener is not None:
            message = ScoreMessage(
                node=runner.key.node, machine=runner.key.machine, section=runner.key.section,
                time=event_window.end_utc, stream_s=stream_s, score=score,
                threshold=runner.rule.levels(domain)[0])
            if publish:
                runner.score_sent_s = stream_s
                self.outputs.publish_score(message)
            if self.score_listener is not None:  # the web page's timeline (edge.web)
                self.score_listener(message)
        transition = runner.rule.update(stream_s, score, event_window.end_utc, domain)
        if transition is not None:
            self._emit(runner, window, transition, event_window, members)

    def _emit(self, runner: StreamRunner, window: Window, transition: Transition,
              event_window: EventWindow, members: dict[str, float]) -> None:
        clip = None
        raised = transition.type == "raise"
        try:
            explanation = explain_window(runner.bundle, window, runner.config.section, members,
                                         detail=raised)
        except Exception:  # an explanation must never cost the alarm
            logger.exception("%s: explanation failed", runner.name)
            explanation = {"members": members}
        if raised and runner.evidence is not None:
            clip = str(runner.evidence.trigger(transition.episode_id, transition.utc,
                                               end_sample=window.end_sample))
        event = make_event(runner.key, transition, event_window, self.provider, explanation,
                           clip, self.clip_links)
        self.outputs.publish_event(event)
        self.events_sent += 1
        self.health.set_alarm(runner.name, transition.type == "raise")
        self.outputs.publish_state(StreamState(
            node=runner.key.node, machine=runner.key.machine, section=runner.key.section,
            state="alarm" if transition.type == "raise" else "ok",
            id=transition.episode_id if transition.type == "raise" else None,
            time=transition.utc, score=transition.score, threshold=transition.threshold))

    def _refresh_health(self) -> None:
        """``_update_health`` at most every HEALTH_SECONDS: it walks every stream, and after
        every batch it cost as much as the scoring of hundreds of streams."""
        now = time.monotonic()
        if now >= self._health_due:
            self._health_due = now + HEALTH_SECONDS
            self._update_health()

    def _update_health(self) -> None:
        for runner, source in zip(self.runners, self._sources, strict=False):
            self.health.update_capture(runner.name, source.stats)
            if self.stop.is_set():
                continue  # the daemon closes its devices: that is no loss of signal
            change = runner.signal.device(bool(source.stats.connected))
            if change is not None:
                self._signal_changed(runner, change)
        for output in getattr(self.outputs, "outputs", [self.outputs]):
            if hasattr(output, "connected"):
                self.health.set_mqtt_connected(bool(output.connected))
            if hasattr(output, "outbox_depth"):
                self.health.set_outbox_depth(int(output.outbox_depth()))

    # -- operator feedback ---------------------------------------------------------------------

    def feedback_command(self, payload: bytes, retained: bool,
                         answer: Callable[[bytes], None]) -> None:
        """A ``not_a_fault`` command as it came over MQTT (paho's thread; it may come before
        ``start``): checked, queued for the worker; a bad one is answered with an error at
        once. ``answer`` publishes an acknowledgement's JSON."""
        def reply(ack: FeedbackAck) -> None:
            try:
                answer(ack.to_json())
            except Exception:
                logger.exception("could not publish the acknowledgement of %s", ack.request_id)

        if retained:
            reply(self._error_ack(request_id_of(payload), None, (
                "a retained not_a_fault command is refused (it would run again at every "
                "connect): publish it without the retain flag, and clear the retained one")))
            return
        command = parse_command(payload)
        if isinstance(command, str):
            reply(self._error_ack(request_id_of(payload), None, command))
            return
        self.request_feedback(command, "mqtt", reply)

    def request_feedback(self, command: NotAFaultCommand, via: Via, reply: FeedbackReply
                         ) -> None:
        """Queue ``command`` for the feedback worker; ``reply`` gets its outcome (called on
        the main thread once the new thresholds are in effect, or on the caller's or the
        worker's thread for a refusal)."""
        try:
            self._feedback_requests.put_nowait((command, via, reply))
        except queue.Full:
            reply(self._error_ack(command.request_id, command.episode,
                                  f"busy: {FEEDBACK_QUEUE} feedback requests are waiting; "
                                  "send it again in a minute"))

    def _feedback_loop(self) -> None:
        while not self.stop.is_set():
            try:
                command, via, reply = self._feedback_requests.get(timeout=0.2)
            except queue.Empty:
                continue
            self._enroll_feedback(command, via, reply)
        while True:  # stopping: what did not start is answered, not dropped
            try:
                command, _via, reply = self._feedback_requests.get_nowait()
            except queue.Empty:
                return
            reply(self._error_ack(command.request_id, command.episode,
                                  "the daemon is stopping; nothing changed: send it again "
                                  "once it runs"))

    def answer_now(self, command: NotAFaultCommand, via: Via, reply: FeedbackReply) -> None:
        """Run a "not a fault" on the calling thread, not the worker's: a replay's simulated
        operator (``edge.evaluation.streams``), whose answer must take effect at a known point
        of the stream. The streams use the new bundle from the next batch of blocks on."""
        self._enroll_feedback(command, via, reply)

    def _enroll_feedback(self, command: NotAFaultCommand, via: Via, reply: FeedbackReply
                         ) -> None:
        """Enroll the episode's clip and reload the bundle; the outcome waits in
        ``_feedback_done`` for the main thread (a refusal is answered at once)."""
        config = self.config
        try:
            record = not_a_fault(command.episode, config.state_dir, config.models_dir,
                                 clips_dir=config.evidence_dir,
                                 even_if_open=command.even_if_open,
                                 via=via,
                                 request_id=command.request_id, device=config.device)
        except AsdEdgeError as err:
            logger.warning("not a fault, episode %s: refused: %s", command.episode, err)
            reply(self._error_ack(command.request_id, command.episode, str(err)))
            return
        except Exception:
            logger.exception("not a fault, episode %s: failed", command.episode)
            reply(self._error_ack(command.request_id, command.episode,
                                  "internal error: see the daemon's log"))
            return
        bundle, problem = None, None
        if record.machine in self.bundles:
            try:
                bundle = load_bundle(config.models_dir, record.machine, config.device,
                                     config.threads)
            except Exception as err:  # enrolled, but this run cannot use it
                logger.exception("not a fault, episode %s: reloading the bundle failed",
                                 command.episode)
                problem = f"enrolled, but reloading the bundle failed ({err}): restart"
        self._feedback_done.put((record, bundle, problem, reply))

    def _apply_feedback(self) -> None:
        """Swap in the bundles the feedback worker reloaded (main thread, between batches)
        and answer each request."""
        while True:
            try:
                record, bundle, problem, reply = self._feedback_done.get_nowait()
            except queue.Empty:
                return
            before = after = None
            if bundle is not None and problem is None:
                try:
                    before, after = self._swap_bundle(record, bundle)
                except AsdEdgeError as err:
                    problem = f"enrolled, but the streams cannot use the new thresholds: {err}"
            if problem is not None:
                reply(self._error_ack(record.request_id, record.episode, problem))
                continue
            if self.feedback_listener is not None:
                self.feedback_listener(record)
            reply(FeedbackAck(
                request_id=record.request_id, episode=record.episode, ok=True,
                time=datetime.now(UTC), node=self.config.node, machine=record.machine,
                section=record.section,
                threshold=record.threshold_after if after is None else after,
                threshold_before=record.threshold_before if before is None else before,
                domain_thresholds=record.domain_thresholds, clips_added=record.clips_added,
                references=record.references, feedback_id=record.id))

    def _swap_bundle(self, record: FeedbackRecord, bundle: Bundle
                     ) -> tuple[float | None, float | None]:
        """``bundle`` for every stream of its machine, each with its thresholds from it and its
        alarm state kept; returns the (old, new) threshold of the episode's stream."""
        runners = [r for r in self.runners if r.config.machine == record.machine]
        rules = [alarm_rule_for(r.config, r.key, bundle) for r in runners]  # all or none
        before = after = None
        self.bundles[record.machine] = bundle
        for runner, rule in zip(runners, rules, strict=True):
            rule.carry_on_from(runner.rule)
            if runner.key.section == record.section and after is None:
                before, after = runner.rule.levels(None)[0], rule.levels(None)[0]
            runner.bundle, runner.rule = bundle, rule
            self.outputs.publish_state(StreamState(
                node=runner.key.node, machine=runner.key.machine, section=runner.key.section,
                state="alarm" if rule.active else "ok", id=rule.episode_id,
                time=datetime.now(UTC), score=None, threshold=rule.threshold))
        logger.info("not a fault, episode %s: %d stream(s) of %s use the new bundle; threshold "
                    "%s -> %s", record.episode, len(runners), record.machine, before, after)
        return before, after

    def _error_ack(self, request_id: str | None, episode: str | None, error: str
                   ) -> FeedbackAck:
        return FeedbackAck(request_id=request_id, episode=episode, ok=False, error=error,
                           time=datetime.now(UTC), node=self.config.node)

    def shutdown(self, timeout_s: float = 5.0) -> None:
        self.stop.set()
        for source in self._sources:
            source.close()
        for thread in self._threads:
            thread.join(timeout=2.0)
        if self._feedback_worker is not None:  # an enrollment under way finishes on disk
            self._feedback_worker.join(timeout=timeout_s)
        self._apply_feedback()  # answer what finished
        for runner in self.runners:
            if runner.evidence is not None:
                runner.evidence.flush()
        logger.info("stopped: %d windows scored, %d events", self.windows_scored,
                    self.events_sent)
