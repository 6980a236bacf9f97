"""The consult pages as people live them, in Chromium at a laptop's size (1440x900) and a phone's (390x844).

* When the clinic ends a consult, both pages say so within 2 s, stop the camera and microphone and ask the
  server nothing more; when one side leaves, the other is told who left.
* A bad link (wrong token, ended or unknown consult, the other role's link) is refused when the page loads,
  in plain words, and the page never asks for the camera.
* The doctor's page fits a phone (no sideways scrolling at 360, 390 and 768 px, the traces right under the
  video) and keeps frame rate and latency in view on a laptop; the patient's "what the doctor sees" is a
  third of the picture and swaps with the doctor's on a tap.
* The start page lists the consults it created with their state and ends one; a refused key is forgotten.

The patient's browser plays a real clip as its camera (tests/browser.py); the doctor's browser uses
Chromium's own test pattern, so no face from the shared data appears in the screenshots this test writes to
``docs/screenshots/`` (the README shows them).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import numpy as np
import pytest
from aiohttp.test_utils import TestServer

from proxy.consult.config import Config
from proxy.consult.server import create_app
from proxy.params import MaskParams
from tests.browser import wait_for
from tests.conftest import ROOT
from tests.rtc_client import LocalProxy, NeutralPipeline, camera_pattern
from tests.rtc_client import wait_for as wait_until

KEY = "pages-test-key-0123456789"
SIZES = [(1440, 900), (390, 844)]
SCREENSHOTS = ROOT / "docs" / "screenshots"
ENDED = "The consult has ended"
INVALID = "This link has expired or is not valid. Please ask the clinic for a new one."
#: The pages poll the room every 3 s: watching this long after the end shows that they stopped.
QUIET_S = 4.0

# Count getUserMedia calls and keep every stream it hands out (added before the page's own scripts).
MEDIA_SPY_JS = """(() => {
  window.__gum = 0;
  window.__streams = [];
  const devices = navigator.mediaDevices;
  if (!devices || !devices.getUserMedia) return;
  const original = devices.getUserMedia.bind(devices);
  devices.getUserMedia = async (constraints) => {
    window.__gum += 1;
    const stream = await original(constraints);
    window.__streams.push(stream);
    return stream;
  };
})();"""

TRACKS_JS = "() => window.__streams.flatMap((s) => s.getTracks()).map((t) => `${t.kind}:${t.readyState}`)"
SAYS_ENDED_JS = f"() => document.body.innerText.includes({ENDED!r})"
RETRY_SHOWN_JS = "() => { const b = document.getElementById('retry'); return Boolean(b && b.offsetParent); }"
NO_OVERFLOW_JS = "() => [document.documentElement.scrollWidth, window.innerWidth]"
DOCTOR_LEFT_JS = ("() => { const note = document.getElementById('doctor-waiting'); "
                  "return note.offsetParent !== null && note.textContent.includes('The doctor has left'); }")


@pytest.fixture
async def server() -> AsyncIterator[TestServer]:
    test_server = TestServer(create_app(Config(api_key=KEY, peer_timeout=5.0)), host="127.0.0.1")
    await test_server.start_server()
    yield test_server
    await test_server.close()


async def create_room(session: aiohttp.ClientSession, base: str) -> dict[str, str]:
    async with session.post(f"{base}/api/rooms", headers={"Authorization": f"Bearer {KEY}"}) as response:
        assert response.status == 201, await response.text()
        return await response.json()


async def delete_room(session: aiohttp.ClientSession, base: str, room: dict[str, str]) -> None:
    async with session.delete(f"{base}/api/rooms/{room['room']}",
                              headers={"Authorization": f"Bearer {KEY}"}) as response:
        assert response.status == 200, await response.text()


async def new_page(browser: Any, size: tuple[int, int], errors: list[str], who: str) -> tuple[Any, Any]:
    context = await browser.new_context(viewport={"width": size[0], "height": size[1]})
    await context.add_init_script(MEDIA_SPY_JS)
    page = await context.new_page()
    page.on("pageerror", lambda exc: errors.append(f"{who}: {exc}"))
    return context, page


def api_requests(page: Any, log: list[tuple[float, str]]) -> None:
    page.on("request", lambda request: log.append((time.monotonic(), request.url))
            if "/api/" in request.url else None)


# ---- the end of a consult, the layout, the screenshots ---------------------------------------------------


@pytest.mark.parametrize("size", SIZES, ids=[f"{w}x{h}" for w, h in SIZES])
async def test_a_deleted_consult_ends_on_both_pages(server: TestServer, browser: Any, plain_browser: Any,
                                                    size: tuple[int, int]) -> None:
    width, height = size
    base = str(server.make_url("/")).rstrip("/")
    errors: list[str] = []
    requests: list[tuple[float, str]] = []
    async with aiohttp.ClientSession() as session:
        room = await create_room(session, base)
        patient_ctx, patient = await new_page(browser, size, errors, "patient")
        doctor_ctx, doctor = await new_page(plain_browser, size, errors, "doctor")
        try:
            for page in (patient, doctor):
                api_requests(page, requests)
            await patient.goto(room["patient_url"])
            await wait_for(patient, "() => !document.getElementById('start').disabled", "the link to be checked")
            await patient.click("#start")
            await wait_for(patient, "() => window.maskproxy.state === 'connected'", "the patient to connect")
            await doctor.goto(room["doctor_url"])
            await wait_for(doctor, "() => document.getElementById('status').dataset.state === 'connected'",
                           "the doctor to connect")
            await wait_for(doctor, "() => window.maskproxy.framesShown > 10", "the doctor's video to play")
            await wait_for(patient, "() => window.maskproxy.framesShown > 10", "the patient's self-view to play")
            try:  # a tracked face makes a truer picture; the checks below do not depend on it
                await wait_for(doctor, "() => window.maskproxy.lastParams?.face === true", "a face", timeout=10)
                await asyncio.sleep(1.0)
            except pytest.fail.Exception:
                pass

            await check_layout(patient, doctor, size)
            SCREENSHOTS.mkdir(parents=True, exist_ok=True)
            await patient.screenshot(path=str(SCREENSHOTS / f"patient-{width}.png"))
            await doctor.screenshot(path=str(SCREENSHOTS / f"doctor-{width}.png"))

            # -- the clinic ends the consult
            deleted = time.monotonic()
            await delete_room(session, base, room)
            for who, page in (("patient", patient), ("doctor", doctor)):
                await wait_for(page, SAYS_ENDED_JS, f"the {who}'s page to say the consult ended", timeout=5)
            took = time.monotonic() - deleted
            print(f"\n{width}x{height}: both pages said the consult ended {took:.2f} s after DELETE")
            assert took < 2.0, f"the pages said the consult ended only {took:.1f} s after DELETE"
            told = time.monotonic()
            for who, page in (("patient", patient), ("doctor", doctor)):
                tracks = await page.evaluate(TRACKS_JS)
                assert tracks and all(t.endswith(":ended") for t in tracks), f"{who}'s media still live: {tracks}"
                assert not await page.evaluate(RETRY_SHOWN_JS), f"the {who}'s page offers to retry an ended consult"
            assert await patient.evaluate("() => window.maskproxy.state") == "ended"
            assert await doctor.evaluate("() => document.getElementById('status').textContent") == "Consult ended"
            await asyncio.sleep(QUIET_S)
            late = [url for at, url in requests if at > told]
            assert not late, f"the pages kept calling the API after the consult ended: {late}"
            assert not errors, errors
        finally:
            await patient_ctx.close()
            await doctor_ctx.close()


async def check_layout(patient: Any, doctor: Any, size: tuple[int, int]) -> None:
    """What people saw go wrong: a doctor's page wider than a phone, traces far below the video, frame rate and
    latency below the fold on a laptop, a thumbnail too small to check one's eyes."""
    width, height = size
    scroll, inner = await doctor.evaluate(NO_OVERFLOW_JS)
    assert scroll <= inner, f"the doctor's page is {scroll} px wide in a {inner} px window"
    boxes = await doctor.evaluate("""() => Object.fromEntries(['fps', 'latency', 'dropped', 'camera', 'gaze-yaw']
        .map((id) => {
        const r = document.getElementById(id).getBoundingClientRect(); return [id, [r.top, r.bottom]]; })
        .concat([['stage', (() => { const r = document.querySelector('.stage').getBoundingClientRect();
                                     return [r.top, r.bottom]; })()]]))""")
    for stat in ("fps", "latency", "dropped", "camera"):
        assert boxes[stat][1] <= height, f"#{stat} is below the fold ({boxes[stat][1]:.0f} > {height})"
    assert boxes["gaze-yaw"][0] - boxes["stage"][0] < height, (
        f"the first trace starts {boxes['gaze-yaw'][0] - boxes['stage'][0]:.0f} px below the top of the video, "
        f"more than a screen ({height} px)")
    # the patient's thumbnail: about a third of the picture, its caption on one line, a tap swaps the two
    pip = await patient.evaluate("""() => {
        const stage = document.querySelector('#call .stage').getBoundingClientRect();
        const pip = document.getElementById('pip').getBoundingClientRect();
        const caption = document.querySelector('.pip-caption');
        const lineHeight = parseFloat(getComputedStyle(caption).lineHeight);
        return {share: pip.width / stage.width, cut: caption.scrollWidth > caption.clientWidth,
                lines: Math.round(caption.getBoundingClientRect().height / lineHeight)};
    }""")
    assert 0.3 <= pip["share"] <= 0.45, f"the thumbnail is {pip['share']:.0%} of the picture's width"
    assert not pip["cut"] and pip["lines"] == 1, f"the thumbnail's caption is cut or wraps: {pip}"
    big = "() => document.getElementById('masked-self-view').getBoundingClientRect().width"
    small = await patient.evaluate(big)
    await patient.click("#pip")
    assert await patient.evaluate(big) > 2 * small, "a tap on the thumbnail did not make it the large picture"
    await patient.click("#doctor-video")
    assert abs(await patient.evaluate(big) - small) < 2, "a tap on the small doctor's picture did not swap back"


