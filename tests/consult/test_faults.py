"""Masking faults in a live consult: the tracker raising on every frame, the renderer stalling,
the worker thread dying. In each case the doctor gets the placeholder card (or the neutral
avatar), and every frame the doctor receives is checked against the patient's camera picture,
a saturated magenta with a checkerboard marker, to prove that no camera frame was sent.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import aiohttp
import numpy as np
import pytest

from proxy.consult.config import Config
from proxy.consult.server import METRICS
from tests.rtc_client import (
    CrashingPipeline,
    FailingPipeline,
    LocalProxy,
    NeutralPipeline,
    StallingPipeline,
    camera_pattern,
    counting,
    distance,
    fault_card,
    neutral_avatar,
    wait_for,
)

KEY = "faults-test-key-0123456789"
NEAR = 15.0  #: thumbnail distance within which a received frame "is" a known picture (VP8 noise)
FAR = 60.0  #: every received frame must be at least this far from the camera picture


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client_session:
        yield client_session


def classify(thumbs: list[np.ndarray]) -> dict[str, int]:
    """How many received frames are the card, the neutral avatar, the camera (must be 0), or other."""
    camera, card, neutral = camera_pattern(), fault_card(), neutral_avatar()
    counts = {"card": 0, "neutral": 0, "camera": 0, "other": 0}
    for shown in thumbs:
        to_card, to_neutral = distance(shown, card), distance(shown, neutral)
        if distance(shown, camera) <= FAR:
            counts["camera"] += 1
        elif min(to_card, to_neutral) <= NEAR:
            counts["card" if to_card < to_neutral else "neutral"] += 1
        else:
            counts["other"] += 1
    return counts


async def run_consult(factory: Callable[[], object], seconds: float,
                      during: Callable[[LocalProxy, dict[str, str]], object] | None = None
                      ) -> tuple[dict[str, int], dict[str, object], LocalProxy]:
    """A consult with ``factory``'s pipeline for ``seconds``; what the doctor saw and the room state."""
    async with LocalProxy(Config(api_key=KEY), factory) as proxy, aiohttp.ClientSession() as session:
        room = await proxy.create_room(session)
        doctor = proxy.client(room, "doctor", thumbs=True)
        patient = proxy.client(room, "patient", frames=[camera_pattern()], fps=15)
        await doctor.connect(session)
        await patient.connect(session)
        try:
            await patient.wait_connected()
            await asyncio.sleep(seconds)
            if during is not None:
                result = during(proxy, room)
                if asyncio.iscoroutine(result):
                    await result
            state = await proxy.state(session, room)
            masked = doctor.receivers["masked"]
            assert patient.camera is not None and patient.camera.sent >= 10 * seconds
            assert masked.count >= 5 * seconds, f"the doctor got only {masked.count} frames"
            return classify(masked.thumbs), state, proxy
        finally:
            await patient.close()
            await doctor.close()


async def test_control_stand_in_pipeline_is_seen_as_the_avatar() -> None:
    """The detector itself: a working (stand-in) pipeline shows the neutral avatar, never the card."""
    seen, state, _ = await run_consult(NeutralPipeline, 3.0)
    assert seen["camera"] == 0 and seen["card"] == 0, seen
    assert seen["neutral"] >= 0.9 * sum(seen.values()), seen
    assert state["mask"]["errors"] == 0 and state["mask"]["frames"] > 20


def test_the_check_would_catch_a_leak() -> None:
    """A pipeline that passed the camera through would be caught: the camera picture classifies as camera."""
    noisy = np.clip(camera_pattern().astype(np.int16) + np.random.default_rng(0).integers(-20, 20, (240, 320, 3)),
                    0, 255).astype(np.uint8)
    assert classify([camera_pattern(), noisy]) == {"card": 0, "neutral": 0, "camera": 2, "other": 0}


async def test_tracker_exception_on_every_frame() -> None:
    make, made = counting(FailingPipeline)
    seen, state, _ = await run_consult(make, 4.0)
    print(f"tracker raising: doctor saw {seen}; mask {state['mask']}")
    assert seen["camera"] == 0, seen
    assert seen["card"] >= 0.7 * sum(seen.values()), seen
    assert state["mask"]["errors"] >= 20 and state["mask"]["face"] is False
    assert sum(p.calls for p in made) >= 20  # the frames did reach the (failing) pipeline
    assert len(made) >= 2  # the worker rebuilds its pipeline after a failure


