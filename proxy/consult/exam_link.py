"""One consult's eye examination on the wire: the exam's data-channel messages, and the eye close-up track.

:class:`ExamLink` joins a room to an :class:`~proxy.exam.ExamSession` and an
:class:`~proxy.avatar.closeup.EyeCloseupRenderer`, on a thread of its own so that
neither the examination's sums nor the close-up's drawing run on the event loop
or hold up the masking worker:

* every masked frame's parameters (:meth:`ExamLink.frame`, on the event loop)
  are fed to the session in order; the newest frame is drawn as the close-up
  when the doctor's offer asked for it and the doctor's page shows it
  (``{"closeup": {"on": true}}``; it starts off: the close-up costs about as
  much CPU as the face view, and most of a consult does not need it; while it
  is off the track shows the neutral avatar's eyes). Only the newest waits: a close-up that cannot
  keep up is skipped (and counted), never queued, and one finished more than
  ``stall_s`` after its camera frame arrived is discarded;
* every data-channel message (:meth:`ExamLink.receive`) goes to the session,
  whose small vocabulary decides what is a command; anything else is ignored
  and counted by reason (:meth:`ExamLink.stats`). Messages over the
  vocabulary's size limit are counted here without being queued, and a flood
  beyond :data:`MAX_PENDING_MESSAGES` is dropped and counted;
* what the session answers goes back to the loop, to each role's data channel;
  the once-a-second live readouts without their units and caveats, which the
  doctor's page states once (they would be most of every such message), the
  test results with them.

The thread runs at a lower scheduling priority (:data:`NICENESS`): the close-up is
drawn from the masking worker's parameters, so it can never be faster than the
worker, and when the CPU is short the worker (and the face view) must not wait
for it.

Pictures: the close-up is drawn from :class:`~proxy.params.MaskParams` alone. A
frame whose masking failed gets the fault card; a frame without a face, the
neutral avatar (the renderer's "searching" picture); a failing renderer, the
fault card (and it is rebuilt); a thread that stalls or dies, the fault card
through :meth:`ExamLink.stalled`, which the track's idle picture asks.
"""

from __future__ import annotations

import asyncio
import fractions
import json
import logging
import os
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import av
import numpy as np

from proxy.consult.worker import fault_placeholder, rgb_to_frame
from proxy.exam.commands import MAX_MESSAGE_BYTES
from proxy.exam.session import ExamSession, Outgoing
from proxy.params import MaskParams

log = logging.getLogger(__name__)

#: Frames' parameters waiting for the session (about 10 s at 30 fps); older ones are dropped if it falls behind.
MAX_PENDING_FRAMES = 300
#: Data-channel messages waiting for the session; a flood beyond this is dropped and counted.
MAX_PENDING_MESSAGES = 64
#: A close-up finished this long after its camera frame arrived is not live any more (s).
STALL_S = 1.0
#: How much lower the link's thread (and the renderer threads it starts) are scheduled than the masking worker.
NICENESS = 5
#: Page messages that other parts of the consult read (rooms.py): neither the exam's nor junk, so not counted.
OTHER_MESSAGES = ("leaving",)
#: The close-up's picture until its renderer has drawn the neutral avatar: the avatar's background colour.
BLANK = (107, 117, 128)


class Picture(Protocol):
    """What draws the close-up: :class:`~proxy.avatar.closeup.EyeCloseupRenderer`'s interface."""

    width: int
    height: int

    def render(self, params: MaskParams) -> np.ndarray: ...

    def close(self) -> None: ...


def default_renderer(width: int, height: int) -> Picture:
    from proxy.avatar.closeup import EyeCloseupRenderer

    return EyeCloseupRenderer(width, height)


@dataclass(frozen=True)
class _Job:
    """One masked frame's close-up to draw."""

    params: MaskParams
    pts: int | None
    time_base: fractions.Fraction | None
    received: float
    fault: bool