async def test_leaving_tells_the_other_side(server: TestServer, browser: Any, plain_browser: Any) -> None:
    """The patient presses Leave: the doctor reads "The patient has left" at once, not a connection problem; the
    doctor presses Leave, or closes the tab: the patient reads that the doctor has left."""
    base = str(server.make_url("/")).rstrip("/")
    errors: list[str] = []
    async with aiohttp.ClientSession() as session:
        room = await create_room(session, base)
        patient_ctx, patient = await new_page(browser, (800, 600), errors, "patient")
        doctor_ctx, doctor = await new_page(plain_browser, (1100, 760), errors, "doctor")
        try:
            await doctor.goto(room["doctor_url"])
            await wait_for(doctor, "() => document.getElementById('status').dataset.state === 'connected'",
                           "the doctor to connect")
            await patient.goto(room["patient_url"])
            await wait_for(patient, "() => !document.getElementById('start').disabled", "the link to be checked")
            await patient.click("#start")
            await wait_for(patient, "() => window.maskproxy.state === 'connected'", "the patient to connect")
            await wait_for(doctor, "() => document.getElementById('presence').textContent.includes('in the consult')",
                           "the doctor to see the patient joined")
            left = time.monotonic()
            await patient.click("#leave")
            await wait_for(doctor, "() => document.getElementById('presence').textContent === 'The patient has left'",
                           "the doctor to hear that the patient left", timeout=5)
            print(f"\nthe doctor read that the patient left {time.monotonic() - left:.2f} s after Leave")
            assert time.monotonic() - left < 2.0
            assert await doctor.evaluate("() => document.getElementById('status').dataset.state") == "connected"
            assert await patient.evaluate(TRACKS_JS) and all(
                t.endswith(":ended") for t in await patient.evaluate(TRACKS_JS))

            await patient.click("#rejoin")  # the patient comes back, then the doctor leaves
            await wait_for(patient, "() => !document.getElementById('start').disabled", "the link to be checked")
            await patient.click("#start")
            await wait_for(patient, "() => window.maskproxy.state === 'connected'", "the patient to reconnect")
            await doctor.click("#leave")
            await wait_for(patient, DOCTOR_LEFT_JS, "the patient to hear that the doctor left", timeout=5)
            assert await patient.evaluate("() => window.maskproxy.state") == "connected"
            assert all(t.endswith(":ended") for t in await doctor.evaluate(TRACKS_JS))

            # the doctor comes back in a new tab, then closes it: the patient hears it at once, not after a timeout
            doctor = await doctor_ctx.new_page()
            await doctor.goto(room["doctor_url"])
            await wait_for(doctor, "() => document.getElementById('status').dataset.state === 'connected'",
                           "the doctor to connect again")
            await wait_for(patient, f"() => !({DOCTOR_LEFT_JS})()", "the patient to see the doctor back")
            closed = time.monotonic()
            await doctor.close()
            await wait_for(patient, DOCTOR_LEFT_JS, "the patient to hear that the doctor's tab closed", timeout=5)
            print(f"the patient read that the doctor left {time.monotonic() - closed:.2f} s after the tab closed")
            assert time.monotonic() - closed < 2.0
            assert not errors, errors
        finally:
            await patient_ctx.close()
            await doctor_ctx.close()


