"""One consult's eye examination: fed each frame's parameters and both pages' messages, it answers with messages.

The consult wiring stays thin: call :meth:`ExamSession.feed` with every
frame's :class:`~proxy.params.MaskParams` (from the masking worker's thread) and
:meth:`ExamSession.receive` with every data-channel message and the sender's
role (from the event loop); send each returned :class:`Outgoing` to its role's
data channel; :meth:`ExamSession.close` when the consult ends. Both calls are
serialized by a lock and never raise on bad input: junk is counted in
:attr:`ExamSession.ignored` by reason and otherwise ignored.

Messages to the patient's page: ``{"exam": {...}}`` with the test's schedule
(:meth:`~proxy.exam.targets.TargetSchedule.to_command`) to start it, and
``{"exam": {"test": "stop", "id": n}}`` to end it. Messages to the doctor's page:

* ``{"exam_started": {"id", "test", "options", "duration_s", "screen", "segments"}}``;
* ``{"exam_target": {"id", "t", "yaw", "pitch"}}`` with every frame of a running
  test, so the traces can draw the dot beside each eye's gaze (``t`` is the
  frame's time, the same as the parameters');
* ``{"exam_result": {"id", "test", "stopped", "screen", "quality", "results"}}``
  when a test ends (``stopped``: null when it ran to the end, else who or what
  stopped it);
* ``{"exam_live": {"t", "nystagmus", "lids", "blinks", "deviation", "calibration"}}``
  once a second.

The test's clock: the dot starts :data:`~proxy.exam.targets.LEAD_S` after the
command, in the frames' time. When the patient's page reports that the dot
started (``exam_started``), the schedule is re-anchored to the newest frame's
time then, which takes the command's transit to the patient out of the timing.

Nothing here is stored: the calibration and the last minutes of parameters live
in memory until :meth:`ExamSession.close`.
"""

from __future__ import annotations

import math
import threading
from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np

from proxy.exam import measures
from proxy.exam.calibration import Calibration, CalibrationError, fit_eye
from proxy.exam.commands import ExamCommand, PatientEvent, Rejected, Role, ScreenReport, parse_message
from proxy.exam.screen import DEFAULT_SCREEN, Screen
from proxy.exam.targets import LEAD_S, TargetSchedule, build, instruction_for
from proxy.exam.traces import EYES, TraceBuffer, Traces
from proxy.params import MaskParams

#: Longest test (s); longer option combinations are rejected.
MAX_TEST_S = 120.0
#: Parameters kept (s), and the highest frame rate they are sized for.
HISTORY_S, MAX_FPS = MAX_TEST_S + 10.0, 60.0
#: Blink rate window of the live readout (s).
BLINK_WINDOW_S = 60.0
#: A frame this much older than the last one means the stream restarted (s).
RESTART_S = 1.0
#: Head rotation range (deg, 5th to 95th percentile) during a test above which the result warns.
HEAD_MOTION_WARN_DEG = 5.0


@dataclass(frozen=True)
class Outgoing:
    """A message for one role's data channel (JSON-serializable)."""

    to: Role
    message: dict[str, Any]


@dataclass
class _RunningTest:
    test_id: int
    schedule: TargetSchedule
    screen: Screen
    #: Frame time at which the dot starts; None until the first frame after the command.
    origin: float | None
    anchored: bool = False


