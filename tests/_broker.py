"""A real Mosquitto broker on a free loopback port, for the MQTT tests.

``Broker`` writes a generated config into a temporary folder, starts ``mosquitto -c`` as a
child process, waits until the port accepts connections, and can be killed (SIGKILL),
stopped (SIGTERM, which saves its persistence file) and started again on the same port.
Persistence is on (written on a clean stop and on ``save()``), so a subscriber with a
persistent session (``clean_session=False``) keeps its subscription across a restart and
receives what was published while it was away: that makes the broker-restart tests
deterministic. The binary missing is a test failure, never a skip.

``Subscriber`` is a plain paho client that records every message it receives.
"""

from __future__ import annotations

import getpass
import json
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

REPO = Path(__file__).resolve().parents[1]
MOSQUITTO_CANDIDATES = ("mosquitto", "/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto")


def find_mosquitto() -> str:
    """The mosquitto binary; fails the test (never skips) when it is not installed."""
    for candidate in MOSQUITTO_CANDIDATES:
        found = shutil.which(candidate)
        if found:
            return found
    pytest.fail("the mosquitto broker is not installed: apt-get install -y mosquitto "
                "(the MQTT tests run against a real broker)")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now (mosquitto refuses port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class TlsFiles:
    ca: Path
    cert: Path
    key: Path


def make_tls_files(folder: Path, host: str = "127.0.0.1") -> TlsFiles:
    """A throw-away CA and a server certificate for ``host`` signed by it (openssl CLI)."""
    folder.mkdir(parents=True, exist_ok=True)
    openssl = shutil.which("openssl") or pytest.fail("openssl is not installed")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]

    def run(*args: str) -> None:
        subprocess.run([openssl, *args], check=True, capture_output=True, cwd=folder)

    run("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "1",
        "-subj", "/CN=asd-edge test CA")
    run("req", *ec, "-keyout", "server.key", "-out", "server.csr", "-subj", f"/CN={host}")
    (folder / "san.cnf").write_text(f"subjectAltName=IP:{host},DNS:localhost\n")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", "server.crt", "-days", "1", "-extfile", "san.cnf")
    return TlsFiles(ca=folder / "ca.crt", cert=folder / "server.crt", key=folder / "server.key")


def make_client_cert(pki: TlsFiles, name: str) -> tuple[Path, Path]:
    """(certificate, key) of a client called ``name`` (its CN), signed by ``pki``'s CA."""
    folder = pki.ca.parent
    openssl = shutil.which("openssl") or pytest.fail("openssl is not installed")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    for args in (["req", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr",
                  "-subj", f"/CN={name}"],
                 ["x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
                  "-CAcreateserial", "-out", f"{name}.crt", "-days", "1"]):
        subprocess.run([openssl, *args], check=True, capture_output=True, cwd=folder)
    return folder / f"{name}.crt", folder / f"{name}.key"


class Broker:
    """One mosquitto process on ``127.0.0.1:port``, restartable on the same port; with
    ``password_file`` it refuses anonymous clients, with ``tls`` it speaks only TLS."""

    def __init__(self, workdir: Path, *, password_file: Path | None = None,
                 tls: TlsFiles | None = None, client_certificates: bool = False) -> None:
        self.binary = find_mosquitto()
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.config_path = workdir / "mosquitto.conf"
        self.log_path = workdir / "mosquitto.log"
        lines = [
            f"listener {self.port} 127.0.0.1",
            "persistence true",
            f"persistence_location {workdir}/",
            "autosave_interval 0",
            # As root mosquitto would switch to the 'mosquitto' user, which cannot write the
            # persistence file in a test's temporary folder; as anyone else this is a no-op.
            f"user {getpass.getuser()}",
            "log_dest stderr",
            "log_type error",
            "log_type warning",
        ]
        if tls is not None:
            lines += [f"cafile {tls.ca}", f"certfile {tls.cert}", f"keyfile {tls.key}"]
            if client_certificates:  # mutual TLS: a client shows a certificate of the CA
                lines += ["require_certificate true", "use_identity_as_username true"]
        if password_file is None:
            lines.append("allow_anonymous true")
        else:
            lines += ["allow_anonymous false", f"password_file {password_file}"]
        self.config_path.write_text("\n".join(lines) + "\n")
        self.process: subprocess.Popen[bytes] | None = None
        self.tls_port: int | None = None  # a TLS listener beside ``port`` (shipped_broker)

    def start(self, timeout_s: float = 5.0) -> None:
        """Start mosquitto and wait until the port accepts a TCP connection."""
        assert self.process is None or self.process.poll() is not None, "already running"
        log = self.log_path.open("ab")
        self.process = subprocess.Popen([self.binary, "-c", str(self.config_path)],
                                        stdout=log, stderr=log)
        log.close()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"mosquitto exited with {self.process.returncode}: "
                            f"{self.log_path.read_text()[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.01)
        pytest.fail(f"mosquitto did not accept connections on port {self.port} "
                    f"within {timeout_s} s")

    def save(self, timeout_s: float = 5.0) -> None:
        """Make mosquitto write its persistence file now (SIGUSR1) and wait until it has."""
        assert self.process is not None and self.process.poll() is None, "not running"
        db = self.workdir / "mosquitto.db"
        before = db.stat().st_mtime_ns if db.exists() else 0
        self.process.send_signal(signal.SIGUSR1)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if db.exists() and db.stat().st_mtime_ns != before:
                time.sleep(0.05)  # let the write finish
                return
            time.sleep(0.01)
        pytest.fail("mosquitto did not write its persistence file after SIGUSR1")

    def kill(self) -> None:
        """SIGKILL: the broker vanishes without saving anything since its last autosave."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=5)

    def stop(self) -> None:
        """SIGTERM: a clean stop that writes the persistence file."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=5)

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"


