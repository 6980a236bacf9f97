"""Recording in real browsers (issue 18): the doctor's Record, the patient's consent dialog, the red bar on both
pages, the patient's withdrawal.

Chromium plays both pages (tests/consult/conftest.py's fake camera); the proxy is the real app with the stand-in
masking of test_recording.py (a bar picture, so the test stays fast); the recording is read back through the API.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import aiohttp

from tests.browser import wait_for
from tests.consult.test_recording import API_KEY, BarPipeline, config
from tests.recording.feed import decode
from tests.rtc_client import LocalProxy

BAR_SHOWN_JS = """() => {
  const bar = document.getElementById('recording-bar');
  if (!bar || bar.hidden) return false;
  const box = bar.getBoundingClientRect();
  const colour = getComputedStyle(bar).backgroundColor;
  return box.top === 0 && box.height > 10 && colour === 'rgb(179, 38, 30)' && bar.textContent.includes('Recording');
}"""
BAR_HIDDEN_JS = "() => document.getElementById('recording-bar')?.hidden === true"
NO_SIDEWAYS_JS = "() => document.documentElement.scrollWidth <= window.innerWidth"
RECORDED_3_S_JS = """() => {
  const [m, s] = document.querySelector('.recording-time').textContent.trim().split(':').map(Number);
  return 60 * m + s >= 3;
}"""


async def test_record_consent_red_bar_and_withdrawal_in_both_pages(tmp_path: Path, browser: Any) -> None:
    folder = tmp_path / "recordings"
    async with LocalProxy(config(folder, retention_days=90), BarPipeline) as proxy, aiohttp.ClientSession() as session:
        room = await proxy.create_room(session)
        patient_ctx = await browser.new_context(viewport={"width": 390, "height": 844})  # a phone
        doctor_ctx = await browser.new_context(viewport={"width": 1280, "height": 900})
        try:
            patient = await patient_ctx.new_page()
            doctor = await doctor_ctx.new_page()
            await patient.goto(room["patient_url"])
            await patient.click("#start")
            await doctor.goto(room["doctor_url"])
            await wait_for(doctor, "() => window.maskproxy.recording?.state === 'idle'", "the recording status")
            assert await doctor.is_visible("#record") and not await doctor.is_visible("#recording-bar")
            assert not await patient.evaluate("() => document.getElementById('consent-dialog').open")

            await doctor.click("#record")  # asks the patient
            await wait_for(patient, "() => document.getElementById('consent-dialog').open", "the consent dialog", 10)
            text = await patient.inner_text("#consent-dialog")
            for words in ("What is kept", "not your face", "eye, eyelid and head movements", "What is not kept",
                          "your camera picture", "your voice is not recorded", "deleted automatically after 90 days",
                          "Stop recording"):
                assert words in text, (words, text)
            assert "Waiting for the patient" in await doctor.inner_text("#record-state")
            assert await patient.evaluate(NO_SIDEWAYS_JS)  # the dialog fits a phone

            await patient.click("#consent-agree")
            await wait_for(patient, BAR_SHOWN_JS, "the patient's red recording bar", 10)
            await wait_for(doctor, BAR_SHOWN_JS, "the doctor's red recording bar", 10)
            assert "camera picture is not recorded" in await patient.inner_text("#recording-bar")
            assert await patient.is_visible("#recording-withdraw") and await patient.evaluate(NO_SIDEWAYS_JS)
            await wait_for(doctor, RECORDED_3_S_JS, "the recording's clock to reach 0:03", 15)
            await doctor.evaluate("() => window.scrollTo(0, 600)")
            assert await doctor.evaluate("() => window.scrollY") > 100
            assert await doctor.evaluate(BAR_SHOWN_JS), "the bar must stay in view as the page scrolls"

            await patient.click("#recording-withdraw")
            await wait_for(patient, BAR_HIDDEN_JS, "the patient's bar to go", 2)
            await wait_for(doctor, BAR_HIDDEN_JS, "the doctor's bar to go", 2)
            await wait_for(doctor, "() => document.getElementById('record-state').textContent"
                           ".includes('Last recording: complete')", "how the recording ended", 10)
            assert await doctor.inner_text("#record") == "Record (asks the patient)"  # the consent is gone
        finally:
            await patient_ctx.close()
            await doctor_ctx.close()

        async with session.get(f"{proxy.base}/api/recordings",
                               headers={"Authorization": f"Bearer {API_KEY}"}) as response:
            (recording,) = (await response.json())["recordings"]
        assert recording["state"] == "complete" and recording["reason"] == "consent withdrawn by the patient"
        async with session.get(f"{proxy.base}/api/recordings/{recording['id']}/files/video.webm",
                               headers={"Authorization": f"Bearer {API_KEY}"}) as response:
            frames = decode(io.BytesIO(await response.read()))
        assert len(frames) > 30
