"""The operator's web page: an aiohttp server in its own thread with its own event loop.

    GET  /                         overview: every stream, live over server-sent events
    GET  /streams/NAME             a stream's score timeline with thresholds and alarm marks
    GET  /episodes, /episodes/ID   alarm episodes; one episode: explanation, clip, spectrogram
    GET  /clips/ID.wav, ID.png     the evidence clip and its spectrogram (PNG, server-side)
    GET  /clips/ID/front-end.png, /clips/ID/reference.png
                                   the clip beside its nearest normal reference: both as the
                                   bundle's thumbnails, on one colour scale
    GET  /api/overview, /api/live (SSE), /api/streams/NAME/timeline, /api/episodes
    POST /episodes/ID/acknowledge  written to the actions journal (CSRF token required)
    POST /episodes/ID/not-a-fault  the episode's clip enrolled as normal (edge.feedback, through
                                   the daemon; CSRF token required; kept in the actions journal)
    GET/POST /login, POST /logout  when a password is configured

Security: bound to 127.0.0.1 unless configured; another address needs a password
(``WebConfig``: from the environment or a file, never argv), checked at /login, which
sets an HttpOnly SameSite=Strict session cookie. Every POST needs the session's CSRF token.
Pages send a Content-Security-Policy that allows only this server's own scripts and media.
The page reads ``WebState`` and ``Health`` snapshots only: it never blocks the scoring thread.
"""

from __future__ import annotations

import asyncio
import hmac
import html
import json
import logging
import math
import secrets
import threading
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiohttp import web

from edge.bundle.load import Bundle
from edge.config import LOOPBACK_HOSTS
from edge.errors import BadInput
from edge.features import thumbnail_frames
from edge.feedback import FeedbackAck
from edge.health import Health
from edge.outputs.events import utc_iso
from edge.web.spectrogram import (
    ReferencePicture,
    clip_thumbnail,
    nearest_reference,
    spectrogram_png,
    thumbnails_png,
)
from edge.web.state import Episode, WebState, enrollment_status

logger = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
COOKIE = "asd_edge_session"
LIVE_INTERVAL_S = 1.0
FEEDBACK_WAIT_S = 120.0  # the longest a "not a fault" click waits for the daemon's answer
# an episode's missing clip is "being recorded" this long after the raise (the post-roll is at
# most 120 s), and "removed by the clip limits" after
CLIP_PENDING_S = 180.0
WILDCARD_HOSTS = ("0.0.0.0", "::", "")  # every address: no name a subscriber could use

# (episode id, reply): asks the daemon for "not a fault" (Daemon.request_feedback); the reply
# comes on another thread
FeedbackRequest = Callable[[str, Callable[[FeedbackAck], None]], None]
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self'; media-src 'self'; "
                               "style-src 'self'; script-src 'self'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff", "Referrer-Policy": "same-origin"}


def e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def fmt(value: float | None, digits: int = 4) -> str:
    return "–" if value is None or not math.isfinite(value) else f"{value:.{digits}g}"


