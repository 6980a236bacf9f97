"""``maskproxy serve``: the HTTP API, the pages, and the rooms behind them (aiohttp + aiortc).

API (JSON; every error is ``{"error": "..."}``):

* ``POST /api/rooms`` (``Authorization: Bearer <api key>``) -> 201 room and links
* ``POST /api/rooms/{room}/offer`` ``{"token", "role": "patient"|"doctor", "sdp", "type": "offer"}`` ->
  ``{"sdp", "type": "answer", "role"}``; a token of the other role gets 403
* ``GET /api/rooms/{room}`` (``Authorization: Bearer <room token>``) -> who is connected, mask fps,
  dropped frames, latency, and the token's ``role``
* ``GET /api/rooms/{room}/ice`` (room token) -> ICE servers for that room's pages (short-lived TURN credentials)
* ``DELETE /api/rooms/{room}`` (API key) -> 200, every peer closed

Tokens never travel in a URL: the links carry them in the fragment (``/patient#room=R&token=T``), which
browsers do not send, and an API request with ``token`` in its query string is refused (401).

Where the consults live is the :class:`~proxy.consult.backend.Backend`'s business: this process (the
default) or, with ``--cluster``, actors on other machines (``proxy.cluster``, injected by the command line);
the handlers only await its calls, and a consult that cannot be reached now gets 503.

Operations: ``/healthz`` (the process answers, open to all), ``/readyz`` (it can take a new consult) and
``/metrics`` (Prometheus), these two with ``Authorization: Bearer <metrics_token>`` or, when no
metrics_token is set, from loopback only. API calls are rate-limited per client address (behind
``trusted_proxies``, the forwarded one), and calls carrying a valid room token per room; bodies over
the configured size get 413. Client input never gets a 5xx. Every response carries the security headers
of :mod:`proxy.consult.headers`.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import json
import logging
import secrets
import ssl
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from proxy.avatar.renderer import rasterise_inline
from proxy.consult import aiortc_speedups
from proxy.consult.backend import AtCapacity, Backend, Consult, Gone, LocalBackend, Unavailable
from proxy.consult.config import Config
from proxy.consult.headers import security_headers
from proxy.consult.ice import ice_servers, static_turn_for_pages
from proxy.consult.limits import ClientAddresses, RateLimiter
from proxy.consult.metrics import Metrics
from proxy.consult.rooms import DOCTOR, PATIENT, OfferError, RoomClosed, RoomRegistry
from proxy.resources import WEB

log = logging.getLogger(__name__)

REGISTRY = web.AppKey("registry", RoomRegistry)  #: the embedded backend's rooms (absent in cluster mode)
BACKEND = web.AppKey("backend", Backend)
CONFIG = web.AppKey("config", Config)
METRICS = web.AppKey("metrics", Metrics)
ADDRESSES = web.AppKey("addresses", ClientAddresses)
LIMITER = web.AppKey("limiter", RateLimiter)
READY = web.AppKey("ready", dict)
MAX_SDP = 32 * 1024
#: Longest credential (API key, room or metrics token) looked at; ours are far shorter.
MAX_TOKEN = 256
#: Headers that say a request came through a proxy (so its loopback peer is not the client).
FORWARDING_HEADERS = ("X-Forwarded-For", "Forwarded", "X-Real-IP")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
#: Builds the app's backend from its settings and metrics (default: :class:`LocalBackend`).
BackendFactory = Callable[[Config, Metrics], Backend]


def error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every failure of an API call is JSON with a clear message, never a stack trace; API calls are
    rate-limited and may not carry a token in their query string."""
    api = request.path.startswith("/api/")
    response = await _json_errors(request, handler, api)
    if api:
        request.app[METRICS].requests.labels("429" if response.status == 429 else f"{response.status // 100}xx").inc()
    return response


