"""The eye examination on the wire (issue 16): guided tests over the data channels, junk ignored and counted,
and the doctor's eye close-up track.

Real parts: the proxy's app on 127.0.0.1, real aiortc peers playing both pages (the product's scripted
participant), real VP8 on the wire, the real close-up renderer (GL). The masking stage is a stand-in that
never reads the camera and reports eyes moving left and right, so the close-up has something to show and
the test stays fast; the browser test (test_browser_exam.py) runs the real tracker.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import numpy as np
import pytest
from aiortc import RTCPeerConnection

from proxy.consult.config import Config
from proxy.params import MaskParams
from tests.rtc_client import Client, LocalProxy, NeutralPipeline, camera_pattern, distance, wait_for

KEY = "exam-link-test-key-0123456789"
#: A received frame at least this far (mean absolute difference of 32x24 thumbnails) from the camera picture
#: is not the camera picture (the camera through VP8 sits within a few units of it).
NOT_THE_CAMERA = 60.0
#: A short pursuit: 1 s at the centre, then one 1 Hz cycle; the dot starts 2 s after the command.
SHORT_PURSUIT = {"test": "pursuit", "frequency_hz": 1.0, "amplitude_deg": 8, "cycles": 1, "axes": "horizontal"}


class MovingEyesPipeline(NeutralPipeline):
    """Stand-in masking: a face whose eyes swing 20 degrees left and right at 0.5 Hz; never reads the pixels."""

    def process(self, rgb: np.ndarray, t: float, index: int) -> tuple[MaskParams, np.ndarray]:
        self.calls += 1
        height, width = rgb.shape[:2]
        gaze = 20.0 * math.sin(2 * math.pi * 0.5 * t)
        params = MaskParams(face=True, frame=index, t=t, right_gaze_yaw=gaze, left_gaze_yaw=gaze)
        self.timings = {"track": 0.1, "render": 0.1}
        return params, self.output(width, height)


class BrokenRenderer:
    """A close-up renderer whose drawing always fails."""

    def __init__(self, width: int, height: int) -> None:
        self.width, self.height = width, height

    def render(self, params: MaskParams) -> np.ndarray:
        raise RuntimeError("GL context lost")

    def close(self) -> None:
        pass


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client_session:
        yield client_session


@pytest.fixture
async def proxy() -> AsyncIterator[LocalProxy]:
    async with LocalProxy(Config(api_key=KEY, peer_timeout=20.0), MovingEyesPipeline) as local:
        yield local


async def consult(proxy: LocalProxy, session: aiohttp.ClientSession, closeup: bool = True
                  ) -> tuple[dict[str, str], Client, Client]:
    room = await proxy.create_room(session)
    doctor = proxy.client(room, "doctor", closeup=closeup, thumbs=True)
    patient = proxy.client(room, "patient", frames=[camera_pattern(320, 240)], fps=30)
    await doctor.connect(session, keep=30)
    await patient.connect(session)
    await doctor.wait_connected()
    await patient.wait_connected()
    await wait_for(lambda: doctor.channel.readyState == "open" and patient.channel.readyState == "open", 10)
    await wait_for(lambda: len(doctor.params()) > 5, 20)  # frames are being masked
    return room, doctor, patient


async def test_a_pursuit_runs_from_the_doctor_through_the_proxy_to_the_patient_and_back(
        proxy: LocalProxy, session: aiohttp.ClientSession) -> None:
    room, doctor, patient = await consult(proxy, session)
    try:
        doctor.send({"exam": SHORT_PURSUIT})
        await wait_for(lambda: patient.exam("exam"), 5)
        command = patient.exam("exam")[0]
        # the patient's page gets what it needs to draw the dot, and nothing of the doctor's raw message
        assert command["test"] == "pursuit" and command["lead_s"] == 2.0
        assert command["instruction"].startswith("Follow the moving dot")
        assert command["screen"]["distance_css_px"] > 0
        assert [s["label"] for s in command["segments"]] == ["centre", "horizontal"]
        assert command["segments"][1]["hz"] == 1.0 and command["segments"][1]["amp_yaw"] == 8.0
        await wait_for(lambda: doctor.exam("exam_started"), 5)
        started = doctor.exam("exam_started")
        assert started and started[0]["id"] == command["id"] and started[0]["duration_s"] == 2.0
        await asyncio.sleep(1.0)
        patient.send({"exam_started": {"id": command["id"]}})  # the page's dot started moving

        await wait_for(lambda: doctor.exam("exam_result"), 15)
        result = doctor.exam("exam_result")[0]
        assert result["id"] == command["id"] and result["test"] == "pursuit" and result["stopped"] is None
        assert {(r["eye"], r["axis"]) for r in result["results"]} == {("right", "horizontal"), ("left", "horizontal")}
        assert all("webcam" in r["caveat"] for r in result["results"])
        assert result["quality"]["frames"] > 30
        # the dot's path came with the frames, on the frames' own clock, for the doctor's traces
        targets = doctor.exam("exam_target")
        frame_times = {p["t"] for p in doctor.params()}
        assert len(targets) > 30 and all(t["id"] == command["id"] for t in targets)
        assert sum(t["t"] in frame_times for t in targets) > 0.8 * len(targets)
        assert max(abs(t["yaw"]) for t in targets) == pytest.approx(8.0, abs=0.5)
        assert all(t["pitch"] == 0 for t in targets)
        # the patient's page is told the test ended; live readouts keep coming to the doctor only
        await wait_for(lambda: {"test": "stop", "id": command["id"]} in patient.exam("exam"), 5)
        live = doctor.exam("exam_live")
        assert live and {"nystagmus", "lids", "blinks", "deviation", "calibration"} <= set(live[-1])
        assert not patient.exam("exam_live") and not patient.exam("exam_target")
        state = await proxy.state(session, room)
        assert state["exam"]["tests"] == 1 and state["exam"]["ignored_total"] == 0, state["exam"]
    finally:
        await patient.close()
        await doctor.close()


async def test_junk_on_the_data_channels_is_ignored_counted_and_harms_nothing(
        proxy: LocalProxy, session: aiohttp.ClientSession) -> None:
    room, doctor, patient = await consult(proxy, session, closeup=False)
    try:
        junk_from_doctor: list[Any] = [
            {"exam": {"test": "rm -rf /"}},  # unknown test
            {"launch": {"missiles": True}},  # unknown message
            {"exam": {"test": "pursuit", "amplitude_deg": 90}},  # out of range
            {"exam": {"test": "pursuit", "frequency_hz": "fast"}},  # not a number
            {"screen": {"width_css_px": 1000, "height_css_px": 700}},  # a patient's message
            "{not json",
            "[1, 2, 3]",
            b"\x00\xff binary",
            "x" * 2000,  # just over the limit
            "y" * 60000,  # far over it
            {"exam": {"test": "pursuit", "padding": "z" * 1100}},  # valid in shape, too big
        ]
        for message in junk_from_doctor:
            doctor.send(message)
        # the patient may not command tests, nor claim a test that is not running
        patient.send({"exam": {"test": "pursuit"}})
        patient.send({"exam": {"test": "stop"}})
        patient.send({"exam_started": {"id": 99}})
        patient.send({"leaving": False, "extra": 1})
        patient.send({"closeup": {"on": True}})  # the doctor's view is the doctor's
        doctor.send({"closeup": {"on": "yes"}})  # not the switch's shape: an unknown message
        for _ in range(300):  # a flood
            doctor.send({"exam": {"test": "nope"}})

        async def settled() -> bool:
            exam = (await proxy.state(session, room))["exam"]
            return exam["ignored_total"] >= len(junk_from_doctor) + 6 + 300

        await wait_for(settled, 15)
        exam = (await proxy.state(session, room))["exam"]
        ignored = exam["ignored"]
        assert ignored["oversized"] == 3, ignored
        assert ignored["not_allowed"] == 4, ignored  # the doctor's screen report, the patient's commands and switch
        assert ignored["out_of_range"] == 2, ignored
        assert ignored["malformed"] == 4 and ignored["stale"] == 1, ignored  # (and a two-key "leaving")
        assert ignored["unknown"] + ignored.get("flood", 0) >= 300 + 2, ignored
        assert exam["tests"] == 0 and exam["running"] is None and exam["errors"] == 0
        assert exam["closeup"]["on"] is False
        assert not patient.exam("exam"), "junk started a test on the patient's screen"
        # nothing crashed: masking goes on, and a valid command still works after the junk
        frames = len(doctor.params())
        await wait_for(lambda: len(doctor.params()) > frames + 10, 10)
        doctor.send({"exam": {"test": "fixation", "duration_s": 2}})
        await wait_for(lambda: patient.exam("exam"), 5)
        assert patient.exam("exam")[0]["test"] == "fixation"
        assert (await proxy.state(session, room))["mask"]["errors"] == 0
    finally:
        await patient.close()
        await doctor.close()


def iris_column(rgb: np.ndarray) -> float:
    """Mean column of the darkest pixels in the right eye's half (the pupil and iris) of a close-up frame."""
    half = rgb[:, : rgb.shape[1] // 2].astype(np.int16).sum(axis=2)
    dark = half < np.percentile(half, 2)
    return float(np.nonzero(dark)[1].mean())


async def test_the_doctor_gets_the_eye_closeup_drawn_from_the_parameters_never_the_camera(
        proxy: LocalProxy, session: aiohttp.ClientSession) -> None:
    room, doctor, patient = await consult(proxy, session)
    try:
        # it starts off: the track shows the neutral eyes and nothing is drawn per frame
        await wait_for(lambda: "closeup" in doctor.receivers and doctor.receivers["closeup"].count > 10, 30)
        await asyncio.sleep(1.0)
        state = await proxy.state(session, room)
        assert state["exam"]["closeup"]["on"] is False and state["exam"]["closeup"]["rendered"] == 0
        doctor.send({"closeup": {"on": True}})  # the doctor's page shows it
        await wait_for(lambda: doctor.receivers["closeup"].count > 80, 30)
        closeup = doctor.receivers["closeup"]
        await asyncio.sleep(3.0)
        fps = closeup.fps(3.0)
        state = await proxy.state(session, room)
        assert closeup.sizes == {(960, 320)}, closeup.sizes
        camera = camera_pattern(320, 240)
        nearest = min(distance(thumb, camera) for thumb in closeup.thumbs)
        assert nearest > NOT_THE_CAMERA, f"a close-up frame looks like the camera picture ({nearest:.1f})"
        # it shows the eyes moving as the parameters say: the iris swings across the eye
        columns = [iris_column(frame) for frame in closeup.kept]
        assert len(columns) >= 5 and max(columns) - min(columns) > 40, columns
        assert fps >= 10, f"the close-up arrives at {fps:.1f} fps (room: {state['exam']['closeup']})"
        assert state["exam"]["closeup"]["sending"] is True and state["exam"]["closeup"]["rendered"] > 60
        assert state["exam"]["closeup"]["errors"] == 0
        # the face view went on at its own rate meanwhile
        assert doctor.receivers["masked"].fps(3.0) >= 10
    finally:
        await patient.close()
        await doctor.close()


async def test_a_failing_closeup_renderer_sends_the_fault_card(proxy: LocalProxy,
                                                               session: aiohttp.ClientSession) -> None:
    room = await proxy.create_room(session)
    proxy.registry.get(room["room"]).exam._make_renderer = BrokenRenderer
    doctor = proxy.client(room, "doctor", closeup=True, thumbs=True)
    patient = proxy.client(room, "patient", frames=[camera_pattern(320, 240)], fps=30)
    await doctor.connect(session)
    await patient.connect(session)
    try:
        await doctor.wait_connected()
        await wait_for(lambda: doctor.channel.readyState == "open", 10)
        doctor.send({"closeup": {"on": True}})
        await wait_for(lambda: "closeup" in doctor.receivers and doctor.receivers["closeup"].count > 30, 30)
        await asyncio.sleep(1.0)
        from proxy.consult.worker import fault_placeholder

        card = fault_placeholder(960, 320)
        recent = doctor.receivers["closeup"].thumbs[-10:]
        assert max(distance(thumb, card) for thumb in recent) < 10, "the close-up is not the fault card"
        state = await proxy.state(session, room)
        assert state["exam"]["closeup"]["errors"] > 10 and state["mask"]["errors"] == 0
        assert doctor.receivers["masked"].count > 30  # the face view is unaffected
    finally:
        await patient.close()
        await doctor.close()


async def test_a_doctor_offer_may_add_only_a_receive_only_closeup_right_after_its_video(
        proxy: LocalProxy, session: aiohttp.ClientSession) -> None:
    room = await proxy.create_room(session)

    async def offer(*kinds: tuple[str, str]) -> tuple[int, dict[str, Any]]:
        pc = RTCPeerConnection()
        for kind, direction in kinds:
            pc.addTransceiver(kind, direction=direction)
        pc.createDataChannel("mask")
        await pc.setLocalDescription(await pc.createOffer())
        body = {"token": room["doctor_token"], "role": "doctor", "sdp": pc.localDescription.sdp, "type": "offer"}
        await pc.close()
        async with session.post(f"{proxy.base}/api/rooms/{room['room']}/offer", json=body) as response:
            return response.status, await response.json()

    video, recv, audio = ("video", "sendrecv"), ("video", "recvonly"), ("audio", "sendrecv")
    assert (await offer(video, recv, audio))[0] == 200  # the doctor page with the close-up
    assert (await offer(video, audio))[0] == 200  # and without
    for refused in ((video, audio, recv),  # the patient page's shape
                    (video, video, audio),  # a second video the doctor would send on
                    (video, recv, recv, audio)):  # more than the close-up
        status, body = await offer(*refused)
        assert status == 400 and "patient page" in str(body["error"]), (refused, status, body)


async def test_the_patient_leaves_a_test_with_the_exit_button(proxy: LocalProxy,
                                                              session: aiohttp.ClientSession) -> None:
    room, doctor, patient = await consult(proxy, session, closeup=False)
    try:
        doctor.send({"exam": {"test": "fixation", "duration_s": 30}})
        await wait_for(lambda: patient.exam("exam"), 5)
        test_id = patient.exam("exam")[0]["id"]
        patient.send({"exam_started": {"id": test_id}})
        await asyncio.sleep(1.5)
        patient.send({"exam_exit": {"id": test_id}})  # the page's "Exit the test" button
        await wait_for(lambda: doctor.exam("exam_result"), 5)
        result = doctor.exam("exam_result")[0]
        assert result["id"] == test_id and result["stopped"] == "patient" and result["test"] == "fixation"
        await wait_for(lambda: {"test": "stop", "id": test_id} in patient.exam("exam"), 5)
        exam = (await proxy.state(session, room))["exam"]
        assert exam["running"] is None and exam["ignored_total"] == 0
    finally:
        await patient.close()
        await doctor.close()
