"""One consult's recording: the patient's consent, the doctor's Record / Stop, feeding the recorder, telling both pages.

:class:`RecordingLink` lives and dies with its room and is driven on the event loop:

* **Consent first.** The doctor asks (:meth:`RecordingLink.ask`); the patient's page then shows, in plain
  words, what would be kept and what not. When the patient agrees (:meth:`RecordingLink.agree`) the recording
  starts. The consent stands for the rest of the consult, so the doctor may record again
  (:meth:`RecordingLink.start`); without it a record request is refused (409). The patient can withdraw at
  any time (:meth:`RecordingLink.withdraw`): a running recording stops at once and the consent is gone. With
  ``recording = required`` every consult asks from its start, and only the patient can stop a recording; with
  ``off`` (or no ``recordings_dir``) nothing is ever recorded.
* **Fed from what leaves.** While a recording runs, every frame of the masked stream the doctor is sent: each
  masked frame once the stream says it sent it, with the parameters it was drawn from
  (:meth:`RecordingLink.frame_masked` and :meth:`RecordingLink.frame_sent`, paired by the camera frame's arrival
  time), and each idle picture, the neutral avatar or the card, without (:meth:`RecordingLink.video`); the eye
  close-up's frames as its track sends them (:meth:`RecordingLink.eyes_sent`); the patient's audio on its way
  to the doctor where a setting and the patient allow it (:meth:`RecordingLink.tap_audio`); the test results
  sent to the doctor (:meth:`RecordingLink.sent`) and the doctor's marks. They go to the
  :class:`~proxy.recording.recorder.Recorder`, whose calls never block. It is never handed a camera frame.
* **Both pages know.** Every change goes to both pages as ``{"recording": status}`` on their data channels,
  and the status is part of the room state. A recording that ends by a fault (a full disk) says why there;
  the consult goes on.

The recording stops when the doctor stops it, the patient withdraws, the doctor leaves, or the consult ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import deque
from collections.abc import Callable
from typing import Any

import av
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from proxy.consult.config import Config
from proxy.params import MaskParams
from proxy.recording.metadata import RecordingError, now_iso
from proxy.recording.recorder import Recorder
from proxy.recording.store import RecordingStore

log = logging.getLogger(__name__)

#: Longest note a doctor's mark may carry (characters).
MAX_MARK_TEXT = 500
#: Masked frames (and sent tags) kept while waiting for their pair: the masked stream holds one or a few.
PAIRING = 8
#: Settings worth keeping with a recording (never a secret: metadata.clean_settings drops those anyway).
KEPT_SETTINGS = ("recording", "recording_audio", "retention_days", "self_view_fps", "max_frame_pixels", "eye_samples",
                 "supersample", "trim_every", "threads")


class Refused(Exception):
    """A recording request that cannot be granted now; ``status`` is the HTTP answer it deserves."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class AudioTap(MediaStreamTrack):
    """Passes another audio track on unchanged, handing each frame to ``listener`` as it goes (never blocks)."""

    kind = "audio"

    def __init__(self, source: MediaStreamTrack, listener: Callable[[av.AudioFrame], None]) -> None:
        super().__init__()
        self._source = source
        self._listener = listener

    async def recv(self) -> av.AudioFrame:
        try:
            frame = await self._source.recv()
        except MediaStreamError:
            self.stop()  # ended with its source, so that a reader stops asking
            raise
        self._listener(frame)  # type: ignore[arg-type]
        return frame  # type: ignore[return-value]

    def stop(self) -> None:
        super().stop()
        self._source.stop()