async def _json_errors(request: web.Request, handler: Handler, api: bool) -> web.StreamResponse:
    try:
        if api:
            if not request.app[LIMITER].allow(await _budget(request)):
                return error(429, "too many requests; slow down")
            if any(name.lower() == "token" for name in request.query):
                return error(401, "a token in the URL is refused: send it as Authorization: Bearer <token>")
        return await handler(request)
    except web.HTTPRequestEntityTooLarge:
        return error(413, "request body too large")
    except web.HTTPException as exc:
        if not api or exc.status < 400:
            raise
        return error(exc.status, exc.reason)
    except (AtCapacity, Unavailable) as exc:  # our side cannot serve it now; the pages retry
        return error(503, str(exc))
    except Gone:
        return error(404, "no such room")
    except asyncio.CancelledError:
        raise
    except (UnicodeError, RecursionError) as exc:
        # Input no check above foresaw (text that is not Unicode, nesting too deep): the client's fault, so 4xx;
        # logged in full in case it is a fault of ours after all.
        log.warning("malformed input on %s %s (%s)", request.method, request.path, type(exc).__name__, exc_info=True)
        return error(400, "malformed request")
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return error(500, "internal error")


async def _security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: the security headers on every response, HSTS when this process serves TLS."""
    response.headers.update(security_headers(tls=request.secure))
    if request.path.startswith("/api/"):
        response.headers.setdefault("Cache-Control", "no-store")


def _plausible_token(value: object) -> bool:
    """A credential we could have issued: printable ASCII of sane length (anything else is not compared)."""
    return isinstance(value, str) and 0 < len(value) <= MAX_TOKEN and value.isascii() and value.isprintable()


def _bearer(request: web.Request, what: str) -> str | web.Response:
    """The credential of ``Authorization: Bearer <credential>``, or a 401 that says what is missing."""
    header = request.headers.get("Authorization", "")
    if not header.startswith("Bearer ") or not header[7:].strip():
        return error(401, f"missing {what} (Authorization: Bearer <{what}>)")
    credential = header[7:].strip()
    if not _plausible_token(credential):
        return error(401, "malformed Authorization header")
    return credential


def _check_api_key(request: web.Request) -> web.Response | None:
    key = _bearer(request, "API key")
    if isinstance(key, web.Response):
        return key
    if not hmac.compare_digest(key.encode(), (request.app[CONFIG].api_key or "").encode()):
        return error(403, "wrong API key")
    return None


async def _json_body(request: web.Request) -> dict[str, Any] | web.Response:
    if request.content_length is not None and request.content_length > request.app[CONFIG].max_body:
        return error(413, "request body too large")
    raw = await request.read()
    try:
        body = json.loads(raw.decode("utf-8"))
        json.dumps(body, ensure_ascii=False).encode("utf-8")  # rejects lone surrogates ("\ud800") anywhere
    except (UnicodeError, json.JSONDecodeError):
        return error(400, "body is not valid JSON (UTF-8 text, no lone surrogates)")
    except RecursionError:
        return error(400, "body is not valid JSON (nested too deeply)")
    if not isinstance(body, dict):
        return error(400, "body must be a JSON object")
    return body


async def _budget(request: web.Request) -> str:
    """The rate-limit bucket of an API request: its room's when it carries a valid room token (so a flood from
    elsewhere cannot lock a consult out), else its client's address (per /64 for IPv6)."""
    room_id = request.match_info.get("room")
    if request.method == "DELETE":
        room_id = None  # carries the API key, never a room token: the key is not shown to a room
    try:
        room = await request.app[BACKEND].find(room_id) if room_id else None
        if room is not None:
            token = _bearer(request, "room token")
            if isinstance(token, web.Response):
                token = await _offer_token(request)
            if _plausible_token(token) and await room.role_for(token) is not None:  # type: ignore[arg-type]
                return f"room:{room.id}"
    except (Unavailable, Gone):
        pass  # counted by address meanwhile; the handler answers 503 or 404
    addresses = request.app[ADDRESSES]
    return addresses.key(addresses.client(request.remote, request.headers.getall("X-Forwarded-For", ())))


