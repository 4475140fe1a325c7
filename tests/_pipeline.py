"""Small synthetic pipelines the bundle, export and daemon tests share (under tmp folders)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from edge.cli import main
from edge.synth import synthesize_dataset, synthesize_stream

MACHINE = "gearbox"


@dataclass
class StatsSetup:
    data: Path
    models: Path
    stream: Path
    fault: dict


def stats_setup(root: Path, machine: str = MACHINE, n_train: int = 16,
                stream_seconds: float = 60.0, fault_start: float = 25.0,
                fault_seconds: float = 15.0) -> StatsSetup:
    """A data set of one section, a statistics-only bundle enrolled from its normal training
    clips, and a recording of the same unit with a strong fault (by default 60 s long, the
    fault at 25-40 s).

    The bundle alarms at the clip-quantile thresholds: these tests are about the daemon's
    path (raise, clear, outbox, MQTT), and 3 minutes of references can promise one false alarm
    a month only with a threshold no fault of a minute's test reaches (the default budget's
    own tests are in tests/test_alarm_budget.py)."""
    data = synthesize_dataset(root / "data", [machine], sections=1, n_train=n_train,
                              n_target_train=2, n_test=4, seed=3)
    models = root / "models"
    assert main(["enroll", "--dir", str(data / machine / "train"), "--machine", machine,
                 "--section", "0", "--models", str(models), "--domain", "source",
                 "--clip-quantile-thresholds", "--system", "stats"]) == 0
    stream = root / "stream.wav"
    meta = synthesize_stream(stream, machine, 0, seconds=stream_seconds,
                             fault_start=fault_start, fault_seconds=fault_seconds, seed=3,
                             severity=1.5)
    return StatsSetup(data, models, stream, meta["fault"])
