"""Consult rooms: who may join, the peer connections, and the media wiring between them.

A room has two roles, each holding at most one peer connection (a second
connection for a role replaces the first: a reloaded tab rejoins):

* patient: sends camera and microphone; receives the masked stream (its own
  self-view, exactly what the doctor sees), the doctor's audio and video.
* doctor: sends camera and microphone; receives the masked stream and the
  patient's audio.

The patient's camera frames go only to the room's :class:`MaskWorker`; what
leaves is the :class:`MaskedVideoTrack`. This holds by construction, not only
by the server's token-and-role check: a patient peer's incoming video is kept
in :attr:`Peer.camera`, which only the worker's feed reads, while the relays
read :attr:`Peer.relayable` alone; and a doctor's offer shaped like the
patient page's (a second video section, to receive the doctor's camera) is
refused, so a patient page can never be answered as the doctor.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import av
import cv2
import numpy as np
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.contrib.media import MediaRelay
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from aiortc.rtcrtpsender import RTCRtpSender
from aiortc.sdp import SessionDescription

from proxy.consult import aiortc_speedups, candidates, decode_guard
from proxy.consult.config import Config
from proxy.consult.encoding import SharedVideo, encode_keyframe, keyframe_packet
from proxy.consult.exam_link import ExamLink
from proxy.consult.gate import CpuGate
from proxy.consult.ice import rtc_ice_servers
from proxy.consult.metrics import Metrics
from proxy.consult.recording_link import RecordingLink
from proxy.consult.stats import LOW_CAMERA_KBPS, ByteRate, RollingStats
from proxy.consult.tracks import MaskedVideoTrack, SwitchableTrack
from proxy.consult.worker import (
    STOP_TIMEOUT_S,
    MaskCounts,
    MaskResult,
    MaskWorker,
    fault_placeholder,
    rgb_to_frame,
)
from proxy.params import MaskParams
from proxy.recording.store import RecordingStore

log = logging.getLogger(__name__)

PATIENT, DOCTOR = "patient", "doctor"
#: How long a replaced connection gets to receive its notice before it is closed.
REPLACED_NOTICE_S = 0.3
#: How long the pages get to receive ``{"ended": ...}`` before a closing consult closes their connections.
ENDED_NOTICE_S = 0.3
#: The pages are warned (``{"expires_in": seconds}``) this long before a consult reaches its maximum lifetime.
EXPIRY_WARNING_S = 300.0
#: Longest data-channel message from a page that is read (``{"leaving": true}`` is a few bytes).
MAX_PAGE_MESSAGE = 1024
#: A worker busy on one frame for longer than this is stalled: the doctor gets the fault card.
STALL_SECONDS = 1.0
#: A connected peer from which nothing (media, RTCP, DTLS) arrived for this long shows as disconnected;
#: it is released after ``Config.peer_timeout``.
SILENT_SECONDS = 3.0
#: After a masking worker dies, wait this long before starting another (a crash loop must not spin).
RESTART_BACKOFF = 1.0
#: Most media sections an offer may have: the pages send at most three (video, audio, video) and a data channel.
MAX_MEDIA_SECTIONS = 8
#: Bytes a peer's data channel may hold unsent before messages to it are skipped (some 14 s of mask parameters
#: at 30 frames a second: a browser that is merely slow for a moment loses none).
MAX_CHANNEL_BUFFER = 256 * 1024


#: Longest wait for one peer connection to close: aiortc's close can wait forever on a transport whose
#: other end vanished, and a DELETE, an expiry or a shutdown must not hang on it.
CLOSE_TIMEOUT_S = 5.0
#: The same at shutdown, where the consults close together: the process ends next, and a supervisor's stop
#: (systemd, Kubernetes) should not wait on a connection whose other end vanished.
SHUTDOWN_CLOSE_TIMEOUT_S = 2.0


async def close_connection(pc: RTCPeerConnection, timeout: float = CLOSE_TIMEOUT_S) -> None:
    """Close ``pc``, giving up (and logging it) after ``timeout`` seconds."""
    try:
        async with asyncio.timeout(timeout):  # not wait_for, which may swallow a cancellation on Python 3.11
            await pc.close()
    except TimeoutError:
        log.warning("a peer connection did not close within %.0f s; left to the garbage collector", timeout)


class OfferError(ValueError):
    """The offer cannot be used (bad SDP, missing media)."""


class RoomClosed(OfferError):
    """The room was closed while the offer was being answered."""


class IdlePictures:
    """Pictures sent when no masked frame is due: the neutral avatar, or the fault card.

    The neutral avatar is rendered once per process from ``MaskParams.neutral()``
    (no patient data) and scaled to each size.
    """

    _neutral: np.ndarray | None = None
    status = "not checked"

    @classmethod
    def neutral(cls, width: int, height: int) -> np.ndarray:
        if cls._neutral is None:
            try:
                from proxy.avatar.renderer import AvatarRenderer

                with AvatarRenderer(640, 480) as renderer:
                    cls._neutral = renderer.render(MaskParams.neutral())
                    with renderer.ctx:  # current, so the driver's name can be read
                        cls.status = renderer.ctx.info.get("GL_RENDERER") or "ok"
            except Exception as exc:  # noqa: BLE001 - no GL: fall back to the card
                log.error("cannot render the neutral avatar (%s); using the placeholder card", exc)
                cls._neutral = fault_placeholder(640, 480)
                cls.status = f"unavailable: {exc}"
        image = cls._neutral
        if image.shape[:2] != (height, width):
            image = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
        return image


@lru_cache(maxsize=16)
def still_picture(kind: str, width: int, height: int) -> np.ndarray:
    """A picture drawn from no patient data, made once per kind and size (read-only).

    ``neutral``: the neutral avatar; ``fault``: the "video paused" card; ``waiting``: the plain
    picture a patient sees until the doctor's camera arrives. They are sent many times a second
    while no live frame is due, so they are not redrawn or rescaled each time.
    """
    if kind == "neutral":
        image = IdlePictures.neutral(width, height)
    elif kind == "fault":
        image = fault_placeholder(width, height)
    elif kind == "waiting":
        image = np.full((height, width, 3), (40, 44, 52), np.uint8)
    else:
        raise ValueError(f"no still picture {kind!r}")
    image.setflags(write=False)
    return image


@lru_cache(maxsize=16)
def still_keyframe(kind: str, width: int, height: int) -> bytes:
    """:func:`still_picture` as one VP8 keyframe, encoded once per kind and size and then only repeated."""
    return encode_keyframe(still_picture(kind, width, height))


@dataclass
class Peer:
    role: str
    pc: RTCPeerConnection
    channel: Any = None  #: the "mask" RTCDataChannel, once the browser opens it
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    #: Incoming tracks the room may forward to the other role, by kind: never a patient's video.
    relayable: dict[str, MediaStreamTrack] = field(default_factory=dict)
    #: A patient's incoming camera: read by the masking worker's feed and nothing else.
    camera: MediaStreamTrack | None = None
    closeup: bool = False  #: a doctor whose offer asked for the eye close-up (a second, receive-only video)
    joined_at: float = field(default_factory=time.monotonic)  #: when the offer was answered
    disconnected_since: float | None = None  #: when it went silent (or failed to connect), None while alive
    received: int = -1  #: packets received on its transport at the last liveness check
    heard_at: float = field(default_factory=time.monotonic)  #: when ``received`` last grew
    warned: bool = False  #: it was told that the consult expires soon

    @property
    def state(self) -> str:
        """``connecting``, ``connected``, ``disconnected`` (silent, may heal) or ``closed``."""
        state = self.pc.connectionState
        if state in ("new", "connecting"):
            return "connecting"
        if state == "connected":
            return "disconnected" if self.disconnected_since is not None else "connected"
        return "closed"


class Room:
    """One consult. Created by the API, closed by the API, by expiry or at shutdown."""

    def __init__(self, room_id: str, config: Config, metrics: Metrics | None = None,
                 pipeline_factory: Callable[[], object] | None = None,
                 recordings: RecordingStore | None = None, gate: CpuGate | None = None) -> None:
        self.id = room_id
        #: The turns to mask in, shared by the process's consults (None: the worker masks whenever it has a frame).
        self.gate = gate
        self.config = config
        self.metrics = metrics or Metrics()
        self.patient_token = secrets.token_urlsafe(24)
        self.doctor_token = secrets.token_urlsafe(24)
        self.created = time.monotonic()
        self.last_active = self.created
        #: When the consult reaches its maximum lifetime (monotonic); the pages are warned EXPIRY_WARNING_S before.
        self.expires_at = self.created + config.room_max_lifetime
        self.peers: dict[str, Peer] = {}
        #: Every peer connection this room opened and has not closed yet (current, negotiating or displaced):
        #: all are closed with the room.
        self.connections: set[RTCPeerConnection] = set()
        self._negotiating = {PATIENT: asyncio.Lock(), DOCTOR: asyncio.Lock()}
        self.stats = RollingStats()
        self.relay = MediaRelay()
        self.face = False
        self.size = (640, 480)
        self.closed = False
        self._worker: MaskWorker | None = None
        self._worker_died: float | None = None
        self.counts = MaskCounts()  #: dropped, late, errors, restarts: kept across workers, they never go backwards
        self.refused_keyframes = 0  #: camera keyframes over max_decode_pixels, dropped before decoding
        #: The patient's camera as it arrives (VP8 bytes per second): what the tracker sees depends on it.
        self.camera_rate = ByteRate()
        self.channel_skipped = 0  #: data-channel messages skipped because the peer's channel was backed up
        self.masked_frames = 0  #: camera frames masked and sent in time (with ``dropped``: the share dropped)
        self._background: set[asyncio.Task[None]] = set()  #: releases started by a page's message
        #: Builds each worker's masking pipeline (None: the real one); tests inject faulty pipelines here.
        self.pipeline_factory = pipeline_factory
        self._loop = asyncio.get_running_loop()
        #: The consult's recording: consent, Record / Stop, and a recorder fed with what the doctor is sent.
        self.recording = RecordingLink(self._loop, room_id, config, recordings, self._send_role)
        #: The masked stream, encoded once for the doctor and the self-view; with a self-view slower than the
        #: camera, in two temporal layers of which the self-view takes the first.
        self.masked = SharedVideo(self._idle_frame, on_sent=self._sent, layers=2 if self.config.self_view_fps else 1,
                                  on_encoded=lambda seconds: self.metrics.costs.add("encode", seconds))
        self.masked.start()
        #: The eye examination and the doctor's eye close-up (a second masked track, drawn from the same parameters).
        self.exam = ExamLink(self._loop, self._send_role, self._push_closeup, room=room_id)
        self.closeup = MaskedVideoTrack(self._idle_closeup, on_sent=self._closeup_sent,
                                        on_frame=self.recording.eyes_sent)
        self.closeup_stats = RollingStats()
        self.exam.start()
        self._stats_task = asyncio.create_task(self._send_stats())

    # -- roles and tokens ------------------------------------------------
    def role_for(self, token: str) -> str | None:
        if hmac.compare_digest(token.encode(), self.patient_token.encode()):
            return PATIENT
        if hmac.compare_digest(token.encode(), self.doctor_token.encode()):
            return DOCTOR
        return None

    # -- state -----------------------------------------------------------
    def state(self) -> dict[str, Any]:
        worker = self._worker
        return {
            "room": self.id,
            "patient": self._peer_state(PATIENT),
            "doctor": self._peer_state(DOCTOR),
            "mask": {
                "fps": round(self.stats.fps(), 1),
                "frames": self.stats.frames,
                "dropped": self.counts.dropped + self.counts.late,
                "masked": self.masked_frames,
                "errors": self.counts.errors,
                "restarts": self.counts.restarts,
                "worker": "running" if worker is not None and worker.alive else "stopped",
                "face": self.face,
                "latency_ms": self.stats.latency(),
                "size": f"{self.size[0]}x{self.size[1]}",
                "camera_kbps": round(self.camera_rate.kbps()),
            },
            "media": {"refused_keyframes": self.refused_keyframes, "channel_skipped": self.channel_skipped},
            "recording": self.recording.status(),
            "exam": self._exam_state(),
        }

    def _exam_state(self) -> dict[str, Any]:
        """The examination's counters, with the close-up's frame rate as sent to the doctor."""
        state = self.exam.stats()
        doctor = self.peers.get(DOCTOR)
        state["closeup"].update(fps=round(self.closeup_stats.fps(), 1), frames=self.closeup_stats.frames,
                                sending=doctor is not None and doctor.closeup)
        return state

    def _peer_state(self, role: str) -> dict[str, Any]:
        """``connected`` is true while the peer is joining or connected (not once it went silent)."""
        peer = self.peers.get(role)
        state = peer.state if peer is not None else "none"
        return {"connected": state in ("connecting", "connected"), "state": state}

    # -- negotiation -----------------------------------------------------
    async def answer(self, role: str, sdp: str) -> RTCSessionDescription:
        """Accept ``role``'s offer, replacing its previous connection, and return the answer.

        One negotiation per role at a time: offers that arrive together are answered in turn, each
        replacing (and closing) the connection before it, so a role never holds two connections.
        """
        async with self._negotiating[role]:
            if self.closed:
                raise RoomClosed("the room is closed")
            return await self._answer(role, sdp)

    async def _answer(self, role: str, sdp: str) -> RTCSessionDescription:
        self.last_active = time.monotonic()
        old = self.peers.pop(role, None)
        if old is not None:
            log.info("room %s: %s reconnected, closing the previous connection", self.id, role)
            # Tell the old tab why it is being closed, so it does not reconnect and take the
            # consult back (two open tabs would otherwise push each other out in turn).
            if old.channel is not None and old.channel.readyState == "open":
                self._send_text(old, json.dumps({"replaced": True}))
                await asyncio.sleep(REPLACED_NOTICE_S)
            await self._close_peer(old)
            if self.closed:
                raise RoomClosed("the room is closed")
        pc = RTCPeerConnection(RTCConfiguration(iceServers=rtc_ice_servers(self.config)))
        self.connections.add(pc)
        peer = Peer(role, pc)
        self.peers[role] = peer
        try:
            await self._negotiate(peer, sdp)
            if self.closed:  # closed (DELETE, expiry, shutdown) while we negotiated
                raise RoomClosed("the room is closed")
        except BaseException:
            if self.peers.get(role) is peer:
                self.peers.pop(role)
            await self._close_peer(peer, quiet=True)
            raise
        log.info("room %s: %s joined", self.id, role)
        return RTCSessionDescription(sdp=decode_guard.advertise(pc.localDescription.sdp, self.config.max_decode_pixels),
                                     type=pc.localDescription.type)

    async def _negotiate(self, peer: Peer, sdp: str) -> None:
        pc = peer.pc
        @pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            self._incoming(peer, track)

        @pc.on("datachannel")
        def on_datachannel(channel: Any) -> None:
            if channel.label == "mask":
                channel.on("message", lambda data: self._exam_message(peer, data))
                peer.channel = channel
                channel.on("message", lambda message: self._on_message(peer, message))

        @pc.on("connectionstatechange")
        async def on_state() -> None:
            state = pc.connectionState
            if state == "connected":
                peer.disconnected_since, peer.heard_at = None, time.monotonic()
            elif state in ("failed", "closed") and self.peers.get(peer.role) is peer:
                log.info("room %s: %s connection %s", self.id, peer.role, state)
                await self._release(peer)

        sdp, dropped = candidates.filter_offer(sdp, candidates.listens_on_loopback(self.config.host),
                                               self.config.refuse_private_candidates)
        if dropped:  # counts only: a participant's addresses are not logged
            log.info("room %s: ignored %d ICE candidates of the %s's offer (%s)", self.id, sum(dropped.values()),
                     peer.role, ", ".join(f"{reason}: {n}" for reason, n in sorted(dropped.items())))
        sections = sdp.count("\nm=") + sdp.startswith("m=")
        if sections > MAX_MEDIA_SECTIONS:
            raise OfferError(f"the offer has {sections} media sections; at most {MAX_MEDIA_SECTIONS} are accepted")
        try:
            await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
        except Exception as exc:  # aiortc raises ValueError and others on bad SDP or unsupported codecs
            raise OfferError(f"invalid SDP offer: {exc}") from None
        transceivers = pc.getTransceivers()
        videos = [t for t in transceivers if t.kind == "video"]
        audios = [t for t in transceivers if t.kind == "audio"]
        if not videos:
            raise OfferError("the offer has no video section")
        if peer.role == DOCTOR and len(videos) > 1:
            # The patient page asks for a second video (the doctor's camera) after its audio; the doctor page asks
            # for the eye close-up right after its own video, receive-only. Anything else is refused.
            if not _closeup_offer(sdp, len(videos)):
                raise OfferError("this offer comes from the patient page: a doctor's offer has one video section, "
                                 "or a second receive-only one right after it for the eye close-up")
            peer.closeup = True
            self.exam.prepare()
        for transceiver in videos:  # before the connection starts its decoders
            camera = peer.role == PATIENT and transceiver is videos[0]
            decode_guard.guard(transceiver.receiver, self.config.max_decode_pixels,
                               lambda width, height, role=peer.role: self._refused(role, width, height),
                               self.camera_rate if camera else None)

        # (handlers first: aiortc emits "track" while applying the offer)
        # Outgoing media, by m-line order (see web/js/rtc.js): patient [video, audio, video], doctor [video, audio]
        # or, with the eye close-up, [video, video, audio].
        masked = self.masked.subscribe(max_layer=0 if peer.role == PATIENT else 1)  # the self-view: layer 0
        self._send(videos[0], masked)
        masked.attach(videos[0].sender)
        for transceiver in audios:  # audio is relayed as the browsers encoded it: no decoding, no encoding
            aiortc_speedups.relay_encoded(transceiver.receiver)
        if peer.closeup:
            self._send(videos[1], self.relay.subscribe(self.closeup, buffered=False))
        if peer.role == PATIENT:
            if audios:
                self._send(audios[0], SwitchableTrack("audio", lambda: self._relayable(DOCTOR, "audio"), encoded=True))
            if len(videos) > 1:
                self._send(videos[1], SwitchableTrack("video", lambda: self._relayable(DOCTOR, "video"),
                                                      self._waiting_frame))
        elif audios:
            self._send(audios[0], SwitchableTrack("audio", lambda: self._relayable(PATIENT, "audio"), encoded=True))
        codecs = RTCRtpSender.getCapabilities("video").codecs
        preferred = [c for c in codecs if c.mimeType == "video/VP8"] + [c for c in codecs if c.mimeType == "video/rtx"]
        for transceiver in videos:
            transceiver.setCodecPreferences(preferred)
        try:
            await pc.setLocalDescription(await pc.createAnswer())
        except Exception as exc:  # an offer aiortc accepted but cannot answer (e.g. no common codec)
            log.warning("room %s: cannot answer the %s's offer (%s)", self.id, peer.role, exc.__class__.__name__)
            raise OfferError(f"cannot answer the offer: {exc}") from None

    def _refused(self, role: str, width: int, height: int) -> None:
        """A keyframe over max_decode_pixels was dropped before decoding: counted, logged once per consult."""
        self.refused_keyframes += 1
        self.metrics.refused.inc()
        if self.refused_keyframes == 1:
            log.warning("room %s: dropped a %dx%d camera keyframe from the %s before decoding (over max_decode_pixels "
                        "%d, or a broken header); further ones are counted, not logged", self.id, width, height, role,
                        self.config.max_decode_pixels)

    @staticmethod
    def _send(transceiver: Any, track: MediaStreamTrack) -> None:
        transceiver.sender.replaceTrack(track)
        transceiver.direction = "sendrecv"

    def _relayable(self, role: str, kind: str) -> MediaStreamTrack | None:
        """What the relays forward from ``role``: only ever a track of :attr:`Peer.relayable`."""
        peer = self.peers.get(role)
        return peer.relayable.get(kind) if peer else None

    def _incoming(self, peer: Peer, track: MediaStreamTrack) -> None:
        """A browser's track arrived. The patient's video goes to the worker and nowhere else."""
        if self.closed or self.peers.get(peer.role) is not peer:
            return  # a closed room or a displaced connection: nothing of it is used
        if peer.role == PATIENT and track.kind == "video":
            if peer.camera is not None:
                return  # only the first camera track is masked; any other is ignored, never forwarded
            peer.camera = track
            peer.tasks.append(asyncio.create_task(self._consume_camera(peer, track)))
            return
        if peer.role == PATIENT and track.kind != "audio":
            return  # nothing else of the patient's is relayed
        if track.kind in peer.relayable:
            return
        # (the patient's sound is tapped for a recording where a setting and the patient allow it)
        peer.relayable[track.kind] = self.recording.tap_audio(track) if peer.role == PATIENT else track

    def _current(self, peer: Peer) -> bool:
        """Whether ``peer`` is its role's connection in an open room (not displaced, not closed)."""
        return not self.closed and self.peers.get(peer.role) is peer

    async def _consume_camera(self, peer: Peer, track: MediaStreamTrack) -> None:
        """Feed ``peer``'s camera to the worker while it is the room's patient; a closed room starts no worker."""
        worker = self._ensure_worker() if self._current(peer) else None
        first = True
        while self._current(peer):
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            if not self._current(peer):
                return
            if first:
                log.info("room %s: camera %dx%d", self.id, frame.width, frame.height)
                first = False
            self.last_active = time.monotonic()
            if worker is None or self._worker is not worker or not worker.alive:
                worker = self._ensure_worker()
            if worker is not None and worker.alive:
                worker.submit(frame, time.monotonic())
            # else: the worker died and is not restarted yet: the frame is dropped, the doctor sees the card

    # -- masking ---------------------------------------------------------
    def _ensure_worker(self) -> MaskWorker | None:
        """The running worker; a dead one is replaced, at most once per ``RESTART_BACKOFF`` seconds.

        None once the room is closed: no worker ever starts for a closed room."""
        if self.closed:
            return None
        worker = self._worker
        if worker is not None and worker.alive:
            return worker
        now = time.monotonic()
        if worker is not None:
            if self._worker_died is None:
                self._worker_died = now
                self.metrics.errors.inc()
                self.counts.restarts += 1
                log.error("room %s: masking worker died; restarting it", self.id)
            if now - self._worker_died < RESTART_BACKOFF:
                return worker  # dead: frames are dropped until the restart, the doctor sees the card
        self._worker_died = None
        self._worker = MaskWorker(self._loop, self._on_result, threads=self.config.threads,
                                  pipeline_factory=self.pipeline_factory, max_pixels=self.config.max_frame_pixels,
                                  eye_samples=self.config.eye_samples, supersample=self.config.supersample,
                                  trim_every=self.config.trim_every, counts=self.counts,
                                  publish=self.masked.publish, late_after=STALL_SECONDS,
                                  cost=self.metrics.costs.add, gate=self.gate)
        self._worker.start()
        return self._worker

    def _on_result(self, result: MaskResult) -> None:
        if self.closed:
            return
        self.size = (result.frame.width, result.frame.height)
        if result.late:
            # finished too late to be live (the worker did not send it): showing it would pass stale movement off
            return
        self.face = result.params.face
        self.masked_frames += 1
        if result.fault:
            self.metrics.errors.inc()
        for stage, ms in (result.timings or {}).items():
            if "." not in stage:
                self.metrics.stage.labels(stage).observe(ms / 1000)
        message = json.dumps(result.params.to_json())
        for peer in self.peers.values():
            self._send_text(peer, message)
        self.recording.frame_masked(result.frame, None if result.fault else result.params, result.received)
        doctor = self.peers.get(DOCTOR)
        self.exam.frame(result.params, result.frame, result.received, result.fault,
                        closeup=doctor is not None and doctor.closeup)

    def _push_closeup(self, frame: av.VideoFrame, received: float) -> None:
        if not self.closed:
            self.closeup.push(frame, received)

    def _closeup_sent(self, received: object) -> None:
        if isinstance(received, float):
            self.closeup_stats.record((time.monotonic() - received) * 1000)

    def _exam_message(self, peer: Peer, data: object) -> None:
        """A page's data-channel message, for the eye examination (which ignores and counts what is not its own)."""
        if self._current(peer):  # a displaced connection's messages go nowhere
            self.exam.receive(peer.role, data)

    def _sent(self, received: object) -> None:
        self.recording.frame_sent(received)  # the masked stream sent this live frame: now it is recorded
        latency = (time.monotonic() - received) * 1000 if isinstance(received, float) else None
        self.stats.record(latency)
        if latency is not None:
            self.metrics.frames.inc()
            self.metrics.latency.observe(latency / 1000)

    def _idle_frame(self) -> av.VideoFrame:
        """What the masked track shows when no masked frame is due."""
        width, height = self.size
        frame = rgb_to_frame(still_picture("fault" if self._at_fault() else "neutral", width, height))
        self.recording.video(frame, None)  # sent as it is: recorded as it is
        return frame

    def _idle_closeup(self) -> av.VideoFrame:
        """What the close-up shows when no close-up is due: the fault card when the face view shows it (or the
        close-up's own thread stalled), else the neutral avatar's eyes."""
        return rgb_to_frame(self.exam.idle_picture(self._at_fault()))

    def _at_fault(self) -> bool:
        """Whether the face view shows the fault card: the worker stalled or died, or it fails with the camera on."""
        worker = self._worker
        stalled = worker is not None and (not worker.alive or (
            worker.busy_since is not None and time.monotonic() - worker.busy_since > STALL_SECONDS))
        patient = self.peers.get(PATIENT)
        camera_on = patient is not None and patient.camera is not None
        failing = camera_on and worker is not None and worker.errors and not self.face
        if stalled:
            self.face = False
        return bool(stalled or failing)

    @staticmethod
    def _waiting_frame() -> av.Packet:
        """Shown to the patient in place of the doctor's camera until it arrives: a keyframe encoded once."""
        return keyframe_packet(still_keyframe("waiting", 640, 360))

    def _send_role(self, role: str, message: str) -> None:
        """Send on ``role``'s data channel, if that role is connected (see :meth:`_send_text`)."""
        self.recording.sent(role, message)
        peer = self.peers.get(role)
        if peer is not None and not self.closed:
            self._send_text(peer, message)

    def _send_text(self, peer: Peer, message: str) -> bool:
        """Send on ``peer``'s data channel, unless it still holds MAX_CHANNEL_BUFFER bytes unsent: then the
        message is skipped (and counted), as a newer one follows within a frame; a peer that stopped reading
        cannot make the proxy's queue grow. Returns whether the message was handed to the channel."""
        channel = peer.channel
        if channel is None or channel.readyState != "open":
            return False
        if channel.bufferedAmount > MAX_CHANNEL_BUFFER:
            self.channel_skipped += 1
            self.metrics.channel_skipped.inc()
            return False
        try:
            channel.send(message)
        except Exception:  # noqa: BLE001 - a channel closing under us is not an error
            return False
        return True

    def _on_message(self, peer: Peer, message: object) -> None:
        """A page's message on its data channel: ``{"leaving": true}`` (Leave pressed, tab closing) releases it
        at once, so the other side hears "has left" now rather than after ``peer_timeout``. Anything else is
        ignored here."""
        if not isinstance(message, str) or len(message) > MAX_PAGE_MESSAGE or not self._current(peer):
            return
        try:
            data = json.loads(message)
        except ValueError:
            return
        if isinstance(data, dict) and data.get("leaving") is True:
            log.info("room %s: %s is leaving", self.id, peer.role)
            task = asyncio.create_task(self._release(peer))
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    async def _release(self, peer: Peer) -> None:
        """``peer`` left (its page said so, its connection failed or closed, or it fell silent): close it and
        tell the other role, whose page then says "has left" rather than blaming its own connection."""
        if self.peers.get(peer.role) is not peer:
            return
        self.peers.pop(peer.role)
        if not self.closed:  # first, as closing a connection (and a patient's worker) takes a moment
            notice = json.dumps({"left": peer.role})
            for other in list(self.peers.values()):
                self._send_text(other, notice)
        await self._close_peer(peer)

    async def _send_stats(self) -> None:
        """Once a second: stats to the pages, liveness of the peers, a log line every 30 s."""
        last_log = time.monotonic()
        reported: tuple[object, int] = (None, 0)
        while not self.closed:
            await asyncio.sleep(1.0)
            try:
                reported = await self._tick(reported)
                if time.monotonic() - last_log >= 30 and PATIENT in self.peers:
                    last_log = time.monotonic()
                    state = self.state()["mask"]
                    log.info("room %s: %.1f fps, %d dropped, latency p50 %.0f ms p95 %.0f ms, face %s", self.id,
                             state["fps"], state["dropped"], state["latency_ms"]["p50"],
                             state["latency_ms"]["p95"], state["face"])
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - this loop also releases dead peers: it must not die
                log.exception("room %s: housekeeping failed", self.id)

    async def _tick(self, reported: tuple[object, int]) -> tuple[object, int]:
        dropped = self.counts.dropped + self.counts.late
        if dropped > reported[1]:
            self.metrics.dropped.inc(dropped - reported[1])
        reported = (self.counts, dropped)
        self.metrics.costs.sample()  # a thread that ends (a decoder, a worker) loses at most a second of its time
        state = self.state()["mask"]
        message = json.dumps({"stats": {k: state[k] for k in ("fps", "dropped", "masked", "latency_ms", "face",
                                                               "camera_kbps")}})
        remaining = self.expires_at - time.monotonic()
        expiring = json.dumps({"expires_in": max(0, round(remaining))}) if remaining <= EXPIRY_WARNING_S else None
        for peer in list(self.peers.values()):
            self._send_text(peer, message)
            if expiring is not None and not peer.warned:
                peer.warned = self._send_text(peer, expiring)
            if await self._unreachable(peer):
                await self._release(peer)
        if self.peers:
            self.last_active = time.monotonic()
        return reported

    async def _unreachable(self, peer: Peer) -> bool:
        """Whether ``peer`` should be released: it never connected, or nothing came from it, for peer_timeout.

        aiortc has no "disconnected" state and its consent checks give up only after about 30 s, so
        liveness is judged here from the packets its transport receives: a live browser sends media and
        RTCP reports on the masked stream every second or so, whether or not it sends a camera.
        """
        now, timeout = time.monotonic(), self.config.peer_timeout
        state = peer.pc.connectionState
        if state in ("new", "connecting"):
            if now - peer.joined_at > timeout:
                log.info("room %s: %s did not connect within %.0f s, releasing", self.id, peer.role, timeout)
                return True
            return False
        if state != "connected":
            return False  # failed/closed: the state handler releases it
        try:
            report = await peer.pc.getStats()
            received = sum(getattr(s, "packetsReceived", 0) or 0 for s in report.values() if s.type == "transport")
        except Exception:  # noqa: BLE001 - stats of a connection closing under us
            return False
        if received != peer.received:
            peer.received, peer.heard_at, peer.disconnected_since = received, now, None
            return False
        if now - peer.heard_at > SILENT_SECONDS and peer.disconnected_since is None:
            peer.disconnected_since = peer.heard_at
            log.info("room %s: %s went silent", self.id, peer.role)
        if now - peer.heard_at > timeout:
            log.info("room %s: %s unreachable for %.0f s, releasing", self.id, peer.role, timeout)
            return True
        return False

    # -- lifetime --------------------------------------------------------
    async def _close_peer(self, peer: Peer, quiet: bool = False, timeout: float = CLOSE_TIMEOUT_S) -> None:
        if peer.role == DOCTOR and DOCTOR not in self.peers:
            self.recording.doctor_left()  # a recording needs its doctor (a reloaded page records again)
        for task in peer.tasks:
            task.cancel()
        for track in [*peer.relayable.values(), *([peer.camera] if peer.camera is not None else [])]:
            track.stop()
        await close_connection(peer.pc, timeout)
        self.connections.discard(peer.pc)
        if peer.role == PATIENT and PATIENT not in self.peers and self._worker is not None:
            worker, self._worker = self._worker, None
            await asyncio.to_thread(worker.stop)
            self.face = False
        if not quiet:
            log.info("room %s: %s left", self.id, peer.role)

    async def close(self, reason: str = "deleted", timeout: float = CLOSE_TIMEOUT_S) -> None:
        """End the consult: the pages are told why (``{"ended": reason}``: ``deleted``, ``expired`` or ``shutdown``)
        before every connection, track and worker of it is closed.

        The connections close together, each given up after ``timeout`` s, while the consult's threads (its
        masking worker, its examination) finish their current step: a close takes about as long as its slowest
        part, not the sum of them.
        """
        if self.closed:
            return
        self.closed = True
        self._stats_task.cancel()
        self.recording.close()
        for task in list(self._background):
            task.cancel()
        notice = json.dumps({"ended": reason})
        told = [self._send_text(peer, notice) for peer in list(self.peers.values())]
        try:
            if any(told):
                await asyncio.sleep(ENDED_NOTICE_S)  # let the notice leave before the connections close
        finally:
            # also when this close is cancelled (a shutdown during an expiry, a client gone mid-DELETE): the
            # room is marked closed already, so nothing would ever release what is left running
            # out of peers first, so that their connections' "closed" events do not release them a second time
            peers = list(self.peers.values())
            self.peers.clear()
            # negotiating or displaced connections are not in peers: closed all the same
            others = [pc for pc in self.connections if all(pc is not peer.pc for peer in peers)]
            worker, self._worker = self._worker, None
            if worker is not None:
                worker.stop(timeout=0)  # told now, its frame finished below, while the connections close
            parts: list[Awaitable[object]] = [*(self._close_peer(peer, timeout=timeout) for peer in peers),
                                              *(close_connection(pc, timeout) for pc in others),
                                              asyncio.to_thread(self.exam.close)]
            if worker is not None:
                parts.append(asyncio.to_thread(worker.join, STOP_TIMEOUT_S))
            try:
                results = await asyncio.gather(*parts, return_exceptions=True)
                for result in results:  # one part failing must not keep the rest (and the tracks below) open
                    if isinstance(result, Exception):
                        log.error("room %s: closing failed (%s: %s)", self.id, result.__class__.__name__, result)
            finally:  # the consult's own tracks end even if this close is cancelled while its connections close
                self.connections.clear()
                self.masked.stop()
                self.closeup.stop()
            log.info("room %s: closed", self.id)