async def _offer_token(request: web.Request) -> object:
    """The token in an offer's JSON body (read once; the handler gets the same bytes again), or None."""
    if request.method != "POST" or not request.path.endswith("/offer"):
        return None
    if request.content_length is None or request.content_length > request.app[CONFIG].max_body:
        return None
    try:
        body = json.loads(await request.read())
    except (ValueError, RecursionError, web.HTTPException):
        return None
    return body.get("token") if isinstance(body, dict) else None


def _base_url(request: web.Request) -> str:
    configured = request.app[CONFIG].public_url
    return configured.rstrip("/") if configured else f"{request.scheme}://{request.host}"


async def create_room(request: web.Request) -> web.Response:
    denied = _check_api_key(request)
    if denied:
        return denied
    room = await request.app[BACKEND].create()  # AtCapacity: 503
    base = _base_url(request)
    return web.json_response({
        "room": room.room,
        "patient_token": room.patient_token,
        "doctor_token": room.doctor_token,
        # The fragment is never sent to a server (not to us, a reverse proxy's log, or a Referer).
        "patient_url": f"{base}/patient#room={room.room}&token={room.patient_token}",
        "doctor_url": f"{base}/doctor#room={room.room}&token={room.doctor_token}",
    }, status=201)


async def _room(request: web.Request) -> Consult | web.Response:
    room = await request.app[BACKEND].find(request.match_info["room"])
    return room if room is not None else error(404, "no such room")


async def _role(room: Consult, token: object) -> str | web.Response:
    if not isinstance(token, str) or not token:
        return error(401, "missing token")
    if not _plausible_token(token):
        return error(401, "malformed token")
    role = await room.role_for(token)
    return role if role is not None else error(403, "wrong token for this room")


async def offer(request: web.Request) -> web.Response:
    room = await _room(request)
    if isinstance(room, web.Response):
        return room
    body = await _json_body(request)
    if isinstance(body, web.Response):
        return body
    role = await _role(room, body.get("token"))
    if isinstance(role, web.Response):
        return role
    declared = body.get("role")
    if not isinstance(declared, str) or declared not in (PATIENT, DOCTOR):
        return error(400, 'role must be "patient" or "doctor": the page that sends the offer')
    if declared != role:  # e.g. the doctor's link opened on the patient page: its camera must not become "the doctor's"
        return error(403, f"this link is for the {role}'s page, not the {declared}'s: "
                          f"open the {declared} link of this consult")
    sdp, kind = body.get("sdp"), body.get("type")
    if kind != "offer":
        return error(400, 'type must be "offer"')
    if not isinstance(sdp, str) or not sdp.strip():
        return error(400, "sdp must be a non-empty string")
    if len(sdp) > MAX_SDP:
        return error(413, f"SDP too large (at most {MAX_SDP} characters)")
    if not sdp.lstrip().startswith("v=0"):
        return error(400, "malformed SDP")
    try:
        answer = await room.answer(role, sdp)
    except RoomClosed:
        return error(404, "no such room")
    except OfferError as exc:
        return error(400, str(exc))
    return web.json_response({"sdp": answer.sdp, "type": answer.type, "role": role})


async def _room_reader(request: web.Request) -> Consult | web.Response:
    """The room of a room-scoped read, authenticated by ``Authorization: Bearer <room token>`` (either role)."""
    room = await _room(request)
    if isinstance(room, web.Response):
        return room
    token = _bearer(request, "room token")
    if isinstance(token, web.Response):
        return token
    role = await _role(room, token)
    return role if isinstance(role, web.Response) else room


async def room_state(request: web.Request) -> web.Response:
    """The room state, and ``role``: whose link the token is, so that a page refuses a link of the other role
    when it loads, before it asks for the camera."""
    room = await _room_reader(request)
    if isinstance(room, web.Response):
        return room
    token = _bearer(request, "room token")
    role = await room.role_for(token) if isinstance(token, str) else None
    return web.json_response({**await room.state(), "role": role})


