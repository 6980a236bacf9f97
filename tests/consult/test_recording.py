"""Masked recordings in a live consult (issue 18): consent first, the masked stream as the doctor got it, faults.

Real parts: the proxy's app on 127.0.0.1, real aiortc peers playing both pages (the product's scripted
participant), real VP8 on the wire, the real recorder writing real (encrypted) WebM files, read back through
the HTTP API and decoded with PyAV. The masking stage is a stand-in that never reads the camera: it draws a
grey picture with a white bar whose place is the frame's index, and reports that index in the frame's
parameters, so that every recorded picture can be matched to its parameter line. The camera sends a picture
(saturated magenta, a checkerboard) that no recorded frame may resemble. One test runs ``maskproxy serve``
itself, with the real masking pipeline, and kills it mid-recording.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fractions
import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import av
import numpy as np
import pytest
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from proxy.bench.live import free_port
from proxy.consult.config import Config
from proxy.consult.recording_link import RecordingLink, Refused
from proxy.consult.worker import rgb_to_frame
from proxy.params import MaskParams
from proxy.recording.metadata import COMPLETE, INCOMPLETE, new_id, read_metadata, write_metadata
from proxy.recording.recorder import Recorder, RecorderSettings, open_new
from proxy.recording.store import INTERRUPTED, RecordingStore
from tests.conftest import ROOT
from tests.recording.feed import BAR_STEP, FakeClock, assert_sealed_video, bar_index, decode, feed
from tests.rtc_client import Client, LocalProxy, NeutralPipeline, camera_pattern, distance, wait_for

API_KEY = "recording-test-key-0123456789"
KEY = bytes(range(32, 64))
WIDTH, HEIGHT = 320, 240
#: A recorded frame at least this far (mean absolute difference of 32x24 thumbnails) from the camera picture is
#: not the camera picture (the camera through VP8 sits within a few units of it).
NOT_THE_CAMERA = 60.0
TOKENS = ("patient_token", "doctor_token")


def bar_picture(index: int) -> np.ndarray:
    """The stand-in's avatar for frame ``index``: grey, a white bar at x = 5 * index (mod 300), as
    tests/recording/feed.py draws it (so that :func:`bar_index` reads the index back)."""
    rgb = np.full((HEIGHT, WIDTH, 3), 70, np.uint8)
    x = (BAR_STEP * index) % (WIDTH - 20)
    rgb[: HEIGHT // 2, x:x + 10] = 255
    return rgb


class BarPipeline(NeutralPipeline):
    """Stand-in masking: the bar picture of the frame's index, and parameters that say the index; never reads
    the camera's pixels."""

    def process(self, rgb: np.ndarray, t: float, index: int) -> tuple[MaskParams, np.ndarray]:
        self.calls += 1
        self.timings = {"track": 0.1, "render": 0.1}
        params = MaskParams(face=True, frame=index, t=t, right_gaze_yaw=float(index % 60), left_gaze_yaw=None)
        return params, bar_picture(index)


class FullDisk:
    """Files that share ``room`` bytes, then fail with ENOSPC, as a disk that fills up."""

    def __init__(self, room: int) -> None:
        self.room = room
        self.lock = threading.Lock()

    def open(self, path: Path) -> Any:
        disk, inner = self, open_new(path)

        class File(io.RawIOBase):
            def writable(self) -> bool:
                return True

            def write(self, data: Any) -> int:
                with disk.lock:
                    if len(data) > disk.room:
                        disk.room = 0
                        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                    disk.room -= len(data)
                return inner.write(data)

            def fileno(self) -> int:
                return inner.fileno()

            def close(self) -> None:
                inner.close()
                super().close()

        return File()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client_session:
        yield client_session


def config(folder: Path | None, **settings: Any) -> Config:
    return Config(api_key=API_KEY, recordings_dir=str(folder) if folder else None, **settings)