class ExamLink:
    """The examination and the eye close-up of one consult. ``start()``, ``frame()``/``receive()``..., ``close()``.

    ``send(role, text)`` (called on the loop) puts a message on that role's data channel; ``push(frame, received)``
    (on the loop) offers a close-up frame to the close-up track. ``renderer`` builds the close-up's renderer on
    the link's thread (tests inject failing ones).
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, send: Callable[[str, str], None],
                 push: Callable[[av.VideoFrame, float], None], size: tuple[int, int] = (960, 320),
                 renderer: Callable[[int, int], Picture] = default_renderer, stall_s: float = STALL_S,
                 room: str = "") -> None:
        self.session = ExamSession()
        self.size = size
        self._loop = loop
        self._send = send
        self._push = push
        self._make_renderer = renderer
        self._stall_s = stall_s
        self._room = room
        self._cond = threading.Condition()
        self._frames: deque[MaskParams] = deque()
        self._messages: deque[tuple[str, str | bytes]] = deque()
        self._job: _Job | None = None
        self._prepare = False  #: a doctor asked for the close-up: get its renderer and neutral picture ready
        #: The doctor's page shows the close-up (``{"closeup": {"on": true}}``): only then is it drawn.
        self.closeup_on = False
        self._running = False
        self._thread: threading.Thread | None = None
        self._logged: set[str] = set()
        #: Ignored before reaching the session (oversized, flood); the session counts the rest.
        self.ignored: Counter[str] = Counter()
        self.rendered = 0  #: close-ups drawn
        self.skipped = 0  #: close-ups replaced by a newer frame before they were drawn
        self.late = 0  #: close-ups discarded because they finished more than ``stall_s`` after the camera frame
        self.errors = 0  #: close-ups whose drawing failed (the fault card was sent)
        self.exam_errors = 0  #: examination steps that raised (logged; the consult goes on)
        self.frames_dropped = 0  #: parameters dropped because the session fell behind
        self.busy_since: float | None = None  #: monotonic time the thread took its current work, None when idle
        self._neutral: np.ndarray | None = None  #: the neutral avatar's close-up, once a renderer drew it
        self._fault = fault_placeholder(*size)
        self._fault.setflags(write=False)
        self._blank = np.empty((size[1], size[0], 3), np.uint8)
        self._blank[:] = BLANK
        self._blank.setflags(write=False)

    # ---- lifetime --------------------------------------------------------------------------------

    def start(self) -> None:
        self._running = True
        self._thread = threading.Thread(target=self._run, name="exam-link", daemon=True)
        self._thread.start()

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def close(self, timeout: float = 2.0) -> None:
        """Stop the thread and end the examination (its calibration and parameters are forgotten)."""
        with self._cond:
            self._running = False
            self._frames.clear()
            self._messages.clear()
            self._job = None
            self._cond.notify()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)
        self._thread = None
        self.session.close()

    def stalled(self) -> bool:
        """Whether the close-up cannot be trusted to be live: the thread died, or has been busy for ``stall_s``."""
        if self._thread is None:
            return False
        busy = self.busy_since
        return not self.alive or (busy is not None and time.monotonic() - busy > self._stall_s)

    def idle_picture(self, fault: bool = False) -> np.ndarray:
        """What the close-up shows when no frame is due: the fault card (``fault``, or the link stalled), else the
        neutral avatar's close-up (a plain background until a renderer has drawn it). Read-only."""
        if fault or self.stalled():
            return self._fault
        return self._neutral if self._neutral is not None else self._blank

    def prepare(self) -> None:
        """A doctor asked for the close-up: have the neutral avatar's eyes ready before the first frame."""
        with self._cond:
            if self._neutral is None:
                self._prepare = True
                self._cond.notify()

    # ---- inputs (event loop) ---------------------------------------------------------------------

    def frame(self, params: MaskParams, like: av.VideoFrame, received: float, fault: bool, closeup: bool) -> None:
        """A masked frame's parameters; with ``closeup``, draw its close-up (``like`` gives the timestamp)."""
        if like.width and like.height:
            self.session.aspect = like.width / like.height
        with self._cond:
            if not self._running:
                return
            if len(self._frames) >= MAX_PENDING_FRAMES:
                self._frames.popleft()
                self.frames_dropped += 1
            self._frames.append(params)
            if closeup and self.closeup_on:
                if self._job is not None:
                    self.skipped += 1
                self._job = _Job(params, like.pts, like.time_base, received, fault)
            self._cond.notify()

    def receive(self, role: str, data: object) -> None:
        """A data-channel message from ``role``; the session judges it on the link's thread."""
        if isinstance(data, str | bytes) and len(data) > 4 * MAX_MESSAGE_BYTES:
            self._ignore("oversized", role)  # not even queued; the session counts the ones just over the limit
            return
        with self._cond:
            if not self._running:
                return
            if len(self._messages) >= MAX_PENDING_MESSAGES:
                self._ignore("flood", role)
                return
            self._messages.append((role, data if isinstance(data, str | bytes) else b""))
            self._cond.notify()

    def _ignore(self, reason: str, role: str) -> None:
        self.ignored[reason] += 1
        self._log_first(reason, role)

    def _log_first(self, reason: str, role: str) -> None:
        """Say once per consult and reason that messages are being ignored (never what they said)."""
        if reason not in self._logged:
            self._logged.add(reason)
            log.warning("room %s: ignoring exam messages from the %s (%s); further ones are counted", self._room,
                        role, reason)

    # ---- state -----------------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """Tests run, ignored messages by reason, calibrated eyes, the running test, and the close-up's counters."""
        exam = self.session.stats()
        ignored = Counter(exam["ignored"]) + self.ignored
        return {**exam, "ignored": dict(ignored), "ignored_total": sum(ignored.values()),
                "errors": self.exam_errors, "frames_dropped": self.frames_dropped,
                "closeup": {"size": f"{self.size[0]}x{self.size[1]}", "on": self.closeup_on, "rendered": self.rendered,
                            "skipped": self.skipped, "late": self.late, "errors": self.errors}}

    # ---- the thread ------------------------------------------------------------------------------

    def _run(self) -> None:
        _lower_priority()
        renderer: Picture | None = None
        hold = _hold()
        try:
            while True:
                with self._cond:
                    while self._running and not (self._frames or self._messages or self._job or self._prepare):
                        self._cond.wait()
                    if not self._running:
                        return
                    frames, self._frames = self._frames, deque()
                    messages, self._messages = self._messages, deque()
                    job, self._job = self._job, None
                    prepare, self._prepare = self._prepare, False
                    self.busy_since = time.monotonic()
                try:
                    if prepare and renderer is None:
                        try:
                            renderer = self._renderer()
                        except Exception as exc:  # noqa: BLE001 - the first frame tries again (and shows the card)
                            log.error("room %s: cannot draw the eye close-up (%s)", self._room, exc.__class__.__name__)
                    self._examine(frames, messages)
                    if job is not None:
                        renderer = self._draw(job, renderer, hold)
                finally:
                    self.busy_since = None
        finally:
            if renderer is not None:
                renderer.close()

    def _examine(self, frames: deque[MaskParams], messages: deque[tuple[str, str | bytes]]) -> None:
        out: list[Outgoing] = []
        for role, data in messages:
            if _not_ours(data):
                continue
            switch = _closeup_switch(data)
            if switch is not None:
                if role == "doctor":
                    self.closeup_on = switch
                else:
                    self._ignore("not_allowed", role)  # the patient's page has no say over the doctor's view
                continue
            before = Counter(self.session.ignored)
            try:
                out += self.session.receive(role, data)  # type: ignore[arg-type]
            except Exception as exc:  # noqa: BLE001 - the session never raises on input; if it does, go on
                self.exam_errors += 1
                log.error("room %s: the exam could not take a %s message (%s)", self._room, role,
                          exc.__class__.__name__)
            for reason in self.session.ignored - before:
                self._log_first(reason, role)
        for params in frames:
            try:
                out += self.session.feed(params)
            except Exception as exc:  # noqa: BLE001 - a measure failing must not end the consult's exam
                self.exam_errors += 1
                if self.exam_errors == 1:
                    log.exception("room %s: the exam failed on a frame; further failures are counted", self._room)
                else:
                    log.debug("room %s: exam failure (%s)", self._room, exc.__class__.__name__)
        if out:
            texts = [(o.to, json.dumps(_slim(o.message) if "exam_live" in o.message else o.message,
                                       separators=(",", ":"), allow_nan=False)) for o in out]
            self._call_soon(self._deliver, texts)

    def _deliver(self, texts: list[tuple[str, str]]) -> None:
        for role, text in texts:
            self._send(role, text)

    def _draw(self, job: _Job, renderer: Picture | None, hold: Callable[[MaskParams], MaskParams]) -> Picture | None:
        width, height = self.size
        if job.fault:
            picture = self._fault
        else:
            try:
                if renderer is None:
                    renderer = self._renderer()
                picture = renderer.render(hold(job.params))
                self.rendered += 1
            except Exception as exc:  # noqa: BLE001 - any failure must end in the fault card
                self.errors += 1
                log.error("room %s: drawing the eye close-up failed (%s: %s); sending the placeholder", self._room,
                          exc.__class__.__name__, exc)
                picture = self._fault
                if renderer is not None:
                    try:
                        renderer.close()
                    except Exception:  # noqa: BLE001
                        pass
                    renderer = None
        if time.monotonic() - job.received > self._stall_s:
            self.late += 1
            return renderer
        frame = rgb_to_frame(picture)
        frame.pts, frame.time_base = job.pts, job.time_base
        self._call_soon(self._push, frame, job.received)
        return renderer

    def _renderer(self) -> Picture:
        """A new close-up renderer, and the neutral avatar's close-up drawn with it once. Raises if it cannot."""
        renderer = self._make_renderer(*self.size)
        if self._neutral is None:
            neutral = renderer.render(MaskParams.neutral())
            neutral.setflags(write=False)
            self._neutral = neutral
        return renderer

    def _call_soon(self, callback: Callable[..., None], *args: object) -> None:
        if not self._running:
            return
        try:
            self._loop.call_soon_threadsafe(callback, *args)
        except RuntimeError:  # the loop is closed: we are shutting down
            pass