async def room_ice(request: web.Request) -> web.Response:
    """ICE servers for this room's pages: STUN, and TURN only with short-lived REST credentials for this room."""
    room = await _room_reader(request)
    if isinstance(room, web.Response):
        return room
    return web.json_response({"ice_servers": ice_servers(request.app[CONFIG], room.id)},
                             headers={"Cache-Control": "no-store"})


async def delete_room(request: web.Request) -> web.Response:
    denied = _check_api_key(request)
    if denied:
        return denied
    if not await request.app[BACKEND].remove(request.match_info["room"]):
        return error(404, "no such room")
    return web.json_response({"room": request.match_info["room"], "closed": True})


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"ok": True})


def _check_operator(request: web.Request) -> web.Response | None:
    """``/readyz`` and ``/metrics``: ``Bearer <metrics_token>``; without one configured, loopback clients only
    (a request that came through a reverse proxy on this machine is not a loopback client)."""
    expected = request.app[CONFIG].metrics_token
    if expected:
        token = _bearer(request, "metrics token")
        if isinstance(token, web.Response):
            return token
        if not hmac.compare_digest(token.encode(), expected.encode()):
            return error(403, "wrong metrics token")
        return None
    peer = request.remote or ""
    try:
        loopback = ipaddress.ip_address(peer.split("%")[0]).is_loopback
    except ValueError:
        loopback = False
    if not loopback or any(name in request.headers for name in FORWARDING_HEADERS):
        return error(403, "only from this machine; set metrics_token to read it from elsewhere")
    return None


async def readyz(request: web.Request) -> web.Response:
    """Ready when started (models and renderer checked) and below capacity (in cluster mode: a free consult slot
    somewhere in the cluster)."""
    denied = _check_operator(request)
    if denied:
        return denied
    ready = request.app[READY]
    load = await request.app[BACKEND].load()
    body = {"ready": bool(ready.get("started")) and load.free > 0, "consults": load.consults,
            "capacity": load.capacity, "free": load.free, "renderer": ready.get("renderer", "unknown"), **load.detail}
    return web.json_response(body, status=200 if body["ready"] else 503)


async def metrics(request: web.Request) -> web.Response:
    denied = _check_operator(request)
    if denied:
        return denied
    await request.app[BACKEND].refresh_metrics()
    return web.Response(body=request.app[METRICS].render(), content_type="text/plain",
                        headers={"Cache-Control": "no-store"})


def _page(name: str) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def handler(request: web.Request) -> web.StreamResponse:
        return web.FileResponse(WEB / name, headers={"Cache-Control": "no-cache"})
    return handler


def create_app(config: Config, backend: BackendFactory | None = None) -> web.Application:
    """The aiohttp application. With the default backend its rooms start and close with it; a cluster
    ``backend`` keeps them elsewhere, and they outlive this process."""
    if not config.api_key:
        raise ValueError("config.api_key must be set")
    aiortc_speedups.install()
    app = web.Application(middlewares=[json_errors], client_max_size=config.max_body)
    app[CONFIG] = config
    app[METRICS] = Metrics()
    app[LIMITER] = RateLimiter(config.rate_limit, config.rate_burst)
    app[ADDRESSES] = ClientAddresses(config.trusted_proxies)
    app[READY] = {}
    app[BACKEND] = (backend or LocalBackend)(config, app[METRICS])
    if isinstance(app[BACKEND], LocalBackend):
        app[REGISTRY] = app[BACKEND].registry
    app.router.add_post("/api/rooms", create_room)
    app.router.add_post("/api/rooms/{room}/offer", offer)
    app.router.add_get("/api/rooms/{room}", room_state)
    app.router.add_delete("/api/rooms/{room}", delete_room)
    app.router.add_get("/api/rooms/{room}/ice", room_ice)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    from proxy.consult.recording_api import add_routes as add_recording_routes  # (it imports this module)
    add_recording_routes(app)
    app.router.add_get("/", _page("index.html"))
    app.router.add_get("/patient", _page("patient.html"))
    app.router.add_get("/doctor", _page("doctor.html"))
    app.router.add_static("/static/", WEB, show_index=False, follow_symlinks=False)

    async def on_startup(app: web.Application) -> None:
        renderer = await app[BACKEND].start()
        app[READY].update(started=True, renderer=renderer)

    async def on_shutdown(app: web.Application) -> None:
        await app[BACKEND].close()

    app.on_startup.append(on_startup)
    app.on_shutdown.append(on_shutdown)
    app.on_response_prepare.append(_security_headers)
    return app


