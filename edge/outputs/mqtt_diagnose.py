"""Why a connection to the broker failed, in one line that names the cause and the fix.

paho reports a failed connection attempt without its cause (``on_connect_fail`` has no
error), a plain client at a TLS listener as an "unspecified error", and a certificate that
fails verification like a broker that is down. ``edge.outputs.mqtt`` records the exception of
each attempt and asks here what it means: ``connect_failure`` for an exception,
``refusal`` for a CONNACK that refuses, ``speaks_tls`` to tell a TLS listener behind a
connection closed before any answer.

Each answer also says whether the broker *answered*: a try that reached no broker (refused,
timed out, unreachable) costs one TCP connect and is repeated at the short probe interval, so
an alarm goes out promptly once the broker is back; a broker that answered and refused (TLS,
credentials) is retried with exponential backoff, as retrying at once cannot help.
"""

from __future__ import annotations

import errno
import socket
import ssl
from dataclasses import dataclass

from paho.mqtt.reasoncodes import ReasonCode

from edge.config import MqttConfig

# OpenSSL's verify codes for a certificate that is valid but for another name.
_NAME_MISMATCH = {62, 64}  # X509_V_ERR_HOSTNAME_MISMATCH, X509_V_ERR_IP_ADDRESS_MISMATCH
_NO_BROKER_ERRNOS = {errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH,
                     errno.EHOSTDOWN, errno.ETIMEDOUT}


@dataclass(frozen=True)
class Diagnosis:
    message: str  # one line: the cause and the fix
    answered: bool  # something answered at host:port (retry with backoff, not probing)
    level: str = "error"  # "warning" for a broker that is simply away


def _where(config: MqttConfig) -> str:
    return f"{config.host}:{config.port}"


def _ca(config: MqttConfig) -> str:
    ca = config.tls.ca if config.tls is not None else None
    return (f"the CA file {ca} (mqtt.tls.ca or --mqtt-ca)" if ca is not None
            else "the system's trusted CAs (no mqtt.tls.ca or --mqtt-ca given)")


def connect_failure(err: BaseException, config: MqttConfig, outbox: str) -> Diagnosis:
    """What the exception of a failed connection attempt (TCP connect, TLS handshake) means."""
    where = _where(config)
    if isinstance(err, ssl.SSLCertVerificationError):
        reason = err.verify_message or str(err)
        if err.verify_code in _NAME_MISMATCH:
            return Diagnosis(
                f"MQTT: the TLS certificate of {where} is not for the name {config.host!r} "
                f"({reason}): connect by a name the certificate holds (its subjectAltName) or "
                f"issue the broker a certificate for {config.host!r}; alarms wait in the "
                f"outbox {outbox}", answered=True)
        return Diagnosis(
            f"MQTT: the TLS certificate of {where} failed verification ({reason}) against "
            f"{_ca(config)}: give the CA that signed the broker's certificate; alarms wait in "
            f"the outbox {outbox}", answered=True)
    if config.use_tls and (isinstance(err, ssl.SSLError | ConnectionResetError |
                                      BrokenPipeError)):
        return Diagnosis(
            f"MQTT: the TLS handshake with {where} failed ({err}): if the port is a plain MQTT "
            f"listener, use mqtt://{where} (or the broker's TLS port, usually 8883); else "
            f"check mqtt.tls (ca, cert, key) against the broker's TLS settings; alarms wait in "
            f"the outbox {outbox}", answered=True)
    no_broker = (isinstance(err, ConnectionRefusedError | TimeoutError | socket.timeout)
                 or (isinstance(err, OSError) and err.errno in _NO_BROKER_ERRNOS))
    if isinstance(err, socket.gaierror):  # retried soon too: the resolver may be restarting
        return Diagnosis(f"MQTT: cannot resolve the broker's host name {config.host!r} "
                         f"({err}): fix the host in mqtt.url or --mqtt; alarms wait in the "
                         f"outbox {outbox}", answered=False)
    return Diagnosis(
        f"MQTT: cannot reach {where} ({err}: broker down, wrong host or port); retrying every "
        f"{probe_seconds(config):g} s while nothing answers, alarms wait in the outbox "
        f"{outbox}", answered=not no_broker, level="warning")