async def test_expiry_is_announced_then_ends_both_pages(plain_browser: Any) -> None:
    """A consult near its maximum lifetime: both pages say when it will end, then that it has ended."""
    errors: list[str] = []
    async with LocalProxy(Config(api_key=KEY, room_max_lifetime=12.0), NeutralPipeline) as proxy, \
            aiohttp.ClientSession() as session:
        room = await proxy.create_room(session)
        patient_ctx, patient = await new_page(plain_browser, (390, 844), errors, "patient")
        doctor_ctx, doctor = await new_page(plain_browser, (1440, 900), errors, "doctor")
        try:
            await patient.goto(room["patient_url"])
            await wait_for(patient, "() => !document.getElementById('start').disabled", "the link to be checked")
            await patient.click("#start")
            await doctor.goto(room["doctor_url"])
            for who, page, notice in (("patient", patient, "call-notice"), ("doctor", doctor, "notice")):
                await wait_for(page, f"() => document.getElementById({notice!r}).textContent.startsWith("
                               "'This consult will end in')", f"the {who}'s page to announce the end", timeout=10)
            for who, page in (("patient", patient), ("doctor", doctor)):
                await wait_for(page, SAYS_ENDED_JS, f"the {who}'s page to say the consult ended", timeout=15)
                assert "time is up" in await page.evaluate("() => document.body.innerText"), who
                tracks = await page.evaluate(TRACKS_JS)
                assert tracks and all(t.endswith(":ended") for t in tracks), f"{who}'s media still live: {tracks}"
            assert not errors, errors
        finally:
            await patient_ctx.close()
            await doctor_ctx.close()


