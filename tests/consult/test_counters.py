"""A consult's counters never go backwards (issue 20: a consult's ``dropped`` went from 115 to 0 within 10 s).

They used to belong to the masking worker, so they restarted from zero whenever the worker was replaced:
when the patient reconnected (the worker is stopped with the old connection) or after a worker died. Real
parts: the proxy's app on 127.0.0.1, real aiortc peers; the masking stage is a slow stand-in (50 ms a
frame, so frames are dropped at 30 fps) that kills its worker thread once, as a fatal error would.
"""

from __future__ import annotations

import time

import aiohttp
import numpy as np
import pytest

from proxy.consult.config import Config
from proxy.params import MaskParams
from tests.rtc_client import LocalProxy, NeutralPipeline, WorkerCrash, camera_pattern, wait_for

KEY = "counters-test-key-0123456789"
COUNTERS = ("frames", "dropped", "masked", "errors", "restarts")


class SlowOnceFatalPipeline(NeutralPipeline):
    """50 ms a frame; once armed, the next frame kills the worker thread (once)."""

    armed = False

    def process(self, rgb: np.ndarray, t: float, index: int) -> tuple[MaskParams, np.ndarray]:
        time.sleep(0.05)
        if SlowOnceFatalPipeline.armed:
            SlowOnceFatalPipeline.armed = False
            raise WorkerCrash("worker thread killed")
        return super().process(rgb, t, index)


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")  # the death we cause
async def test_counters_survive_a_reconnect_and_a_worker_death() -> None:
    SlowOnceFatalPipeline.armed = False
    async with LocalProxy(Config(api_key=KEY), SlowOnceFatalPipeline) as proxy, \
            aiohttp.ClientSession() as session:
        room = await proxy.create_room(session)
        doctor = proxy.client(room, "doctor")
        patient = proxy.client(room, "patient", frames=[camera_pattern()], fps=30)
        await doctor.connect(session)
        await patient.connect(session)
        states: list[dict[str, int]] = []

        async def sample() -> dict[str, int]:
            mask = (await proxy.state(session, room))["mask"]
            states.append({k: mask[k] for k in COUNTERS})
            return states[-1]

        replacement = None
        try:
            await patient.wait_connected()
            await wait_for(lambda: sample_and(sample, lambda s: s["dropped"] >= 20), 20.0)
            # the patient's tab reloads: its connection (and the worker with it) is replaced
            replacement = proxy.client(room, "patient", frames=[camera_pattern()], fps=30)
            await replacement.connect(session)
            await patient.close()
            await replacement.wait_connected()
            masked = (await sample())["masked"]
            await wait_for(lambda: sample_and(sample, lambda s: s["masked"] >= masked + 20), 20.0)
            SlowOnceFatalPipeline.armed = True  # the worker dies on its next frame, and is restarted
            await wait_for(lambda: sample_and(sample, lambda s: s["restarts"] >= 1), 20.0)
            masked = states[-1]["masked"]
            await wait_for(lambda: sample_and(sample, lambda s: s["masked"] >= masked + 20), 20.0)
        finally:
            await patient.close()
            if replacement is not None:
                await replacement.close()
            await doctor.close()
    for name in COUNTERS:
        values = [s[name] for s in states]
        assert values == sorted(values), f"{name} went backwards: {values}"
    assert states[-1]["restarts"] == 1 and states[-1]["dropped"] > 20


async def sample_and(sample: object, predicate: object) -> bool:
    return bool(predicate(await sample()))  # type: ignore[operator]
