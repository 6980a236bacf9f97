"""Recording a consult: the masked frames play back aligned with their parameters, in real time, through faults."""

from __future__ import annotations

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
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest

from proxy import __version__
from proxy.recording.metadata import COMPLETE, INCOMPLETE, RecordingError, new_id
from proxy.recording.recorder import Recorder, RecorderSettings, open_new
from proxy.recording.store import INTERRUPTED, RecordingStore
from tests.conftest import ROOT
from tests.recording.feed import FPS, FakeClock, assert_sealed_video, bar_frame, bar_index, decode, feed, params_for

KEY = bytes(range(1, 33))
#: Frames are fed faster than real time here: room for all of them in the queue.
FAST = RecorderSettings(min_free_bytes=0, flush_interval=0.1, max_queued_frames=256)


def _recorder(root: Path, key: bytes | None = None, settings: RecorderSettings = FAST, clock: Any = None,
              **kwargs: Any) -> Recorder:
    recording_id = new_id()
    root.mkdir(exist_ok=True)
    return Recorder(root / recording_id, recording_id, "consult-1", key, settings,
                    clock=clock or time.monotonic, **kwargs)


def _lines(store: RecordingStore, recording_id: str, name: str) -> list[dict[str, Any]]:
    with store.open(recording_id, name) as opened:
        return [json.loads(line) for line in opened.read().splitlines()]


@pytest.mark.parametrize("key", [None, KEY], ids=["plain", "encrypted"])
def test_recording_plays_the_frames_sent_aligned_with_their_parameters(tmp_path: Path, key: bytes | None) -> None:
    clock = FakeClock()
    recorder = _recorder(tmp_path / "rec", key, clock=clock, consult_settings={
        "api_key": "A" * 32, "doctor_token": "T" * 32, "turn_password": "P" * 12, "eye_samples": 1})
    recorder.start()
    feed(recorder, 45, clock)
    assert recorder.add_event("mark", {"text": "left eye drifts"})
    feed(recorder, 45, clock, start=45)
    metadata = recorder.close()
    assert metadata["state"] == COMPLETE and metadata["complete"] is True
    assert metadata["tracks"]["video.webm"]["frames_written"] == 90
    assert metadata["software"]["version"] == __version__ and metadata["consult"] == "consult-1"

    store = RecordingStore(tmp_path / "rec", key)
    frames = decode(store.open(recorder.id, "video.webm"))
    params = _lines(store, recorder.id, "params.jsonl")
    assert abs(len(frames) - 90) <= 0.05 * 90
    assert len(params) == 90
    # every decoded frame is the one its parameter line says: same timestamp, same picture
    by_pts = {line["video_pts"]: line for line in params}
    for pts, rgb in frames:
        line = by_pts[pts]
        assert abs(bar_index(rgb) - line["frame"] % 60) <= 1
    steps = np.diff([pts for pts, _ in frames])
    assert np.all(np.abs(steps - 1000 / FPS) <= 1)  # the frames' own spacing, in ms
    assert [line["video_frame"] for line in params] == list(range(90))
    assert params[3]["left_gaze_yaw"] is None  # an unmeasured eye stays null
    (mark,) = _lines(store, recorder.id, "events.jsonl")
    assert mark["kind"] == "mark" and mark["data"] == {"text": "left eye drifts"}
    assert abs(mark["video_t"] - params[44]["video_t"]) <= 1 / FPS

    text = (tmp_path / "rec" / recorder.id / "recording.json").read_text()
    for secret in ("A" * 32, "T" * 32, "P" * 12, "api_key", "doctor_token", "turn_password"):
        assert secret not in text
    assert json.loads(text)["settings"]["eye_samples"] == 1

    on_disk = sorted(p.name for p in (tmp_path / "rec" / recorder.id).iterdir())
    if key is None:
        assert on_disk == ["events.jsonl", "params.jsonl", "recording.json", "video.webm"]
        return
    assert on_disk == ["events.jsonl.sealed", "params.jsonl.sealed", "recording.json", "video.webm.sealed"]
    assert_sealed_video(tmp_path / "rec" / recorder.id / "video.webm.sealed")
    raw = (tmp_path / "rec" / recorder.id / "params.jsonl.sealed").read_bytes()
    assert b"gaze" not in raw and b"video_pts" not in raw
    assert b"left eye drifts" not in (tmp_path / "rec" / recorder.id / "events.jsonl.sealed").read_bytes()
    with pytest.raises(RecordingError, match="encrypted"):
        RecordingStore(tmp_path / "rec").open(recorder.id, "video.webm")


