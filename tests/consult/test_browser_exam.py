"""The eye examination in real browsers (issue 16): Chromium's fake camera -> patient page -> proxy -> doctor page.

The patient measures the screen with the card ruler. The doctor starts a smooth-pursuit test with the page's
button; the patient's page shows the moving dot full screen; the doctor's traces show the dot beside each eye's
gaze and, once the doctor stops the test, its result with the webcam's caveats; the eye close-up plays at 15 fps
or more (frames the doctor's browser decoded; on a machine too busy for the face view itself to reach that, as
fast as the face view) and none of its frames is the camera picture; a mark and the three downloads (CSV, JSON,
PNG) work. The test writes the doctor page at that moment to ``docs/doctor_exam.png`` for
the README. The fake camera and Chromium are tests/consult/conftest.py's.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
from aiohttp.test_utils import TestServer

from proxy.consult.config import Config
from proxy.consult.server import create_app
from tests.browser import thumbnail, wait_for
from tests.conftest import ROOT
from tests.consult.test_browser import KEY, MIN_DIFFERENCE, TRACK_PCS_JS, grab, nearest_camera_frame, room_state

SCREENSHOT = ROOT / "docs" / "doctor_exam.png"
MIN_CLOSEUP_FPS = 15.0
#: The close-up's frame rate is the best window of this length within CLOSEUP_WATCH_S (the machine is shared).
CLOSEUP_WINDOW_S, CLOSEUP_WATCH_S = 5.0, 25.0
#: How long the pursuit runs before the doctor stops it: the 2 s instruction, 1 s at the centre, 5 s of sweep.
PURSUIT_S = 8.0
TARGET_GREEN = (46, 125, 50)  # #2e7d32, the target's trace colour

# Pixels of a canvas close to an RGB colour (the target's dotted trace).
COLOUR_PIXELS_JS = """([id, r, g, b]) => {
  const c = document.getElementById(id);
  const data = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
  let n = 0;
  for (let i = 0; i < data.length; i += 4) {
    if (Math.abs(data[i] - r) < 40 && Math.abs(data[i + 1] - g) < 40 && Math.abs(data[i + 2] - b) < 40) n += 1;
  }
  return n;
}"""


@pytest.fixture
async def server() -> AsyncIterator[TestServer]:
    test_server = TestServer(create_app(Config(api_key=KEY, peer_timeout=5.0)), host="127.0.0.1")
    await test_server.start_server()
    yield test_server
    await test_server.close()


# Frames decoded so far of the close-up (#closeup-video) and of the face view (#patient-video), from the WebRTC
# stats of their receivers, with the page's clock: what the proxy delivered, whatever the page's own drawing
# load lets it present.
DECODED_JS = """async () => {
  const decoded = async (id) => {
    const track = document.getElementById(id).srcObject?.getVideoTracks()[0];
    for (const pc of window.__pcs || []) {
      for (const receiver of pc.getReceivers()) {
        if (!track || receiver.track !== track) continue;
        let n = 0;
        (await receiver.getStats()).forEach((s) => { if (s.type === 'inbound-rtp') n = s.framesDecoded; });
        return n;
      }
    }
    return 0;
  };
  return [performance.now() / 1000, await decoded('closeup-video'), await decoded('patient-video')];
}"""


async def closeup_rate(doctor: Any) -> tuple[float, float, list[list[float]]]:
    """Frames per second the doctor's browser decoded of the close-up in its best CLOSEUP_WINDOW_S window (page
    clock), and of the face view in that same window; stops early once the close-up reached MIN_CLOSEUP_FPS."""
    points = [await doctor.evaluate(DECODED_JS)]
    best, face, start = 0.0, 0.0, time.monotonic()
    while time.monotonic() - start < CLOSEUP_WATCH_S:
        await asyncio.sleep(0.5)
        points.append(await doctor.evaluate(DECODED_JS))
        now, closeup, shown = points[-1]
        for then, closeup_before, shown_before in points:
            if now - then < CLOSEUP_WINDOW_S:
                break
            rate = (closeup - closeup_before) / (now - then)
            if rate > best:
                best, face = rate, (shown - shown_before) / (now - then)
        if best >= MIN_CLOSEUP_FPS and now - points[0][0] >= 2 * CLOSEUP_WINDOW_S:
            break
    return best, face, points


async def download(page: Any, button: str) -> tuple[str, bytes]:
    async with page.expect_download() as info:
        await page.click(button)
    done = await info.value
    path = await done.path()
    return done.suggested_filename, Path(path).read_bytes()


async def test_a_pursuit_test_in_the_browsers(server: TestServer, browser: Any, camera: dict[str, Any],
                                              tmp_path: Path) -> None:
    base = str(server.make_url("/")).rstrip("/")
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{base}/api/rooms", headers={"Authorization": f"Bearer {KEY}"}) as response:
            assert response.status == 201, await response.text()
            room = await response.json()
        patient_ctx = await browser.new_context(viewport={"width": 1000, "height": 700})
        doctor_ctx = await browser.new_context(viewport={"width": 1280, "height": 1500}, accept_downloads=True)
        logs: list[str] = []
        try:
            await doctor_ctx.add_init_script(TRACK_PCS_JS)
            patient = await patient_ctx.new_page()
            doctor = await doctor_ctx.new_page()
            for name, page in (("patient", patient), ("doctor", doctor)):
                page.on("pageerror", lambda exc, name=name: logs.append(f"{name} page error: {exc}"))
                page.on("console", lambda msg, name=name: logs.append(f"{name} console {msg.type}: {msg.text}")
                        if msg.type in ("error", "warning") else None)
            await patient.goto(room["patient_url"])
            await patient.click("#start")
            await wait_for(patient, "() => window.maskproxy.state === 'connected'", "the patient to connect")
            await doctor.goto(room["doctor_url"])
            await wait_for(doctor, "() => window.maskproxy.lastParams?.face === true", "a face at the doctor's")

            # -- the eye close-up: off until the doctor shows it; then a second masked video at 15 fps or more,
            #    never the camera picture
            assert await doctor.evaluate("() => document.getElementById('closeup-video').hidden")
            await doctor.check("#closeup-toggle")
            await wait_for(doctor, "() => window.maskproxy.exam.closeupFrames > 10", "the close-up to play")
            fps, face_fps, counts = await closeup_rate(doctor)
            size = await doctor.evaluate("() => { const v = document.getElementById('closeup-video'); "
                                         "return [v.videoWidth, v.videoHeight]; }")
            closeups = []
            for _ in range(6):
                closeups.append(await grab(doctor, "closeup-video"))
                await asyncio.sleep(0.3)

            # -- the patient measures the screen with the card ruler (a card 85.6 mm long matched by 400 CSS px)
            await patient.click("#screen-open")
            await patient.evaluate("() => { const s = document.getElementById('card-slider'); s.value = '400'; "
                                   "s.dispatchEvent(new Event('input')); }")
            await patient.click("#card-save")
            bar = await patient.evaluate("() => document.getElementById('card-bar').getBoundingClientRect().width")
            await patient.click("#screen-close")

            # -- the doctor starts a pursuit test with the page's button; the patient's page shows the moving dot
            await doctor.click("#exam-buttons button[data-test='pursuit']")
            await wait_for(patient, "() => window.maskproxy.exam?.running === 'pursuit'", "the dot's page", 10)
            overlay_shown = await patient.evaluate("() => !document.getElementById('fixation').hidden")
            await wait_for(patient, "() => window.maskproxy.exam.positions.length > 30", "the dot to move", 10)
            await asyncio.sleep(PURSUIT_S - 4.0)
            dot = await patient.evaluate("() => window.maskproxy.exam.positions")
            patient_shot = await patient.screenshot(path=str(tmp_path / "patient_during_pursuit.png"))
            await wait_for(doctor, "() => window.maskproxy.exam.targets > 60", "the target in the doctor's traces")
            await doctor.click("#mark")
            await asyncio.sleep(0.5)
            target_pixels = await doctor.evaluate(COLOUR_PIXELS_JS, ["gaze-yaw", *TARGET_GREEN])
            # -- the doctor stops it: the result, with its caveats, and the patient's dot is gone
            await doctor.click("#exam-stop")
            await wait_for(doctor, "() => window.maskproxy.exam.results.length > 0", "the pursuit's result", 15)
            await wait_for(patient, "() => window.maskproxy.exam.running === null", "the dot to go away", 10)
            result = await doctor.evaluate("() => window.maskproxy.exam.results[0]")
            started = await doctor.evaluate("() => window.maskproxy.exam.started")
            result_text = await doctor.inner_text("#exam-result")
            await doctor.wait_for_timeout(1200)  # a live readout after the test
            SCREENSHOT.parent.mkdir(exist_ok=True)
            await doctor.evaluate("() => window.scrollTo(0, 0)")  # (clicking the buttons scrolled it)
            await doctor.screenshot(path=str(SCREENSHOT))  # the viewport: video, close-up, traces, result

            # -- export: CSV and JSON of what the page received, the traces as PNG
            csv_name, csv_bytes = await download(doctor, "#export-csv")
            json_name, json_bytes = await download(doctor, "#export-json")
            png_name, png_bytes = await download(doctor, "#export-png")
            state = await room_state(session, server, room)
        finally:
            await patient_ctx.close()
            await doctor_ctx.close()

    print("\nexam in the browsers:", json.dumps({"closeup_fps": round(fps, 1), "face_fps_then": round(face_fps, 1),
                                                  "closeup_size": size,
                                                  "closeup_server": state["exam"]["closeup"],
                                                  "mask_server": state["mask"],
                                                  "target_pixels": target_pixels, "result": result["results"][:2]},
                                                 indent=1))
    if logs:
        print("browser console:\n  " + "\n  ".join(logs[-20:]))
    assert not [line for line in logs if "page error" in line or "Content Security Policy" in line], logs

    assert size == [960, 320], size
    distances = [nearest_camera_frame(frame, camera["thumbs"]) for frame in closeups]
    assert min(distances) > MIN_DIFFERENCE, f"a close-up frame is close to a camera frame: {distances}"
    from proxy.consult.worker import fault_placeholder

    card = thumbnail(fault_placeholder(960, 320))
    assert min(float(np.abs(thumbnail(f) - card).mean()) for f in closeups) > 10, "the close-up shows the fault card"

    assert bar == 400 and started["screen"]["scale_source"] == "card", (bar, started["screen"])
    assert abs(started["screen"]["px_per_mm"] - 400 / 85.6) < 0.01 and started["screen"]["width_css_px"] == 1000
    assert overlay_shown, "the patient's page did not show the test full screen"
    xs = [x for _, x, _ in dot]
    assert max(xs) - min(xs) > 100 and len({round(y) for _, _, y in dot}) == 1, "the dot did not sweep sideways"
    assert patient_shot

    assert target_pixels > 50, "the target's trace is not drawn in the doctor's horizontal gaze plot"
    assert result["test"] == "pursuit" and result["stopped"] == "doctor"
    horizontal = [r for r in result["results"] if r["axis"] == "horizontal"]
    assert {r["eye"] for r in horizontal} == {"right", "left"} and all("webcam" in r["caveat"] for r in horizontal)
    assert "Gain" in result_text and "What a webcam can and cannot measure" in result_text
    assert state["exam"]["tests"] == 1 and state["exam"]["ignored_total"] == 0, state["exam"]

    assert csv_name.endswith(".csv") and json_name.endswith(".json") and png_name.endswith(".png")
    rows = list(csv.reader(io.StringIO(csv_bytes.decode())))
    header = rows[0]
    assert {"t", "face", "right_gaze_yaw", "target_yaw", "mark"} <= set(header), header
    frames = [r for r in rows[1:] if r and len(r) == len(header)]
    assert len(frames) > 100 and any(r[header.index("mark")] == "M1" for r in frames)
    assert sum(1 for r in frames if r[header.index("target_yaw")]) > 60
    exported = json.loads(json_bytes)
    assert exported["tests"][0]["result"]["test"] == "pursuit" and exported["marks"][0]["label"] == "M1"
    assert len(exported["frames"]) >= len(frames)  # (a frame or two more: it was made a moment later)
    assert png_bytes.startswith(b"\x89PNG") and len(png_bytes) > 10000
    assert SCREENSHOT.stat().st_size > 50000
    # Last, as it depends on the machine's load: the close-up plays at MIN_CLOSEUP_FPS or more. It is drawn from the
    # masked frames, so it cannot be faster than the face view: where other jobs leave the proxy too little CPU for
    # the face view to reach that rate, it must keep up with the face view (test_browser.py holds the face view to
    # MIN_CLOSEUP_FPS on its own). One bound, continuous in the face view's rate: a face view at 15.2 fps with the
    # close-up at 14.6 keeps up as well as one at 14.9 with 12.7.
    assert fps >= min(MIN_CLOSEUP_FPS, 0.85 * face_fps), (
        f"the close-up played at {fps:.1f} fps at best, the face view at {face_fps:.1f} fps in that window "
        f"([time, close-up, face view] frames decoded: {counts}; server {state['exam']['closeup']})")