def self_signed_certificate(hosts: list[str], folder: Path) -> tuple[Path, Path]:
    """A certificate for ``hosts`` valid 30 days, and its key (mode 0600), written to ``folder``."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = []
    for host in dict.fromkeys(hosts):
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "maskproxy self-signed")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
                   .public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(minutes=5))
                   .not_valid_after(now + datetime.timedelta(days=30))
                   .add_extension(x509.SubjectAlternativeName(names), critical=False)
                   .sign(key, hashes.SHA256()))
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.touch(mode=0o600)
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def ssl_context(config: Config) -> ssl.SSLContext | None:
    """The server's TLS context, or None for plain HTTP.

    A self-signed key is written (mode 0600, in a private temporary folder) only for as long as
    OpenSSL takes to load it, then deleted: the context holds it from then on, and a server that is
    killed leaves no key behind.
    """
    if config.self_signed:
        with tempfile.TemporaryDirectory(prefix="maskproxy-tls-") as folder:
            cert, key = self_signed_certificate([config.host, "localhost", "127.0.0.1"], Path(folder))
            return _load_tls(cert, key)
    if config.cert and config.key:
        return _load_tls(Path(config.cert), Path(config.key))
    return None


def _load_tls(cert: Path, key: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(str(cert), str(key))
    except (OSError, ssl.SSLError) as exc:
        raise ValueError(f"cannot load the TLS certificate or key: {exc}") from None
    return context


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def startup_warnings(config: Config, tls: bool) -> list[str]:
    """What an operator must hear before the first consult: settings that leave something exposed."""
    warnings = []
    if not tls and not _loopback(config.host):
        warnings.append(
            f"serving plain HTTP on {config.host or 'every address'}: browsers will refuse the camera and "
            "microphone on these pages (they allow them only over https:// or on localhost), and room tokens "
            "and the API key travel in clear. Give --cert/--key or --self-signed, or listen on 127.0.0.1 "
            "behind a TLS reverse proxy.")
    if static_turn_for_pages(config):
        warnings.append(
            "TURN has a static password (turn_username/turn_password): the proxy's own connections use it, but "
            "pages get STUN only, never the password, so a browser that needs a relay cannot connect. Set "
            "turn_secret (coturn use-auth-secret) to hand pages short-lived credentials instead.")
    return warnings


def run_server(config: Config, backend: BackendFactory | None = None) -> int:
    """Serve until SIGINT/SIGTERM; prints the URL and, when generated, the API key (never a given one)."""
    rasterise_inline()
    generated = not config.api_key
    if generated:
        config.api_key = secrets.token_urlsafe(32)
    context = ssl_context(config)
    app = create_app(config, backend)
    scheme = "https" if context else "http"
    print(f"maskproxy serving on {scheme}://{config.host}:{config.port}/", flush=True)
    if generated:
        print(f"API key (generated; set MASKPROXY_API_KEY to choose one): {config.api_key}", flush=True)
    for warning in startup_warnings(config, tls=context is not None):
        log.warning("%s", warning)
    web.run_app(app, host=config.host, port=config.port, ssl_context=context, print=None,
                shutdown_timeout=3.0, access_log=None, handle_signals=True)
    return 0
