"""One recording: the masked frames, their parameters and the consult's events, written off the caller's thread.

Feed it only what already left the proxy for the doctor: the masked track's
frames (the avatar, the neutral avatar or the placeholder card), never the
camera's. The consult should call :meth:`Recorder.add_video` where the masked
track hands a frame to the doctor's sender (after the frame got its outgoing
timestamp), with that frame's :class:`~proxy.params.MaskParams`, never from the
worker's input.

Lifetime: :meth:`Recorder.start` makes the folder and writes
``recording.json``; ``add_video``, ``add_eyes``, ``add_audio`` and
``add_event`` may be called from any thread (the event loop, the masking
thread) and never block: they stamp the item and put it on a bounded queue
for the recorder's own writer thread, which encodes and writes. When the
writer falls behind, frames are dropped and counted (their parameters are
still written); nothing queues without bound. :meth:`Recorder.stop` returns
at once; the writer finishes the files, rewrites ``recording.json`` and calls
``on_stopped`` with it (from the writer thread). A full or unwritable disk
stops the recording the same way, marked incomplete with the reason; what was
written before stays readable. :meth:`Recorder.close` is ``stop`` plus waiting
for the writer (blocking: not on the event loop).

Times: every track is timed by its frames' own timestamps, placed by the
arrival of its first frame after :meth:`start`; ``video_pts`` in
``params.jsonl`` is the frame's timestamp in ``video.webm`` (milliseconds),
and events carry ``video_t``, the time in the video when they happened.
"""

from __future__ import annotations

import errno
import fractions
import json
import logging
import os
import queue
import re
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, BinaryIO

import av

from proxy import __version__
from proxy.params import MaskParams
from proxy.recording.media import AUDIO_RATE, AudioFile, VideoFile
from proxy.recording.metadata import (
    COMPLETE,
    INCOMPLETE,
    RECORDING,
    SEALED_SUFFIX,
    RecordingError,
    clean_settings,
    now_iso,
    write_metadata,
)
from proxy.recording.sealed import PlainWriter, SealedWriter, key_id

log = logging.getLogger(__name__)

VIDEO_TRACKS = {"video": "video.webm", "eyes": "eyes.webm"}
#: A track whose timestamps drift this far from their arrival is re-anchored (a source restarted).
REANCHOR_S = 2.0
_KIND = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
_STOP = object()

Opener = Callable[[Path], BinaryIO]


