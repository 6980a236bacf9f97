"""``maskproxy serve``: the HTTP API, the pages, and the rooms behind them (aiohttp + aiortc).

API (JSON; every error is ``{"error": "..."}``):

* ``POST /api/rooms`` (``Authorization: Bearer <api key>``) -> 201 room and links
* ``POST /api/rooms/{room}/offer`` ``{"token", "sdp", "type": "offer"}`` -> ``{"sdp", "type": "answer"}``
* ``GET /api/rooms/{room}?token=...`` -> who is connected, mask fps, dropped frames, latency
* ``DELETE /api/rooms/{room}`` (API key) -> 200, every peer closed
* ``GET /api/config`` -> ICE servers for the pages
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from proxy.config import Config
from proxy.resources import WEB
from proxy.rooms import IdlePictures, OfferError, Room, RoomRegistry

log = logging.getLogger(__name__)

REGISTRY = web.AppKey("registry", RoomRegistry)
CONFIG = web.AppKey("config", Config)
MAX_SDP = 32 * 1024


def error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


@web.middleware
async def json_errors(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                      ) -> web.StreamResponse:
    """Every failure of an API call is JSON with a clear message, never a stack trace."""
    try:
        return await handler(request)
    except web.HTTPRequestEntityTooLarge:
        return error(413, "request body too large")
    except web.HTTPException as exc:
        if not request.path.startswith("/api/") or exc.status < 400:
            raise
        return error(exc.status, exc.reason)
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return error(500, "internal error")


def _check_api_key(request: web.Request) -> web.Response | None:
    header = request.headers.get("Authorization", "")
    if not header.startswith("Bearer ") or not header[7:].strip():
        return error(401, "missing API key (Authorization: Bearer <key>)")
    if not hmac.compare_digest(header[7:].strip().encode(), (request.app[CONFIG].api_key or "").encode()):
        return error(403, "wrong API key")
    return None


async def _json_body(request: web.Request) -> dict[str, Any] | web.Response:
    if request.content_length is not None and request.content_length > request.app[CONFIG].max_body:
        return error(413, "request body too large")
    raw = await request.read()
    try:
        body = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return error(400, "body is not valid JSON")
    if not isinstance(body, dict):
        return error(400, "body must be a JSON object")
    return body


def _base_url(request: web.Request) -> str:
    configured = request.app[CONFIG].public_url
    return configured.rstrip("/") if configured else f"{request.scheme}://{request.host}"


async def create_room(request: web.Request) -> web.Response:
    denied = _check_api_key(request)
    if denied:
        return denied
    registry = request.app[REGISTRY]
    if len(registry.rooms) >= request.app[CONFIG].max_consults:
        return error(503, "at capacity: too many consults open")
    room = registry.create()
    base = _base_url(request)
    return web.json_response({
        "room": room.id,
        "patient_token": room.patient_token,
        "doctor_token": room.doctor_token,
        "patient_url": f"{base}/patient?room={room.id}&token={room.patient_token}",
        "doctor_url": f"{base}/doctor?room={room.id}&token={room.doctor_token}",
    }, status=201)


def _room(request: web.Request) -> Room | web.Response:
    room = request.app[REGISTRY].get(request.match_info["room"])
    return room if room is not None else error(404, "no such room")


def _role(room: Room, token: object) -> str | web.Response:
    if not isinstance(token, str) or not token:
        return error(401, "missing token")
    role = room.role_for(token)
    return role if role is not None else error(403, "wrong token for this room")


async def offer(request: web.Request) -> web.Response:
    room = _room(request)
    if isinstance(room, web.Response):
        return room
    body = await _json_body(request)
    if isinstance(body, web.Response):
        return body
    role = _role(room, body.get("token"))
    if isinstance(role, web.Response):
        return role
    sdp, kind = body.get("sdp"), body.get("type")
    if kind != "offer":
        return error(400, 'type must be "offer"')
    if not isinstance(sdp, str) or not sdp.strip():
        return error(400, "sdp must be a non-empty string")
    if len(sdp) > MAX_SDP or not sdp.lstrip().startswith("v=0"):
        return error(400, "malformed SDP")
    try:
        answer = await room.answer(role, sdp)
    except OfferError as exc:
        return error(400, str(exc))
    return web.json_response({"sdp": answer.sdp, "type": answer.type})


async def room_state(request: web.Request) -> web.Response:
    room = _room(request)
    if isinstance(room, web.Response):
        return room
    role = _role(room, request.query.get("token"))
    if isinstance(role, web.Response):
        return role
    return web.json_response(room.state())


async def delete_room(request: web.Request) -> web.Response:
    denied = _check_api_key(request)
    if denied:
        return denied
    if not await request.app[REGISTRY].remove(request.match_info["room"]):
        return error(404, "no such room")
    return web.json_response({"room": request.match_info["room"], "closed": True})


async def client_config(request: web.Request) -> web.Response:
    return web.json_response({"ice_servers": request.app[CONFIG].ice_servers})


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"ok": True})


def _page(name: str) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def handler(request: web.Request) -> web.StreamResponse:
        return web.FileResponse(WEB / name, headers={"Cache-Control": "no-cache"})
    return handler


async def _not_allowed(request: web.Request) -> web.Response:
    return error(405, "method not allowed")


def create_app(config: Config) -> web.Application:
    """The aiohttp application; rooms start and close with it."""
    if not config.api_key:
        raise ValueError("config.api_key must be set")
    app = web.Application(middlewares=[json_errors], client_max_size=config.max_body)
    app[CONFIG] = config
    app[REGISTRY] = RoomRegistry(config)
    app.router.add_post("/api/rooms", create_room)
    app.router.add_post("/api/rooms/{room}/offer", offer)
    app.router.add_get("/api/rooms/{room}", room_state)
    app.router.add_delete("/api/rooms/{room}", delete_room)
    app.router.add_get("/api/config", client_config)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/", _page("index.html"))
    app.router.add_get("/patient", _page("patient.html"))
    app.router.add_get("/doctor", _page("doctor.html"))
    app.router.add_static("/static/", WEB, show_index=False, follow_symlinks=False)

    async def on_startup(app: web.Application) -> None:
        app[REGISTRY].start()
        await asyncio.to_thread(IdlePictures.neutral, 640, 480)

    async def on_shutdown(app: web.Application) -> None:
        await app[REGISTRY].close()

    app.on_startup.append(on_startup)
    app.on_shutdown.append(on_shutdown)
    return app


def run_server(config: Config) -> int:
    """Serve until interrupted; prints the URL and, when generated, the API key."""
    generated = not config.api_key
    if generated:
        config.api_key = secrets.token_urlsafe(32)
    app = create_app(config)
    url = f"http://{config.host}:{config.port}/"
    print(f"maskproxy serving on {url}", flush=True)
    if generated:
        print(f"API key (generated; set MASKPROXY_API_KEY to choose one): {config.api_key}", flush=True)
    web.run_app(app, host=config.host, port=config.port, print=None, shutdown_timeout=4.0,
                access_log=None)
    return 0