async def test_render_stall() -> None:
    """Each frame takes 3 s: frames that arrive meanwhile are dropped (never queued), and so is the
    late result itself (3 s old is not live); the doctor gets the card while the worker is stuck
    and the neutral avatar between."""
    seen, state, _ = await run_consult(StallingPipeline, 7.0)
    print(f"render stall: doctor saw {seen}; mask {state['mask']}")
    assert seen["camera"] == 0 and seen["other"] <= 0.1 * sum(seen.values()), seen
    assert seen["card"] >= 0.5 * sum(seen.values()), seen
    assert state["mask"]["dropped"] >= 40  # ~15 fps for 7 s, only ~3 frames masked: the rest dropped
    assert state["mask"]["frames"] == 0  # nothing 3 s late was passed off as live


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")  # the deaths we cause
async def test_worker_crash_restarts_with_the_card_meanwhile() -> None:
    """The worker thread dies on every frame: the doctor sees the card, the room restarts a worker (at
    most once a second); once the pipeline works again, masked frames flow again."""
    made: list[object] = []
    crashing = {"on": True}

    def make() -> object:
        made.append(CrashingPipeline() if crashing["on"] else NeutralPipeline())
        return made[-1]

    async def recover(proxy: LocalProxy, room: dict[str, str]) -> None:
        live = proxy.registry.get(room["room"])
        assert live is not None
        crashes = len(made)
        assert 2 <= crashes <= 7, crashes  # restarted, with back-off (4 s of frames at 15 fps)
        state = live.state()["mask"]
        assert state["frames"] == 0 and state["worker"] in ("running", "stopped")
        crashing["on"] = False
        await wait_for(lambda: live.stats.frames > 20, 10)

    seen, state, proxy = await run_consult(make, 4.0, recover)
    print(f"worker crash: doctor saw {seen}; pipelines made {len(made)}; mask {state['mask']}")
    assert seen["camera"] == 0 and seen["other"] <= 0.1 * sum(seen.values()), seen
    assert seen["card"] >= 30, seen  # ~4 s of the card at 15 fps, before the recovery
    assert seen["neutral"] >= 20, seen  # masked (stand-in) frames after it
    assert state["mask"]["worker"] == "running"
    errors = [line for line in proxy.app[METRICS].render().decode().splitlines()
              if line.startswith("maskproxy_mask_errors_total")]
    assert errors and float(errors[0].split()[-1]) >= 2  # each death counted


async def test_audio_relay_survives_switching_sources() -> None:
    """The patient hears silence until the doctor's audio arrives, then the doctor's (decoded Opus: stereo),
    then a mono 8 kHz source: aiortc's Opus encoder fixes its input format on the first frame and raised
    on the switch, which silently ended the relayed audio for the rest of the call."""
    import fractions

    import av
    from aiortc.codecs.opus import OpusEncoder
    from aiortc.mediastreams import MediaStreamTrack

    from proxy.consult.tracks import SwitchableTrack

    class Tone(MediaStreamTrack):
        kind = "audio"

        def __init__(self, layout: str, rate: int) -> None:
            super().__init__()
            self.layout, self.rate, self.pts = layout, rate, 0

        async def recv(self) -> av.AudioFrame:
            samples = self.rate // 50
            channels = 2 if self.layout == "stereo" else 1
            frame = av.AudioFrame.from_ndarray(np.full((1, samples * channels), 1000, np.int16), format="s16",
                                               layout=self.layout)
            frame.sample_rate, frame.pts, frame.time_base = self.rate, self.pts, fractions.Fraction(1, self.rate)
            self.pts += samples
            return frame

    current: dict[str, MediaStreamTrack | None] = {"source": None}
    relay = SwitchableTrack("audio", lambda: current["source"])
    encoder = OpusEncoder()
    packets = 0
    for source in (None, Tone("stereo", 48000), Tone("mono", 8000), None):
        current["source"] = source
        for _ in range(5):
            frame = await relay.recv()
            assert frame.format.name == "s16" and frame.layout.name == "stereo" and frame.sample_rate == 48000
            packets += len(encoder.encode(frame)[0])
    assert packets >= 15