class RecordingLink:
    """The recording side of one consult. ``send(role, text)`` puts a message on a role's data channel."""

    def __init__(self, loop: asyncio.AbstractEventLoop, room: str, config: Config, store: RecordingStore | None,
                 send: Callable[[str, str], None]) -> None:
        self._loop = loop
        self.room = room
        self._store = store
        self._send = send
        self.mode = config.recording if store is not None else "off"
        self.audio_allowed = bool(config.recording_audio) and self.mode != "off"
        self.retention_days = config.retention_days
        self._settings = {name: getattr(config, name) for name in KEPT_SETTINGS} | {"recording": self.mode}
        self._lock = asyncio.Lock()
        #: The doctor asked and the patient has not answered yet (from the start with ``required``).
        self.asked = self.mode == "required"
        #: The patient's standing consent: ``{"audio": bool, "at": UTC time}``, or None.
        self.consent: dict[str, Any] | None = None
        self.recorder: Recorder | None = None
        #: How the last recording ended: id, state (complete/incomplete), reason, duration.
        self.last: dict[str, Any] | None = None
        #: Why the last attempt to record failed (cannot write), or why the last recording stopped early.
        self.error: str | None = None
        self._opus: Any = None  #: decodes relayed Opus packets, only while sound is being recorded
        #: Masked frames waiting to be sent, and frames sent before the room handed over their parameters, by tag.
        self._masked: dict[object, tuple[av.VideoFrame, MaskParams | None]] = {}
        self._sent_tags: deque[object] = deque(maxlen=PAIRING)
        self._closed = False
        self._warned_events = False

    # ---- what the pages see ----------------------------------------------------------------------

    @property
    def recording(self) -> bool:
        return self.recorder is not None and self.recorder.recording

    def status(self) -> dict[str, Any]:
        """``state``: off, idle, asking (the patient is asked), consented, recording, finishing (files being
        closed); with the mode, the consent, the running recording's id, seconds and frames, and the last one."""
        recorder = self.recorder
        live = recorder.status() if recorder is not None else None
        if self.mode == "off":
            state = "off"
        elif recorder is not None:
            state = "recording" if recorder.recording else "finishing"
        elif self.consent is not None:
            state = "consented"
        else:
            state = "asking" if self.asked else "idle"
        return {
            "state": state, "mode": self.mode, "asked": self.asked, "consent": self.consent is not None,
            "audio_allowed": self.audio_allowed, "audio": bool(self.consent and self.consent["audio"]),
            "encrypted": self._store is not None and self._store.key is not None,
            "retention_days": self.retention_days,
            "id": recorder.id if recorder is not None else None,
            "seconds": live["seconds"] if live else None,
            "frames": live["frames"]["video"] if live else None,
            "last": self.last, "error": self.error,
        }

    def _tell(self) -> None:
        """Both pages get the new status on their data channels (a role not connected gets it with the room state)."""
        message = json.dumps({"recording": self.status()})
        for role in ("patient", "doctor"):
            self._send(role, message)

    # ---- the doctor ------------------------------------------------------------------------------

    def _available(self) -> None:
        if self.mode == "off":
            raise Refused(403, "recording is turned off on this server")
        if self._closed:
            raise Refused(409, "the consult has ended")

    async def ask(self) -> dict[str, Any]:
        """The doctor asks to record: the patient's page asks for consent, and the recording starts when they agree
        (at once if they already have)."""
        self._available()
        if self.recording:
            raise Refused(409, "already recording")
        if self.consent is not None:
            return await self.start()
        if not self.asked:
            self.asked = True
            self.error = None
            log.info("room %s: the doctor asks to record", self.room)
            self._tell()
        return self.status()

    async def start(self) -> dict[str, Any]:
        """Record now; refused (409) unless the patient has agreed."""
        self._available()
        async with self._lock:
            if self.consent is None:
                raise Refused(409, "the patient has not agreed to recording: ask them first")
            await self._start()
        return self.status()

    async def stop(self) -> dict[str, Any]:
        """The doctor's Stop: ends the recording (or takes back a question the patient has not answered)."""
        self._available()
        if self.recording:
            if self.mode == "required":
                raise Refused(409, "this clinic records every consult: only the patient can stop the recording, "
                                   "by withdrawing consent")
            assert self.recorder is not None
            self.recorder.stop("stopped by the doctor")
            log.info("room %s: the doctor stopped recording %s", self.room, self.recorder.id)
        elif self.asked and self.consent is None:
            self.asked = False
        else:
            raise Refused(409, "not recording")
        self._tell()
        return self.status()

    def mark(self, text: object) -> dict[str, Any]:
        """A doctor's mark at this moment of the recording, with an optional note."""
        if not isinstance(text, str) or len(text) > MAX_MARK_TEXT or not text.isprintable():
            raise Refused(400, f"a mark's text is at most {MAX_MARK_TEXT} printable characters")
        recorder = self.recorder
        if recorder is None or not recorder.recording:
            raise Refused(409, "not recording: marks are kept with a recording")
        try:
            kept = recorder.add_event("mark", {"text": text})
        except ValueError as exc:
            raise Refused(400, str(exc)) from None
        if not kept:
            raise Refused(503, "the recording cannot keep up; the mark was not kept, try again")
        return self.status()

    # ---- the patient -----------------------------------------------------------------------------

    async def agree(self, audio: bool = False) -> dict[str, Any]:
        """The patient agrees to recording (and to sound, where it is allowed): the recording starts."""
        self._available()
        async with self._lock:
            if self.consent is None:
                if not self.asked:
                    raise Refused(409, "the doctor has not asked to record")
                self.consent = {"audio": bool(audio) and self.audio_allowed, "at": now_iso()}
                log.info("room %s: the patient agrees to recording (sound: %s)", self.room, self.consent["audio"])
                self._tell()
            if self.asked and self.recorder is None:  # the doctor's request to record is waiting for this
                await self._start()
        return self.status()

    async def withdraw(self) -> dict[str, Any]:
        """The patient says no, or withdraws: a running recording stops at once, and the consent is gone."""
        recorder = self.recorder
        if recorder is not None and recorder.recording:  # before waiting for anything
            with contextlib.suppress(ValueError):
                recorder.add_event("consent", {"recording": False, "withdrawn_at": now_iso()})
            recorder.stop("consent withdrawn by the patient")
        async with self._lock:
            recorder = self.recorder  # a start that was under way has finished: stop that one too
            if recorder is not None and recorder.recording:
                recorder.stop("consent withdrawn by the patient")
            if self.consent is not None or self.asked:
                log.info("room %s: the patient %s", self.room,
                         "withdraws consent" if self.consent is not None else "declines recording")
            self.consent = None
            self.asked = False
        self._tell()
        return self.status()

    # ---- starting and ending ---------------------------------------------------------------------

    async def _start(self) -> None:
        """Start a recording with the standing consent (call with the lock held)."""
        if self.recorder is not None:
            raise Refused(409, "already recording" if self.recorder.recording else
                          "the last recording is still being finished; try again in a moment")
        assert self._store is not None and self.consent is not None
        audio = self.audio_allowed and bool(self.consent["audio"])
        recorder: Recorder | None = None

        def stopped(metadata: dict[str, Any]) -> None:  # on the recorder's writer thread
            with contextlib.suppress(RuntimeError):  # the loop is closed: the process is ending
                self._loop.call_soon_threadsafe(self._stopped, recorder, metadata)

        recorder = self._store.recorder(self.room, consult_settings=self._settings, audio=audio, on_stopped=stopped)
        try:
            await self._loop.run_in_executor(None, recorder.start)
        except RecordingError as exc:
            self._store.discard(recorder)
            self.error = str(exc)
            log.warning("room %s: %s", self.room, exc)
            self._tell()
            raise Refused(503, str(exc)) from None
        self.recorder, self.asked, self.error = recorder, False, None
        recorder.add_event("consent", {"recording": True, "audio": audio, "agreed_at": self.consent["at"]})
        log.info("room %s: recording %s started", self.room, recorder.id)
        self._tell()

    def _stopped(self, recorder: Recorder | None, metadata: dict[str, Any]) -> None:
        """The writer finished (stopped, withdrawn, a fault): say how it ended, on both pages."""
        if recorder is None or self.recorder is not recorder:
            return
        self.recorder = None
        self.last = {"id": metadata.get("id"), "state": metadata.get("state"), "complete": metadata.get("complete"),
                     "reason": metadata.get("reason"), "duration_s": metadata.get("duration_s")}
        if not metadata.get("complete"):
            self.error = f"the recording stopped: {metadata.get('reason')}"
        if not self._closed:
            self._tell()

    def doctor_left(self) -> None:
        """The doctor's page closed (or was reloaded): a running recording stops; the consent stands."""
        if self.recording:
            assert self.recorder is not None
            self.recorder.stop("the doctor left")
            self._tell()

    def close(self) -> None:
        """The consult ends: a running recording stops (its writer finishes the files on its own thread; a server
        shutting down waits for that, see :func:`proxy.consult.recording_api.finish`)."""
        self._closed = True
        if self.recorder is not None:
            self.recorder.stop("the consult ended")

    # ---- feeding (on the event loop, never blocks) ----------------------------------------------

    def video(self, frame: av.VideoFrame, params: MaskParams | None) -> None:
        """A frame of the masked stream on its way to the doctor, with the parameters it was drawn from (None for
        the neutral avatar or the card). Any thread; the caller's frame is copied, never changed."""
        recorder = self.recorder
        if recorder is not None:
            recorder.add_video(frame, params)

    def frame_masked(self, frame: av.VideoFrame, params: MaskParams | None, tag: object) -> None:
        """A masked frame the room hands to the masked stream, with the parameters it was drawn from and its tag
        (the camera frame's arrival time). It is recorded once the stream says it sent it (:meth:`frame_sent`,
        before or after this): a frame the stream replaced by a newer one before sending is not."""
        if self.recorder is None:
            return
        if tag in self._sent_tags:
            self._sent_tags.remove(tag)
            self.video(frame, params)
            return
        self._masked[tag] = (frame, params)
        while len(self._masked) > PAIRING:
            del self._masked[next(iter(self._masked))]

    def frame_sent(self, tag: object) -> None:
        """The masked stream sent the live frame ``tag`` (see :meth:`frame_masked`)."""
        if self.recorder is None:
            return
        masked = self._masked.pop(tag, None)
        if masked is not None:
            self.video(*masked)
        else:
            self._sent_tags.append(tag)

    def eyes_sent(self, frame: av.VideoFrame, tag: object) -> None:
        """The eye close-up track hands ``frame`` to the doctor's sender."""
        recorder = self.recorder
        if recorder is not None:
            recorder.add_eyes(frame)

    def tap_audio(self, track: MediaStreamTrack) -> MediaStreamTrack:
        """The patient's incoming audio, tapped for recording where sound may be recorded at all (the doctor is
        sent what the tap passes on); otherwise, or for any other track, ``track`` itself."""
        return AudioTap(track, self._audio) if self.audio_allowed and track.kind == "audio" else track

    def _audio(self, item: av.AudioFrame | av.Packet) -> None:
        recorder = self.recorder
        if recorder is None or not recorder.settings.audio:  # sound needs the setting and the patient's consent
            return
        if isinstance(item, av.AudioFrame):
            recorder.add_audio(item)
            return
        if not isinstance(item, av.Packet):
            return
        try:  # relayed undecoded (Opus): decoded here, for the recording only
            if self._opus is None:
                self._opus = av.CodecContext.create("opus", "r")
            for frame in self._opus.decode(item):
                recorder.add_audio(frame)
        except av.error.FFmpegError:
            self._opus = None  # a broken packet: start afresh with the next

    def sent(self, role: str, message: str) -> None:
        """A message on its way to ``role``'s page: the doctor's test results are kept with the recording."""
        recorder = self.recorder
        if recorder is None or role != "doctor" or not message.startswith('{"exam_result"'):
            return
        try:
            result = json.loads(message)["exam_result"]
            recorder.add_event("exam_result", result)
        except (ValueError, KeyError, TypeError) as exc:
            if not self._warned_events:
                self._warned_events = True
                log.warning("room %s: a test result could not be kept with the recording (%s)", self.room, exc)