def refusal(reason_code: ReasonCode, config: MqttConfig) -> str:
    """One line for a CONNACK that refuses the connection."""
    who = f"user {config.username!r}" if config.username else "an anonymous client"
    name = reason_code.getName().lower()
    if "user name or password" in name or "not authorized" in name:
        if config.username is None:
            fix = ("the broker refuses anonymous clients: give a user name (mqtt.username or "
                   "--mqtt-username) and its password (mqtt.password_file or "
                   "--mqtt-password-file)")
        else:
            fix = ("check the password (mqtt.password_env / password_file or "
                   "--mqtt-password-env / --mqtt-password-file) and that the broker's password "
                   "file has this user (Mosquitto answers a wrong password with 'not "
                   "authorised' in MQTT 3.1.1)")
        return (f"MQTT: {_where(config)} refused the connection ({reason_code}) for {who}: "
                f"{fix}")
    return (f"MQTT: {_where(config)} refused the connection ({reason_code}) for {who}: check "
            "the broker's settings and log for this client")


def plain_at_tls(config: MqttConfig) -> str:
    where = _where(config)
    return (f"MQTT: {where} speaks TLS, and the broker was given as mqtt:// (plain TCP): use "
            f"mqtts://{where}, with --mqtt-ca FILE or mqtt.tls.ca for a private CA")


def _unverified_context() -> ssl.SSLContext:
    """A TLS client context for probes: the broker's certificate is not checked (the probe
    asks what the broker does, not whether to trust it)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def speaks_tls(host: str, port: int, timeout_s: float = 2.0) -> bool:
    """Whether ``host:port`` completes a TLS handshake (its certificate is not checked)."""
    context = _unverified_context()
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as sock, \
                context.wrap_socket(sock, server_hostname=host):
            return True
    except (OSError, ValueError):
        return False


def client_certificate_refusal(config: MqttConfig, timeout_s: float = 2.0) -> str | None:
    """One line when the broker closed a TLS connection because of our client certificate
    (mutual TLS: none given, or one it does not trust), else None.

    With TLS 1.3 the broker's "certificate required" alert comes after the handshake, so paho
    sees only a connection closed before any answer; a second handshake with the same
    certificate (or none) and one read tells."""
    tls = config.tls
    context = _unverified_context()
    try:
        if tls is not None and tls.cert is not None:
            context.load_cert_chain(str(tls.cert), str(tls.key) if tls.key else None)
        with socket.create_connection((config.host, config.port), timeout=timeout_s) as sock, \
                context.wrap_socket(sock, server_hostname=config.host) as wrapped:
            wrapped.recv(1)
    except ssl.SSLError as err:
        alert = str(err).lower()
        ours = tls is not None and tls.cert is not None
        # Mosquitto answers a missing certificate with "certificate required" (TLS 1.3), and
        # one from a CA it does not trust with "unknown ca", "bad certificate" or, when the
        # verification fails inside its signature check, "decrypt error".
        if not ("certificate" in alert or "unknown ca" in alert
                or (ours and "alert" in alert)):
            return None
        where = _where(config)
        if tls is None or tls.cert is None:
            return (f"MQTT: {where} wants a client certificate (mutual TLS) and none is "
                    "configured: set mqtt.tls.cert and mqtt.tls.key to a certificate and key "
                    "signed by a CA the broker trusts")
        return (f"MQTT: {where} refused the client certificate {tls.cert} ({err.reason}): "
                "give mqtt.tls.cert and mqtt.tls.key signed by a CA the broker trusts (its "
                "cafile), and not expired")
    except (OSError, ValueError):
        return None
    return None


def probe_seconds(config: MqttConfig) -> float:
    """The delay between tries while nothing answers (never longer than the backoff's cap)."""
    return min(config.reconnect_probe_s, config.reconnect_max_s)