# ---- bad links ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", SIZES, ids=[f"{w}x{h}" for w, h in SIZES])
async def test_bad_links_never_ask_for_the_camera(server: TestServer, plain_browser: Any,
                                                  size: tuple[int, int]) -> None:
    base = str(server.make_url("/")).rstrip("/")
    errors: list[str] = []
    async with aiohttp.ClientSession() as session:
        room = await create_room(session, base)
        gone = await create_room(session, base)
        await delete_room(session, base, gone)
        patient_url, doctor_url = room["patient_url"], room["doctor_url"]
        links = {
            "wrong token (patient page)": patient_url.replace(room["patient_token"], "x" * 32),
            "wrong token (doctor page)": doctor_url.replace(room["doctor_token"], "x" * 32),
            "doctor's link on the patient page": doctor_url.replace("/doctor#", "/patient#"),
            "patient's link on the doctor page": patient_url.replace("/patient#", "/doctor#"),
            "deleted consult (patient)": gone["patient_url"],
            "deleted consult (doctor)": gone["doctor_url"],
            "unknown consult": patient_url.replace(f"room={room['room']}", "room=nosuchroom"),
        }
        context, page = await new_page(plain_browser, size, errors, "page")
        try:
            for what, link in links.items():
                await page.goto(link)
                message = "#intro-error" if "/patient#" in link else "#message"
                await wait_for(page, f"() => document.querySelector('{message}').textContent === {INVALID!r}",
                               f"the page to refuse the link ({what})", timeout=10)
                if "/patient#" in link:
                    assert not await page.is_visible("#start"), f"{what}: the Start button is still offered"
                await asyncio.sleep(0.5)
                assert await page.evaluate("() => window.__gum") == 0, f"{what}: the page asked for the camera"
                assert not await page.evaluate("() => location.hash"), f"{what}: the token stayed in the address"
                await page.goto("about:blank")  # the next link loads afresh (not a same-page fragment change)
            # the good links still work, also pasted into the tab of a refused one (only the fragment changes): the
            # patient page offers Start; the doctor page connects and asks for media
            await page.goto(links["unknown consult"])
            await wait_for(page, f"() => document.querySelector('#intro-error').textContent === {INVALID!r}",
                           "the page to refuse the link")
            await page.goto(patient_url)
            await wait_for(page, "() => { const start = document.getElementById('start'); "
                           "return start.offsetParent !== null && !start.disabled; }", "a good link to be accepted")
            assert await page.evaluate("() => window.__gum") == 0  # nothing before the patient presses Start
            await page.goto("about:blank")
            await page.goto(doctor_url)
            await wait_for(page, "() => window.__gum > 0", "the doctor page to start media with a good link")
            assert not errors, errors
        finally:
            await context.close()


