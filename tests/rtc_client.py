"""A real aiortc peer playing the patient's or the doctor's browser, for tests and load runs.

Also the helpers the proxy's robustness tests share: a camera picture no mask may ever show
(:func:`camera_pattern`), a check that a received frame is not it, and stand-in masking
pipelines (fast, failing, stalling, crashing) for ``RoomRegistry.pipeline_factory``.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import cv2
import numpy as np

from proxy.consult.client import THUMB, ConsultClient, FramesTrack, Receiver  # noqa: F401 - re-exported
from proxy.params import MaskParams


class Client(ConsultClient):
    """The product's scripted participant, with what only tests need: aiortc internals."""

    def selected_pair(self) -> tuple[str, str] | None:
        """Types (host, srflx, relay) of the local and remote candidates of the selected ICE pair."""
        connection = self.pc.getTransceivers()[0].sender.transport.transport._connection
        pair = connection._nominated.get(1)
        return (pair.local_candidate.type, pair.remote_candidate.type) if pair else None

    def abort(self) -> None:
        """Vanish without a goodbye, as a crashed browser or a pulled cable: close the UDP sockets.

        No DTLS close_notify, no RTCP BYE: the proxy only notices that nothing arrives any more.
        """
        for transceiver in self.pc.getTransceivers():
            connection = transceiver.sender.transport.transport._connection
            for protocol in list(connection._protocols):
                if protocol.transport is not None:
                    protocol.transport.close()
        if self.camera is not None:
            self.camera.stop()



class LocalProxy:
    """The proxy's app on an ephemeral 127.0.0.1 port, in this process, with an optional stand-in pipeline."""

    def __init__(self, config: Any, pipeline_factory: Callable[[], object] | None = None) -> None:
        from aiohttp.test_utils import TestServer

        from proxy.consult.server import REGISTRY, create_app

        self.config = config
        self.app = create_app(config)
        self.registry = self.app[REGISTRY]
        self.registry.pipeline_factory = pipeline_factory
        self.server = TestServer(self.app, host="127.0.0.1")
        self.base = ""

    async def __aenter__(self) -> LocalProxy:
        await self.server.start_server()
        self.base = str(self.server.make_url("")).rstrip("/")
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.server.close()

    async def create_room(self, session: aiohttp.ClientSession) -> dict[str, str]:
        async with session.post(f"{self.base}/api/rooms",
                                headers={"Authorization": f"Bearer {self.config.api_key}"}) as response:
            assert response.status == 201, await response.text()
            return await response.json()

    async def state(self, session: aiohttp.ClientSession, room: dict[str, str]) -> dict[str, Any]:
        async with session.get(f"{self.base}/api/rooms/{room['room']}",
                               headers={"Authorization": f"Bearer {room['doctor_token']}"}) as response:
            assert response.status == 200, await response.text()
            return await response.json()

    def client(self, room: dict[str, str], role: str, **kwargs: Any) -> Client:
        return Client(self.base, room["room"], room[f"{role}_token"], role, **kwargs)


async def wait_for(predicate: Callable[[], Any], timeout: float, step: float = 0.25) -> float:
    """Poll ``predicate`` (sync or async) until true; seconds it took. Fails the test on timeout."""
    start = time.monotonic()
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return time.monotonic() - start
        assert time.monotonic() - start < timeout, f"not true within {timeout} s"
        await asyncio.sleep(step)


# -- pictures the tests recognise ------------------------------------------