def running_broker(tmp_path: Path) -> Iterator[Broker]:
    """A running broker, killed afterwards; a test module makes it a fixture with
    ``yield from running_broker(tmp_path)``."""
    server = Broker(tmp_path / "broker")
    server.start()
    yield server
    server.kill()


@dataclass
class Received:
    topic: str
    payload: bytes
    retain: bool
    received_at: float = field(default_factory=time.time)  # wall clock, when it arrived

    def json(self) -> dict:
        return json.loads(self.payload)


class Subscriber:
    """A paho client that records what arrives on ``topics`` (QoS 1 subscriptions).

    With ``persistent=True`` the session survives a disconnect (clean_session=False), so the
    broker queues QoS 1 messages for it while it is away. ``username`` and ``password`` log in
    at a broker that refuses anonymous clients.
    """

    def __init__(self, port: int, topics: list[str], *, client_id: str = "test-subscriber",
                 persistent: bool = False, username: str | None = None,
                 password: str | None = None) -> None:
        self.topics = topics
        self.messages: list[Received] = []
        self.condition = threading.Condition()
        self.subscribed = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                                  clean_session=not persistent)
        self.client.reconnect_delay_set(min_delay=0.05, max_delay=0.2)  # type: ignore[arg-type]
        if username is not None:
            self.client.username_pw_set(username, password)
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message
        self.client.connect_async("127.0.0.1", port)
        self.client.loop_start()

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            return
        client.subscribe([(topic, 1) for topic in self.topics])

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties) -> None:
        self.subscribed.set()

    def _on_message(self, client, userdata, message) -> None:
        with self.condition:
            self.messages.append(Received(message.topic, bytes(message.payload),
                                          bool(message.retain)))
            self.condition.notify_all()

    def wait_subscribed(self, timeout_s: float = 5.0) -> None:
        assert self.subscribed.wait(timeout_s), "the test subscriber never subscribed"

    def on(self, topic: str) -> list[Received]:
        with self.condition:
            return [m for m in self.messages if m.topic == topic]

    def wait_for(self, predicate: Callable[[list[Received]], bool], timeout_s: float = 10.0,
                 what: str = "messages") -> list[Received]:
        """Block until ``predicate(messages)`` holds; fail the test after the timeout."""
        deadline = time.monotonic() + timeout_s
        with self.condition:
            while not predicate(self.messages):
                left = deadline - time.monotonic()
                if left <= 0:
                    pytest.fail(f"timed out after {timeout_s} s waiting for {what}; got "
                                f"{[(m.topic, m.payload[:80]) for m in self.messages]}")
                self.condition.wait(left)
            return list(self.messages)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def shipped_broker_config(tmp_path: Path, plain_port: int, tls_port: int, password_file: Path,
                          tls_files: TlsFiles) -> Path:
    """deploy/mosquitto.conf with only its ports and paths changed for the test (and, as the
    tests run as root, the user mosquitto runs as, so it can read the test's files)."""
    text = (REPO / "deploy" / "mosquitto.conf").read_text()
    changes = {
        "listener 1883 127.0.0.1": f"listener {plain_port} 127.0.0.1",
        "listener 8883": f"listener {tls_port} 127.0.0.1",
        "/etc/mosquitto/passwd": str(password_file),
        "/etc/mosquitto/asd-edge.acl": str(REPO / "deploy" / "mosquitto.acl"),
        "/etc/mosquitto/certs/ca.pem": str(tls_files.ca),
        "/etc/mosquitto/certs/broker.pem": str(tls_files.cert),
        "/etc/mosquitto/certs/broker.key": str(tls_files.key),
        "/var/lib/mosquitto/": f"{tmp_path}/",
    }
    for old, new in changes.items():
        assert old in text, f"deploy/mosquitto.conf no longer has {old!r}: update this test"
        text = text.replace(old, new)
    path = tmp_path / "mosquitto.conf"
    path.write_text(text + f"user {getpass.getuser()}\n")
    return path


def shipped_broker(workdir: Path, users: dict[str, str], tls_files: TlsFiles) -> Broker:
    """A ``Broker`` (not started) that runs the shipped deploy/mosquitto.conf + mosquitto.acl:
    ``port`` is its plain loopback listener, ``tls_port`` its TLS listener; ``users`` (name:
    password) are written to its password file with ``mosquitto_passwd``."""
    workdir.mkdir(parents=True, exist_ok=True)
    password_file = workdir / "passwd"
    for index, (user, password) in enumerate(users.items()):
        subprocess.run(["mosquitto_passwd", *(["-c"] if index == 0 else []), "-b",
                        str(password_file), user, password], check=True, capture_output=True)
    broker = Broker(workdir)
    broker.tls_port = free_port()
    broker.config_path = shipped_broker_config(workdir, broker.port, broker.tls_port,
                                               password_file, tls_files)
    return broker