class WebServer:
    """Serves ``state`` and ``health`` at http://host:port/; ``port=0`` picks a free port."""

    def __init__(self, state: WebState, health: Health, host: str = "127.0.0.1",
                 port: int = 8090, password: str | None = None,
                 public_url: str | None = None, feedback: FeedbackRequest | None = None,
                 bundles: Mapping[str, Bundle] | None = None) -> None:
        """``feedback``: how the "not a fault" button reaches the daemon (None: no button);
        ``bundles``: the daemon's bundles by machine (``Daemon.bundles``, which "not a fault"
        updates in place), for the enrollment status and the reference spectrograms."""
        if host not in LOOPBACK_HOSTS and not password:
            raise BadInput(f"the web page on {host} would be open to other machines: set "
                           "web.password_env or web.password_file, or bind 127.0.0.1")
        self.state = state
        self.health = health
        self.host = host
        self.requested_port = port
        self.password = password
        self.public_url = public_url
        self.feedback = feedback
        self.bundles: Mapping[str, Bundle] = bundles if bundles is not None else {}
        self._sessions: dict[str, str] = {}  # session token -> CSRF token
        # episode id -> (the bundle, the PNGs of its clip and of its nearest reference)
        self._pairs: dict[str, tuple[Bundle, tuple[bytes, bytes]]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self._port = port
        self._stopping: asyncio.Event | None = None

    # -- life cycle ----------------------------------------------------------------------------

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        if self.public_url:
            return self.public_url.rstrip("/")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def links(self, episode_id: str) -> tuple[str, str]:
        """(clip URL, spectrogram URL) of an episode, as the alarm event carries them
        (``make_event``): under ``public_url`` when set, else the bound host and port."""
        return f"{self.url}/clips/{episode_id}.wav", f"{self.url}/clips/{episode_id}.png"

    def start(self) -> WebServer:
        """Bind (a port in use is a ``BadInput``) and serve from a thread of its own."""
        ready = threading.Event()
        failure: list[BaseException] = []

        def serve() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                loop.run_until_complete(self._bind())
            except BaseException as err:  # noqa: BLE001  # reported to start()
                failure.append(err)
                ready.set()
                loop.close()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                loop.run_until_complete(self._cleanup())
                loop.close()

        self._thread = threading.Thread(target=serve, name="asd-edge-web", daemon=True)
        self._thread.start()
        ready.wait()
        if failure:
            err = failure[0]
            reason = err.strerror if isinstance(err, OSError) else str(err)
            raise BadInput(f"cannot serve the web page on {self.host}:{self.requested_port} "
                           f"({reason}); pick another web.port (--web PORT) or disable it"
                           ) from err
        if self.host not in LOOPBACK_HOSTS:
            logger.warning("the web page is served on %s, reachable from other machines "
                           "(password required)", self.host)
        if self.host in WILDCARD_HOSTS and not self.public_url:
            logger.warning("the alarm events link clips under %s, which other machines cannot "
                           "open: set web.public_url (e.g. http://box-1.plant:%d)", self.url,
                           self.port)
        logger.info("web page at %s", self.url)
        return self

    async def _bind(self) -> None:
        self._stopping = asyncio.Event()
        self._runner = web.AppRunner(self.app(), handle_signals=False, access_log=None,
                                     shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.requested_port)
        await site.start()
        server = getattr(site, "_server", None)
        sockets = getattr(server, "sockets", None) or []
        if sockets:
            self._port = int(sockets[0].getsockname()[1])

    async def _cleanup(self) -> None:
        if self._stopping is not None:
            self._stopping.set()
        if self._runner is not None:
            await self._runner.cleanup()

    def stop(self, timeout: float = 5.0) -> None:
        if self._loop is None or self._thread is None:
            return
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout)
        self._loop = self._thread = None

    # -- the application -----------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._security])
        app.add_routes([
            web.get("/", self.overview_page), web.get("/streams/{name}", self.stream_page),
            web.get("/episodes", self.episodes_page),
            web.get("/episodes/{id}", self.episode_page),
            web.post("/episodes/{id}/acknowledge", self.acknowledge),
            web.post("/episodes/{id}/not-a-fault", self.not_a_fault),
            web.get("/clips/{id}.wav", self.clip), web.get("/clips/{id}.png", self.spectrogram),
            web.get("/clips/{id}/front-end.png", self.clip_beside_reference),
            web.get("/clips/{id}/reference.png", self.reference_beside_clip),
            web.get("/api/overview", self.api_overview), web.get("/api/live", self.api_live),
            web.get("/api/streams/{name}/timeline", self.api_timeline),
            web.get("/api/episodes", self.api_episodes),
            web.get("/login", self.login_page), web.post("/login", self.login),
            web.post("/logout", self.logout), web.static("/static", STATIC)])
        return app

    def _session(self, request: web.Request) -> str | None:
        token = request.cookies.get(COOKIE)
        return token if token in self._sessions else None

    def _new_session(self, response: web.StreamResponse) -> str:
        token = secrets.token_urlsafe(32)
        self._sessions[token] = secrets.token_urlsafe(32)
        response.set_cookie(COOKIE, token, httponly=True, samesite="Strict", path="/")
        return token

    def _page_session(self, request: web.Request) -> str | None:
        """The request's session; on the box without a password, a new one for a first visit
        (give it to ``_page``, which sets its cookie, so the page's forms carry its token)."""
        session = self._session(request)
        if session is None and not self.password:
            session = secrets.token_urlsafe(32)
            self._sessions[session] = secrets.token_urlsafe(32)
        return session

    @web.middleware
    async def _security(self, request: web.Request, handler: Any) -> web.StreamResponse:
        public = request.path in ("/login",) or request.path.startswith("/static/")
        session = self._session(request)
        if self.password and session is None and not public:
            if request.method != "GET" or request.path.startswith(("/api/", "/clips/")):
                raise web.HTTPUnauthorized(text="log in first (POST /login with the password)")
            raise web.HTTPFound("/login")
        if request.method == "POST" and request.path != "/login":
            sent = (await request.post()).get("csrf") or request.headers.get("X-CSRF-Token")
            if session is None or not isinstance(sent, str) or not hmac.compare_digest(
                    sent, self._sessions[session]):
                raise web.HTTPForbidden(text="missing or wrong CSRF token: reload the page")
        response = await handler(request)
        if not response.prepared:
            response.headers.update(SECURITY_HEADERS)
        return response

    # -- pages ---------------------------------------------------------------------------------

    def _page(self, request: web.Request, title: str, body: str,
              page: str = "", session: str | None = None) -> web.Response:
        """The HTML page; ``session``: the one ``_page_session`` gave the body's forms."""
        response = web.Response(content_type="text/html")
        session = session or self._page_session(request)
        if session is not None and session != self._session(request):  # a first visit
            response.set_cookie(COOKIE, session, httponly=True, samesite="Strict", path="/")
        csrf = self._sessions.get(session or "", "")
        logout = ('<form method="post" action="/logout" class="logout">'
                  f'<input type="hidden" name="csrf" value="{e(csrf)}">'
                  '<button>Log out</button></form>') if self.password else ""
        node = self.health.node
        response.text = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{e(title)} · asd-edge {e(node)}</title>