# ---- the doctor's page on narrow screens ---------------------------------------------------------------


class ExtremePipeline(NeutralPipeline):
    """Parameters that make the longest readouts: large angles both ways, one eye out of frame in turn."""

    def process(self, rgb: np.ndarray, t: float, index: int) -> tuple[MaskParams, np.ndarray]:
        params, picture = super().process(rgb, t, index)
        sign = 1 if index % 60 < 30 else -1
        params = MaskParams(frame=index, t=t, face=True, head_yaw=-38.5 * sign, head_pitch=-24.5, head_roll=-19.5,
                            right_gaze_yaw=28.7 * sign, left_gaze_yaw=-27.9 * sign, right_gaze_pitch=-19.6,
                            left_gaze_pitch=18.4, left_state="out of frame" if sign < 0 else "measured")
        return params.measured(), picture


async def test_the_doctor_page_fits_narrow_screens(plain_browser: Any) -> None:
    """No sideways scrolling from 360 px up, with the widest readouts the page can show (a stand-in masking
    pipeline sends them)."""
    errors: list[str] = []
    async with LocalProxy(Config(api_key=KEY), ExtremePipeline) as proxy, aiohttp.ClientSession() as session:
        room = await proxy.create_room(session)
        patient = proxy.client(room, "patient", frames=[camera_pattern(320, 240)], fps=15)
        context, doctor = await new_page(plain_browser, (360, 800), errors, "doctor")
        try:
            await doctor.goto(room["doctor_url"])
            await patient.connect(session)
            await wait_for(doctor, "() => document.getElementById('l-yaw').textContent === 'out of frame'",
                           "the readouts to show an unmeasured eye")
            await wait_for(doctor, "() => document.getElementById('r-yaw').textContent.includes('temporal')",
                           "the readouts to show a large angle")
            widths = {}
            for width in (360, 390, 768):
                await doctor.set_viewport_size({"width": width, "height": 800})
                await asyncio.sleep(0.5)
                widths[width] = await doctor.evaluate(NO_OVERFLOW_JS)
            assert all(scroll <= inner for scroll, inner in widths.values()), \
                f"the doctor's page scrolls sideways (page width, window width): {widths}"
            # the readouts name directions an ophthalmologist uses, per eye
            cells = await doctor.evaluate("() => ['r-yaw', 'l-yaw'].map((id) => document.getElementById(id).innerText)")
            assert any(c.endswith(("nasal", "temporal")) for c in cells), cells
            assert not errors, errors
        finally:
            await context.close()
            await patient.close()


# ---- the start page --------------------------------------------------------------------------------------


