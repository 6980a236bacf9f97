"""The recordings' HTTP routes: the consult's Record / Stop and consent (room tokens), and the recordings (API key).

On the consult, with ``Authorization: Bearer <room token>`` (the role comes from the token):

* ``GET /api/rooms/{room}/recording`` -> the recording status both pages show
  (:meth:`~proxy.consult.recording_link.RecordingLink.status`);
* ``POST /api/rooms/{room}/recording`` ``{"action": ...}``: the doctor's ``ask``, ``start``, ``stop`` and
  ``mark`` (with ``"text"``), the patient's ``agree`` (with ``"audio": true|false``) and ``withdraw``; an action
  of the other role is 403, one the consult's state refuses (recording before consent) 409, recording turned
  off 403, a disk that refuses to record 503.

Recordings, with the API key (each store call does file I/O, so it runs off the event loop):

* ``GET /api/recordings``, ``GET /api/recordings/{id}``, ``GET /api/recordings/{id}/files/{name}`` (the file,
  decrypted as it streams; a file damaged after the answer started cuts the connection, so a download is
  never silently short), ``DELETE /api/recordings/{id}``.

The store is opened when the server starts (recordings a crash left open are marked incomplete) and expired
every :data:`EXPIRE_INTERVAL_S`; it is the room registry's, so each new consult records into it. Without
``recordings_dir`` (or with consults on a cluster) there is none: the recordings routes answer 404 and the
consults' recording status is ``off``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from proxy.consult.config import Config
from proxy.consult.recording_link import RecordingLink, Refused
from proxy.consult.rooms import DOCTOR, PATIENT, RoomRegistry
from proxy.consult.server import CONFIG, REGISTRY, _bearer, _check_api_key, _json_body, error
from proxy.recording.metadata import RecordingError
from proxy.recording.sealed import SealedFileError, parse_key
from proxy.recording.store import RecordingStore

log = logging.getLogger(__name__)

#: How often recordings past ``retention_days`` are looked for (s); also once at start.
EXPIRE_INTERVAL_S = 3600.0
#: How long a server shutting down waits for its recorders to finish their files (s).
FINISH_TIMEOUT_S = 10.0
#: Plaintext bytes read from a recording file per write to the client.
DOWNLOAD_CHUNK = 256 * 1024
EXPIRY = web.AppKey("recordings_expiry", asyncio.Task)
#: What each role may ask of the consult's recording.
ACTIONS: dict[str, tuple[str, ...]] = {DOCTOR: ("ask", "start", "stop", "mark"), PATIENT: ("agree", "withdraw")}


def open_store(config: Config) -> RecordingStore | None:
    """The recordings folder of ``config`` (made if missing), or None where this server records nothing."""
    if not config.recordings_dir or config.cluster:
        return None
    key = parse_key(config.recordings_key) if config.recordings_key else None
    return RecordingStore(Path(config.recordings_dir), key=key, retention_days=config.retention_days)


def add_routes(app: web.Application) -> None:
    """Register the routes, and open the store when the app starts (its registry's, for every consult)."""
    app.router.add_get("/api/rooms/{room}/recording", consult_recording)
    app.router.add_post("/api/rooms/{room}/recording", consult_action)
    app.router.add_get("/api/recordings", list_recordings)
    app.router.add_get("/api/recordings/{id}", recording_metadata)
    app.router.add_get("/api/recordings/{id}/files/{name}", recording_file)
    app.router.add_delete("/api/recordings/{id}", delete_recording)
    app.on_startup.append(_start)
    app.on_cleanup.append(finish)


async def _start(app: web.Application) -> None:
    registry = app.get(REGISTRY)
    if registry is None:
        return
    loop = asyncio.get_running_loop()
    store = await loop.run_in_executor(None, open_store, app[CONFIG])
    if store is None:
        return
    recovered = await loop.run_in_executor(None, store.recover)
    registry.recordings = store
    log.info("recordings in %s (encrypted: %s, retention: %s, recording: %s, sound: %s)%s", store.root,
             store.key is not None, f"{store.retention_days:g} days" if store.retention_days else "kept",
             app[CONFIG].recording, app[CONFIG].recording_audio,
             f"; {len(recovered)} left open by a crash marked incomplete" if recovered else "")
    app[EXPIRY] = asyncio.create_task(_expire(registry))


async def finish(app: web.Application) -> None:
    """At shutdown, once the consults are closed (their recordings stopped): stop expiring, and give the recorders
    up to FINISH_TIMEOUT_S to finish their files, so that a stopped server leaves complete recordings."""
    task = app.get(EXPIRY)
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    registry = app.get(REGISTRY)
    store = registry.recordings if registry is not None else None
    if store is None:
        return
    deadline = time.monotonic() + FINISH_TIMEOUT_S
    while store.active() and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    if store.active():
        log.warning("recordings not finished at shutdown (they will read as incomplete): %s", ", ".join(store.active()))


async def _expire(registry: RoomRegistry) -> None:
    """Delete recordings past ``retention_days``: now, then every EXPIRE_INTERVAL_S (a failure is logged, and
    tried again next time)."""
    loop = asyncio.get_running_loop()
    while True:
        store = registry.recordings
        if store is not None and store.retention_days is not None:
            try:
                await loop.run_in_executor(None, store.expire)
            except Exception as exc:  # noqa: BLE001 - retention must keep running; tried again next time
                log.error("retention: could not delete expired recordings (%s: %s)", exc.__class__.__name__, exc)
        await asyncio.sleep(EXPIRE_INTERVAL_S)


# ---- the consult's recording (room tokens) ------------------------------------------------------------


async def _link(request: web.Request) -> tuple[RecordingLink, str] | web.Response:
    """The consult's recording link and the role of the request's room token."""
    registry = request.app.get(REGISTRY)
    if registry is None:
        return error(409, "recording is not available while consults run on a cluster")
    room = registry.get(request.match_info["room"])
    if room is None:
        return error(404, "no such room")
    token = _bearer(request, "room token")
    if isinstance(token, web.Response):
        return token
    role = room.role_for(token)
    if role is None:
        return error(403, "wrong token for this room")
    return room.recording, role


async def consult_recording(request: web.Request) -> web.Response:
    found = await _link(request)
    if isinstance(found, web.Response):
        return found
    link, role = found
    return web.json_response({"recording": link.status(), "role": role})


async def consult_action(request: web.Request) -> web.Response:
    found = await _link(request)
    if isinstance(found, web.Response):
        return found
    link, role = found
    body = await _json_body(request)
    if isinstance(body, web.Response):
        return body
    action = body.get("action")
    every = ACTIONS[DOCTOR] + ACTIONS[PATIENT]
    if not isinstance(action, str) or action not in every:
        return error(400, f"action must be one of {', '.join(every)}")
    if action not in ACTIONS[role]:
        return error(403, f"only the {PATIENT if role == DOCTOR else DOCTOR}'s page can {action}")
    audio = body.get("audio", False)
    if not isinstance(audio, bool):
        return error(400, "audio must be true or false")
    calls: dict[str, Callable[[], Awaitable[dict[str, Any]]]] = {
        "ask": link.ask, "start": link.start, "stop": link.stop, "withdraw": link.withdraw,
        "agree": lambda: link.agree(audio)}
    try:
        if action == "mark":
            status = link.mark(body.get("text", ""))
        else:
            status = await calls[action]()
    except Refused as exc:
        return error(exc.status, str(exc))
    return web.json_response({"recording": status, "role": role})


# ---- the recordings (API key) -------------------------------------------------------------------------


def _store(request: web.Request) -> RecordingStore | web.Response:
    denied = _check_api_key(request)
    if denied:
        return denied
    registry = request.app.get(REGISTRY)
    store = registry.recordings if registry is not None else None
    if store is None:
        return error(404, "this server keeps no recordings (recordings_dir is not set)")
    return store


async def _call(function: Callable[..., Any], *args: Any) -> Any:
    return await asyncio.get_running_loop().run_in_executor(None, function, *args)


async def list_recordings(request: web.Request) -> web.Response:
    store = _store(request)
    if isinstance(store, web.Response):
        return store
    return web.json_response({"recordings": await _call(store.list)})


async def recording_metadata(request: web.Request) -> web.Response:
    store = _store(request)
    if isinstance(store, web.Response):
        return store
    try:
        return web.json_response(await _call(store.metadata, request.match_info["id"]))
    except RecordingError as exc:
        return error(exc.status, str(exc))


async def delete_recording(request: web.Request) -> web.Response:
    store = _store(request)
    if isinstance(store, web.Response):
        return store
    recording_id = request.match_info["id"]
    try:
        await _call(store.delete, recording_id)
    except RecordingError as exc:
        return error(exc.status, str(exc))
    return web.json_response({"id": recording_id, "deleted": True})


async def recording_file(request: web.Request) -> web.StreamResponse:
    """One file of a recording, decrypted as it streams out. Its length is known before the first byte (the
    reader checked every chunk's framing); a chunk that fails to authenticate on the way cuts the connection,
    so the client sees a short download, never a wrong one."""
    store = _store(request)
    if isinstance(store, web.Response):
        return store
    recording_id, name = request.match_info["id"], request.match_info["name"]
    try:
        opened = await _call(store.open, recording_id, name)
    except RecordingError as exc:
        return error(exc.status, str(exc))
    try:
        response = web.StreamResponse(headers={
            "Content-Type": opened.content_type, "Content-Length": str(opened.size),
            "Content-Disposition": f'attachment; filename="{recording_id}-{name}"',
            # the recording was cut off (a fault, a crash) or is still running: this is all of it there is
            "X-Recording-Truncated": "true" if opened.truncated else "false"})
        await response.prepare(request)
        while chunk := await _call(opened.read, DOWNLOAD_CHUNK):
            await response.write(chunk)
    except SealedFileError as exc:
        log.warning("recording %s: %s is damaged (%s); download cut off", recording_id, name, exc)
        if request.transport is not None:
            request.transport.abort()
        return response
    finally:
        await _call(opened.close)
    await response.write_eof()
    return response