class _Stuck(io.RawIOBase):
    """A file on a disk that hangs until ``released`` is set: opening it, and every write."""

    def __init__(self, path: Path, released: threading.Event) -> None:
        released.wait()
        self.inner, self.released = open_new(path), released

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self.released.wait()
        return self.inner.write(data)

    def fileno(self) -> int:
        return self.inner.fileno()

    def flush(self) -> None:
        if not self.inner.closed:
            self.inner.flush()

    def close(self) -> None:
        self.inner.close()
        super().close()


def test_a_writer_that_falls_behind_drops_frames_and_never_blocks_the_caller(tmp_path: Path) -> None:
    """Real time: with the disk hanging, the caller (the event loop) goes on at full speed; the frames the writer
    cannot take are dropped and counted, their parameters still kept; nothing queues beyond the bound."""
    clock = FakeClock()
    released = threading.Event()
    settings = RecorderSettings(min_free_bytes=0, flush_interval=0.1, max_queued_frames=8)
    recorder = _recorder(tmp_path / "rec", None, settings, clock,
                         opener=lambda path: _Stuck(path, released))
    recorder.start()
    began = time.perf_counter()
    taken, queued = 0, 0
    for index in range(300):
        taken += recorder.add_video(bar_frame(index), params_for(index))
        queued = max(queued, recorder.status()["queued"]["frames"])
        clock.now += 1 / FPS
    feeding = time.perf_counter() - began
    began = time.perf_counter()
    recorder.stop()
    stopping = time.perf_counter() - began
    assert feeding < 1.0 and stopping < 0.05, (feeding, stopping)  # 10 s of frames; nothing waited for the disk
    # bounded: the frame the writer holds (stuck opening its file) and the queue; the rest dropped
    assert queued == settings.max_queued_frames
    assert settings.max_queued_frames <= taken <= settings.max_queued_frames + 1
    assert not recorder.wait(0.2)  # still stuck on the disk
    released.set()
    assert recorder.wait(60)
    metadata = recorder.metadata
    dropped = metadata["tracks"]["video.webm"]["dropped"]
    assert dropped == 300 - taken
    assert metadata["tracks"]["video.webm"]["frames_written"] == taken
    store = RecordingStore(tmp_path / "rec")
    params = _lines(store, recorder.id, "params.jsonl")
    assert len(params) == 300 and sum(line["video_frame"] is None for line in params) == dropped
    assert len(decode(store.open(recorder.id, "video.webm"))) == taken


class _Disk:
    """Files that share ``room`` bytes, then fail with ENOSPC (a full disk)."""

    def __init__(self, room: int) -> None:
        self.room = room
        self.lock = threading.Lock()

    def open(self, path: Path) -> Any:
        disk, inner = self, open_new(path)

        class File:
            closed = property(lambda self: inner.closed)

            def write(self, data: Any) -> int:
                with disk.lock:
                    if len(data) > disk.room:
                        inner.write(bytes(data)[: disk.room])
                        disk.room = 0
                        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                    disk.room -= len(data)
                return inner.write(data)

            def fileno(self) -> int:
                return inner.fileno()

            def flush(self) -> None:
                inner.flush()

            def close(self) -> None:
                inner.close()

        return File()


@pytest.mark.parametrize("key", [None, KEY], ids=["plain", "encrypted"])
def test_a_full_disk_stops_the_recording_and_keeps_what_was_written(tmp_path: Path, key: bytes | None) -> None:
    clock = FakeClock()
    stopped: list[dict[str, Any]] = []
    settings = RecorderSettings(min_free_bytes=0, flush_interval=0.05, max_queued_frames=4)
    recorder = _recorder(tmp_path / "rec", key, settings, clock, opener=_Disk(40_000).open,
                         on_stopped=stopped.append)
    recorder.start()
    for index in range(300):  # at the writer's pace, as a live consult would be (10 s)
        recorder.add_video(bar_frame(index), params_for(index))
        clock.now += 1 / FPS
        if not recorder.recording:
            break
        time.sleep(0.004)
    assert recorder.wait(30)
    assert not recorder.recording
    assert recorder.add_video(bar_frame(999), params_for(999)) is False  # the consult goes on; nothing raises
    assert len(stopped) == 1 and stopped[0]["complete"] is False
    assert stopped[0]["reason"].startswith("disk full while writing ")
    store = RecordingStore(tmp_path / "rec", key)
    metadata = store.metadata(recorder.id)
    assert metadata["state"] == INCOMPLETE and metadata["reason"] == stopped[0]["reason"]
    # everything written before the disk filled up is readable
    with store.open(recorder.id, "params.jsonl") as opened:
        params = [json.loads(line) for line in opened.read().splitlines()[:-1]]  # the last may be torn
        assert opened.truncated
    frames = decode(store.open(recorder.id, "video.webm"))
    assert len(frames) >= 10 and len(params) >= 10
    by_pts = {line["video_pts"]: line for line in params}
    matched = [(pts, rgb) for pts, rgb in frames if pts in by_pts]
    assert len(matched) >= min(len(frames), len(params)) - 2
    for pts, rgb in matched:
        assert abs(bar_index(rgb) - by_pts[pts]["frame"] % 60) <= 1