async def test_the_start_page_lists_and_ends_its_consults(plain_browser: Any) -> None:
    errors: list[str] = []
    async with LocalProxy(Config(api_key=KEY), NeutralPipeline) as proxy, aiohttp.ClientSession() as session:
        context, page = await new_page(plain_browser, (390, 844), errors, "start")
        page.on("dialog", lambda dialog: asyncio.ensure_future(dialog.accept()))
        clients = []
        try:
            # a refused key is forgotten (the server answers a wrong key with 403)
            await page.goto(f"{proxy.base}/")
            await page.fill("#api-key", "not-the-clinic-key")
            await page.click("#create")
            await wait_for(page, "() => document.getElementById('error').textContent.includes('Wrong API key')",
                           "the wrong key to be refused")
            assert await page.evaluate("() => sessionStorage.getItem('maskproxy.apiKey')") is None

            for _ in range(2):
                await page.fill("#api-key", KEY)
                await page.click("#create")
                await wait_for(page, "() => !document.getElementById('links').hidden", "a consult to be created")
                await page.evaluate("() => { document.getElementById('links').hidden = true; }")
            rooms = await page.evaluate("() => JSON.parse(localStorage.getItem('maskproxy.consults'))")
            assert len(rooms) == 2 and all("#room=" in r["doctor_url"] for r in rooms)
            assert not [r for r in rooms if "token" in r["doctor_url"].split("#")[0]], "a token outside the fragment"
            busy = {"room": rooms[0]["room"], "patient_token": rooms[0]["patient_url"].split("token=")[1],
                    "doctor_token": rooms[0]["doctor_url"].split("token=")[1]}
            clients = [proxy.client(busy, "doctor"),
                       proxy.client(busy, "patient", frames=[camera_pattern(160, 120)], fps=10)]
            for client in clients:
                await client.connect(session)
            await wait_until(lambda: all(c.pc.connectionState == "connected" for c in clients), 15)

            await page.reload()  # a new visit: the list comes from this browser's storage
            state = "(room) => document.querySelector(`li[data-room='${room}']`)?.dataset.state"
            await wait_for(page, f"() => ({state})({busy['room']!r}) === 'in-progress'", "the busy consult in progress")
            assert await page.evaluate(f"() => ({state})({rooms[1]['room']!r})") == "waiting"

            await page.fill("#api-key", KEY)
            await page.click(f"li[data-room='{busy['room']}'] button[data-action='end']")
            await wait_for(page, f"() => ({state})({busy['room']!r}) === 'ended'", "the consult to end")
            await wait_until(lambda: all({"ended": "deleted"} in c.messages for c in clients), 5)
            assert proxy.registry.get(busy["room"]) is None
            await page.click(f"li[data-room='{busy['room']}'] button[data-action='remove']")
            assert len(await page.evaluate("() => JSON.parse(localStorage.getItem('maskproxy.consults'))")) == 1
            assert not errors, errors
        finally:
            for client in clients:
                await client.close()
            await context.close()


async def test_the_doctors_takeover_message_names_its_button(server: TestServer, plain_browser: Any) -> None:
    """A second doctor tab takes the consult over; the first says which button brings it back, and has it."""
    base = str(server.make_url("/")).rstrip("/")
    errors: list[str] = []
    async with aiohttp.ClientSession() as session:
        room = await create_room(session, base)
        context, first = await new_page(plain_browser, (1100, 760), errors, "first")
        try:
            await first.goto(room["doctor_url"])
            await wait_for(first, "() => document.getElementById('status').dataset.state === 'connected'", "connected")
            second = await context.new_page()
            await second.goto(room["doctor_url"])
            await wait_for(first, "() => document.getElementById('status').dataset.state === 'failed'",
                           "the first tab to stand down")
            label = await first.evaluate("() => document.getElementById('retry').textContent")
            message = await first.evaluate("() => document.getElementById('message').textContent")
            assert await first.is_visible("#retry")
            assert f'"{label}"' in message, f"the message ({message!r}) does not name the button ({label!r})"
            assert not errors, errors
        finally:
            await context.close()
