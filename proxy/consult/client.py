"""A scripted consult participant: a real aiortc peer in the role of the patient's or the doctor's browser.

Used by ``maskproxy bench --live`` (load and latency runs against a running
proxy) and by the tests. It negotiates exactly as the pages do (see
web/js/rtc.js): the same m-line order, a ``mask`` data channel, non-trickle ICE.
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import json
import time
from typing import Any

import aiohttp
import av
import numpy as np
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import AudioStreamTrack, MediaStreamError, MediaStreamTrack


class FramesTrack(MediaStreamTrack):
    """Sends the given RGB frames in a loop at ``fps``, paced in real time, as a camera would."""

    kind = "video"

    def __init__(self, frames: list[np.ndarray], fps: float = 30.0) -> None:
        super().__init__()
        self.frames = frames
        self.fps = fps
        self.sent = 0
        self._start: float | None = None

    async def recv(self) -> av.VideoFrame:
        if self._start is None:
            self._start = time.monotonic()
        delay = self._start + self.sent / self.fps - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        frame = av.VideoFrame.from_ndarray(self.frames[self.sent % len(self.frames)], format="rgb24")
        frame.pts = int(self.sent * 90000 / self.fps)
        frame.time_base = fractions.Fraction(1, 90000)
        self.sent += 1
        return frame


#: Size of the thumbnails a Receiver can keep of every video frame.
THUMB = (32, 24)


class Receiver:
    """Counts what a remote track delivers; keeps every 10th video frame (up to ``keep``) and,
    with ``thumbs``, a small RGB copy of every one."""

    def __init__(self, track: MediaStreamTrack, keep: int = 0, thumbs: bool = False) -> None:
        self.track = track
        self.count = 0
        self.times: list[float] = []
        self.kept: list[np.ndarray] = []
        self.thumbs: list[np.ndarray] = []
        self.sizes: set[tuple[int, int]] = set()
        self.keep = keep
        self.keep_thumbs = thumbs
        self.ended = False  #: the remote track ended (the connection closed)
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            try:
                frame = await self.track.recv()
            except MediaStreamError:
                self.ended = True
                return
            self.count += 1
            self.times.append(time.monotonic())
            if self.track.kind != "video":
                continue
            self.sizes.add((frame.width, frame.height))
            if len(self.kept) < self.keep and self.count % 10 == 0:
                self.kept.append(frame.to_ndarray(format="rgb24"))
            if self.keep_thumbs:
                self.thumbs.append(frame.to_ndarray(width=THUMB[0], height=THUMB[1], format="rgb24"))

    def fps(self, seconds: float = 3.0, now: float | None = None) -> float:
        now = time.monotonic() if now is None else now
        return sum(1 for t in self.times if t > now - seconds) / seconds


class ConsultClient:
    """One side of a consult (``patient`` or ``doctor``); ``connect()``, then ``close()``."""

    def __init__(self, base: str, room: str, token: str, role: str, frames: list[np.ndarray] | None = None,
                 fps: float = 30.0, configuration: RTCConfiguration | None = None, thumbs: bool = False,
                 closeup: bool = False) -> None:
        self.base, self.room, self.token, self.role = base.rstrip("/"), room, token, role
        self.pc = RTCPeerConnection(configuration)
        self.messages: list[dict[str, Any]] = []
        self.camera = FramesTrack(frames, fps) if frames is not None else None
        self.receivers: dict[str, Receiver] = {}
        self.channel: Any = None  #: the "mask" data channel, once connect() made it
        self.thumbs = thumbs  #: keep a thumbnail of every frame of every video received
        #: a doctor that asks for the eye close-up, as the doctor page does: [video, video (receive-only), audio]
        self.closeup = closeup and role == "doctor"

    async def connect(self, session: aiohttp.ClientSession, keep: int = 0, answer: bool = True) -> None:
        """Offer to the proxy and, with ``answer``, apply its answer (without: a peer that never connects)."""
        pc = self.pc
        if self.camera is not None:
            pc.addTransceiver(self.camera, direction="sendrecv")
        else:
            pc.addTransceiver("video", direction="recvonly")
        if self.closeup:
            pc.addTransceiver("video", direction="recvonly")
        pc.addTransceiver(AudioStreamTrack(), direction="sendrecv")
        if self.role == "patient":
            pc.addTransceiver("video", direction="recvonly")
        names = ["masked", "closeup", "audio"] if self.closeup else ["masked", "audio", "doctor_video"]
        channel = self.channel = pc.createDataChannel("mask")

        @channel.on("message")
        def on_message(message: str) -> None:
            self.messages.append(json.loads(message))

        @pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            index = [t.receiver.track for t in pc.getTransceivers()].index(track)
            name = names[index]
            self.receivers[name] = Receiver(track, keep=keep if name in ("masked", "closeup") else 0,
                                            thumbs=self.thumbs)

        await pc.setLocalDescription(await pc.createOffer())
        async with session.post(f"{self.base}/api/rooms/{self.room}/offer",
                                json={"token": self.token, "role": self.role, "sdp": pc.localDescription.sdp,
                                      "type": "offer"}) as r:
            body = await r.json()
            if r.status != 200:
                raise RuntimeError(f"offer refused: {r.status} {body}")
        if answer:
            await pc.setRemoteDescription(RTCSessionDescription(sdp=body["sdp"], type=body["type"]))

    async def wait_connected(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while self.pc.connectionState != "connected":
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.role} did not connect: {self.pc.connectionState}")
            await asyncio.sleep(0.05)

    def send(self, message: str | bytes | dict[str, Any]) -> None:
        """Put a message on the "mask" data channel (a dict is sent as JSON), as a page does."""
        self.channel.send(json.dumps(message) if isinstance(message, dict) else message)

    def params(self) -> list[dict[str, Any]]:
        """The per-frame mask parameters received (not stats, exam or other notices)."""
        return [m for m in self.messages if "frame" in m and "face" in m]

    def exam(self, kind: str) -> list[dict[str, Any]]:
        """The bodies of the exam messages of one kind received (``exam``, ``exam_started``, ``exam_result``...)."""
        return [m[kind] for m in self.messages if kind in m]

    async def close(self) -> None:
        for receiver in self.receivers.values():
            receiver.task.cancel()
        with contextlib.suppress(TimeoutError):  # aiortc's close can wait forever once the other end is gone
            async with asyncio.timeout(5.0):
                await self.pc.close()