def test_a_killed_recorder_leaves_a_readable_recording(tmp_path: Path) -> None:
    """The proxy killed mid-recording (SIGKILL): what was written plays, the parameters align, it is marked
    incomplete when the proxy starts again."""
    root = tmp_path / "rec"
    root.mkdir()
    recording_id = new_id()
    child = subprocess.Popen([sys.executable, "-m", "tests.recording.killed", str(root), recording_id, KEY.hex()],
                             cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    written = 0
    try:
        assert child.stdout is not None
        for line in child.stdout:
            written = int(line.split()[1])
            if written >= 75:
                break
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(10)
    assert written >= 75, child.stderr.read() if child.stderr else ""
    store = RecordingStore(root, KEY)
    assert store.recover() == [recording_id]
    metadata = store.metadata(recording_id)
    assert metadata["state"] == INCOMPLETE and metadata["reason"] == INTERRUPTED
    with store.open(recording_id, "video.webm") as opened:
        assert opened.truncated
        frames = decode(opened)
    with store.open(recording_id, "params.jsonl") as opened:
        params = [json.loads(line) for line in opened.read().splitlines()[:-1]]
    # at most about the last second (the WebM's open cluster and the unsealed chunk) is lost
    assert len(frames) >= written - 1.5 * FPS and len(params) >= len(frames)
    by_pts = {line["video_pts"]: line for line in params}
    for pts, rgb in frames:
        assert abs(bar_index(rgb) - by_pts[pts]["frame"] % 60) <= 1


def test_audio_only_where_allowed(tmp_path: Path) -> None:
    def tone(index: int) -> av.AudioFrame:
        samples = np.sin(2 * np.pi * 440 * (np.arange(960) + 960 * index) / 48000)
        frame = av.AudioFrame.from_ndarray((0.3 * 32767 * np.repeat(samples, 2)).astype(np.int16)[None],
                                           format="s16", layout="stereo")
        frame.sample_rate, frame.pts = 48000, 960 * index
        frame.time_base = fractions.Fraction(1, 48000)
        return frame

    clock = FakeClock()
    silent = _recorder(tmp_path / "rec", clock=clock)
    silent.start()
    assert silent.add_audio(tone(0)) is False
    feed(silent, 3, clock)
    silent.close()
    assert not any("audio" in p.name for p in silent.folder.iterdir())

    audible = _recorder(tmp_path / "rec", settings=RecorderSettings(audio=True, min_free_bytes=0), clock=clock)
    audible.start()
    for index in range(50):  # 1 s
        assert audible.add_audio(tone(index))
        clock.now += 0.02
    audible.close()
    with av.open(str(audible.folder / "audio.webm")) as container:
        samples = sum(frame.samples for frame in container.decode(audio=0))
    assert abs(samples - 48000) <= 2 * 960


def test_events_are_checked(tmp_path: Path) -> None:
    recorder = _recorder(tmp_path / "rec")
    recorder.start()
    try:
        for kind, data in (("Mark!", {}), ("mark", ["x"]), ("mark", {"x": float("nan")}), ("mark", {"x": object()}),
                           ("mark", {"x": "y" * 70_000})):
            with pytest.raises(ValueError):
                recorder.add_event(kind, data)  # type: ignore[arg-type]
        assert recorder.add_event("exam_result", {"test": "fixation", "results": []})
    finally:
        recorder.close()


def test_start_refuses_where_it_cannot_write(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("")
    with pytest.raises(RecordingError, match="cannot record"):
        Recorder(tmp_path / "a-file" / "x", "x", "c", settings=FAST).start()
    with pytest.raises(RecordingError, match="disk full"):
        _recorder(tmp_path / "rec", settings=RecorderSettings(min_free_bytes=2**62)).start()
    assert list((tmp_path / "rec").iterdir()) == []  # nothing left behind