async def act(proxy: LocalProxy, session: aiohttp.ClientSession, room: dict[str, str], role: str, action: str,
              **extra: Any) -> tuple[int, dict[str, Any]]:
    """A page's recording request: the action with the role's room token."""
    async with session.post(f"{proxy.base}/api/rooms/{room['room']}/recording", json={"action": action, **extra},
                            headers={"Authorization": f"Bearer {room[f'{role}_token']}"}) as response:
        return response.status, await response.json()


async def api(proxy: LocalProxy, session: aiohttp.ClientSession, method: str, path: str,
              key: str | None = API_KEY) -> tuple[int, Any]:
    """A recordings API call with the API key: the JSON answer, or the bytes of a file."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    async with session.request(method, f"{proxy.base}/api/recordings{path}", headers=headers) as response:
        if response.content_type == "application/json":
            return response.status, await response.json()
        return response.status, await response.read()


def told(client: Client) -> list[dict[str, Any]]:
    """The recording states a page was told on its data channel, in order."""
    return [m["recording"] for m in client.messages if "recording" in m]


async def consult(proxy: LocalProxy, session: aiohttp.ClientSession, closeup: bool = False
                  ) -> tuple[dict[str, str], Client, Client]:
    room = await proxy.create_room(session)
    doctor = proxy.client(room, "doctor", closeup=closeup, thumbs=True)
    patient = proxy.client(room, "patient", frames=[camera_pattern(WIDTH, HEIGHT)], fps=30)
    await doctor.connect(session)
    await patient.connect(session)
    await doctor.wait_connected()
    await patient.wait_connected()
    await wait_for(lambda: doctor.channel.readyState == "open" and patient.channel.readyState == "open", 10)
    await wait_for(lambda: "masked" in doctor.receivers and doctor.receivers["masked"].count > 30, 20)
    return room, doctor, patient


def lines(data: bytes) -> list[dict[str, Any]]:
    return [json.loads(line) for line in data.decode().splitlines()]


async def test_a_consented_recording_is_the_masked_stream_aligned_with_its_parameters(
        tmp_path: Path, session: aiohttp.ClientSession) -> None:
    """The patient consents, the doctor records 10 s and stops: the video is the frames the doctor was sent
    (count within 5 %, never the camera), each frame matches its parameter line, the files on disk are sealed
    and the API hands back valid video."""
    folder = tmp_path / "recordings"
    async with LocalProxy(config(folder, recordings_key=KEY.hex()), BarPipeline) as proxy:
        room, doctor, patient = await consult(proxy, session)
        try:
            assert told(patient) == [] and (await proxy.state(session, room))["recording"]["state"] == "idle"
            status, body = await act(proxy, session, room, "doctor", "ask")
            assert status == 200 and body["recording"]["state"] == "asking", body
            await wait_for(lambda: any(r["state"] == "asking" for r in told(patient)), 5)  # the consent is shown
            status, body = await act(proxy, session, room, "patient", "agree")
            masked = doctor.receivers["masked"]
            first = masked.count
            assert status == 200 and body["recording"]["state"] == "recording", body
            recording_id = body["recording"]["id"]
            await wait_for(lambda: any(r["state"] == "recording" for r in told(doctor)), 5)
            await wait_for(lambda: any(r["state"] == "recording" for r in told(patient)), 5)
            await asyncio.sleep(5.0)
            status, body = await act(proxy, session, room, "doctor", "mark", text="left eye drifts")
            assert status == 200, body
            await asyncio.sleep(5.0)
            sent = masked.count - first
            status, body = await act(proxy, session, room, "doctor", "stop")
            assert status == 200 and body["recording"]["state"] in ("finishing", "consented"), body
            for page in (doctor, patient):  # both pages hear how it ended
                await wait_for(lambda page=page: any((r["last"] or {}).get("complete") for r in told(page)), 10)
            assert told(doctor)[-1]["state"] == "consented" and told(doctor)[-1]["last"]["id"] == recording_id
            await wait_for(lambda: masked.count > first + sent + 30, 5)  # the consult goes on

            # the API: the metadata, and the files decrypted on the fly
            status, metadata = await api(proxy, session, "GET", f"/{recording_id}")
            assert status == 200 and metadata["state"] == COMPLETE, metadata
            assert metadata["consult"] == room["room"] and metadata["encrypted"] is True
            assert {f["name"] for f in metadata["files"]} == {"video.webm", "params.jsonl", "events.jsonl",
                                                             "recording.json"}  # no sound: not allowed
            status, video = await api(proxy, session, "GET", f"/{recording_id}/files/video.webm")
            assert status == 200
            frames = decode(io.BytesIO(video))
            status, params_bytes = await api(proxy, session, "GET", f"/{recording_id}/files/params.jsonl")
            params = lines(params_bytes)
            status, events_bytes = await api(proxy, session, "GET", f"/{recording_id}/files/events.jsonl")
            events = lines(events_bytes)
        finally:
            await patient.close()
            await doctor.close()

    print(f"\nrecorded {len(frames)} frames; the doctor received {sent} while recording")
    assert sent > 200 and abs(len(frames) - sent) <= 0.05 * sent
    camera = camera_pattern(WIDTH, HEIGHT)
    assert min(distance(rgb, camera) for _, rgb in frames) > NOT_THE_CAMERA
    # each decoded frame has its parameter line (same timestamp), and shows the index that line says: aligned
    # within one frame
    by_pts = {line["video_pts"]: line for line in params}
    assert len(params) >= len(frames)
    for pts, rgb in frames:
        line = by_pts[pts]
        assert abs(bar_index(rgb) - line["frame"] % 60) <= 1, (pts, line["frame"])
        assert line["face"] is True and line["left_gaze_yaw"] is None  # an unmeasured eye stays null
    assert events[0]["kind"] == "consent" and events[0]["data"]["recording"] is True
    (mark,) = [e for e in events if e["kind"] == "mark"]
    assert mark["data"] == {"text": "left eye drifts"} and 4.0 < mark["video_t"] < 7.0

    # on disk: sealed, not video, and nothing of the consult's secrets
    on_disk = sorted(p.name for p in (folder / recording_id).iterdir())
    assert on_disk == ["events.jsonl.sealed", "params.jsonl.sealed", "recording.json", "video.webm.sealed"]
    assert_sealed_video(folder / recording_id / "video.webm.sealed")
    assert b"left eye drifts" not in (folder / recording_id / "events.jsonl.sealed").read_bytes()
    text = (folder / recording_id / "recording.json").read_text()
    for secret in (API_KEY, KEY.hex(), room["patient_token"], room["doctor_token"]):
        assert secret not in text


async def test_consent_is_enforced_and_withdrawal_stops_the_recording_at_once(
        tmp_path: Path, session: aiohttp.ClientSession) -> None:
    """Nothing is recorded before the patient agrees; each role may do only its own part; withdrawing stops the
    recording within a second, on both pages; sound and the eye close-up are kept where allowed."""
    folder = tmp_path / "recordings"
    async with LocalProxy(config(folder, recording_audio=True), BarPipeline) as proxy:
        room, doctor, patient = await consult(proxy, session, closeup=True)
        try:
            status, body = await act(proxy, session, room, "doctor", "start")
            assert status == 409 and "not agreed" in body["error"], body
            assert (await act(proxy, session, room, "patient", "start"))[0] == 403
            assert (await act(proxy, session, room, "doctor", "agree"))[0] == 403
            status, body = await act(proxy, session, room, "patient", "agree")
            assert status == 409 and "not asked" in body["error"], body
            assert (await act(proxy, session, room, "doctor", "launch"))[0] == 400
            assert not folder.exists() or not any(folder.iterdir())  # nothing was recorded

            assert (await act(proxy, session, room, "doctor", "ask"))[0] == 200
            status, body = await act(proxy, session, room, "patient", "agree", audio=True)
            assert status == 200 and body["recording"]["state"] == "recording" and body["recording"]["audio"], body
            recording_id = body["recording"]["id"]
            status, body = await api(proxy, session, "DELETE", f"/{recording_id}")
            assert status == 409 and "error" in body  # a running recording is not deleted
            await asyncio.sleep(3.0)

            asked = datetime.now(UTC)
            start = time.monotonic()
            status, body = await act(proxy, session, room, "patient", "withdraw")
            answered = time.monotonic() - start
            assert status == 200 and body["recording"]["state"] in ("finishing", "idle"), body
            assert not body["recording"]["consent"]
            for page in (doctor, patient):  # both pages hear it within the second
                await wait_for(lambda page=page: any(not r["consent"] and r["state"] != "recording"
                                                     for r in told(page)), 1.0 - answered, step=0.02)
            await wait_for(lambda: any(r["last"] for r in told(doctor)), 10)
            status, body = await act(proxy, session, room, "doctor", "start")
            assert status == 409, body  # the consent is gone
            status, metadata = await api(proxy, session, "GET", f"/{recording_id}")
            status, video = await api(proxy, session, "GET", f"/{recording_id}/files/video.webm")
            frames = decode(io.BytesIO(video))
            status, events = await api(proxy, session, "GET", f"/{recording_id}/files/events.jsonl")
            status, eyes = await api(proxy, session, "GET", f"/{recording_id}/files/eyes.webm")
            status, audio = await api(proxy, session, "GET", f"/{recording_id}/files/audio.webm")
        finally:
            await patient.close()
            await doctor.close()

    assert answered < 1.0
    assert metadata["state"] == COMPLETE and metadata["reason"] == "consent withdrawn by the patient", metadata
    ended = datetime.fromisoformat(metadata["ended"].replace("Z", "+00:00"))
    assert abs((ended - asked).total_seconds()) < 1.0
    assert frames and frames[-1][0] / 1000 <= metadata["duration_s"] + 0.1  # nothing after the withdrawal
    kinds = [(e["kind"], e["data"].get("recording")) for e in lines(events)]
    assert kinds == [("consent", True), ("consent", False)]
    assert len(decode(io.BytesIO(eyes))) > 30  # the doctor had the eye close-up on
    with av.open(io.BytesIO(audio)) as container:  # allowed, and the patient agreed to sound
        assert container.streams.audio and sum(1 for _ in container.decode(audio=0)) > 50


async def test_a_full_disk_stops_the_recording_and_the_consult_goes_on(
        tmp_path: Path, session: aiohttp.ClientSession) -> None:
    async with LocalProxy(config(tmp_path / "unused"), BarPipeline) as proxy:
        proxy.registry.recordings = RecordingStore(
            tmp_path / "full", settings=RecorderSettings(min_free_bytes=0, flush_interval=0.2),
            opener=FullDisk(120_000).open)
        room, doctor, patient = await consult(proxy, session)
        try:
            assert (await act(proxy, session, room, "doctor", "ask"))[0] == 200
            status, body = await act(proxy, session, room, "patient", "agree")
            assert status == 200, body
            recording_id = body["recording"]["id"]
            for page in (doctor, patient):
                await wait_for(lambda page=page: any((r["last"] or {}).get("complete") is False
                                                     for r in told(page)), 30)
            last = told(patient)[-1]
            assert last["state"] == "consented" and last["error"].startswith("the recording stopped: disk full")
            masked = doctor.receivers["masked"]
            before = masked.count
            await asyncio.sleep(2.0)
            assert masked.count > before + 30  # the consult goes on
            assert doctor.pc.connectionState == "connected" and patient.pc.connectionState == "connected"
            status, metadata = await api(proxy, session, "GET", f"/{recording_id}")
            status, video = await api(proxy, session, "GET", f"/{recording_id}/files/video.webm")
            status, params = await api(proxy, session, "GET", f"/{recording_id}/files/params.jsonl")
        finally:
            await patient.close()
            await doctor.close()
    assert metadata["state"] == INCOMPLETE and metadata["reason"].startswith("disk full while writing"), metadata
    # everything written before the disk filled up is readable, and aligned
    frames = decode(io.BytesIO(video))
    params_lines = lines(params.rsplit(b"\n", 1)[0]) if not params.endswith(b"\n") else lines(params)
    assert len(frames) >= 10 and len(params_lines) >= 10
    by_pts = {line["video_pts"]: line for line in params_lines}
    matched = [(pts, rgb) for pts, rgb in frames if pts in by_pts]
    assert len(matched) >= min(len(frames), len(params_lines)) - 2
    for pts, rgb in matched:
        assert abs(bar_index(rgb) - by_pts[pts]["frame"] % 60) <= 1


async def test_a_disk_that_refuses_at_the_start_is_a_clear_503(tmp_path: Path,
                                                               session: aiohttp.ClientSession) -> None:
    async with LocalProxy(config(tmp_path / "unused"), BarPipeline) as proxy:
        store = RecordingStore(tmp_path / "full", settings=RecorderSettings(min_free_bytes=2**62))
        proxy.registry.recordings = store
        room = await proxy.create_room(session)
        assert (await act(proxy, session, room, "doctor", "ask"))[0] == 200
        status, body = await act(proxy, session, room, "patient", "agree")
        assert status == 503 and body["error"].startswith("cannot record: disk full"), body
        state = (await proxy.state(session, room))["recording"]
        assert state["state"] == "consented" and state["error"].startswith("cannot record"), state
        assert store.active() == [] and list((tmp_path / "full").iterdir()) == []
        started = time.monotonic()
    assert time.monotonic() - started < 5  # nothing left running for the shutdown to wait for


class OpusTrack(MediaStreamTrack):
    """A patient's microphone as the proxy relays it undecoded: 20 ms Opus packets of a 440 Hz tone."""

    kind = "audio"

    def __init__(self, seconds: float) -> None:
        super().__init__()
        codec = av.CodecContext.create("libopus", "w")
        codec.format, codec.layout, codec.sample_rate = "s16", "stereo", 48000
        codec.time_base = fractions.Fraction(1, 48000)
        self.packets: list[av.Packet] = []
        for index in range(int(seconds * 50)):
            t = (np.arange(960) + 960 * index) / 48000
            tone = (8000 * np.sin(2 * np.pi * 440 * t)).astype(np.int16)
            frame = av.AudioFrame.from_ndarray(np.repeat(tone, 2)[None, :], format="s16", layout="stereo")
            frame.sample_rate, frame.pts, frame.time_base = 48000, 960 * index, fractions.Fraction(1, 48000)
            self.packets += codec.encode(frame)

    async def recv(self) -> av.Packet:
        if not self.packets:
            raise MediaStreamError
        await asyncio.sleep(0.02)
        return self.packets.pop(0)