<link rel="icon" href="/static/favicon.svg" type="image/svg+xml">
<link rel="stylesheet" href="/static/style.css">
<script src="/static/app.js" defer></script></head>
<body data-page="{e(page)}" data-csrf="{e(csrf)}">
<header><strong>asd-edge</strong> <span class="node">{e(node)}</span>
<nav><a href="/">Overview</a> <a href="/episodes">Alarm episodes</a></nav>{logout}</header>
<main>{body}</main></body></html>"""
        return response

    async def overview_page(self, request: web.Request) -> web.Response:
        data = self.state.overview(self.health.snapshot())
        rows = "".join(self._stream_row(s) for s in data["streams"])
        body = f"""<h1>Streams</h1>
<p class="system">Inference: <span id="provider">{e(data['provider'])}</span> ·
MQTT: <span id="mqtt">{e(data['mqtt'])}</span> ·
outbox: <span id="outbox">{e(data['outbox'])}</span>
· <a href="/episodes"><span id="episodes">{e(data['episodes'])}</span> alarm episodes</a></p>
<table id="streams"><thead><tr><th>Stream</th><th>Unit</th><th>State</th><th>Score</th>
<th>Threshold</th><th>Live</th><th>Capture</th></tr></thead><tbody>{rows}</tbody></table>
{self._enrollment()}"""
        return self._page(request, "Overview", body, "overview")

    def _enrollment(self) -> str:
        """The enrollment status: per unit, its normal references per domain and the
        false-alarm rate its thresholds promise (``asd-edge bundle verify``'s words)."""
        rows = "".join(
            f'<tr data-unit="{e(x["machine"])}/{e(x["section"])}">'
            f'<td>{e(x["machine"])} section {e(x["section"])}</td>'
            f'<td class="refs-source">{x["references"]["source"]}</td>'
            f'<td class="refs-target">{x["references"]["target"]}</td>'
            f'<td class="refs-enrolled">{x["enrolled"]}</td>'
            f'<td>{fmt(x["threshold"])}</td>'
            f'<td class="promise">{"<br>".join(e(line) for line in x["promise"])}</td></tr>'
            for machine in sorted(self.bundles)
            for x in enrollment_status(self.bundles[machine]))
        if not rows:
            return ""
        return ('<h2>Enrollment</h2><table id="enrollment"><thead><tr><th>Unit</th>'
                '<th>Source references</th><th>Target references</th><th>Enrolled here</th>'
                '<th>Threshold</th><th>False-alarm promise</th></tr></thead>'
                f'<tbody>{rows}</tbody></table>')

    def _stream_row(self, s: dict[str, Any]) -> str:
        capture = s["capture"]
        trouble = ", ".join(f"{k} {v}" for k, v in capture.items() if v) or "clean"
        state_class = s["state"].replace(" ", "-")
        return (f'<tr data-stream="{e(s["name"])}">'
                f'<td><a href="/streams/{e(s["name"])}">{e(s["name"])}</a></td>'
                f'<td>{e(s["machine"])} section {e(s["section"])}</td>'
                f'<td><span class="state {e(state_class)}">{e(s["label"])}</span></td>'
                f'<td class="score">{fmt(s["score"])}</td>'
                f'<td class="threshold">{fmt(s["threshold"])}</td>'
                f'<td><canvas class="spark" width="240" height="48"></canvas></td>'
                f'<td class="capture">{"connected" if s["connected"] else "disconnected"}, '
                f'{e(trouble)}</td></tr>')

    async def stream_page(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in self.state.streams:
            raise web.HTTPNotFound(text=f"no stream {name!r}")
        view = self.state.streams[name]
        body = f"""<h1>{e(name)}</h1>
<p>{e(view.machine)} section {e(view.section)} · threshold {fmt(view.threshold)} ·
clear {fmt(view.clear_threshold)}</p>
<p>Last <select id="hours"><option value="0.25">15 min</option><option value="1">1 h</option>
<option value="3" selected>3 h</option></select> of hop scores; red lines: alarm raised,
green: cleared; dashed: threshold and clear level.</p>
<canvas id="timeline" width="1100" height="320" data-stream="{e(name)}"></canvas>"""
        return self._page(request, name, body, "stream")

    async def episodes_page(self, request: web.Request) -> web.Response:
        rows = "".join(
            f'<tr><td><a href="/episodes/{e(x["id"])}">{e(x["time"])}</a></td>'
            f'<td>{e(x["stream"])}</td>'
            f'<td>{"open" if x["open"] else fmt(x["duration_s"], 3) + " s"}</td>'
            f'<td>{fmt(x["peak"])}</td><td>{fmt(x["threshold"])}</td>'
            f'<td>{"yes" if x["acknowledged"] else ""}</td></tr>'
            for x in self.state.episode_list())
        body = ("<h1>Alarm episodes</h1><table id=\"episode-list\"><thead><tr><th>Raised</th>"
                "<th>Stream</th><th>Duration</th><th>Peak score</th><th>Threshold</th>"
                f"<th>Acknowledged</th></tr></thead><tbody>{rows}</tbody></table>"
                + ("" if rows else "<p>No alarms yet.</p>"))
        return self._page(request, "Alarm episodes", body, "episodes")

    def _episode(self, request: web.Request) -> Episode:
        episode = self.state.episode(request.match_info["id"])
        if episode is None:
            raise web.HTTPNotFound(text=f"no alarm episode {request.match_info['id']!r}")
        return episode

    async def episode_page(self, request: web.Request) -> web.Response:
        episode = self._episode(request)
        summary = episode.summary()
        raised = episode.raised
        explanation = "".join(
            f"<tr><th>{e(k)}</th><td><code>{e(json.dumps(v, default=str)[:600])}</code></td></tr>"
            for k, v in raised.explanation.items())
        clip = ""
        if raised.clip is not None and Path(raised.clip).exists():
            clip = (f'<h2>Evidence clip</h2><img id="spectrogram" alt="spectrogram of the clip" '
                    f'src="/clips/{e(episode.id)}.png"><br>'
                    f'<audio id="clip" controls preload="metadata" '
                    f'src="/clips/{e(episode.id)}.wav"></audio>'
                    f'<p class="path">{e(raised.clip)}</p>{self._beside_reference(episode)}')
        elif raised.clip is not None and _age_s(raised.time) < CLIP_PENDING_S:
            # the clip is written once the post-roll is in: no broken image meanwhile
            clip = ('<h2>Evidence clip</h2><p id="clip-pending">The clip is still being '
                    'recorded (it ends after the post-roll); this page reloads until it is '
                    'written.</p>')
        elif raised.clip is not None:
            clip = ('<h2>Evidence clip</h2><p id="clip-gone">The clip was removed by the clip '
                    f'limits (evidence.max_clips, max_age_days, max_megabytes): '
                    f'{e(raised.clip)}</p>')
        session = self._page_session(request)
        csrf = self._sessions.get(session or "", "")
        if episode.acknowledged:
            ack = (f'<p id="acknowledged">Acknowledged {e(episode.acknowledged["time"])} by '
                   f'{e(episode.acknowledged["by"])}</p>')
        else:
            ack = (f'<form method="post" action="/episodes/{e(episode.id)}/acknowledge" '
                   f'id="ack"><input type="hidden" name="csrf" value="{e(csrf)}">'
                   '<input name="note" placeholder="note (optional)" maxlength="500">'
                   '<button>Acknowledge</button></form>')
        duration = "still open" if summary["open"] else f"{fmt(summary['duration_s'], 3)} s"
        span = f"{utc_iso(raised.window.start_utc)} – {utc_iso(raised.window.end_utc)}"
        ack += self._feedback_part(episode, summary["open"], csrf)
        body = f"""<h1>Alarm on {e(summary['stream'])}</h1>
<table class="facts"><tr><th>Raised</th><td>{e(summary['time'])}</td></tr>
<tr><th>Duration</th><td id="duration">{e(duration)}</td></tr>
<tr><th>Peak score</th><td>{fmt(summary['peak'])} (threshold {fmt(raised.threshold)})</td></tr>
<tr><th>Window</th><td>{e(span)}</td></tr>
<tr><th>Episode</th><td><code>{e(episode.id)}</code></td></tr></table>
{ack}{clip}<h2>Explanation</h2><table class="explanation">{explanation}</table>"""
        return self._page(request, "Alarm episode", body, "episode", session)

    def _reference(self, episode: Episode) -> ReferencePicture:
        raised = episode.raised
        return nearest_reference(self.bundles.get(raised.machine), raised.explanation,
                                 int(raised.section))

    def _beside_reference(self, episode: Episode) -> str:
        """The clip beside its nearest normal reference, or why the reference is not shown."""
        picture = self._reference(episode)
        head = "<h2>Beside its nearest normal reference</h2>"
        if picture.thumbnail is None:
            return f'{head}<p id="reference-missing">Not shown: {e(picture.reason)}.</p>'
        reference = picture.reference or {}
        attributes = ", ".join(f"{k} {v}" for k, v in reference.get("attributes", {}).items())
        bundle = self.bundles[episode.raised.machine]
        seconds = thumbnail_frames(bundle.system.front_end) * \
            bundle.system.front_end.hop_length / bundle.system.front_end.sample_rate
        return (f'{head}<p class="hint">Both in the model\'s front end, on one colour scale, '
                f'{seconds:.3g} s a column, low frequencies at the bottom.</p>'
                '<div class="beside"><figure><img id="clip-front-end" alt="the alarm clip" '
                f'src="/clips/{e(episode.id)}/front-end.png"><figcaption>this alarm\'s clip'
                '</figcaption></figure><figure><img id="reference-spectrogram" '
                f'alt="the nearest normal reference" src="/clips/{e(episode.id)}/reference.png">'
                f'<figcaption id="reference-name">nearest normal reference '
                f'<code>{e(reference.get("file"))}</code> ({e(reference.get("domain") or "source")}'
                f'{"; " + e(attributes) if attributes else ""})</figcaption></figure></div>')

    def _feedback_part(self, episode: Episode, still_open: bool, csrf: str) -> str:
        """The episode's "not a fault": what it did, why it was refused, or the button."""
        done = episode.not_a_fault
        if done is not None:
            return (f'<p id="not-a-fault">Not a fault: {e(done.get("clips_added"))} clip(s) '
                    f'enrolled as normal {e(done.get("time"))} via {e(done.get("via"))}; '
                    f'threshold {fmt(done.get("threshold_before"))} → '
                    f'{fmt(done.get("threshold_after"))}</p>')
        part = (f'<p id="feedback-error" class="error">Not a fault refused: '
                f'{e(episode.feedback_error)}</p>' if episode.feedback_error else "")
        if self.feedback is None or episode.raised.clip is None:
            return part
        if still_open:
            return part + ('<p class="hint">Once the episode clears, its clip can be marked '
                           '"not a fault" here.</p>')
        return part + (f'<form method="post" action="/episodes/{e(episode.id)}/not-a-fault" '
                       f'id="not-a-fault"><input type="hidden" name="csrf" value="{e(csrf)}">'
                       '<button title="enroll the clip as normal sound of this unit and '
                       'refit its thresholds">Not a fault</button></form>')

    # -- actions -------------------------------------------------------------------------------

    async def not_a_fault(self, request: web.Request) -> web.Response:
        """Ask the daemon to enroll the episode's clip as normal; wait for its answer."""
        episode = self._episode(request)
        if self.feedback is None:
            raise web.HTTPNotFound(text="operator feedback is not available in this run")
        who = "operator" if self.password else "local"
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[FeedbackAck] = loop.create_future()

        def settle(ack: FeedbackAck) -> None:
            if not answer.done():
                answer.set_result(ack)

        def reply(ack: FeedbackAck) -> None:  # the daemon's thread
            loop.call_soon_threadsafe(settle, ack)

        self.feedback(episode.id, reply)
        try:
            ack = await asyncio.wait_for(answer, FEEDBACK_WAIT_S)
        except TimeoutError:
            raise web.HTTPGatewayTimeout(text="the daemon has not answered yet; reload the "
                                              "episode in a minute") from None
        if ack.ok:
            self.state.feedback_done(episode.id, who, ack.feedback_id)
        else:
            self.state.feedback_refused(episode.id, who, ack.error or "refused")
        return _see_other(f"/episodes/{episode.id}")


    async def acknowledge(self, request: web.Request) -> web.Response:
        form = await request.post()
        who = "operator" if self.password else "local"
        note = str(form.get("note") or "")
        if self.state.acknowledge(request.match_info["id"], who, note) is None:
            raise web.HTTPNotFound(text=f"no alarm episode {request.match_info['id']!r}")
        return _see_other(f"/episodes/{request.match_info['id']}")

    async def login_page(self, request: web.Request) -> web.Response:
        if not self.password:
            raise web.HTTPFound("/")
        body = ('<h1>Log in</h1><form method="post" action="/login" id="login">'
                '<input type="password" name="password" autofocus autocomplete="current-password">'
                '<button>Log in</button></form>')
        return self._page(request, "Log in", body, "login")

    async def login(self, request: web.Request) -> web.Response:
        form = await request.post()
        given = str(form.get("password") or "")
        if not self.password or not hmac.compare_digest(given.encode(), self.password.encode()):
            await asyncio.sleep(1.0)  # slows guessing
            logger.warning("web: a failed login from %s", request.remote)
            raise web.HTTPUnauthorized(text="wrong password")
        response = _see_other("/")
        self._new_session(response)
        logger.info("web: login from %s", request.remote)
        return response

    async def logout(self, request: web.Request) -> web.Response:
        session = self._session(request)
        if session is not None:
            self._sessions.pop(session, None)
        response = _see_other("/login" if self.password else "/")
        response.del_cookie(COOKIE, path="/")
        return response

    # -- data ----------------------------------------------------------------------------------

    async def clip(self, request: web.Request) -> web.StreamResponse:
        path = self._clip_path(self._episode(request))
        return web.FileResponse(path, headers={"Content-Type": "audio/wav"})

    async def spectrogram(self, request: web.Request) -> web.Response:
        path = self._clip_path(self._episode(request))
        png = await asyncio.get_running_loop().run_in_executor(None, spectrogram_png, path)
        return web.Response(body=png, content_type="image/png",
                            headers={"Cache-Control": "max-age=3600"})

    async def clip_beside_reference(self, request: web.Request) -> web.Response:
        return await self._pair_png(request, 0)

    async def reference_beside_clip(self, request: web.Request) -> web.Response:
        return await self._pair_png(request, 1)

    async def _pair_png(self, request: web.Request, which: int) -> web.Response:
        """The clip's (0) or its nearest reference's (1) thumbnail, drawn as a pair."""
        episode = self._episode(request)
        path = self._clip_path(episode)
        picture = self._reference(episode)
        if picture.thumbnail is None:
            raise web.HTTPNotFound(text=f"no reference spectrogram: {picture.reason}")
        bundle = self.bundles[episode.raised.machine]
        cached = self._pairs.get(episode.id)
        if cached is None or cached[0] is not bundle:
            clip = await asyncio.get_running_loop().run_in_executor(
                None, clip_thumbnail, path, bundle.system.front_end)
            clip_png, reference_png = thumbnails_png(clip, picture.thumbnail)
            cached = (bundle, (clip_png, reference_png))
            self._pairs[episode.id] = cached
            while len(self._pairs) > 64:
                self._pairs.pop(next(iter(self._pairs)))
        return web.Response(body=cached[1][which], content_type="image/png",
                            headers={"Cache-Control": "no-cache"})

    def _clip_path(self, episode: Episode) -> Path:
        """The clip the episode's event names (never a path from the request)."""
        if episode.raised.clip is None:
            raise web.HTTPNotFound(text="this episode has no clip (evidence is off)")
        path = Path(episode.raised.clip)
        if not path.exists():
            raise web.HTTPNotFound(text="the clip is not written yet (it ends after the "
                                        "post-roll) or was removed by the clip limits")
        return path

    async def api_overview(self, request: web.Request) -> web.Response:
        return web.json_response(self.state.overview(self.health.snapshot()),
                                 dumps=_dumps)

    async def api_live(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                               "Cache-Control": "no-cache"})
        response.headers.update(SECURITY_HEADERS)
        await response.prepare(request)
        try:
            while self._stopping is None or not self._stopping.is_set():
                data = _dumps(self.state.overview(self.health.snapshot()))
                await response.write(f"data: {data}\n\n".encode())
                await asyncio.sleep(LIVE_INTERVAL_S)
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        return response

    async def api_timeline(self, request: web.Request) -> web.Response:
        try:
            hours = float(request.query.get("hours", "3"))
        except ValueError:
            raise web.HTTPBadRequest(text="hours must be a number, e.g. ?hours=3") from None
        data = self.state.timeline(request.match_info["name"], hours * 3600.0)
        if data is None:
            raise web.HTTPNotFound(text=f"no stream {request.match_info['name']!r}")
        return web.json_response(data, dumps=_dumps)

    async def api_episodes(self, request: web.Request) -> web.Response:
        return web.json_response(self.state.episode_list(), dumps=_dumps)


def _age_s(when: datetime) -> float:
    return (datetime.now(UTC) - when).total_seconds()


def _see_other(location: str) -> web.Response:
    return web.Response(status=303, headers={"Location": location})


def _dumps(value: Any) -> str:
    """JSON with NaN/inf as null (a stream before its first hop)."""
    def clean(x: Any) -> Any:
        if isinstance(x, float) and not math.isfinite(x):
            return None
        if isinstance(x, dict):
            return {k: clean(v) for k, v in x.items()}
        if isinstance(x, list | tuple):
            return [clean(v) for v in x]
        return x
    return json.dumps(clean(value))