class ExamSession:
    """The eye examination of one consult, from the first frame to :meth:`close`."""

    def __init__(self, aspect: float = 4 / 3, live_interval_s: float = 1.0) -> None:
        self.aspect = aspect
        self.live_interval_s = live_interval_s
        self.calibration = Calibration()
        #: Ignored messages by reason (see :class:`~proxy.exam.commands.Rejected`).
        self.ignored: Counter[str] = Counter()
        self.tests_run = 0
        self._buffer = TraceBuffer(int(HISTORY_S * MAX_FPS))
        self._blinks = {eye: measures.BlinkTracker() for eye in EYES}
        self._screen_report: ScreenReport | None = None
        self._test: _RunningTest | None = None
        self._next_id = 1
        self._last_t: float | None = None
        self._first_t: float | None = None
        self._next_live: float | None = None
        self._lock = threading.Lock()
        self._closed = False

    # ---- inputs ----------------------------------------------------------------------------------

    def feed(self, params: MaskParams) -> list[Outgoing]:
        """One frame's parameters; returns the messages this frame causes."""
        with self._lock:
            if self._closed or not math.isfinite(params.t):
                return []
            out: list[Outgoing] = []
            t = float(params.t)
            if self._last_t is not None and t < self._last_t - RESTART_S:
                out += self._restart()
            self._last_t = t
            if self._first_t is None:
                self._first_t = t
            self._buffer.append(params)
            for eye in EYES:
                aperture = getattr(params, f"{eye}_aperture", None) if params.face else None
                self._blinks[eye].update(aperture, t)
            if self._test is not None:
                out += self._advance(t)
            if self._next_live is None or t >= self._next_live:
                self._next_live = t + self.live_interval_s
                out.append(Outgoing("doctor", {"exam_live": self._live(t)}))
            return out

    def receive(self, role: Role, data: str | bytes) -> list[Outgoing]:
        """One data-channel message from ``role``; junk is counted and ignored."""
        with self._lock:
            if self._closed:
                return []
            try:
                message = parse_message(data, role)
            except Rejected as rejected:
                self.ignored[rejected.reason] += 1
                return []
            if isinstance(message, ScreenReport):
                self._screen_report = message
                return []
            if isinstance(message, PatientEvent):
                return self._patient_event(message)
            return self._command(message)

    def close(self) -> None:
        """End the examination: forget the calibration, the parameters and any running test."""
        with self._lock:
            self._closed = True
            self._test = None
            self.calibration.clear()
            self._buffer.clear()
            self._blinks = {eye: measures.BlinkTracker() for eye in EYES}

    def stats(self) -> dict[str, Any]:
        """For the operator: tests run, ignored messages by reason, which eyes are calibrated."""
        with self._lock:
            return {"tests": self.tests_run, "ignored": dict(self.ignored),
                    "calibrated": [eye for eye in EYES if self.calibration.is_calibrated(eye)],
                    "running": self._test.schedule.test if self._test else None}

    # ---- tests -----------------------------------------------------------------------------------

    def _screen(self) -> Screen:
        recent = self._buffer.traces(2.0)
        scales = recent["head_scale"][np.isfinite(recent["head_scale"])] if len(recent) else np.empty(0)
        head_scale = float(np.median(scales)) if scales.size else None
        report = self._screen_report
        if report is None:
            return Screen.from_report(DEFAULT_SCREEN.width_px, DEFAULT_SCREEN.height_px, head_scale=head_scale,
                                      aspect=self.aspect)
        return Screen.from_report(report.width_css_px, report.height_css_px, card_css_px=report.card_css_px,
                                  diagonal_in=report.diagonal_in,
                                  distance_mm=None if report.distance_cm is None else 10 * report.distance_cm,
                                  head_scale=head_scale, aspect=self.aspect)

    def _command(self, command: ExamCommand) -> list[Outgoing]:
        if command.test == "stop":
            return self._finish("doctor") if self._test is not None else []
        screen = self._screen()
        try:
            schedule = build(command.test, command.options, screen)
        except ValueError:
            schedule = None
        if schedule is None or schedule.duration_s > MAX_TEST_S:
            self.ignored["out_of_range"] += 1
            return []
        out = self._finish("replaced") if self._test is not None else []
        test_id = self._next_id
        self._next_id += 1
        self.tests_run += 1
        origin = None if self._last_t is None else self._last_t + LEAD_S
        self._test = _RunningTest(test_id, schedule, screen, origin)
        out.append(Outgoing("patient", schedule.to_command(screen, test_id, instruction_for(schedule))))
        out.append(Outgoing("doctor", {"exam_started": {
            "id": test_id, "test": schedule.test, "options": schedule.options,
            "duration_s": round(schedule.duration_s, 3), "lead_s": LEAD_S, "screen": screen.to_json(),
            "segments": [s.to_json() for s in schedule.segments]}}))
        return out

    def _patient_event(self, event: PatientEvent) -> list[Outgoing]:
        test = self._test
        if test is None or event.test_id != test.test_id:
            self.ignored["stale"] += 1
            return []
        if event.kind == "exit":
            return self._finish("patient")
        if test.anchored or self._last_t is None:
            self.ignored["stale"] += 1
            return []
        test.origin, test.anchored = self._last_t, True
        return []

    def _advance(self, t: float) -> list[Outgoing]:
        test = self._test
        assert test is not None
        if test.origin is None:
            test.origin = t + LEAD_S
        s = t - test.origin
        if s >= test.schedule.duration_s:
            return self._finish(None)
        if s < 0:
            return []
        yaw, pitch = test.schedule.position(s)[0]
        return [Outgoing("doctor", {"exam_target": {"id": test.test_id, "t": round(t, 4), "yaw": round(float(yaw), 3),
                                                    "pitch": round(float(pitch), 3)}})]

    def _finish(self, stopped: str | None) -> list[Outgoing]:
        test = self._test
        assert test is not None
        self._test = None
        results: list[dict[str, Any]] = []
        quality: dict[str, Any] = {}
        if test.origin is not None:
            traces = self._buffer.since(test.origin - 0.5)
            results = self._results(test, traces)
            quality = _quality(traces.between(test.origin, test.origin + test.schedule.duration_s))
        return [Outgoing("patient", {"exam": {"test": "stop", "id": test.test_id}}),
                Outgoing("doctor", {"exam_result": {"id": test.test_id, "test": test.schedule.test,
                                                    "stopped": stopped, "screen": test.screen.to_json(),
                                                    "options": test.schedule.options, "quality": quality,
                                                    "results": results}})]

    def _results(self, test: _RunningTest, traces: Traces) -> list[dict[str, Any]]:
        schedule, origin = test.schedule, test.origin
        assert origin is not None
        found: list[measures.Result]
        if schedule.test == "pursuit":
            found = list(measures.pursuit_gain(traces, schedule, origin, self.calibration))
        elif schedule.test == "saccades":
            found = list(measures.saccade_metrics(traces, schedule, origin, self.calibration))
        elif schedule.test == "fixation":
            during = traces.between(origin, origin + schedule.duration_s)
            found = [*measures.fixation_stability(during, origin + 0.5, None, self.calibration),
                     measures.deviation(during, self.calibration)]
        elif schedule.test == "nine_positions":
            found = list(measures.nine_position_deviations(traces, schedule, origin, self.calibration))
        else:
            eye = schedule.options["eye"]
            try:
                fitted = fit_eye(traces, schedule, eye, origin)
            except CalibrationError as exc:
                return [{"measure": "calibration", "eye": eye, "calibrated": False, "error": str(exc)}]
            self.calibration.set(fitted)
            return [{"measure": "calibration"} | fitted.to_json()]
        return [r.to_json() for r in found]

    def _restart(self) -> list[Outgoing]:
        """The stream's clock went back (the patient rejoined): drop what was measured on the old clock."""
        out = self._finish("stream restarted") if self._test is not None else []
        self._buffer.clear()
        self._blinks = {eye: measures.BlinkTracker() for eye in EYES}
        self._first_t = self._next_live = None
        return out

    # ---- live readouts ---------------------------------------------------------------------------

    def _live(self, t: float) -> dict[str, Any]:
        recent = self._buffer.traces(measures.NYSTAGMUS_WINDOW_S)
        blink_results = []
        for eye in EYES:
            self._blinks[eye].forget_before(t - BLINK_WINDOW_S)
            span = min(BLINK_WINDOW_S, t - (self._first_t if self._first_t is not None else t))
            blink_results.append(measures.summarize_blinks(eye, self._blinks[eye].events, span).to_json())
        return {"t": round(t, 4),
                "nystagmus": [r.to_json() for r in measures.nystagmus(recent)],
                "lids": [r.to_json() for r in measures.lids(recent)],
                "blinks": blink_results,
                "deviation": measures.deviation(recent, self.calibration).to_json(),
                "calibration": self.calibration.to_json()}


def _quality(traces: Traces) -> dict[str, Any]:
    """How much of the test was measured, and how much the head moved."""
    if not len(traces):
        return {"frames": 0}
    out: dict[str, Any] = {"frames": len(traces)}
    for eye in EYES:
        out[f"{eye}_measured"] = round(float(np.isfinite(traces.gaze(eye)).all(axis=1).mean()), 3)
    motion = 0.0
    for name in ("head_yaw", "head_pitch"):
        values = traces[name][np.isfinite(traces[name])]
        if values.size >= 2:
            low, high = np.percentile(values, [5, 95])
            motion = max(motion, float(high - low))
    out["head_motion_deg"] = round(motion, 2)
    if motion > HEAD_MOTION_WARN_DEG:
        out["warning"] = f"the head turned by {motion:.0f} deg during the test; results mix head and eye movement"
    return out