@pytest.mark.parametrize("agreed", [True, False], ids=["sound agreed", "sound not agreed"])
async def test_sound_relayed_undecoded_is_recorded_only_where_the_patient_agreed(tmp_path: Path,
                                                                                 agreed: bool) -> None:
    """The patient's audio reaches the doctor as Opus packets, undecoded: the recording decodes them itself,
    and keeps sound only with the setting and the patient's own tick."""
    store = RecordingStore(tmp_path, settings=RecorderSettings(min_free_bytes=0))
    link = RecordingLink(asyncio.get_running_loop(), "room-1", config(tmp_path, recording_audio=True), store,
                         lambda role, message: None)
    await link.ask()
    status = await link.agree(audio=agreed)
    assert status["state"] == "recording" and status["audio"] is agreed
    track = link.tap_audio(OpusTrack(1.0))
    relayed = 0
    with contextlib.suppress(MediaStreamError):
        while True:
            assert isinstance(await track.recv(), av.Packet)  # the doctor still gets the packets as they came
            relayed += 1
    assert relayed >= 45 and track.readyState == "ended"
    recorder = link.recorder
    assert recorder is not None
    link.close()
    assert recorder.wait(10)
    names = {f["name"] for f in store.metadata(recorder.id)["files"]}
    if not agreed:
        assert "audio.webm" not in names
        return
    with store.open(recorder.id, "audio.webm") as opened, av.open(opened) as container:
        left = np.concatenate([f.to_ndarray()[0] if f.format.is_planar else f.to_ndarray()[0][::2]
                               for f in container.decode(audio=0)]).astype(float)
    assert 0.8 * 48000 < left.size < 1.3 * 48000  # about the second that was sent
    spectrum = np.abs(np.fft.rfft(left[: 48000 // 2]))
    assert abs(np.argmax(spectrum) * 2 - 440) <= 4  # the tone, in 2 Hz bins


async def test_results_sent_to_the_doctor_and_marks_are_kept_with_the_recording(tmp_path: Path) -> None:
    store = RecordingStore(tmp_path, settings=RecorderSettings(min_free_bytes=0))
    told_pages: list[tuple[str, dict[str, Any]]] = []
    link = RecordingLink(asyncio.get_running_loop(), "room-1", config(tmp_path), store,
                         lambda role, message: told_pages.append((role, json.loads(message))))
    result = {"id": 3, "test": "saccades", "stopped": None, "results": [{"measure": "latency", "eye": "right"}]}
    link.sent("doctor", json.dumps({"exam_result": result}))  # not recording: nothing kept
    await link.ask()
    await link.agree()
    assert {role for role, message in told_pages if message["recording"]["state"] == "recording"} == {
        "patient", "doctor"}
    link.sent("doctor", json.dumps({"exam_live": {"blinks": 3}}))  # live readouts are not results
    link.sent("patient", json.dumps({"exam_result": result}))  # only what the doctor's page is sent
    link.sent("doctor", json.dumps({"exam_result": result}))
    link.mark("upbeat nystagmus?")
    for junk in (None, "x" * 501, "bell\a"):
        with pytest.raises(Refused) as refused:
            link.mark(junk)
        assert refused.value.status == 400
    recorder = link.recorder
    assert recorder is not None
    await link.stop()
    assert recorder.wait(10)
    with pytest.raises(Refused):
        link.mark("too late")
    with store.open(recorder.id, "events.jsonl") as opened:
        events = [json.loads(line) for line in opened.read().splitlines()]
    assert [e["kind"] for e in events] == ["consent", "exam_result", "mark"]
    assert events[1]["data"] == result and events[2]["data"] == {"text": "upbeat nystagmus?"}


async def test_settings_can_forbid_or_require_recording(tmp_path: Path, session: aiohttp.ClientSession) -> None:
    async with LocalProxy(config(tmp_path / "rec", recording="off"), BarPipeline) as proxy:
        room = await proxy.create_room(session)
        assert (await proxy.state(session, room))["recording"]["state"] == "off"
        for action in ("ask", "start"):
            status, body = await act(proxy, session, room, "doctor", action)
            assert status == 403 and "turned off" in body["error"], body
    async with LocalProxy(config(None), BarPipeline) as proxy:  # no recordings_dir: nothing can be recorded
        room = await proxy.create_room(session)
        assert (await proxy.state(session, room))["recording"]["state"] == "off"
        assert (await act(proxy, session, room, "doctor", "ask"))[0] == 403
        status, body = await api(proxy, session, "GET", "")
        assert status == 404 and "recordings_dir" in body["error"]

    async with LocalProxy(config(tmp_path / "rec", recording="required"), BarPipeline) as proxy:
        room = await proxy.create_room(session)
        state = (await proxy.state(session, room))["recording"]
        assert state["state"] == "asking" and state["mode"] == "required"  # the patient is asked as they join
        status, body = await act(proxy, session, room, "patient", "agree")
        assert status == 200 and body["recording"]["state"] == "recording"
        status, body = await act(proxy, session, room, "doctor", "stop")
        assert status == 409 and "only the patient" in body["error"]
        status, body = await act(proxy, session, room, "patient", "withdraw")
        assert status == 200 and not body["recording"]["consent"]
        assert (await act(proxy, session, room, "doctor", "ask"))[0] == 200  # the doctor may ask again
        await wait_for(lambda: proxy.registry.get(room["room"]).recording.status()["state"] == "asking", 5)

    for bad, message in (({"recording": "sometimes"}, "recording must be one of"),
                         ({"recording": "required"}, "needs recordings_dir"),
                         ({"retention_days": 0}, "retention_days"),
                         ({"recordings_key": "secret-but-short"}, "32 random bytes")):
        with pytest.raises(ValueError, match=message) as caught:
            Config.load(environ={}, flags={"api_key": API_KEY, **bad})
        assert "secret-but-short" not in str(caught.value)


def _recording(root: Path, key: bytes | None, frames: int, started: datetime | None = None,
               noise: bool = False) -> str:
    """A finished recording of bar frames (or, with ``noise``, of frames that compress badly) in ``root``,
    optionally started at ``started``; its id."""
    root.mkdir(parents=True, exist_ok=True)
    recording_id, clock = new_id(), FakeClock()  # frames fed faster than real time, timed as if at 30 fps
    recorder = Recorder(root / recording_id, recording_id, "an-old-consult", key,
                        RecorderSettings(min_free_bytes=0, max_queued_frames=1000), clock=clock)
    recorder.start()
    if noise:
        random = np.random.default_rng(0)
        for index in range(frames):
            frame = rgb_to_frame(random.integers(0, 256, (HEIGHT, WIDTH, 3), np.uint8))
            frame.pts, frame.time_base = index * 3000, fractions.Fraction(1, 90000)
            recorder.add_video(frame, None)
            clock.now += 1 / 30
    else:
        feed(recorder, frames, clock)
    recorder.close()
    if started is not None:
        metadata = read_metadata(root / recorder.id)
        write_metadata(root / recorder.id, metadata | {"started": started.isoformat().replace("+00:00", "Z")})
    return recorder.id


async def test_retention_and_delete_through_the_api(tmp_path: Path, session: aiohttp.ClientSession) -> None:
    root = tmp_path / "recordings"
    old = _recording(root, KEY, 10, started=datetime.now(UTC) - timedelta(days=31))
    kept = _recording(root, KEY, 10)
    damaged = _recording(root, KEY, 30, noise=True)
    sealed = root / damaged / "video.webm.sealed"
    data = bytearray(sealed.read_bytes())
    assert len(data) > 70_000  # more than one chunk: the damage is in the middle
    data[100] ^= 0xFF
    sealed.write_bytes(bytes(data))

    async with LocalProxy(config(root, recordings_key=KEY.hex(), retention_days=30), BarPipeline) as proxy:
        await wait_for(lambda: not (root / old).exists(), 5)  # expired at start
        status, body = await api(proxy, session, "GET", "")
        assert status == 200 and sorted(r["id"] for r in body["recordings"]) == sorted([kept, damaged])
        assert (await api(proxy, session, "GET", "", key=None))[0] == 401
        assert (await api(proxy, session, "GET", "", key="x" * 30))[0] == 403
        assert (await api(proxy, session, "GET", f"/{old}"))[0] == 404
        assert (await api(proxy, session, "GET", "/..%2F..%2Fetc"))[0] in (400, 404)
        assert (await api(proxy, session, "GET", "/not-an-id"))[0] == 400
        status, body = await api(proxy, session, "GET", f"/{kept}/files/passwd")
        assert status == 400 and "recording file" in body["error"]
        status, body = await api(proxy, session, "GET", f"/{kept}/files/audio.webm")
        assert status == 404, body
        # a damaged file is cut off, never handed out wrong
        with pytest.raises(aiohttp.ClientPayloadError):
            async with session.get(f"{proxy.base}/api/recordings/{damaged}/files/video.webm",
                                   headers={"Authorization": f"Bearer {API_KEY}"}) as response:
                assert response.status == 200
                await response.read()

        status, body = await api(proxy, session, "DELETE", f"/{kept}")
        assert status == 200 and body == {"id": kept, "deleted": True}
        assert not (root / kept).exists()
        assert (await api(proxy, session, "GET", f"/{kept}"))[0] == 404
        assert (await api(proxy, session, "DELETE", f"/{kept}"))[0] == 404
    assert sorted(p.name for p in root.iterdir()) == [damaged]


async def test_a_server_killed_mid_recording_leaves_what_it_wrote_readable(
        tmp_path: Path, session: aiohttp.ClientSession) -> None:
    """``maskproxy serve`` with the real masking pipeline, killed (SIGKILL) while recording: the files play up
    to about their last second, none of it the camera, and the next start marks the recording incomplete."""
    root, port = tmp_path / "recordings", free_port()
    env = {**os.environ, "MASKPROXY_API_KEY": API_KEY, "MASKPROXY_RECORDINGS_DIR": str(root),
           "MASKPROXY_RECORDINGS_KEY": KEY.hex(), "PYTHONUNBUFFERED": "1"}
    server = subprocess.Popen([sys.executable, "-m", "proxy", "serve", "--port", str(port)], cwd=ROOT, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        async def up() -> bool:
            try:
                async with session.get(f"{base}/healthz") as response:
                    return response.status == 200
            except aiohttp.ClientError:
                return False

        await wait_for(up, 60)
        async with session.post(f"{base}/api/rooms", headers={"Authorization": f"Bearer {API_KEY}"}) as response:
            room = await response.json()
        doctor = Client(base, room["room"], room["doctor_token"], "doctor")
        patient = Client(base, room["room"], room["patient_token"], "patient",
                         frames=[camera_pattern(WIDTH, HEIGHT)], fps=30)
        await doctor.connect(session)
        await patient.connect(session)
        try:
            await doctor.wait_connected()
            await wait_for(lambda: "masked" in doctor.receivers and doctor.receivers["masked"].count > 30, 30)

            async def request(token: str, action: str) -> dict[str, Any]:
                async with session.post(f"{base}/api/rooms/{room['room']}/recording", json={"action": action},
                                        headers={"Authorization": f"Bearer {token}"}) as response:
                    assert response.status == 200, await response.text()
                    return (await response.json())["recording"]

            await request(room["doctor_token"], "ask")
            recording_id = (await request(room["patient_token"], "agree"))["id"]
            await asyncio.sleep(4.0)
            server.send_signal(signal.SIGKILL)
            server.wait(10)
        finally:
            await patient.close()
            await doctor.close()
    finally:
        if server.poll() is None:
            server.kill()
            server.wait(10)
    store = RecordingStore(root, KEY)
    assert store.recover() == [recording_id]
    metadata = store.metadata(recording_id)
    assert metadata["state"] == INCOMPLETE and metadata["reason"] == INTERRUPTED
    with store.open(recording_id, "video.webm") as opened:
        assert opened.truncated
        frames = decode(opened)
    with store.open(recording_id, "params.jsonl") as opened:
        params = [json.loads(line) for line in opened.read().splitlines()[:-1]]  # the last may be torn
    # 4 s were recorded; about the last second (the open WebM cluster, the unsealed chunk) may be lost
    print(f"\nrecorded {metadata['started']}: {len(frames)} frames and {len(params)} parameter lines readable")
    assert len(frames) >= 10 and len(params) >= len(frames)
    assert {pts for pts, _ in frames} <= {line["video_pts"] for line in params}
    camera = camera_pattern(WIDTH, HEIGHT)
    assert min(distance(rgb, camera) for _, rgb in frames) > NOT_THE_CAMERA