def open_new(path: Path) -> BinaryIO:
    """A new file only the proxy's user can read, unbuffered (sealed chunks are written whole)."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    return os.fdopen(descriptor, "wb", buffering=0)


@dataclass(frozen=True)
class RecorderSettings:
    """How a recording is made (the consult's settings decide ``audio`` and ``eyes``)."""

    #: Record audio frames; off by default: a voice identifies.
    audio: bool = False
    #: Record the eye close-up track when it is fed.
    eyes: bool = True
    #: Video frames waiting for the writer at most; more are dropped (1 s at 30 fps).
    max_queued_frames: int = 30
    #: Other items (parameter lines, events, audio frames) waiting at most.
    max_queued_items: int = 5000
    #: Seal and sync the files this often (s): a crash loses about this much, plus the WebM's last cluster.
    flush_interval: float = 1.0
    #: VP8 bits per second of the recorded video (the avatar is simple: about 450 MB an hour at 1 Mbit/s).
    video_bitrate: int = 1_000_000
    #: Stop, marked incomplete, when the disk has less than this free (bytes).
    min_free_bytes: int = 256 * 1024 * 1024
    #: Largest event (a mark, a test result) as JSON, bytes.
    max_event_bytes: int = 64 * 1024


class _Clock:
    """A track's time since the recording started: its own timestamps, placed by its first frame's arrival."""

    def __init__(self, start: float) -> None:
        self._start = start
        self._anchor: tuple[float, float] | None = None  # (the frame's own time, its time in the recording)

    def at(self, pts: int | None, time_base: fractions.Fraction | None, now: float) -> float:
        arrival = now - self._start
        if pts is None or not time_base:
            return arrival
        own = float(pts * time_base)
        if self._anchor is None or abs(self._anchor[1] + own - self._anchor[0] - arrival) > REANCHOR_S:
            self._anchor = (own, arrival)
        return self._anchor[1] + own - self._anchor[0]


def describe_os_error(exc: OSError, name: str) -> str:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"disk full while writing {name}"
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"recordings folder not writable ({exc.strerror}) while writing {name}"
    return f"write error ({exc.strerror or exc.__class__.__name__}) while writing {name}"


class Recorder:
    """One recording of one consult; see the module docstring for its lifetime and threads."""

    def __init__(self, folder: Path, recording_id: str, consult: str, key: bytes | None = None,
                 settings: RecorderSettings | None = None, consult_settings: dict[str, Any] | None = None,
                 on_stopped: Callable[[dict[str, Any]], None] | None = None, opener: Opener = open_new,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.id = recording_id
        self.folder = folder
        self.settings = settings or RecorderSettings()
        self._key = key
        self._opener = opener
        self._clock = clock  #: stamps frames and events (the writer's own timing is real time)
        self._on_stopped = on_stopped
        self._lock = threading.Lock()
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._state = "new"
        self._reason: str | None = None
        self._ended: tuple[str, float] | None = None  #: (UTC time, clock) of stop()
        self._complete = True
        self._start = 0.0
        self._clocks: dict[str, _Clock] = {}
        self._last_ms: dict[str, int] = {}
        self._video_t = 0.0
        self._queued_frames = 0
        self._queued_items = 0
        self.frames = {name: 0 for name in (*VIDEO_TRACKS, "audio")}
        self.dropped = {name: 0 for name in (*VIDEO_TRACKS, "audio", "lines")}
        self.lines = {"params.jsonl": 0, "events.jsonl": 0}
        self._written: dict[str, int] = {}
        self._sizes: dict[str, tuple[int, int]] = {}
        self._thread: threading.Thread | None = None
        self._finished = threading.Event()
        self.metadata: dict[str, Any] = {
            "id": recording_id, "consult": consult, "format": 1, "state": "new",
            "software": {"name": "maskproxy", "version": __version__},
            "settings": clean_settings(consult_settings) | {
                "audio": self.settings.audio, "eyes": self.settings.eyes,
                "video_bitrate": self.settings.video_bitrate},
            "encrypted": key is not None, "key_id": key_id(key).hex() if key is not None else None,
            "time_base": "1/1000",
        }

    # ---- lifetime --------------------------------------------------------------------------------

    def start(self) -> None:
        """Make the folder, write ``recording.json`` and start the writer; RecordingError if the disk refuses."""
        with self._lock:
            if self._state != "new":
                raise RecordingError("a recorder starts once")
            try:
                self.folder.mkdir(mode=0o700, parents=False)
                free = shutil.disk_usage(self.folder).free
                if free < self.settings.min_free_bytes:
                    raise OSError(errno.ENOSPC, "below the free space kept in reserve")
                self.metadata.update(state=RECORDING, started=now_iso(), ended=None, complete=False,
                                     reason="recording")
                write_metadata(self.folder, self.metadata)
            except OSError as exc:
                shutil.rmtree(self.folder, ignore_errors=True)
                raise RecordingError(f"cannot record: {describe_os_error(exc, 'recording.json')}") from None
            self._start = self._clock()
            self._state = RECORDING
            self._thread = threading.Thread(target=self._run, name=f"recorder-{self.id}", daemon=True)
            self._thread.start()
        log.info("recording %s started for consult %s (encrypted: %s, audio: %s)", self.id,
                 self.metadata["consult"], self._key is not None, self.settings.audio)

    def stop(self, reason: str = "stopped") -> None:
        """End the recording (returns at once); the writer finishes the files and calls ``on_stopped``."""
        with self._lock:
            if self._state != RECORDING:
                return
            self._state = "stopping"
            self._reason = reason
            self._ended = (now_iso(), self._clock())
            self._queue.put(_STOP)

    def close(self, timeout: float | None = 30.0) -> dict[str, Any]:
        """:meth:`stop` and wait for the writer; the final metadata. Blocks: call it off the event loop."""
        self.stop()
        if self._thread is not None:
            self._thread.join(timeout)
        return dict(self.metadata)

    def __enter__(self) -> Recorder:
        if self._state == "new":
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def recording(self) -> bool:
        """True from start until stop or a fault: the pages show "recording" while this holds."""
        return self._state == RECORDING

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the writer to finish (True if it did)."""
        return self._finished.wait(timeout)

    def status(self) -> dict[str, Any]:
        """For the pages and the room state: state, seconds, frames and drops per track, the reason if stopped."""
        with self._lock:
            seconds = self._clock() - self._start if self._state == RECORDING else self.metadata.get(
                "duration_s", 0.0)
            return {"id": self.id, "state": self._state, "seconds": round(seconds or 0.0, 1),
                    "frames": dict(self.frames), "dropped": dict(self.dropped), "written": dict(self._written),
                    "queued": {"frames": self._queued_frames, "items": self._queued_items}, "reason": self._reason}

    # ---- feeding (any thread, never blocks) -----------------------------------------------------

    def _put(self, item: tuple[Any, ...], frame: bool) -> bool:
        """Queue one item if there is room (call with the lock held)."""
        if frame:
            if self._queued_frames >= self.settings.max_queued_frames:
                return False
            self._queued_frames += 1
        else:
            if self._queued_items >= self.settings.max_queued_items:
                return False
            self._queued_items += 1
        self._queue.put(item)
        return True

    def _stamp(self, track: str, frame: Any, now: float) -> float:
        clock = self._clocks.setdefault(track, _Clock(self._start))
        return clock.at(frame.pts, frame.time_base, now)

    def add_video(self, frame: av.VideoFrame, params: MaskParams | dict[str, Any] | None = None) -> bool:
        """Record one masked frame as sent to the doctor, with the parameters it was drawn from
        (None for the neutral avatar or the placeholder card). False if not recording or dropped."""
        return self._add_video("video", frame, params)

    def add_eyes(self, frame: av.VideoFrame) -> bool:
        """Record one frame of the eye close-up track (rendered from parameters, like the masked video)."""
        if not self.settings.eyes:
            return False
        return self._add_video("eyes", frame, None)

    def _add_video(self, track: str, frame: av.VideoFrame, params: MaskParams | dict[str, Any] | None) -> bool:
        now = self._clock()
        with self._lock:
            if self._state != RECORDING:
                return False
            ms = max(round(self._stamp(track, frame, now) * 1000), self._last_ms.get(track, -1) + 1)
            self._last_ms[track] = ms
            index = self.frames[track]
            accepted = self._put(("video", track, frame, ms), frame=True)
            if accepted:
                self.frames[track] += 1
            else:
                self.dropped[track] += 1
            if track != "video":
                return accepted
            self._video_t = ms / 1000
            line = {"video_frame": index if accepted else None, "video_pts": ms, "video_t": ms / 1000}
            if params is None:
                line |= {"face": False, "placeholder": True}
            else:
                line |= params.to_json() if isinstance(params, MaskParams) else params
            self._line("params.jsonl", line)
            return accepted

    def add_audio(self, frame: av.AudioFrame) -> bool:
        """Record one audio frame, only where the settings allow audio (off by default)."""
        if not self.settings.audio:
            return False
        now = self._clock()
        with self._lock:
            if self._state != RECORDING:
                return False
            start = max(0, round(self._stamp("audio", frame, now) * AUDIO_RATE))
            if self._put(("audio", frame, start), frame=False):
                self.frames["audio"] += 1
                return True
            self.dropped["audio"] += 1
            return False

    def add_event(self, kind: str, data: dict[str, Any]) -> bool:
        """Record a doctor's mark, an eye-test result, a consent change...; ValueError on junk.

        ``kind`` is a short lower-case word (``mark``, ``exam_result``, ``consent``); ``data`` a JSON object
        of at most ``max_event_bytes``. False if not recording or the queue is full.
        """
        if not isinstance(kind, str) or not _KIND.match(kind):
            raise ValueError("an event kind is a short lower-case word")
        if not isinstance(data, dict):
            raise ValueError("an event is a JSON object")
        try:
            size = len(json.dumps(data, allow_nan=False))
        except (TypeError, ValueError):
            raise ValueError("an event must be plain JSON") from None
        if size > self.settings.max_event_bytes:
            raise ValueError(f"an event is at most {self.settings.max_event_bytes} bytes as JSON")
        now = self._clock()
        with self._lock:
            if self._state != RECORDING:
                return False
            line = {"kind": kind, "t": round(now - self._start, 3), "video_t": self._video_t, "at": now_iso(),
                    "data": data}
            return self._line("events.jsonl", line)

    def _line(self, name: str, line: dict[str, Any]) -> bool:
        try:
            data = (json.dumps(line, allow_nan=False) + "\n").encode()
        except (TypeError, ValueError):
            data = (json.dumps({k: line[k] for k in ("video_frame", "video_pts", "video_t") if k in line}
                               | {"face": False, "unrecordable": True}) + "\n").encode()
        if self._put(("line", name, data), frame=False):
            self.lines[name] += 1
            return True
        self.dropped["lines"] += 1
        return False

    # ---- the writer thread ----------------------------------------------------------------------

    def _sink(self, name: str) -> Any:
        path = self.folder / (name + SEALED_SUFFIX if self._key is not None else name)
        raw = self._opener(path)
        return SealedWriter(raw, self._key) if self._key is not None else PlainWriter(raw)

    def _run(self) -> None:
        files: dict[str, Any] = {}
        current = "recording.json"
        fault: str | None = None
        next_flush = time.monotonic() + self.settings.flush_interval
        try:
            while True:
                try:
                    item = self._queue.get(timeout=max(0.0, next_flush - time.monotonic()))
                except queue.Empty:
                    item = None
                if item is _STOP:
                    break
                if item is not None:
                    current = self._write(item, files)
                if time.monotonic() >= next_flush:
                    for name, file in files.items():
                        current = name
                        file.sync()
                    current = "recording.json"
                    if shutil.disk_usage(self.folder).free < self.settings.min_free_bytes:
                        raise OSError(errno.ENOSPC, "below the free space kept in reserve")
                    next_flush = time.monotonic() + self.settings.flush_interval
            for current, file in list(files.items()):
                file.close()
                del files[current]
        except OSError as exc:
            fault = describe_os_error(exc, current)
        except Exception:  # noqa: BLE001 - a bug must not end the consult; the recording ends, marked
            log.exception("recording %s: writer failed", self.id)
            fault = "internal error in the recorder"
        if fault is not None:
            self._fail(fault, files)
        self._finish()

    def _write(self, item: tuple[Any, ...], files: dict[str, Any]) -> str:
        kind = item[0]
        if kind == "line":
            _, name, data = item
            with self._lock:
                self._queued_items -= 1
            if name not in files:
                files[name] = self._sink(name)
            files[name].write(data)
            return name
        if kind == "audio":
            _, frame, start = item
            with self._lock:
                self._queued_items -= 1
            if "audio.webm" not in files:
                files["audio.webm"] = AudioFile(self._sink("audio.webm"))
            files["audio.webm"].write(frame, start)
            return "audio.webm"
        _, track, frame, ms = item
        with self._lock:
            self._queued_frames -= 1
        name = VIDEO_TRACKS[track]
        if name not in files:
            files[name] = VideoFile(self._sink(name), frame.width, frame.height, self.settings.video_bitrate)
            self._sizes[name] = (files[name].width, files[name].height)
        files[name].write(frame, ms)
        self._written[name] = files[name].frames
        return name

    def _fail(self, reason: str, files: dict[str, Any]) -> None:
        log.warning("recording %s stopped: %s", self.id, reason)
        with self._lock:
            self._state = "failed"
            self._complete = False
            self._reason = reason
        for file in files.values():
            file.abandon()
        while True:  # release the queued frames
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break

    def _finish(self) -> None:
        with self._lock:
            if self._state != "failed":
                self._state = "stopped"
            ended, at = self._ended or (now_iso(), self._clock())  # when stop() was called, or now (a fault)
            self.metadata.update(
                state=COMPLETE if self._complete else INCOMPLETE, complete=self._complete, reason=self._reason,
                ended=ended, duration_s=round(at - self._start, 3),
                tracks={VIDEO_TRACKS[t]: {"frames_fed": self.frames[t], "dropped": self.dropped[t],
                                          "frames_written": self._written.get(VIDEO_TRACKS[t], 0),
                                          "size": list(self._sizes.get(VIDEO_TRACKS[t], (0, 0)))}
                        for t in VIDEO_TRACKS if self.frames[t] or self.dropped[t]}
                | ({"audio.webm": {"frames_fed": self.frames["audio"], "dropped": self.dropped["audio"]}}
                   if self.frames["audio"] else {}),
                lines=dict(self.lines), dropped_lines=self.dropped["lines"],
                recorder=asdict(self.settings))
            metadata = dict(self.metadata)
        try:
            write_metadata(self.folder, metadata)
        except OSError as exc:
            log.warning("recording %s: could not update recording.json (%s)", self.id, exc.strerror)
        log.info("recording %s ended: %s, %.0f s, %d frames, %d dropped", self.id,
                 "complete" if self._complete else f"incomplete ({self._reason})", metadata["duration_s"],
                 self.frames["video"], self.dropped["video"])
        self._finished.set()
        if self._on_stopped is not None:
            try:
                self._on_stopped(metadata)
            except Exception:  # noqa: BLE001 - the caller's problem must not kill the writer silently
                log.exception("recording %s: on_stopped failed", self.id)