def camera_pattern(width: int = 320, height: int = 240) -> np.ndarray:
    """A camera picture nothing the proxy sends may resemble: saturated magenta, a checkerboard marker."""
    image = np.zeros((height, width, 3), np.uint8)
    image[:] = (255, 0, 255)
    cell = max(2, min(width, height) // 12)
    for y in range(4):
        for x in range(4):
            image[y * cell:(y + 1) * cell, x * cell:(x + 1) * cell] = (0, 255, 0) if (x + y) % 2 else (255, 255, 0)
    return image


def thumb(image: np.ndarray) -> np.ndarray:
    return cv2.resize(image, THUMB, interpolation=cv2.INTER_AREA).astype(np.int16)


def distance(a: np.ndarray, b: np.ndarray) -> float:
    """Mean absolute difference of two thumbnails (0-255)."""
    return float(np.abs(thumb(a) - thumb(b)).mean())


def fault_card() -> np.ndarray:
    from proxy.consult.worker import fault_placeholder

    return fault_placeholder(320, 240)


def neutral_avatar() -> np.ndarray:
    from proxy.consult.rooms import IdlePictures

    return IdlePictures.neutral(320, 240)


# -- stand-in masking pipelines (MaskPipeline's interface) -----------------

class NeutralPipeline:
    """Fast stand-in: the neutral avatar for every frame. It never reads the pixels it gets."""

    def __init__(self) -> None:
        self.timings: dict[str, float] = {}
        self.calls = 0

    def process(self, rgb: np.ndarray, t: float, index: int) -> tuple[MaskParams, np.ndarray]:
        self.calls += 1
        height, width = rgb.shape[:2]
        self.timings = {"track": 0.1, "render": 0.1}
        return MaskParams.neutral(index, t), self.output(width, height)

    @staticmethod
    def output(width: int, height: int) -> np.ndarray:
        from proxy.consult.rooms import IdlePictures

        return IdlePictures.neutral(width, height)

    def close(self) -> None:
        pass


class FailingPipeline(NeutralPipeline):
    """The tracker raises on every frame."""

    def process(self, rgb: np.ndarray, t: float, index: int) -> tuple[MaskParams, np.ndarray]:
        self.calls += 1
        raise RuntimeError("tracker exploded")


class StallingPipeline(NeutralPipeline):
    """The renderer hangs for ``seconds`` on every frame, then returns the neutral avatar."""

    seconds = 3.0

    def process(self, rgb: np.ndarray, t: float, index: int) -> tuple[MaskParams, np.ndarray]:
        time.sleep(self.seconds)
        return super().process(rgb, t, index)


class WorkerCrash(SystemExit):
    """Not an Exception: escapes the worker's error handling and ends its thread, as a fatal error would."""


class CrashingPipeline(NeutralPipeline):
    """Kills the worker thread on every frame."""

    def process(self, rgb: np.ndarray, t: float, index: int) -> tuple[MaskParams, np.ndarray]:
        self.calls += 1
        raise WorkerCrash("worker thread killed")


def counting(factory: Callable[[], NeutralPipeline]) -> tuple[Callable[[], NeutralPipeline], list[NeutralPipeline]]:
    """``factory`` and the list of pipelines it made."""
    made: list[NeutralPipeline] = []

    def make() -> NeutralPipeline:
        made.append(factory())
        return made[-1]

    return make, made


# -- a consult in its own process ------------------------------------------

async def _consult(args: Any) -> None:
    """Both sides of a consult; one JSON line per ``--every`` seconds: doctor's masked frames so far, etc."""
    width, height = map(int, args.size.split("x"))
    async with aiohttp.ClientSession() as session:
        doctor = Client(args.base, args.room, args.doctor_token, "doctor", thumbs=True)
        patient = Client(args.base, args.room, args.patient_token, "patient",
                         frames=[camera_pattern(width, height)], fps=args.fps)
        await doctor.connect(session)
        await patient.connect(session)
        print(json.dumps({"connected": True}), flush=True)
        end = time.monotonic() + args.seconds
        try:
            while time.monotonic() < end:
                await asyncio.sleep(args.every)
                masked = doctor.receivers.get("masked")
                far = min((distance(t, camera_pattern(width, height)) for t in masked.thumbs[-30:]), default=None) \
                    if masked else None
                print(json.dumps({"t": time.monotonic(), "doctor_frames": masked.count if masked else 0,
                                  "camera_sent": patient.camera.sent if patient.camera else 0,
                                  "min_distance_to_camera": far, "doctor_state": doctor.pc.connectionState,
                                  "patient_state": patient.pc.connectionState}), flush=True)
        finally:
            await patient.close()
            await doctor.close()


def main() -> None:
    """``python -m tests.rtc_client BASE ROOM PATIENT_TOKEN DOCTOR_TOKEN``: a consult outside the test's process.

    A browser pair does not share the proxy's interpreter; running the clients here keeps their
    decoding and encoding off the proxy's GIL, so the frame rate measured is the proxy's.
    """
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    for name in ("base", "room", "patient_token", "doctor_token"):
        parser.add_argument(name)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--every", type=float, default=0.5)
    parser.add_argument("--size", default="320x240")
    parser.add_argument("--fps", type=float, default=30.0)
    asyncio.run(_consult(parser.parse_args()))


if __name__ == "__main__":
    main()