def _closeup_offer(sdp: str, videos: int) -> bool:
    """Whether a doctor's offer with ``videos`` video sections is the doctor page's with the eye close-up: exactly
    two, the second right after the first and receive-only (the patient page's second video follows its audio)."""
    if videos != 2:
        return False
    try:
        media = SessionDescription.parse(sdp).media
    except Exception:  # noqa: BLE001 - aiortc accepted this SDP already; if it cannot be read again, refuse
        return False
    return len(media) >= 2 and media[0].kind == "video" and media[1].kind == "video" and \
        media[1].direction == "recvonly"


class RoomRegistry:
    """All rooms of this server, with expiry."""

    def __init__(self, config: Config, metrics: Metrics | None = None) -> None:
        self.config = config
        self.metrics = metrics or Metrics()
        self.rooms: dict[str, Room] = {}
        #: Builds the masking pipeline of each consult's worker (None: the real MaskPipeline); a hook for tests.
        self.pipeline_factory: Callable[[], object] | None = None
        #: The recordings folder each new consult records into (opened when the server starts); tests set their own.
        self.recordings: RecordingStore | None = None
        self._expiry: asyncio.Task[None] | None = None
        #: The consults mask one frame at a time per CPU this process may use (see proxy.consult.gate).
        self.gate = CpuGate()

    def start(self) -> None:
        self._expiry = asyncio.create_task(self._expire())

    def create(self) -> Room:
        room = Room(secrets.token_urlsafe(9), self.config, self.metrics, self.pipeline_factory, self.recordings,
                    self.gate)
        self.rooms[room.id] = room
        self.metrics.consults.set(len(self.rooms))
        log.info("room %s: created (%d open)", room.id, len(self.rooms))
        return room

    def get(self, room_id: str) -> Room | None:
        return self.rooms.get(room_id)

    async def remove(self, room_id: str, reason: str = "deleted", timeout: float = CLOSE_TIMEOUT_S) -> bool:
        """Close and forget a consult; its pages hear ``reason`` (``deleted``, ``expired``, ``shutdown``)."""
        room = self.rooms.pop(room_id, None)
        if room is None:
            return False
        await room.close(reason, timeout)
        self.metrics.consults.set(len(self.rooms))
        return True

    def refresh_metrics(self) -> None:
        """Gauges that are cheaper to read on demand than to keep current."""
        for role in ("patient", "doctor"):
            self.metrics.peers.labels(role).set(sum(r._peer_state(role)["state"] == "connected"
                                                    for r in self.rooms.values()))
        self.metrics.fps.set(sum(r.stats.fps() for r in self.rooms.values()))
        self.metrics.low_cameras.set(sum(0 < r.camera_rate.kbps() < LOW_CAMERA_KBPS for r in self.rooms.values()))

    async def _expire(self) -> None:
        while True:
            await asyncio.sleep(5.0)
            now = time.monotonic()
            for room in list(self.rooms.values()):
                idle = not room.peers and now - room.last_active > self.config.room_idle_timeout
                if idle or now - room.created > self.config.room_max_lifetime:
                    log.info("room %s: expired (%s)", room.id, "idle" if idle else "maximum lifetime")
                    await self.remove(room.id, "expired")

    async def close(self) -> None:
        """At shutdown: stop expiring, and close every consult, all together."""
        if self._expiry is not None:
            self._expiry.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._expiry  # a consult it was closing finishes closing
        start, count = time.monotonic(), len(self.rooms)
        await asyncio.gather(*(self.remove(room_id, "shutdown", SHUTDOWN_CLOSE_TIMEOUT_S)
                               for room_id in list(self.rooms)))
        if count:
            log.info("shutdown: %d consult(s) closed in %.1f s", count, time.monotonic() - start)