def _lower_priority() -> None:
    """Schedule the calling thread (on Linux each thread has its own niceness) NICENESS lower, where allowed."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), os.getpriority(os.PRIO_PROCESS, 0) + NICENESS)
    except (AttributeError, OSError):  # not Linux, or not permitted: the thread runs at the usual priority
        pass


def _slim(value: Any) -> Any:
    """``value`` without its ``units`` and ``caveat`` entries, at any depth."""
    if isinstance(value, dict):
        return {k: _slim(v) for k, v in value.items() if k not in ("units", "caveat")}
    if isinstance(value, list):
        return [_slim(v) for v in value]
    return value


def _closeup_switch(data: str | bytes) -> bool | None:
    """``{"closeup": {"on": true|false}}``, exactly: the doctor's page showing or hiding the close-up; else None."""
    if not isinstance(data, str) or len(data) > 64:
        return None
    try:
        value = json.loads(data)
    except ValueError:
        return None
    if isinstance(value, dict) and list(value) == ["closeup"] and isinstance(value["closeup"], dict) and \
            list(value["closeup"]) == ["on"] and isinstance(value["closeup"]["on"], bool):
        return value["closeup"]["on"]
    return None


def _not_ours(data: str | bytes) -> bool:
    """A message another part of the consult reads (such as ``{"leaving": true}``)."""
    if not isinstance(data, str) or len(data) > 64:
        return False
    try:
        value = json.loads(data)
    except ValueError:
        return False
    return isinstance(value, dict) and len(value) == 1 and next(iter(value)) in OTHER_MESSAGES


def _hold() -> Callable[[MaskParams], MaskParams]:
    """What the face view's pipeline does to unmeasured eye fields before drawing, so both views agree."""
    from proxy.avatar.hold import EyeHold

    return EyeHold()
